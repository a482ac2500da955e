"""integrity/budget.py: the trusted decision whether a run kept to its budget, on figures the loop measured."""
import pytest

from autoresearch_kernel.integrity.budget import (
    MAX_FLOP_SCALE,
    Reference,
    Spent,
    Tolerance,
    ceiling_seconds,
    flop_scale,
    verify,
)

F = 1.25e12
FORWARD = 5.11e6  # the shipped baseline's forward FLOPs per token, as the scorer counts them
BASELINE = Reference(seconds=30.0, forward_flops_per_token=FORWARD)


def test_an_honest_run_under_a_flop_budget_is_within_it():
    verdict = verify("flops", F, Spent(65_536, FORWARD, 31.0), BASELINE)
    assert not verdict.over and verdict.reason == ""
    assert verdict.priced_flops == pytest.approx(3 * FORWARD * 65_536)  # 0.80 F: the optimizer is not priced


def test_twice_the_tokens_under_a_flop_budget_is_over_it_and_the_reason_names_the_figures():
    verdict = verify("flops", F, Spent(131_072, FORWARD, 31.0), BASELINE)
    assert verdict.over
    assert verdict.reason.startswith("over-budget: 2.01e+12 FLOPs (3 x 5.11e+06 forward FLOPs per token x 131,072 tokens)")
    assert "> 1.25 x the budget's 1.25e+12" in verdict.reason


def test_reused_batches_are_caught_by_the_compute_seconds():
    """Tokens reported within the budget, but the tree spent twice the baseline's CPU seconds."""
    verdict = verify("flops", F, Spent(65_536, FORWARD, 55.0), BASELINE)
    assert verdict.over and "55.0 compute seconds > 45.0 allowed (1.5 x the baseline's 30.0)" in verdict.reason
    assert not verify("flops", F, Spent(65_536, FORWARD, 44.9), BASELINE).over


def test_a_token_budget_counts_tokens_and_scales_the_seconds_by_the_models_flops():
    assert verify("tokens", 65_536, Spent(131_072, FORWARD, 30.0), BASELINE).over
    bigger = Spent(65_536, 2 * FORWARD, 80.0)  # twice the FLOPs per token: up to 2 x 1.5 x 30 s allowed
    assert not verify("tokens", 65_536, bigger, BASELINE).over
    over = verify("tokens", 65_536, Spent(65_536, 2 * FORWARD, 95.0), BASELINE)
    assert over.over and "x 2 for its FLOPs per token" in over.reason


def test_a_time_budget_is_checked_on_compute_seconds_only():
    assert not verify("seconds", 45.0, Spent(10**7, FORWARD, 40.0), BASELINE).over  # tokens are free there
    assert verify("seconds", 45.0, Spent(10**5, FORWARD, 60.0), BASELINE).over


def test_without_measurements_nothing_is_judged_over():
    assert not verify("flops", F, Spent(65_536, None, None), None).over
    assert not verify("seconds", 45.0, Spent(65_536, FORWARD, 600.0), Reference(None, None)).over


def test_the_tolerances_are_the_slack():
    strict = Tolerance(flops=0.0, seconds=0.0)
    assert verify("flops", F, Spent(82_000, FORWARD, 30.0), BASELINE, strict).over  # 1.26e12 > F
    assert verify("seconds", 45.0, Spent(1, FORWARD, 30.5), BASELINE, strict).over
    with pytest.raises(ValueError):
        Tolerance(flops=-0.1)


def test_the_reference_is_the_mean_of_the_baselines_runs():
    reference = Reference.of([Spent(1, 5e6, 30.0), Spent(1, 5e6, 34.0), Spent(1, None, None)])
    assert reference == Reference(32.0, 5e6)
    assert Reference.of([]) == Reference(None, None)
    timed = Reference.of([Spent(1, 5e6, 30.0, 100.0), Spent(1, 5e6, 34.0, 120.0)])
    assert timed.forward_us_per_token == pytest.approx(110.0)


# The scorer's compute microseconds per token of the baseline's program, and of a model a ninth of its FLOPs per
# token that the machine runs at a fifth of the time per token: 1.8 times the seconds per FLOP.
TIMED = Reference(seconds=30.0, forward_flops_per_token=FORWARD, forward_us_per_token=100.0)
SMALL = FORWARD / 9


def test_under_a_flop_budget_a_model_slow_per_flop_may_take_longer():
    """A FLOP budget gives a model cheap per token nine times the tokens; it spends more CPU seconds per FLOP
    (work the FLOP count leaves out), so its allowance grows by its measured seconds per FLOP."""
    honest = Spent(9 * 65_536, SMALL, 70.0, 20.0)
    assert flop_scale(honest, TIMED) == pytest.approx(1.8)
    assert not verify("flops", F, honest, TIMED).over  # 70 s < 1.5 x 30 x 1.8 = 81 s
    assert verify("flops", F, honest, Reference(30.0, FORWARD)).over  # unscaled it would be over: 70 > 45
    over = verify("flops", F, Spent(9 * 65_536, SMALL, 85.0, 20.0), TIMED)
    assert over.over and "x 1.8 for its compute seconds per FLOP" in over.reason


def test_the_flop_scale_is_never_below_one_and_bounded():
    """A model faster per FLOP keeps the baseline's seconds; a program padded with work the FLOP count does not
    see (to look slow) buys at most MAX_FLOP_SCALE: twice the budget's training is still over at that scale."""
    assert flop_scale(Spent(65_536, FORWARD, 30.0, 50.0), TIMED) == 1.0
    padded = Spent(65_536, FORWARD, 30.0, 100_000.0)
    assert flop_scale(padded, TIMED) == MAX_FLOP_SCALE
    assert verify("flops", F, Spent(65_536, FORWARD, 1.5 * 30 * MAX_FLOP_SCALE + 1, 100_000.0), TIMED).over
    assert flop_scale(Spent(65_536, FORWARD, 30.0, None), TIMED) == 1.0  # an older row: no figure, no scale
    assert flop_scale(Spent(65_536, FORWARD, 30.0, 200.0), BASELINE) == 1.0


def test_the_flop_scale_changes_no_other_budget():
    slow = Spent(65_536, FORWARD, 60.0, 300.0)  # three times the seconds per FLOP
    assert verify("seconds", 45.0, slow, TIMED).over
    assert not verify("flops", F, slow, TIMED).over


def test_the_ceiling_is_the_most_any_run_on_the_budget_could_be_allowed():
    """Known before a run (no figure of its own): past it the loop stops the run; within it, verify decides."""
    tolerance = Tolerance()
    assert ceiling_seconds("flops", TIMED, tolerance) == pytest.approx(30.0 * MAX_FLOP_SCALE * 1.5)
    assert ceiling_seconds("seconds", TIMED, tolerance) == pytest.approx(45.0)
    padded = Spent(65_536, FORWARD, 1e9, 1e9)  # the largest scale a program can claim
    assert verify("flops", F, padded, TIMED).over
    assert not verify("flops", F, Spent(65_536, FORWARD, ceiling_seconds("flops", TIMED, tolerance), 1e9), TIMED).over
    assert ceiling_seconds("tokens", TIMED, tolerance) is None  # a costlier model may take as much longer
    assert ceiling_seconds("flops", None, tolerance) is None and ceiling_seconds("flops", Reference(None, None),
                                                                                  tolerance) is None
