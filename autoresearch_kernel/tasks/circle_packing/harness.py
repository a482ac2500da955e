"""The circle-packing sandbox's fixed part: what its harness cells call, before and after the agent's code."""
from __future__ import annotations

import json
import math
from pathlib import Path

from autoresearch_kernel.tasks.circle_packing.scorer import CIRCLES, violation


def finish(centers, radii, artifact_path: str, metrics_path: str) -> float:
    """Write the packing for the scorer and the kernel's own figures (information only); returns the sum."""
    points = [(float(x), float(y)) for x, y in centers]
    sizes = [float(r) for r in radii]
    Path(artifact_path).write_text(json.dumps({"centers": points, "radii": sizes}), encoding="utf-8")
    total = math.fsum(sizes)
    reason = violation(points, sizes) if len(points) == CIRCLES else f"{len(points)} circles, not {CIRCLES}"
    Path(metrics_path).write_text(json.dumps({"status": "ok", "failure": None, "sum_radii": total,
                                              "valid_in_kernel": reason is None}), encoding="utf-8")
    print(f"sum_radii: {total:.6f}" + (f" (invalid: {reason})" if reason else ""))
    return total
