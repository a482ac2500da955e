"""integrity/budget.py: the trusted decision whether a run kept to its budget, on figures the loop measured."""
import pytest

from autoresearch_kernel.integrity.budget import Reference, Spent, Tolerance, verify

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
