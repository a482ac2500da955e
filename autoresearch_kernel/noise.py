"""How much one run's metric scatters between seeds: every repeated measurement of the run, pooled with a default.

The gate (gate.py) never trusts the baseline's spread alone: three seeds underestimate the noise (their sample
sd falls below half the true sd about one time in five). So `NoiseEstimate.pooled` pools the spread of every
repeated measurement the run makes (the baseline seeds, confirmations, re-runs of one commit on distinct seeds:
`repeated_groups`) with a per-profile default measured offline (`PROFILE_NOISE_SD`, counted as a few degrees
of freedom), and decisions use a one-sided upper confidence bound of its sd (`NoiseEstimate.upper`), wide while
the degrees of freedom are few. Pure functions: nothing here reads files, clocks or random numbers.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def is_finite(value: float | None) -> bool:
    """A number the gate can use: not None, not NaN, not infinite."""
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


# The sd of val_bpb between seeds of one unchanged notebook, per profile, measured offline: the prior the
# pooled noise starts from (a run's own repeated runs soon outweigh it).
PROFILE_NOISE_SD = {
    # The shipped sandbox at the default 45 s budget on 2 cores (issue 12). A token budget spreads less
    # (65,536 tokens: 0.0116 over 22 re-draws of the initialisation); the pooled runs learn that.
    "cpu": 0.0156,
    # Not measured yet on an H100-class GPU at 300 s. Conservative on purpose: several times the 1e-3 bpb steps
    # the reference's kept changes make, so that until a run has pooled its own repeats the gate errs towards
    # discarding. Replace it with a measurement (baseline seeds of one notebook) when one exists.
    "gpu": 0.005,
}


def chi_square_quantile(p: float, dof: float) -> float:
    """The p-quantile of the chi-square distribution with `dof` degrees of freedom (Wilson-Hilferty).

    Within 2 % of the exact value from 3 degrees of freedom on for the lower tail used here; below that it
    errs small, which widens the upper bound of the noise: the safe side. scipy is not a dependency for this.
    """
    if dof <= 0 or not 0.0 < p < 1.0:
        raise ValueError(f"chi-square quantile needs dof > 0 and 0 < p < 1, got dof={dof}, p={p}")
    z, a = statistics.NormalDist().inv_cdf(p), 2.0 / (9.0 * dof)
    return dof * max(1.0 - a + z * math.sqrt(a), 1e-3) ** 3


@dataclass(frozen=True)
class NoiseEstimate:
    """How much one run's val_bpb scatters between seeds, as the gate uses it."""

    sd: float  # pooled estimate: the repeated runs and the profile's default together
    upper: float  # one-sided upper confidence bound on sd: what decisions use
    dof: float  # degrees of freedom behind sd: the measured ones plus the default's weight
    measured_dof: int  # degrees of freedom from repeated runs alone

    @classmethod
    def pooled(cls, groups: Iterable[Sequence[float | None]], prior_sd: float | None, prior_weight: float = 4.0,
               confidence: float = 0.9) -> NoiseEstimate:
        """Pool the spread within each group of repeated runs (one notebook on distinct seeds) with a default.

        The default `prior_sd` counts as `prior_weight` degrees of freedom (the conjugate prior of a normal
        variance); each group of n finite runs adds n - 1. The upper bound is sqrt(dof * s^2 / chi2(1 - c, dof)).
        """
        squares, measured = 0.0, 0
        for group in groups:
            finite = [float(v) for v in group if is_finite(v)]
            if len(finite) > 1:
                mean = statistics.fmean(finite)
                squares += sum((v - mean) ** 2 for v in finite)
                measured += len(finite) - 1
        weight = prior_weight if prior_sd is not None else 0.0
        dof = measured + weight
        if dof <= 0:
            raise ValueError("no repeated runs and no default noise: nothing says how much a run scatters")
        sd = math.sqrt((squares + weight * (prior_sd or 0.0) ** 2) / dof)
        upper = sd * math.sqrt(dof / chi_square_quantile(1.0 - confidence, dof))
        return cls(sd=sd, upper=upper, dof=dof, measured_dof=measured)

    @classmethod
    def known(cls, sd: float) -> NoiseEstimate:
        """A noise known exactly (simulations, tests): no confidence margin on it."""
        return cls(sd=sd, upper=sd, dof=math.inf, measured_dof=0)


def repeated_groups(runs: Iterable[tuple[str, int, float | None]]) -> list[list[float]]:
    """Group (commit, seed, val_bpb) triples into the repeated measurements of each commit.

    One value per (commit, seed): a run repeated on the same seed re-draws nothing (the kernel is seeded), so
    counting it would shrink the noise. Runs without a metric are left out.
    """
    by_commit: dict[str, dict[int, float]] = {}
    for commit, seed, value in runs:
        if is_finite(value):
            by_commit.setdefault(commit, {}).setdefault(seed, float(value))
    return [list(seeds.values()) for seeds in by_commit.values()]
