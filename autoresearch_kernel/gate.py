"""The keep / discard / crash decision: a pure function of the best so far, the candidate's runs and the noise.

The reference keeps any candidate whose val_bpb is lower than the best, so seed luck alone produces false
keeps. Here the unmodified notebook is run first on a few seeds (`baseline`): their mean is the first best
and their spread is the noise floor. A candidate is kept only if it beats the best by more than

    margin = max(min_margin, z * noise_std)

and a candidate that beats it by less than `confirm_band * margin` above that margin is re-run on another
seed first (decision "confirm"); the mean of its runs then decides. Equal or worse: discard. A missing or
non-finite metric: crash. A candidate whose run is identical to its parent's on the same seed changed nothing
that was measured: "noop" (`noop_decision`), not a discard that looks like a measurement. Lower val_bpb is better (`LOWER_IS_BETTER`); the margin used is part of every
decision so that each results row records it.

Nothing here reads files, clocks or random numbers: `tests/test_gate.py` covers it exhaustively.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

METRIC = "val_bpb"
LOWER_IS_BETTER = True  # bits per byte: fewer is better


@dataclass(frozen=True)
class GateConfig:
    """How strict the gate is. Defaults suit the CPU profile's noise (a few 1e-3 bpb between seeds)."""

    z: float = 2.0  # noise standard deviations a gain must exceed
    min_margin: float = 0.001  # absolute floor of the margin in bpb (also used when the noise is 0)
    confirm_band: float = 1.0  # gains within margin .. margin * (1 + confirm_band) are re-run first
    confirm_runs: int = 1  # extra seeds a borderline candidate gets before the decision is final

    def __post_init__(self) -> None:
        if self.z < 0 or self.min_margin < 0 or self.confirm_band < 0 or self.confirm_runs < 0:
            raise ValueError(f"gate settings must be >= 0, got {self}")


@dataclass(frozen=True)
class Noise:
    """The baseline's spread: its mean is the first best, its standard deviation sets the margin."""

    mean: float
    std: float  # sample standard deviation (ddof=1); 0.0 for a single seed
    runs: int


@dataclass(frozen=True)
class Decision:
    """What the gate decided for one candidate, with the numbers that decided it."""

    status: str  # keep | discard | crash | noop | confirm (run again on another seed, then decide)
    value: float | None  # the candidate's val_bpb: the mean of its runs; None for a crash
    best: float | None  # the best after this decision (the candidate's value when kept)
    margin: float  # the margin the candidate had to beat; recorded on the row
    gain: float | None  # best_before - value (positive: better), None for a crash
    reason: str  # one line for logs and the dashboard


def _finite(value: float | None) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def noise_floor(values: list[float | None]) -> Noise | None:
    """The baseline's mean and spread over its finite runs; None when no run produced a metric."""
    finite = [float(v) for v in values if _finite(v)]
    if not finite:
        return None
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return Noise(mean=statistics.fmean(finite), std=std, runs=len(finite))


def margin_for(noise_std: float, config: GateConfig) -> float:
    """The gain a candidate must exceed: the noise times z, never below the absolute minimum."""
    return max(config.min_margin, config.z * max(noise_std, 0.0))


def improvement(best: float, value: float) -> float:
    """How much better `value` is than `best` in the metric's direction (positive: better)."""
    return best - value if LOWER_IS_BETTER else value - best


def decide(best: float, runs: list[float | None], noise_std: float, config: GateConfig = GateConfig()) -> Decision:
    """Decide one candidate from its runs so far (the first run, then any confirmation runs).

    `best` is the best so far (the baseline mean at the start); `runs` holds the candidate's val_bpb per
    run, None where a run produced no metric.
    """
    if not _finite(best):
        raise ValueError(f"the best so far must be a finite number, got {best!r}: run the baseline first")
    if not runs:
        raise ValueError("decide() needs at least one run of the candidate")
    margin = margin_for(noise_std, config)
    if not all(_finite(v) for v in runs):
        return Decision("crash", None, best, margin, None, "no metric: the run failed")
    value = statistics.fmean(float(v) for v in runs)
    gain = improvement(best, value)
    beats = f"{gain:+.6f} against a margin of {margin:.6f}"
    if gain <= margin:
        return Decision("discard", value, best, margin, gain, f"not better enough: {beats}")
    borderline = gain <= margin * (1.0 + config.confirm_band)
    if borderline and len(runs) < 1 + config.confirm_runs:
        return Decision("confirm", value, best, margin, gain, f"borderline, re-run on another seed: {beats}")
    return Decision("keep", value, value, margin, gain, f"better: {beats}")


def noop_decision(best: float, value: float, noise_std: float, seed: int, config: GateConfig = GateConfig()) -> Decision:
    """A candidate whose run on `seed` is identical to its parent's: nothing was measured; reverted like a discard."""
    return Decision("noop", value, best, margin_for(noise_std, config), improvement(best, value),
                    f"no-op: the same val_bpb and tokens as its parent on seed {seed}; the edit changed nothing measured")


def baseline_decision(runs: list[float | None], config: GateConfig = GateConfig()) -> Decision:
    """The baseline's outcome: keep with its mean as the first best, or crash when any seed failed.

    A baseline seed that fails means the unmodified notebook (or the data) is broken: nothing can be
    measured against it, so the loop stops rather than guessing.
    """
    noise = noise_floor(runs)
    if noise is None or noise.runs != len(runs):
        margin = margin_for(noise.std if noise else 0.0, config)
        return Decision("crash", None, None, margin, None, "the unmodified notebook failed on a baseline seed")
    margin = margin_for(noise.std, config)
    return Decision("keep", noise.mean, noise.mean, margin, 0.0, f"baseline over {noise.runs} seeds, std {noise.std:.6f}")
