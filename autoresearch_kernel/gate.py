"""The keep / discard / crash decision: a pure function of the best's runs, the candidate's runs and the noise.

The reference keeps any candidate whose val_bpb is lower than the best, so seed luck alone produces false
keeps. Here the unmodified notebook is run first on a few seeds (`baseline`): their mean is the first best.
A candidate is then judged by its mean against the best's mean (`decide_by_means`): the mean of all the best's
runs, never its luckiest draw, in units of the standard error of their difference,

    se = noise.upper * sqrt(1 / n_best + 1 / n_candidate),    margin = max(min_margin, z * se)

Kept at once when its gain exceeds the margin by the band; re-run on another seed while the mean's gain is
borderline (decision "confirm", up to `confirm_runs` times), kept as soon as the mean's gain exceeds the
margin (which shrinks with every run), discarded when it falls to one standard error or the runs are used up.
Equal or worse: discard. A missing or non-finite metric: crash. A candidate whose run is identical to its
parent's on the same seed changed nothing that was measured: "noop" (`noop_decision`), not a discard that
looks like a measurement.

The noise is estimated in noise.py (`NoiseEstimate.pooled`: every repeated measurement of the run pooled with a
per-profile default) and bounded by the gate's settings here (`estimate_noise`); decisions use a one-sided
upper confidence bound of its sd. Why not the baseline's spread alone: three seeds underestimate the noise,
and a margin of z times that sd kept one in twenty candidates that only re-drew the initialisation (issue 12;
`bench/bench_gate.py` measures it).

The paired rule (`decide_paired`, the default: `GateConfig.rule`) compares runs seed by seed instead (common
random numbers). Every run of the candidate on seed s is paired with the best's run on the same seed s (the
loop runs the best on a seed it lacks, settle.py), and the decision uses the paired gains
d_s = improvement(best_s, candidate_s). A change that keeps the initialisation and the data order (a learning
rate, a schedule) moves val_bpb far less on one seed than a new seed does (issue 20: paired sd 0.0026 against
a seed-to-seed sd of 0.0185 at 65,536 tokens), so its pairs cancel most of the noise. A change that draws the
initialisation again (new shapes, or the same shapes and other random-number consumption) gets no such help:
its paired sd is sqrt(2) times the seed-to-seed sd. Which kind a candidate is, is told from its own pairs only.
The parameter shapes cannot tell: one `torch.randn(N)` before the model is built re-draws everything and
changes no shape, and anything the jail reports about its initialisation is the candidate's word. So:
- one pair (look 1): no spread of its own yet, so the spread is the conservative prior, the re-draw's:
  sqrt(2) times the run's pooled seed-to-seed noise bound (`NoiseEstimate.upper`, which learns from the
  baseline seeds, confirmations and the best's extra runs). A first pair that gains nothing (<= `paired_floor`)
  is discarded after one run; one that beats z_1 prior sds (a gain so large that no re-draw explains it) is
  kept at once; anything between earns another seed;
- two or more pairs: the spread is the sample sd s of the candidate's own pairs, and the margin is
  t_n * s / sqrt(n), with t_n the quantile of Student's t on n - 1 degrees of freedom (the exact form of
  "the mean against an upper confidence bound of the spread": it accounts for s being estimated from n pairs,
  as the chi-square bound of the pooled noise does). Keeps start at `paired_first_look` pairs (with two pairs,
  one degree of freedom, the t quantile is 30 to 60: no real gain clears it); before that, and at every look,
  a mean gain at or below `paired_futility` standard errors is discarded, and so is one whose upper
  confidence bound (`paired_floor_confidence`) stays below `min_margin`, which no keep can go under (looks
  that can only discard add no false keeps); at `paired_runs` runs the last look decides.
Optional stopping: every look is another chance for seed luck, so one fixed margin would keep more than its
nominal share of null changes. The looks' thresholds spend one total false-keep budget
(`false_keep_rate`): look 1 gets `first_look_share` of it, looks `paired_first_look`..`paired_runs` share the
rest in proportion to n - 1 (late looks, where a real gain shows, get more). A keep needs one look to clear
its threshold, so by the union bound the whole sequential rule keeps a change with no true gain at most
`false_keep_rate` of the time, whatever its paired sd (the t statistic does not depend on it) and the look-1
prior only needs to be an upper bound of the sd. tests/test_gate.py simulates it: false keeps for an
initialisation-preserving (sd 0.0026) and a re-drawing (sd 0.026) null change, and the power at 0.005, 0.01
and 0.02 bpb; bench/bench_power.py measures it on real runs.

The metric's direction comes from the task (`GateConfig.lower_is_better`, set by the loop from the task's
`Metric`), and `improvement` is the one place that applies it: every comparison of two values goes through
it. A deterministic task (`deterministic`, noise 0, with `confirm_runs=0`) keeps any gain above `min_margin`. The
margin used is part of every decision so that each results row records it. Nothing here reads files, clocks or random numbers: `tests/test_gate.py` covers it.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from autoresearch_kernel.distributions import t_quantile
from autoresearch_kernel.noise import (  # noqa: F401 (the noise's names, as the gate's callers know them)
    PROFILE_NOISE_SD,
    NoiseEstimate,
    chi_square_quantile,
    is_finite,
    repeated_groups,
)

METRIC = "val_bpb"  # the GPT task's metric; a run's own comes from its task (tasks.Metric)
LOWER_IS_BETTER = True  # the default direction (bits per byte: fewer is better)
RULES = ("paired", "means")


@dataclass(frozen=True)
class GateConfig:
    """How strict the gate is, in standard errors of the difference of the two means (see the module docstring)."""

    z: float = 2.0  # standard errors a gain must exceed
    min_margin: float = 0.001  # absolute floor of the margin in bpb (also used when the noise is 0)
    confirm_band: float = 1.0  # gains up to margin * (1 + confirm_band) are re-run before they are kept
    # Extra seeds a candidate gets while its mean stays borderline (between confirm_floor standard errors and
    # the margin); the last one decides. Three, not one: in the simulation of tests/test_gate.py a real gain of
    # 3 noise sds early in a run is kept 44% of the time instead of 23%, and seed luck no more often (the first
    # run must already clear one standard error). The compute goes to the candidates that look like gains.
    confirm_runs: int = 3
    # A first run whose gain lies within confirm_floor standard errors .. the band's top is re-run, so a real
    # gain whose first draw was unlucky gets a second chance and a lucky draw must repeat its luck.
    confirm_floor: float = 1.0
    prior_sd: float | None = None  # the noise default; None: the profile's (PROFILE_NOISE_SD)
    prior_weight: float = 4.0  # degrees of freedom the default counts as: a few runs' worth, not its 20
    noise_confidence: float = 0.9  # decisions use this one-sided upper confidence bound of the noise sd
    lower_is_better: bool = LOWER_IS_BETTER  # the metric's direction: the loop sets it from the task's Metric
    deterministic: bool = False  # the task's runs do not scatter (noise 0): any gain above min_margin is kept
    # -- the paired rule (issue 20; see the module docstring). confirm_runs, confirm_band and confirm_floor
    # are the means rule's; min_margin and the noise's prior apply to both.
    rule: str = "paired"  # paired: seed-by-seed differences with the best | means: decide_by_means
    # The whole sequential rule keeps a change without a true gain at most this often. 1%: of 20 null
    # changes, none is kept 82% of the time (the union bound; simulated, the rule keeps about half that).
    false_keep_rate: float = 0.01
    paired_runs: int = 8  # the most runs a candidate gets (the first and its confirmations)
    paired_first_look: int = 3  # the fewest pairs a keep after the first run needs
    paired_futility: float = 0.5  # a mean gain at or below this many standard errors is discarded
    paired_floor: float = 0.0  # a first pair gaining this (bpb) or less is discarded after one run
    first_look_share: float = 0.1  # of false_keep_rate, spent on keeping a huge first gain at once
    # From two pairs on, a change whose gain is confidently below min_margin (the one-sided upper bound at this
    # confidence, Student's t on its own pairs) can never be kept: discarded instead of spending its seeds.
    # The consistent tiny gains of a mutate search (WEIGHT_DECAY 0.2 -> 0.3: +0.0004, sd 0.0003) took 8 runs.
    # None: no such look (a tag stored before it resumes without it).
    paired_floor_confidence: float | None = 0.95

    def __post_init__(self) -> None:
        if self.z < 0 or self.min_margin < 0 or self.confirm_band < 0 or self.confirm_runs < 0:
            raise ValueError(f"gate settings must be >= 0, got {self}")
        if self.confirm_floor < 0 or self.prior_weight < 0 or (self.prior_sd is not None and self.prior_sd <= 0):
            raise ValueError(f"gate settings must be >= 0 (prior_sd > 0), got {self}")
        if not 0.5 <= self.noise_confidence < 1.0:
            raise ValueError(f"noise_confidence must be in [0.5, 1), got {self.noise_confidence}")
        if self.rule not in RULES:
            raise ValueError(f"unknown gate rule {self.rule!r}: use one of {RULES}")
        if not (0.0 < self.false_keep_rate < 0.5 and 0.0 <= self.first_look_share < 1.0
                and 2 <= self.paired_first_look <= self.paired_runs):
            raise ValueError(f"paired settings: 0 < false_keep_rate < 0.5, 0 <= first_look_share < 1, "
                             f"2 <= paired_first_look <= paired_runs; got {self}")
        if self.paired_floor_confidence is not None and not 0.5 <= self.paired_floor_confidence < 1.0:
            raise ValueError(f"paired_floor_confidence must be None or in [0.5, 1), got {self.paired_floor_confidence}")

    @classmethod
    def from_stored(cls, stored: dict) -> GateConfig:
        """The gate a run's config.json holds. A run started before the paired rule stored no `rule`: it was
        measured with the means rule and goes on with it; one started before the floor's look goes on without
        it; settings added since take their defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{"rule": "means", "paired_floor_confidence": None,
                      **{k: v for k, v in stored.items() if k in known}})

    def look_rates(self) -> dict[int, float]:
        """The false-keep budget of each look of the paired rule: {pairs: rate}; the rates sum to the budget."""
        later = range(self.paired_first_look, self.paired_runs + 1)
        rest = self.false_keep_rate * (1.0 - self.first_look_share)
        weights = sum(n - 1 for n in later)
        return {1: self.false_keep_rate * self.first_look_share, **{n: rest * (n - 1) / weights for n in later}}


@dataclass(frozen=True)
class Noise:
    """The baseline's runs summed up: their mean is the first best; their spread is one part of the noise."""

    mean: float
    std: float  # sample standard deviation (ddof=1); 0.0 for a single seed
    runs: int


@dataclass(frozen=True)
class Decision:
    """What the gate decided for one candidate, with the numbers that decided it."""

    status: str  # keep | discard | crash | noop | confirm (run again on another seed, then decide)
    value: float | None  # the candidate's metric: the mean of its runs; None for a crash
    best: float | None  # the best after this decision (the candidate's value when kept)
    margin: float  # the margin the candidate had to beat; recorded on the row
    gain: float | None  # improvement(best_before, value): positive is better; None for a crash
    reason: str  # one line for logs and the dashboard


def noise_floor(values: list[float | None]) -> Noise | None:
    """The baseline's mean and spread over its finite runs; None when no run produced a metric."""
    finite = [float(v) for v in values if is_finite(v)]
    if not finite:
        return None
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return Noise(mean=statistics.fmean(finite), std=std, runs=len(finite))


def improvement(best: float, value: float, lower_is_better: bool = LOWER_IS_BETTER) -> float:
    """How much better `value` is than `best` in the metric's direction (positive: better). The one place that
    knows the direction: every comparison of two metric values goes through here."""
    return best - value if lower_is_better else value - best


def noop_decision(best: float, value: float, margin: float, seed: int, config: GateConfig = GateConfig()) -> Decision:
    """A candidate whose run on `seed` is identical to its parent's: nothing was measured; reverted like a discard."""
    return Decision("noop", value, best, margin, improvement(best, value, config.lower_is_better),
                    f"no-op: the same result as its parent on seed {seed}; the edit changed nothing measured")


def baseline_decision(runs: list[float | None], noise: NoiseEstimate, config: GateConfig = GateConfig()) -> Decision:
    """The baseline's outcome: keep with its mean as the first best, or crash when any seed failed.

    A baseline seed that fails means the unmodified notebook (or the data) is broken: nothing can be
    measured against it, so the loop stops rather than guessing. The margin recorded is the one the first
    candidate's single run will have to beat.
    """
    floor = noise_floor(runs)
    margin = (first_look_margin(noise, config) if config.rule == "paired"
              else margin_for_means(noise, floor.runs if floor else 1, 1, config))
    if floor is None or floor.runs != len(runs):
        return Decision("crash", None, None, margin, None, "the unmodified notebook failed on a baseline seed")
    return Decision("keep", floor.mean, floor.mean, margin, 0.0,
                    f"baseline over {floor.runs} seeds, std {floor.std:.6f}; noise sd <= {noise.upper:.6f}")


# -- the noise, as this gate's settings bound it (noise.py estimates it) ----------------------------------
def estimate_noise(groups: Iterable[Sequence[float | None]], profile: str,
                   config: GateConfig = GateConfig()) -> NoiseEstimate:
    """The run's noise: its repeated runs pooled with the profile's default (or `config.prior_sd`); a
    deterministic task's is known to be 0."""
    if config.deterministic:
        return NoiseEstimate.known(0.0)
    prior = config.prior_sd if config.prior_sd is not None else PROFILE_NOISE_SD.get(
        profile, max(PROFILE_NOISE_SD.values()))  # a profile nobody measured: the widest default
    return NoiseEstimate.pooled(groups, prior, config.prior_weight, config.noise_confidence)


# -- the decision: means against means, in standard errors of their difference -------------------------------
def standard_error(noise: NoiseEstimate, best_runs: int, candidate_runs: int) -> float:
    """The standard error of (best mean - candidate mean) from the noise bound and each side's run count."""
    return noise.upper * math.sqrt(1.0 / best_runs + 1.0 / candidate_runs)


def margin_for_means(noise: NoiseEstimate, best_runs: int, candidate_runs: int = 1,
                     config: GateConfig = GateConfig()) -> float:
    """The gain the candidate's mean must exceed: z standard errors of the difference, never below the minimum."""
    return max(config.min_margin, config.z * standard_error(noise, best_runs, candidate_runs))


def decide_by_means(best_runs: Sequence[float | None], runs: Sequence[float | None], noise: NoiseEstimate,
                    config: GateConfig = GateConfig()) -> Decision:
    """Decide one candidate by comparing its mean with the best's mean.

    `best_runs`: every run of the kept notebook (the baseline's seeds, or a kept candidate's runs with its
    confirmations); `runs`: the candidate's runs so far. Kept at once when the first run's gain exceeds the
    margin by the band; re-run while the mean's gain lies above `confirm_floor` standard errors but not enough
    for a keep, at most `confirm_runs` times; kept as soon as a mean of two or more runs beats its margin.
    A keep's best is the mean of the candidate's runs.
    """
    best_values = [float(v) for v in best_runs if is_finite(v)]
    if not best_values:
        raise ValueError(f"the best so far needs at least one finite run, got {list(best_runs)!r}: "
                         "run the baseline first")
    if not runs:
        raise ValueError("decide_by_means() needs at least one run of the candidate")
    best = statistics.fmean(best_values)
    se = standard_error(noise, len(best_values), len(runs))
    margin = margin_for_means(noise, len(best_values), len(runs), config)
    if not all(is_finite(v) for v in runs):
        return Decision("crash", None, best, margin, None, "no metric: the run failed")
    value = statistics.fmean(float(v) for v in runs)
    gain = improvement(best, value, config.lower_is_better)
    beats = (f"{gain:+.6f} against a margin of {margin:.6f} ({len(runs)} run(s) vs the best's {len(best_values)}, "
             f"se {se:.6f}, noise sd <= {noise.upper:.6f} on {noise.dof:g} dof)")
    if gain > margin * (1.0 + config.confirm_band):
        return Decision("keep", value, value, margin, gain, f"better: {beats}")
    last = len(runs) >= 1 + config.confirm_runs  # no re-run left: this mean decides
    if gain > margin and (len(runs) > 1 or last):
        return Decision("keep", value, value, margin, gain, f"better{', confirmed' if len(runs) > 1 else ''}: {beats}")
    floor = min(config.confirm_floor * se, margin) if se > 0 else margin  # without noise a re-run says nothing new
    if gain <= floor or last:
        return Decision("discard", value, best, margin, gain, f"not better enough: {beats}")
    return Decision("confirm", value, best, margin, gain, f"borderline, re-run on another seed: {beats}")


# -- the paired decision: seed-by-seed gains over the best, a spending rule over the looks ------------------
@dataclass(frozen=True)
class Pair:
    """One seed's comparison: the best's run and the candidate's run on it (None: that run has no metric)."""

    seed: int
    best: float | None
    value: float | None
    lower_is_better: bool = LOWER_IS_BETTER  # the metric's direction (the task's)

    @property
    def gain(self) -> float | None:
        if not (is_finite(self.best) and is_finite(self.value)):
            return None
        return improvement(self.best, self.value, self.lower_is_better)


def decide_paired(pairs: Sequence[Pair], best: float, noise: NoiseEstimate,
                  config: GateConfig = GateConfig()) -> Decision:
    """Decide one candidate from its runs paired with the best's runs on the same seeds (module docstring).

    `pairs`: one per run of the candidate so far, in order (a run whose seed the best has no run on carries
    best None and counts as a run, not as a look); `best`: the best's value as rows record it; `noise`: the
    run's pooled seed-to-seed noise, of which sqrt(2) times the bound is the spread of a first pair.
    The value and a keep's best are the mean of the candidate's runs; the gain is the mean paired gain.
    """
    if not pairs:
        raise ValueError("decide_paired() needs at least one run of the candidate")
    prior = math.sqrt(2.0) * noise.upper  # a re-drawing change's paired sd: the conservative spread
    rates = config.look_rates()
    first = first_look_margin(noise, config)
    if not all(is_finite(p.value) for p in pairs):
        return Decision("crash", None, best, first, None, "no metric: the run failed")
    value = statistics.fmean(float(p.value) for p in pairs)
    gains = [p.gain for p in pairs if p.gain is not None]
    n, last = len(gains), len(pairs) >= config.paired_runs
    if n == 0:  # the best has no run on any of these seeds (its runs crashed): nothing to compare yet
        status = "discard" if last else "confirm"
        return Decision(status, value, best, first, None,
                        "no run of the best on these seeds to pair with")
    mean = statistics.fmean(gains)
    if n == 1:
        margin = first
        said = f"first pair {mean:+.6f} against {margin:.6f} (the re-draw prior: paired sd <= {prior:.6f})"
        if mean > margin:
            return Decision("keep", value, value, margin, mean, f"better at once: {said}")
        status = "discard" if mean <= config.paired_floor or last else "confirm"
        return Decision(status, value, best, margin, mean,
                        f"{'not better' if status == 'discard' else 'promising, re-run on another seed'}: {said}")
    se = statistics.stdev(gains) / math.sqrt(n)
    look = max(n, config.paired_first_look)
    margin = max(config.min_margin, t_quantile(1.0 - rates[min(look, config.paired_runs)], look - 1) * se)
    said = (f"{n} pairs, mean gain {mean:+.6f} against {margin:.6f} (paired sd {se * math.sqrt(n):.6f}, "
            f"se {se:.6f}; look budget {rates[min(look, config.paired_runs)]:.4f})")
    if n >= config.paired_first_look and mean > margin:
        return Decision("keep", value, value, margin, mean, f"better, confirmed: {said}")
    if mean <= config.paired_futility * se or last:
        return Decision("discard", value, best, margin, mean, f"not better enough: {said}")
    confidence = config.paired_floor_confidence
    upper = mean + t_quantile(confidence, n - 1) * se if confidence is not None else math.inf
    if upper < config.min_margin:
        return Decision("discard", value, best, margin, mean, f"a gain below the minimum of {config.min_margin:g} "
                        f"(at most {upper:+.6f} at {confidence:.0%} confidence): {said}")
    return Decision("confirm", value, best, margin, mean, f"borderline, re-run on another seed: {said}")


def first_look_margin(noise: NoiseEstimate, config: GateConfig = GateConfig()) -> float:
    """What a first pair must gain to be kept at once: z_1 re-draw sds (sqrt(2) x the noise bound), at least
    the minimum; what rows and the live status show as the paired rule's margin before a decision."""
    rate = config.look_rates()[1]
    z = statistics.NormalDist().inv_cdf(1.0 - rate) if rate > 0 else math.inf
    return max(config.min_margin, z * math.sqrt(2.0) * noise.upper)
