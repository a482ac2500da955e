"""metrics.json: the one record an experiment leaves for the loop, written atomically by the harness.

The schema is the map in docs/interfaces.md. No torch here, so that the runner and the loop can read
metrics without importing the training stack.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from autoresearch_kernel.harness.files import atomic_write_bytes

STATUS_OK = "ok"
STATUS_FAILED = "failed"


@dataclass
class Metrics:
    """What one experiment measured. Fields unknown at the time of writing stay None (null in JSON)."""

    status: str  # "ok" | "failed"
    failure: str | None  # one-line reason when status is "failed"
    val_bpb: float | None
    training_seconds: float  # timed training steps only (warm-up/compile steps excluded)
    total_seconds: float  # from harness.start to the end of harness.finish
    peak_vram_mb: float | None  # CUDA peak allocated on a GPU, peak RSS of the kernel on CPU
    mfu_percent: float | None  # None when the device's peak rate is unknown (CPU, unlisted GPUs)
    total_tokens_M: float  # training tokens served by run.batches, in millions
    num_steps: int
    num_params_M: float | None
    depth: int | None
    seed: int
    device: str
    profile: str
    budget_seconds: float | None  # the budget in force: exactly one of these three is set (budget_flops below)
    budget_tokens: int | None
    checkpoint: str | None  # the trained weights, saved before evaluation
    program: str | None = None  # the eager model exported (torch.export) for the clean re-score
    export_failure: str | None = None  # why the export failed, when it did (a keep then cannot be verified)
    # the FLOP budget (harness/flops.py): informative figures of this kernel; the loop verifies the budget
    # outside it (integrity/budget.py)
    budget_flops: float | None = None
    flops: int | None = None  # training FLOPs used: tokens served x the counted first step's FLOPs per token
    flops_per_token: float | None = None  # the counted first step's FLOPs per token (forward, backward, optimizer)


def write_metrics(path: str | os.PathLike, metrics: Metrics) -> Path:
    """Write `metrics` as JSON to `path` atomically: a reader sees the old file, no file, or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {name: _finite_or_none(value) for name, value in asdict(metrics).items()}
    atomic_write_bytes(path, (json.dumps(record, indent=2) + "\n").encode())
    return path


def read_metrics(path: str | os.PathLike) -> dict | None:
    """The metrics record at `path`, or None when there is none (or only a torn, unreadable one)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _finite_or_none(value):
    # JSON has no NaN or Infinity; a non-finite measurement is an unknown one.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def finite_figure(value) -> int | float | None:
    """`value` when it is a finite number, else None: what the loop takes from a metrics.json the kernel wrote
    (an experiment may have written anything there)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value
