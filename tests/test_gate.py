"""The gate: every branch of the keep / confirm / discard / crash decision and of the baseline's noise floor."""
import math

import pytest

from autoresearch_kernel.gate import (
    Decision,
    GateConfig,
    baseline_decision,
    decide,
    margin_for,
    noise_floor,
    noop_decision,
)

STRICT = GateConfig(z=2.0, min_margin=0.001, confirm_band=1.0, confirm_runs=1)


def test_noise_floor_mean_and_sample_std():
    noise = noise_floor([1.0, 1.2, 1.4])
    assert noise.mean == pytest.approx(1.2)
    assert noise.std == pytest.approx(0.2)
    assert noise.runs == 3


def test_noise_floor_single_seed_has_zero_std_and_missing_runs_are_ignored():
    assert noise_floor([1.5]).std == 0.0
    assert noise_floor([None, 1.5, float("nan")]).runs == 1
    assert noise_floor([None, None]) is None
    assert noise_floor([]) is None


@pytest.mark.parametrize(
    "std, expected",
    [(0.0, 0.001), (0.0001, 0.001), (0.0005, 0.001), (0.002, 0.004), (-1.0, 0.001)],
)
def test_margin_is_z_times_noise_never_below_the_minimum(std, expected):
    assert margin_for(std, STRICT) == pytest.approx(expected)


def test_clear_gain_is_kept_and_becomes_the_best():
    decision = decide(1.000, [0.990], noise_std=0.001, config=STRICT)  # gain 0.010 > 2 * margin 0.002
    assert decision.status == "keep"
    assert decision.best == pytest.approx(0.990)
    assert decision.value == pytest.approx(0.990)
    assert decision.gain == pytest.approx(0.010)
    assert decision.margin == pytest.approx(0.002)


def test_borderline_gain_is_confirmed_before_it_is_kept():
    first = decide(1.000, [0.997], noise_std=0.001, config=STRICT)  # gain 0.003 in (0.002, 0.004]
    assert first.status == "confirm"
    assert first.best == pytest.approx(1.000)  # nothing changes until confirmed
    confirmed = decide(1.000, [0.997, 0.9975], noise_std=0.001, config=STRICT)
    assert confirmed.status == "keep"
    assert confirmed.best == pytest.approx(0.99725)


def test_confirmation_that_regresses_to_the_noise_is_discarded():
    decision = decide(1.000, [0.997, 1.001], noise_std=0.001, config=STRICT)  # mean 0.999: gain 0.001
    assert decision.status == "discard"
    assert decision.best == pytest.approx(1.000)


def test_confirmation_run_that_crashes_makes_a_crash():
    assert decide(1.000, [0.997, None], noise_std=0.001, config=STRICT).status == "crash"


def test_gain_exactly_at_the_margin_is_discarded():
    config = GateConfig(z=2.0, min_margin=0.0)  # margin 2 * 0.125 = 0.25, binary-exact
    assert decide(1.0, [0.75], noise_std=0.125, config=config).status == "discard"


def test_gain_exactly_at_the_band_top_still_needs_confirmation():
    config = GateConfig(z=0.0, min_margin=0.25, confirm_band=1.0)  # binary-exact numbers
    assert decide(1.0, [0.5], noise_std=0.0, config=config).status == "confirm"
    assert decide(1.0, [0.4375], noise_std=0.0, config=config).status == "keep"


@pytest.mark.parametrize("value", [1.000, 1.0005, 1.2, 0.9985])
def test_equal_worse_or_within_margin_is_discarded(value):
    decision = decide(1.000, [value], noise_std=0.001, config=STRICT)
    assert decision.status == "discard"
    assert decision.best == pytest.approx(1.000)
    assert "margin" in decision.reason


@pytest.mark.parametrize("value", [None, float("nan"), float("inf")])
def test_no_metric_is_a_crash(value):
    decision = decide(1.000, [value], noise_std=0.001, config=STRICT)
    assert decision == Decision("crash", None, 1.000, 0.002, None, decision.reason)


def test_no_confirmation_when_configured_off():
    config = GateConfig(z=2.0, min_margin=0.001, confirm_band=1.0, confirm_runs=0)
    assert decide(1.000, [0.997], noise_std=0.001, config=config).status == "keep"


def test_no_band_keeps_any_gain_above_the_margin():
    config = GateConfig(z=2.0, min_margin=0.001, confirm_band=0.0)
    assert decide(1.000, [0.9979], noise_std=0.001, config=config).status == "keep"


def test_noise_raises_the_margin_so_a_seed_sized_gain_is_not_kept():
    # the reference's failure: a gain the size of seed noise. With std 0.01 a 0.015 gain is noise.
    assert decide(1.000, [0.985], noise_std=0.01, config=STRICT).status == "discard"


def test_decide_refuses_missing_best_or_runs():
    with pytest.raises(ValueError, match="baseline"):
        decide(math.nan, [1.0], 0.0)
    with pytest.raises(ValueError):
        decide(1.0, [], 0.0)


def test_config_refuses_negative_settings():
    with pytest.raises(ValueError):
        GateConfig(z=-1.0)


def test_baseline_keeps_the_mean_as_first_best():
    decision = baseline_decision([1.0, 1.2, 1.4], STRICT)
    assert decision.status == "keep"
    assert decision.best == pytest.approx(1.2)
    assert decision.margin == pytest.approx(0.4)


def test_baseline_with_a_failed_seed_is_a_crash():
    decision = baseline_decision([1.0, None, 1.4], STRICT)
    assert decision.status == "crash"
    assert decision.best is None
    assert baseline_decision([None], STRICT).status == "crash"


def test_a_noop_keeps_the_best_and_says_why():
    decision = noop_decision(1.0005, 1.0, 0.000707, seed=0, config=GateConfig())
    assert (decision.status, decision.best, decision.value) == ("noop", 1.0005, 1.0)
    assert decision.margin == pytest.approx(0.001414, abs=1e-6) and "seed 0" in decision.reason
