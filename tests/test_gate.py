"""The gate: every branch of the keep / confirm / discard / crash decision, the pooled noise, the baseline.

`decide_by_means` with the pooled `NoiseEstimate`, and a simulation against candidates that only re-draw the
initialisation, next to the margin rule the loop used before (kept here, as `margin_rule`, for comparison only).
"""
import dataclasses
import math
import statistics

import numpy as np
import pytest

from autoresearch_kernel.gate import (
    PROFILE_NOISE_SD,
    GateConfig,
    NoiseEstimate,
    Pair,
    baseline_decision,
    chi_square_quantile,
    decide_by_means,
    decide_paired,
    estimate_noise,
    improvement,
    margin_for_means,
    noise_floor,
    noop_decision,
    repeated_groups,
    t_quantile,
)


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


def test_config_refuses_negative_settings():
    with pytest.raises(ValueError):
        GateConfig(z=-1.0)


# -- the sound rule -------------------------------------------------------------------------------------------
KNOWN = NoiseEstimate.known(0.01)
MEANS = GateConfig(z=2.0, min_margin=0.0, confirm_band=1.0, confirm_runs=1, confirm_floor=1.0, rule="means")


@pytest.mark.parametrize("dof, exact", [(3, 0.5844), (4, 1.0636), (10, 4.8652), (30, 20.599)])
def test_chi_square_lower_quantile_is_close_to_the_table(dof, exact):
    assert chi_square_quantile(0.1, dof) == pytest.approx(exact, rel=0.015)


def test_chi_square_quantile_errs_small_with_few_dof_which_widens_the_bound():
    assert 0 < chi_square_quantile(0.1, 1) < 0.0158 and chi_square_quantile(0.1, 2) < 0.2107
    with pytest.raises(ValueError):
        chi_square_quantile(0.1, 0)


def test_pooled_noise_pools_within_group_spread_with_the_default():
    groups = [[1.0, 1.2, 1.4], [2.0, 2.1], [3.0], [None, 5.0, math.nan]]  # 2 + 1 dof; singles add nothing
    squares = 0.08 + 0.005
    noise = NoiseEstimate.pooled(groups, prior_sd=0.1, prior_weight=2.0, confidence=0.9)
    assert noise.measured_dof == 3 and noise.dof == 5.0
    assert noise.sd == pytest.approx(math.sqrt((squares + 2 * 0.01) / 5))
    assert noise.upper == pytest.approx(noise.sd * math.sqrt(5 / chi_square_quantile(0.1, 5)))
    bare = NoiseEstimate.pooled(groups, prior_sd=None)
    assert bare.dof == 3 and bare.sd == pytest.approx(math.sqrt(squares / 3))
    with pytest.raises(ValueError, match="nothing says"):
        NoiseEstimate.pooled([[1.0]], prior_sd=None)


def test_the_upper_bound_is_wide_while_thin_and_tightens_with_more_repeats():
    rng = np.random.default_rng(0)
    thin = NoiseEstimate.pooled([rng.normal(0, 0.01, 3)], prior_sd=0.01, prior_weight=2.0)
    thick = NoiseEstimate.pooled([rng.normal(0, 0.01, 2) for _ in range(400)], prior_sd=0.01, prior_weight=2.0)
    assert thin.upper / thin.sd > 1.5
    assert thick.upper / thick.sd < 1.1 and thick.sd == pytest.approx(0.01, rel=0.1)


def test_the_profile_default_is_the_prior_and_config_may_replace_it():
    assert estimate_noise([], "cpu").sd == pytest.approx(PROFILE_NOISE_SD["cpu"]) == pytest.approx(0.0156)
    assert estimate_noise([], "gpu").sd == pytest.approx(PROFILE_NOISE_SD["gpu"])
    assert estimate_noise([], "tpu").sd == pytest.approx(max(PROFILE_NOISE_SD.values()))
    assert estimate_noise([], "cpu", GateConfig(prior_sd=0.002)).sd == pytest.approx(0.002)
    measured = estimate_noise([[1.0, 1.02, 1.04]], "cpu", GateConfig(prior_weight=0.0))
    assert measured.sd == pytest.approx(0.02) and measured.measured_dof == 2


def test_repeated_groups_count_each_seed_of_a_commit_once():
    runs = [("a", 0, 1.0), ("a", 1, 1.2), ("a", 1, 1.2), ("b", 0, 2.0), ("b", 1, None), ("c", 0, 3.0)]
    assert repeated_groups(runs) == [[1.0, 1.2], [2.0], [3.0]]


def test_means_rule_keeps_a_clear_gain_at_once_and_takes_the_candidates_mean_as_best():
    # best mean 1.0 over 4 runs; se = 0.01 * sqrt(1/4 + 1) = 0.01118; margin 0.02236; the band tops at 0.04472
    decision = decide_by_means([0.98, 1.02, 0.99, 1.01], [0.95], KNOWN, MEANS)
    assert decision.status == "keep" and decision.best == pytest.approx(0.95)
    assert decision.margin == pytest.approx(2 * 0.01 * math.sqrt(1.25))
    assert decision.gain == pytest.approx(0.05) and "se 0.011180" in decision.reason


def test_means_rule_compares_with_the_bests_mean_not_its_luckiest_draw():
    # against the best draw (0.98) a 0.95 is a 0.03 gain; against the mean (1.0) it is 0.05
    assert decide_by_means([0.98, 1.02], [0.95], KNOWN, MEANS).gain == pytest.approx(0.05)


def test_means_rule_confirms_borderline_gains_on_both_sides_of_the_margin():
    best = [1.0, 1.0, 1.0, 1.0]  # se 0.01118 for one run: floor 0.01118, margin 0.02236, band top 0.04472
    assert decide_by_means(best, [0.985], KNOWN, MEANS).status == "confirm"  # 1.34 se: below z, re-run
    assert decide_by_means(best, [0.97], KNOWN, MEANS).status == "confirm"  # 2.7 se: above z, must repeat
    assert decide_by_means(best, [0.995], KNOWN, MEANS).status == "discard"  # 0.45 se: noise
    assert decide_by_means(best, [1.02], KNOWN, MEANS).status == "discard"


def test_means_rule_decides_on_the_mean_after_the_confirmations_with_a_smaller_margin():
    best = [1.0, 1.0, 1.0, 1.0]  # two runs: se = 0.01 * sqrt(1/4 + 1/2) = 0.00866, margin 0.01732
    kept = decide_by_means(best, [0.97, 0.98], KNOWN, MEANS)
    assert kept.status == "keep" and kept.best == pytest.approx(0.975)
    assert kept.margin == pytest.approx(2 * 0.01 * math.sqrt(0.75))
    regressed = decide_by_means(best, [0.97, 1.0], KNOWN, MEANS)  # a lucky first draw that did not repeat
    assert regressed.status == "discard" and regressed.best == pytest.approx(1.0)


def test_a_gain_that_stays_borderline_gets_more_seeds_up_to_confirm_runs_then_the_mean_decides():
    best, three = [1.0, 1.0, 1.0, 1.0], dataclasses.replace(MEANS, confirm_runs=3)
    # two runs: se 0.00866, margin 0.01732; a mean gain of 0.015 lies between 1 se and the margin
    assert decide_by_means(best, [0.985, 0.985], KNOWN, three).status == "confirm"
    assert decide_by_means(best, [0.985, 0.985], KNOWN, MEANS).status == "discard"  # one confirmation only
    # three runs: se 0.00764, margin 0.01528: the same mean gain of 0.016 is now enough
    assert decide_by_means(best, [0.984, 0.984, 0.984], KNOWN, three).status == "keep"
    # a mean that falls to 1 se or less stops early; the last allowed run decides either way
    assert decide_by_means(best, [0.985, 1.0], KNOWN, three).status == "discard"
    assert decide_by_means(best, [0.99, 0.99, 0.99, 0.99], KNOWN, three).status == "discard"
    assert GateConfig().confirm_runs == 3


def test_means_rule_crashes_on_a_missing_metric_and_refuses_a_missing_best():
    decision = decide_by_means([1.0], [0.9, None], KNOWN, MEANS)
    assert (decision.status, decision.value, decision.best) == ("crash", None, 1.0)
    with pytest.raises(ValueError, match="baseline"):
        decide_by_means([None], [1.0], KNOWN, MEANS)
    with pytest.raises(ValueError):
        decide_by_means([1.0], [], KNOWN, MEANS)


def test_means_rule_never_keeps_below_the_absolute_minimum_and_obeys_no_confirmation():
    exact = NoiseEstimate.known(0.0)
    assert decide_by_means([1.0], [0.9995], exact, GateConfig(min_margin=0.001)).status == "discard"
    assert decide_by_means([1.0], [0.9985], exact, GateConfig(min_margin=0.001)).status == "confirm"
    no_confirm = GateConfig(z=2.0, min_margin=0.0, confirm_runs=0)
    assert decide_by_means([1.0] * 4, [0.97], KNOWN, no_confirm).status == "keep"
    assert decide_by_means([1.0] * 4, [0.985], KNOWN, no_confirm).status == "discard"


def test_margin_for_means_is_what_a_candidate_with_so_many_runs_must_beat():
    noise = NoiseEstimate.known(0.01)
    assert margin_for_means(noise, 3, 1, MEANS) == pytest.approx(2 * 0.01 * math.sqrt(1 / 3 + 1))
    assert margin_for_means(noise, 3, 2, MEANS) == pytest.approx(2 * 0.01 * math.sqrt(1 / 3 + 1 / 2))
    assert margin_for_means(NoiseEstimate.known(0.0), 3) == GateConfig().min_margin


def test_config_refuses_a_confidence_outside_its_range():
    with pytest.raises(ValueError):
        GateConfig(noise_confidence=1.0)
    with pytest.raises(ValueError):
        GateConfig(prior_sd=0.0)


# -- seed luck, simulated ----------------------------------------------------------------------------------
# Issue 12, tried as a model would on the cpu profile at 65,536 tokens: re-draws of the initialisation spread
# with sd 0.0116, the baseline had 3 seeds, and the margin rule kept one of 20 such candidates.
REDRAW_SD, BASELINE = 0.0116, 1.7172


def keep_rate(rule, gain_sds: float, trials: int = 2000, seed: int = 0, pooled_pairs: int = 0) -> float:
    """The share of candidates kept whose true gain is `gain_sds` noise sds, each against a fresh 3-seed baseline.

    `pooled_pairs`: confirmed pairs the run has already measured (each a repeat of one commit), pooled into
    the noise as the loop pools its confirmations.
    """
    rng = np.random.default_rng(seed)
    kept = 0
    for _ in range(trials):
        baseline = list(BASELINE + REDRAW_SD * rng.standard_normal(3))
        pairs = [list(BASELINE + REDRAW_SD * rng.standard_normal(2)) for _ in range(pooled_pairs)]
        runs = []
        while True:
            runs.append(BASELINE - gain_sds * REDRAW_SD + REDRAW_SD * rng.standard_normal())
            status = rule(baseline, runs, pairs)
            if status != "confirm":
                break
        kept += status == "keep"
    return kept / trials


def margin_rule(baseline, runs, pairs, config=GateConfig()):
    """The rule the loop used before: the best's mean must be beaten by max(min_margin, z * sd of the baseline
    seeds); a gain within the band above that margin is re-run once, and then the mean of the runs decides."""
    margin = max(config.min_margin, config.z * noise_floor(baseline).std)
    gain = improvement(statistics.fmean(baseline), statistics.fmean(runs))
    if gain <= margin:
        return "discard"
    borderline = gain <= margin * (1 + config.confirm_band)
    return "confirm" if borderline and len(runs) < 1 + config.confirm_runs else "keep"


def means_rule(baseline, runs, pairs):
    return decide_by_means(baseline, runs, estimate_noise([baseline, *pairs], "cpu"), GateConfig()).status


def test_seed_luck_is_kept_by_the_margin_rule_and_not_by_the_means_rule():
    old, new = keep_rate(margin_rule, 0.0), keep_rate(means_rule, 0.0)
    assert old > 0.03  # about one in 16, as the issue measured (one in 20)
    assert new < 1 / 200
    # Later in a run, with 20 confirmed pairs pooled, the bound is tighter and still keeps almost no luck.
    assert keep_rate(means_rule, 0.0, pooled_pairs=20) < 1 / 100


def test_the_cost_a_real_gain_of_two_sds_is_kept_more_often_as_the_noise_estimate_fills():
    thin, filled = keep_rate(means_rule, 2.0), keep_rate(means_rule, 2.0, pooled_pairs=20)
    assert filled > 0.25 and filled > 3 * thin
    assert keep_rate(means_rule, 4.0, pooled_pairs=20) > 0.9


def test_more_confirmation_seeds_keep_real_gains_more_often_and_seed_luck_no_more_often():
    def rule(confirm_runs):
        config = GateConfig(confirm_runs=confirm_runs)
        return lambda baseline, runs, pairs: decide_by_means(
            baseline, runs, estimate_noise([baseline, *pairs], "cpu"), config).status

    one, three = rule(1), rule(3)
    assert keep_rate(three, 3.0) > keep_rate(one, 3.0) + 0.1  # a 3-sd gain early in a run: ~0.23 -> ~0.44
    assert keep_rate(three, 2.0, pooled_pairs=20) > keep_rate(one, 2.0, pooled_pairs=20) + 0.05
    assert keep_rate(three, 0.0) < 1 / 200 and keep_rate(three, 0.0, pooled_pairs=20) < 1 / 100


def test_baseline_keeps_the_mean_as_first_best_and_records_the_first_candidates_margin():
    noise = NoiseEstimate.known(0.1)
    decision = baseline_decision([1.0, 1.2, 1.4], noise, MEANS)
    assert decision.status == "keep"
    assert decision.best == pytest.approx(1.2)
    assert decision.margin == pytest.approx(2 * 0.1 * math.sqrt(1 / 3 + 1)) == margin_for_means(noise, 3, 1, MEANS)


def test_baseline_with_a_failed_seed_is_a_crash():
    noise = NoiseEstimate.known(0.1)
    decision = baseline_decision([1.0, None, 1.4], noise, MEANS)
    assert decision.status == "crash"
    assert decision.best is None
    assert baseline_decision([None], noise, MEANS).status == "crash"


def test_a_noop_keeps_the_best_and_its_margin_and_says_why():
    decision = noop_decision(1.0005, 1.0, 0.004, seed=0)
    assert (decision.status, decision.best, decision.value, decision.margin) == ("noop", 1.0005, 1.0, 0.004)
    assert decision.gain == pytest.approx(0.0005) and "seed 0" in decision.reason


# -- the paired rule (issue 20): seed-by-seed gains, own spread from two pairs on, a spending rule -------------
PAIRED = GateConfig()  # the default rule
SEED_SD = 0.0185  # the seed-to-seed sd at 65,536 tokens on the cpu profile (issue 20)
KEEPS_INIT = 0.0026  # paired sd of a change that keeps the initialisation (MATRIX_LR 0.04 -> 0.05, issue 20)
REDRAWS = math.sqrt(2) * SEED_SD  # paired sd of a change that draws the initialisation again


def pairs_of(*gains, best=1.7):
    return [Pair(seed, best, best - gain) for seed, gain in enumerate(gains)]


@pytest.mark.parametrize("p, dof, table", [(0.99, 2, 6.965), (0.995, 1, 63.657), (0.975, 10, 2.228),
                                           (0.999, 5, 5.893), (0.9, 30, 1.310)])
def test_t_quantile_matches_the_table(p, dof, table):
    assert t_quantile(p, dof) == pytest.approx(table, abs=1e-3)


def test_the_looks_spend_the_whole_budget_and_late_looks_get_more():
    rates = PAIRED.look_rates()
    assert sum(rates.values()) == pytest.approx(PAIRED.false_keep_rate)
    assert list(rates) == [1, *range(PAIRED.paired_first_look, PAIRED.paired_runs + 1)]
    later = [rates[n] for n in range(PAIRED.paired_first_look, PAIRED.paired_runs + 1)]
    assert later == sorted(later)


def test_a_first_pair_that_gains_nothing_is_discarded_after_one_run():
    decision = decide_paired(pairs_of(-0.0001), 1.7, KNOWN, PAIRED)
    assert decision.status == "discard" and decision.gain == pytest.approx(-0.0001)
    assert decision.best == 1.7 and "re-draw prior" in decision.reason


def test_a_promising_first_pair_earns_a_seed_judged_with_the_conservative_redraw_prior():
    decision = decide_paired(pairs_of(0.02), 1.7, KNOWN, PAIRED)  # 2 prior sds: a re-draw could do that
    assert decision.status == "confirm"
    z = statistics.NormalDist().inv_cdf(1 - PAIRED.look_rates()[1])
    assert decision.margin == pytest.approx(z * math.sqrt(2) * KNOWN.upper)


def test_a_first_gain_no_redraw_explains_is_kept_at_once():
    decision = decide_paired(pairs_of(0.05), 1.7, KNOWN, PAIRED)  # 3.5 re-draw sds
    assert decision.status == "keep" and decision.best == decision.value == pytest.approx(1.65)


def test_two_pairs_never_keep_however_consistent():
    decision = decide_paired(pairs_of(0.01, 0.0101), 1.7, KNOWN, PAIRED)
    assert decision.status == "confirm" and "2 pairs" in decision.reason


def test_three_consistent_pairs_keep_with_their_own_spread():
    decision = decide_paired(pairs_of(0.010, 0.011, 0.0105), 1.7, KNOWN, PAIRED)
    assert decision.status == "keep" and decision.gain == pytest.approx(0.0105)
    se = statistics.stdev([0.010, 0.011, 0.0105]) / math.sqrt(3)
    assert decision.margin == pytest.approx(t_quantile(1 - PAIRED.look_rates()[3], 2) * se)


def test_the_same_mean_with_a_redraws_spread_is_not_kept():
    decision = decide_paired(pairs_of(0.04, -0.01, 0.0015), 1.7, KNOWN, PAIRED)  # mean 0.0105, sd 0.025
    assert decision.status == "confirm" and decision.margin > 0.05


def test_futility_and_the_last_run_discard():
    assert decide_paired(pairs_of(0.01, -0.012), 1.7, KNOWN, PAIRED).status == "discard"  # t < 0.5
    borderline = [0.004, 0.0] * 4  # t between 1 and 2.7 at every look: never kept, never futile
    assert all(decide_paired(pairs_of(*borderline[:n]), 1.7, KNOWN, PAIRED).status == "confirm" for n in range(1, 8))
    assert decide_paired(pairs_of(*borderline), 1.7, KNOWN, PAIRED).status == "discard"  # the last run decides


def test_a_consistent_gain_below_the_minimum_margin_is_discarded_without_spending_its_seeds():
    """make run's WEIGHT_DECAY 0.2 -> 0.3: paired gains of about +0.0004, sd 0.0003, ran 8 times and could never
    clear the 0.001 floor. Its 95% bound (t on 1 degree of freedom, 6.3 se) is under the floor after 2 pairs; the
    same mean with a larger spread earns more seeds."""
    decision = decide_paired(pairs_of(0.000425, 0.0003), 1.7, KNOWN, PAIRED)
    assert decision.status == "discard" and "below the minimum of 0.001" in decision.reason
    assert decide_paired(pairs_of(0.0004, 0.0024, -0.0006), 1.7, KNOWN, PAIRED).status == "confirm"
    # simulated: such changes cost under 3 runs instead of about 7; a gain of twice the floor keeps its power
    assert simulate(0.0004, 0.0003)[1] < 3.0 and simulate(0.002, 0.0005)[0] > 0.99


def test_runs_without_a_partner_are_runs_but_not_looks_and_a_crash_is_a_crash():
    decision = decide_paired([Pair(0, 1.7, 1.68), Pair(1, None, 1.69)], 1.7, KNOWN, PAIRED)
    assert decision.status == "confirm" and decision.gain == pytest.approx(0.02)
    assert decision.value == pytest.approx(1.685)
    assert decide_paired([Pair(0, 1.7, None)], 1.7, KNOWN, PAIRED).status == "crash"
    with pytest.raises(ValueError):
        decide_paired([], 1.7, KNOWN, PAIRED)


def test_a_stored_gate_resumes_with_the_rule_and_the_looks_it_was_measured_with():
    old = {k: v for k, v in dataclasses.asdict(GateConfig(z=3.0)).items()
           if k in ("z", "min_margin", "confirm_band", "confirm_runs", "confirm_floor", "prior_sd",
                    "prior_weight", "noise_confidence")}
    assert GateConfig.from_stored(old) == GateConfig(z=3.0, rule="means", paired_floor_confidence=None)
    assert GateConfig.from_stored(dataclasses.asdict(GateConfig())) == GateConfig()
    before_the_floor = {k: v for k, v in dataclasses.asdict(GateConfig()).items() if k != "paired_floor_confidence"}
    assert GateConfig.from_stored(before_the_floor) == GateConfig(paired_floor_confidence=None)  # goes on without
    tiny = pairs_of(0.000425, 0.0003)
    assert decide_paired(tiny, 1.7, KNOWN, GateConfig(paired_floor_confidence=None)).status == "confirm"
    with pytest.raises(ValueError):
        GateConfig(rule="luck")


def simulate(gain, sd, config=PAIRED, candidates=4000, seed=0):
    """The whole sequential rule on `candidates` changes whose pairs are N(gain, sd): (keep rate, runs each)."""
    rng = np.random.default_rng(seed)
    noise = NoiseEstimate.known(SEED_SD)  # the look-1 prior is then the re-draw's sd exactly
    keeps = runs = 0
    for draws in rng.normal(gain, sd, size=(candidates, config.paired_runs)):
        for n in range(1, config.paired_runs + 1):
            decision = decide_paired(pairs_of(*draws[:n]), 1.7, noise, config)
            if decision.status != "confirm":
                break
        keeps += decision.status == "keep"
        runs += n
    return keeps / candidates, runs / candidates


@pytest.mark.parametrize("sd", [KEEPS_INIT, REDRAWS])
def test_the_whole_sequential_rule_keeps_null_changes_within_its_budget(sd):
    """Eight looks, one budget: false keeps stay under false_keep_rate (1%) whether the change keeps the
    initialisation or draws it again; about half of them are discarded after their first run."""
    rate, runs = simulate(0.0, sd)
    assert rate <= PAIRED.false_keep_rate and runs < 3.5


def test_one_margin_at_every_look_would_keep_more_null_changes_than_it_says():
    """Optional stopping: the t-test at 1% repeated at looks 2..8 keeps about 3% of null changes."""
    rng, kept = np.random.default_rng(1), 0
    for draws in rng.normal(0.0, KEEPS_INIT, size=(4000, 8)):
        for n in range(2, 9):
            if draws[:n].mean() > t_quantile(0.99, n - 1) * draws[:n].std(ddof=1) / math.sqrt(n):
                kept += 1
                break
    assert kept / 4000 > 2 * PAIRED.false_keep_rate


@pytest.mark.parametrize("gain, at_least, most_runs", [(0.005, 0.8, 7.0), (0.01, 0.99, 5.0), (0.02, 0.999, 4.0)])
def test_power_for_changes_that_keep_the_initialisation(gain, at_least, most_runs):
    """Issue 20's target: a 0.005 bpb gain of an initialisation-preserving change kept at least 80% of the time."""
    rate, runs = simulate(gain, KEEPS_INIT)
    assert rate >= at_least and runs <= most_runs


def test_a_capped_rule_keeps_its_false_keep_budget_and_trades_power_for_runs():
    """--paired-runs 3 (make run's short demo): the looks share the same 1% budget, so null changes stay within
    it; a candidate costs at most 3 runs; a 0.02 gain is still kept, a 0.005 one mostly is not (0.86 at 8)."""
    capped = dataclasses.replace(PAIRED, paired_runs=3)
    for sd in (KEEPS_INIT, REDRAWS):
        assert simulate(0.0, sd, capped)[0] <= capped.false_keep_rate
    big, runs = simulate(0.02, KEEPS_INIT, capped)
    assert big >= 0.9 and runs <= 3.0
    assert simulate(0.005, KEEPS_INIT, capped)[0] < 0.5 < simulate(0.005, KEEPS_INIT)[0]


def test_the_paired_rule_against_the_means_rule_on_the_same_null_and_gain():
    """The means rule (3 baseline seeds, known noise) cannot see 0.005 at a seed sd of 0.0185."""
    rng, kept = np.random.default_rng(2), 0
    for first in rng.normal(1.7 - 0.005, SEED_SD, size=2000):
        baseline = list(rng.normal(1.7, SEED_SD, size=3))
        runs = [first]
        decision = decide_by_means(baseline, runs, NoiseEstimate.known(SEED_SD), GateConfig(rule="means"))
        while decision.status == "confirm":
            runs.append(rng.normal(1.7 - 0.005, SEED_SD))
            decision = decide_by_means(baseline, runs, NoiseEstimate.known(SEED_SD), GateConfig(rule="means"))
        kept += decision.status == "keep"
    assert kept / 2000 < 0.2 < simulate(0.005, KEEPS_INIT)[0]
