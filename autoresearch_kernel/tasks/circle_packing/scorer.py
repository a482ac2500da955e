"""The circle-packing scorer: the packing's geometry verified exactly, then the sum of its radii.

Runs outside the experiment (tasks/filescore.py, in a jail of its own) on the `packing.json` it wrote:
{"centers": [[x, y], ...], "radii": [r, ...]}. Every circle must lie inside the unit square and no two may
overlap, each within TOLERANCE; anything else (a wrong count, a negative or non-finite number, a malformed
file) is a failure, never a score.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

CIRCLES = 26
TOLERANCE = 1e-9  # rounding slack of the checks; far below any gain the gate keeps


def read_packing(artifact: Path) -> tuple[list[tuple[float, float]], list[float]]:
    data = json.loads(Path(artifact).read_text(encoding="utf-8"))
    centers, radii = data["centers"], data["radii"]
    if len(centers) != CIRCLES or len(radii) != CIRCLES:
        raise ValueError(f"expected {CIRCLES} circles, got {len(centers)} centres and {len(radii)} radii")
    points = [(float(x), float(y)) for x, y in centers]
    sizes = [float(r) for r in radii]
    if not all(math.isfinite(v) for point in points for v in point) or not all(math.isfinite(r) for r in sizes):
        raise ValueError("a centre or a radius is not a finite number")
    return points, sizes


def violation(points: list[tuple[float, float]], radii: list[float]) -> str | None:
    """The first geometric violation, or None for a valid packing."""
    for i, ((x, y), r) in enumerate(zip(points, radii)):
        if r < 0:
            return f"circle {i} has a negative radius {r}"
        if x - r < -TOLERANCE or y - r < -TOLERANCE or x + r > 1 + TOLERANCE or y + r > 1 + TOLERANCE:
            return f"circle {i} (centre {x:.6f}, {y:.6f}, radius {r:.6f}) leaves the unit square"
    for i in range(len(points)):
        for j in range(i + 1, len(points)):
            gap = math.dist(points[i], points[j]) - radii[i] - radii[j]
            if gap < -TOLERANCE:
                return f"circles {i} and {j} overlap by {-gap:.3g}"
    return None


def score(artifact: Path, data=None) -> float:
    """The sum of the radii of a valid packing; ValueError (the run's failure) for anything else."""
    points, radii = read_packing(artifact)
    reason = violation(points, radii)
    if reason:
        raise ValueError(f"invalid packing: {reason}")
    return sum(radii)
