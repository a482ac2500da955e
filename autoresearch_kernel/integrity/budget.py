"""The budget verified outside the experiment's kernel: a pure decision from figures the loop trusts.

`run.done()` is advisory: candidate code may ignore it, train again on batches it kept, or write anything into
metrics.json. After each candidate's run the loop decides from what the experiment cannot forge:

    forward FLOPs per token   counted by the scorer over the exported program, outside the jail
    forward us per token      the scorer's compute microseconds per scored token of that program's evaluation
    compute seconds           on a CPU the CPU seconds of the jail's whole process tree (usage.py); on a GPU,
                              whose work CPU time does not show, the run's wall seconds; both measured by the loop

and the tokens the kernel says it was served (a kernel that under-reports them still spends the seconds).
A run is over its budget when either test fails (`verify`):

    FLOPs     TRAIN_FACTOR x forward FLOPs per token x tokens  >  allowed x (1 + tolerance.flops)
              allowed: F under a FLOP budget; TRAIN_FACTOR x forward FLOPs per token x budget_tokens under a
              token budget (that is, tokens > budget_tokens x (1 + tolerance)); no FLOPs test under a time budget
    seconds   compute seconds  >  the baseline's mean compute seconds x scale x (1 + tolerance.seconds)
              scale: 1 under a time budget (every candidate may spend what the baseline spent); under a token
              budget the candidate's forward FLOPs per token over the baseline's (a larger model takes longer
              on the same tokens); under a FLOP budget the candidate's compute seconds per forward FLOP over
              the baseline's, as the scorer measured both (`flop_scale`)

TRAIN_FACTOR prices a training token at three forward passes (the backward pass costs about two); the
harness's own count (harness/flops.py) also includes the optimizer, so an honest run under a FLOP budget is
priced below F here (the shipped baseline at 0.79 F: 19.48 MFLOP per token counted in training, 5.11 MFLOP
per token forward). A run past `ceiling_seconds` (the most any run on its budget could be allowed) is stopped
while it runs. Nothing here reads files or clocks: tests/test_budget.py covers it.
"""
from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

TRAIN_FACTOR = 3.0  # training FLOPs per forward FLOP: forward once, backward about twice
# The most a FLOP budget's compute seconds scale for a program slower per FLOP than the baseline's. It bounds
# what a program padded with work the FLOP count does not see (elementwise operators, say) can buy; the
# cheapest honest shapes measured reach it (a ninth of the baseline's FLOPs per token: 3.16, README) and rely
# on the tolerance's slack beyond it.
MAX_FLOP_SCALE = 3.0
STATUS = "over-budget"  # the results row's status of a run over its budget: never kept, reverted


@dataclass(frozen=True)
class Tolerance:
    """How far past its budget a run may go before it is over (relative; see the README's figures).

    flops: the FLOPs test's slack for an honest run priced above the harness's count: a model trained on
    shorter rows than the scorer's (its attention per token is cheaper in training), or one without Muon's
    extra matrix products. A run that trains on twice its budget is priced at 1.58 F or more (the baseline's
    0.79 F doubled), well past 1.25 F.
    seconds: the compute-seconds test's slack for machine load and for models that use the cores less
    efficiently per FLOP. Twice the budget's training adds the baseline's training seconds once more.
    """

    flops: float = 0.25
    seconds: float = 0.5

    def __post_init__(self) -> None:
        if self.flops < 0 or self.seconds < 0:
            raise ValueError(f"budget tolerances must be >= 0, got {self}")


@dataclass(frozen=True)
class Spent:
    """What one run used, as the trusted side measured it (None: not measured)."""

    tokens: float  # training tokens the kernel reports it was served
    forward_flops_per_token: float | None  # the scorer's count over the exported program
    seconds: float | None  # compute seconds: CPU seconds of the process tree on a CPU, wall seconds on a GPU
    forward_us_per_token: float | None = None  # the scorer's compute microseconds per token of its evaluation


@dataclass(frozen=True)
class Reference:
    """The baseline's own runs on the same budget: what a run that keeps to it spends."""

    seconds: float | None  # mean compute seconds
    forward_flops_per_token: float | None  # mean forward FLOPs per token
    forward_us_per_token: float | None = None  # mean of the scorer's compute microseconds per token

    @classmethod
    def of(cls, runs: Iterable[Spent]) -> Reference:
        runs = list(runs)

        def mean(name: str) -> float | None:
            figures = [getattr(r, name) for r in runs if getattr(r, name)]
            return statistics.fmean(figures) if figures else None

        return cls(mean("seconds"), mean("forward_flops_per_token"), mean("forward_us_per_token"))


@dataclass(frozen=True)
class Verdict:
    over: bool
    reason: str  # names the figures; "" when within budget
    priced_flops: float | None  # TRAIN_FACTOR x forward FLOPs per token x tokens, when known


def verify(kind: str, amount: float, spent: Spent, reference: Reference | None,
           tolerance: Tolerance = Tolerance()) -> Verdict:
    """Whether one run kept to its budget (`kind`: flops | tokens | seconds, `amount` of it); see the docstring."""
    if kind not in ("flops", "tokens", "seconds"):
        raise ValueError(f"unknown budget kind {kind!r}")
    forward = spent.forward_flops_per_token
    priced = TRAIN_FACTOR * forward * spent.tokens if forward else None
    reasons = []
    if kind == "flops" and priced is not None and priced > amount * (1 + tolerance.flops):
        reasons.append(f"{priced:.3g} FLOPs ({TRAIN_FACTOR:g} x {forward:.4g} forward FLOPs per token x "
                       f"{spent.tokens:,.0f} tokens) > {1 + tolerance.flops:g} x the budget's {amount:.3g}")
    if kind == "tokens" and spent.tokens > amount * (1 + tolerance.flops):
        reasons.append(f"{spent.tokens:,.0f} tokens > {1 + tolerance.flops:g} x the budget's {amount:,.0f}")
    allowed = allowed_seconds(kind, spent, reference, tolerance)
    if allowed is not None and spent.seconds is not None and spent.seconds > allowed:
        reasons.append(f"{spent.seconds:.1f} compute seconds > {allowed:.1f} allowed ({1 + tolerance.seconds:g} x "
                       f"the baseline's {reference.seconds:.1f}{_scaled(kind, spent, reference)})")
    if reasons:
        return Verdict(True, f"{STATUS}: " + "; ".join(reasons), priced)
    return Verdict(False, "", priced)


def allowed_seconds(kind: str, spent: Spent, reference: Reference | None, tolerance: Tolerance) -> float | None:
    """The compute seconds a run on this budget may take; None when the baseline measured none."""
    if reference is None or not reference.seconds:
        return None
    return reference.seconds * _scale(kind, spent, reference) * (1 + tolerance.seconds)


def ceiling_seconds(kind: str, reference: Reference | None, tolerance: Tolerance) -> float | None:
    """The most compute seconds any run on this budget could be allowed, known before it runs: past them the
    loop stops it (over its budget whatever it scores), rather than let a model cheap per token train for ten
    minutes to be recorded over-budget. None where no such bound is known: no baseline measured yet, or a token
    budget (a model costlier per token may take as much longer)."""
    if reference is None or not reference.seconds or kind not in ("flops", "seconds"):
        return None
    return reference.seconds * (MAX_FLOP_SCALE if kind == "flops" else 1.0) * (1 + tolerance.seconds)


def _scale(kind: str, spent: Spent, reference: Reference) -> float:
    if kind == "tokens" and spent.forward_flops_per_token and reference.forward_flops_per_token:
        return spent.forward_flops_per_token / reference.forward_flops_per_token
    if kind == "flops":
        return flop_scale(spent, reference)
    return 1.0


def flop_scale(spent: Spent, reference: Reference) -> float:
    """Under a FLOP budget, how much more compute time the run's model needs per FLOP than the baseline's.

    A FLOP budget gives a model cheap per token more tokens, and on a CPU such a model does more work the FLOP
    count leaves out per FLOP it counts (the vocabulary's softmax, norms, per-step overheads): at the same FLOPs
    it takes longer. The scorer ran both programs' forward passes on the same machine, so their compute
    seconds per forward FLOP say by how much. Never below 1 (a model faster per FLOP is held to the baseline's
    seconds) and at most MAX_FLOP_SCALE."""
    figures = (spent.forward_us_per_token, spent.forward_flops_per_token,
               reference.forward_us_per_token, reference.forward_flops_per_token)
    if not all(figures):
        return 1.0
    us, flops, reference_us, reference_flops = figures
    return min(max((us / flops) / (reference_us / reference_flops), 1.0), MAX_FLOP_SCALE)


def _scaled(kind: str, spent: Spent, reference: Reference) -> str:
    scale = _scale(kind, spent, reference)
    if scale == 1.0:
        return ""
    return f" x {scale:.3g} for its {'FLOPs per token' if kind == 'tokens' else 'compute seconds per FLOP'}"
