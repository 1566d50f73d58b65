"""The paired statistics of a report (vtbench.report.paired, vtbench.report.plan, the Interval of
vtbench.report.analysis) on made-up per-seed data, checked against scipy's own tests computed here and against
hand-computed values."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from vtbench.report import paired
from vtbench.report.analysis import Interval
from vtbench.report.plan import seeds_needed, t_power


def test_paired_difference_is_scipys_ttest_rel():
    method, baseline = [41.0, 44.5, 39.0, 47.25], [40.0, 41.0, 38.5, 43.0]
    effect = paired.paired_difference(method, baseline)
    expected = stats.ttest_rel(method, baseline)
    low, high = expected.confidence_interval(0.95)
    assert effect.estimate == pytest.approx(np.mean(np.subtract(method, baseline)))
    assert (effect.low, effect.high, effect.p) == pytest.approx((low, high, expected.pvalue))
    assert effect.kind == "t, 4 seeds" and effect.n == 4
    # pairing matters: the same numbers unpaired give another p
    assert effect.p != pytest.approx(stats.ttest_ind(method, baseline).pvalue)


def test_ratio_effect_is_a_t_interval_on_log_ratios():
    ratios = [1.8, 2.3, 1.6, 2.05, 1.95]
    effect = paired.ratio_effect(ratios)
    logs = np.log(ratios)
    expected = stats.ttest_1samp(logs, 0)
    low, high = expected.confidence_interval(0.95)
    assert effect.estimate == pytest.approx(stats.gmean(ratios))
    assert (effect.low, effect.high) == pytest.approx((math.exp(low), math.exp(high)))
    assert effect.p == pytest.approx(expected.pvalue) and effect.kind == "t, 5 seeds"
    one = paired.ratio_effect([1.7])
    assert one.estimate == pytest.approx(1.7) and math.isnan(one.low) and math.isnan(one.p)


def test_many_seeds_keep_the_t_interval_so_the_verdict_agrees_with_it():
    rng = np.random.default_rng(3)
    ratios = np.exp(rng.normal(math.log(1.05), 0.1, 12))
    effect = paired.ratio_effect(ratios)
    expected = stats.ttest_1samp(np.log(ratios), 0)
    assert effect.kind == "t, 12 seeds" and effect.p == pytest.approx(expected.pvalue)
    assert (effect.low, effect.high) == pytest.approx(tuple(np.exp(expected.confidence_interval())))
    assert (effect.p < 0.05) == (effect.low > 1 or effect.high < 1)


def test_identical_seeds_give_a_point_interval():
    effect = paired.ratio_effect([2.0, 2.0, 2.0])  # a positive control on a step budget: the baseline's own runs
    assert (effect.estimate, effect.low, effect.high, effect.p) == pytest.approx((2.0, 2.0, 2.0, 0.0))
    assert paired.paired_difference([5.0, 6.0], [5.0, 6.0]).p == 1.0


def test_holm_against_a_hand_computed_example():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (kept non-decreasing)
    adjusted = paired.holm([0.01, 0.04, 0.03, 0.005, float("nan")])
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])
    assert paired.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert paired.holm([]).size == 0


def test_accuracy_intervals_stay_inside_0_and_100():
    for values in ([0.0, 0.5, 1.0], [99.0, 99.5, 100.0], [0.0, 0.0, 3.0], [100.0, 100.0, 100.0, 97.0]):
        interval = Interval.of(values)
        assert 0 <= interval.low <= interval.high <= 100
        assert interval.mean == pytest.approx(np.mean(values))  # the point stays the arithmetic mean
        half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
        assert np.mean(values) - half < 0 or np.mean(values) + half > 100  # a plain t interval would leave
    middle = Interval.of([40.0, 45.0, 50.0])  # far from the edges: close to the t interval
    assert middle.low == pytest.approx(45 - 12.42, abs=0.5) and middle.high == pytest.approx(45 + 12.42, abs=0.5)


LADDER = ([10.0, 20.0, 40.0], [30.0, 40.0, 50.0])


def test_the_multiplier_is_exact_where_the_method_equals_the_baseline_at_twice_its_budget():
    ladders = {0: LADDER, 1: ([10.0, 20.0, 40.0], [32.0, 42.0, 52.0])}
    found = paired.compute_multiplier(ladders, {0: 40.0, 1: 42.0}, 10.0)
    assert found.ratios == pytest.approx((2.0, 2.0)) and found.effect.estimate == pytest.approx(2.0)
    assert not found.extrapolated and found.why is None
    # between rungs: linear in log budget
    assert paired.reach(*LADDER, 35.0).budget == pytest.approx(10 * math.sqrt(2))


def test_extrapolation_is_marked():
    above = paired.reach(*LADDER, 55.0)
    assert above.extrapolated and above.budget == pytest.approx(40 * math.sqrt(2))
    below = paired.reach(*LADDER, 25.0)
    assert below.extrapolated and below.budget == pytest.approx(10 / math.sqrt(2))
    found = paired.compute_multiplier({0: LADDER, 1: LADDER}, {0: 55.0, 1: 40.0}, 10.0)
    assert found.extrapolated_seeds == (0,)
    assert "(extrapolated)" in paired.speedup_text(found.effect, 0.01, found.extrapolated)
    flat = ([10.0, 20.0, 40.0], [30.0, 40.0, 40.0])  # the last segment does not rise: undefined, said so
    undefined = paired.compute_multiplier({0: flat}, {0: 45.0}, 10.0)
    assert math.isnan(undefined.effect.estimate) and "does not rise" in undefined.why


def test_a_ladder_that_is_not_monotone_reads_its_first_crossing():
    ladder = ([10.0, 20.0, 40.0, 80.0], [30.0, 45.0, 40.0, 50.0])
    assert paired.reach(*ladder, 42.0).budget == pytest.approx(10 * 2 ** (12 / 15))
    assert paired.reach(*ladder, 47.0).budget == pytest.approx(40 * 2 ** (7 / 10))
    assert paired.reach(*ladder, 40.0).budget == pytest.approx(10 * 2 ** (10 / 15))  # not the dip at 40
    assert not paired.reach(*ladder, 50.0).extrapolated


def test_time_to_target_divides_the_baselines_budget_by_the_methods():
    baseline = {s: LADDER for s in (0, 1, 2)}
    method = {0: ([5.0, 10.0, 20.0], [30.0, 40.0, 50.0]), 1: ([5.0, 10.0, 20.0], [30.0, 40.0, 50.0]),
              2: ([10.0, 20.0, 40.0], [30.0, 40.0, 50.0])}
    found = paired.time_to_target(baseline, method, 40.0)
    assert found.ratios == pytest.approx((2.0, 2.0, 1.0))
    assert found.effect.estimate == pytest.approx(4 ** (1 / 3))


def test_verdicts_name_the_effect_and_its_interval():
    effect = paired.Effect(1.62, 1.41, 1.86, 0.001, 3, "t, 3 seeds")
    assert paired.speedup_text(effect, 0.003) == "1.62x [1.41, 1.86] less compute for equal top-1"
    assert paired.speedup_text(effect, 0.06) == "not resolved: 1.62x [1.41, 1.86]"  # Holm-adjusted p decides
    slower = paired.Effect(1 / 1.3, 1 / 1.5, 1 / 1.1, 0.01, 3, "t, 3 seeds")
    assert paired.speedup_text(slower, 0.02) == "needs 1.30x [1.10, 1.50] more compute for equal top-1"
    difference = paired.Effect(2.1, 0.8, 3.4, 0.01, 3, "t, 3 seeds")
    assert paired.difference_text(difference, 0.02) == "+2.1 [+0.8, +3.4] points top-1 at equal budget"
    assert paired.difference_text(difference, 0.2).startswith("not resolved: +2.1")


def test_power_and_seeds_needed_match_a_textbook_value():
    # a one-sample two-sided t-test at d = 0.5, alpha 0.05, power 0.8 needs 34 (G*Power: actual power 0.808)
    assert seeds_needed(0.5, 1.0, 0.8) == 34
    assert t_power(34, 0.5, 1.0) == pytest.approx(0.8078, abs=5e-4)
    assert t_power(33, 0.5, 1.0) < 0.8
    # against a simulation of the test itself
    rng = np.random.default_rng(0)
    draws = rng.normal(math.log(1.3), 0.2, (20000, 5))
    simulated = (stats.ttest_1samp(draws, 0, axis=1).pvalue < 0.05).mean()
    assert t_power(5, math.log(1.3), 0.2) == pytest.approx(simulated, abs=0.01)


def test_time_to_target_table_on_a_made_up_study():
    from vtbench.report.tables import time_to_target_table

    rows = [{"method": "baseline", "is_baseline": True, "settings": "k", "budget": f"{b}steps", "seed": s,
             "top1": t, "expected_speedup": math.nan} for s in (0, 1, 2) for b, t in zip((10, 20, 40), LADDER[1],
                                                                                       strict=True)]
    rows += [{"method": "fast", "is_baseline": False, "settings": "k", "budget": f"{b}steps", "seed": s,
              "top1": t + 0.5 * s, "expected_speedup": math.nan} for s in (0, 1, 2)
             for b, t in zip((5, 10), (30.0, 40.0), strict=True)]
    table = time_to_target_table(pd.DataFrame(rows))
    assert table["target"].tolist() == ["30.0 (baseline at 10steps)", "40.0 (baseline at 20steps)",
                                        "50.0 (baseline at 40steps)"]
    at_40 = table.iloc[1]
    assert at_40["ratio"] > 2 and not at_40["extrapolated"] and at_40["interval"] == "t, 3 seeds"
    assert table.iloc[2]["extrapolated"]  # 50 lies above the method's own ladder


def test_seeds_that_agree_give_their_own_value_as_the_accuracy_interval():
    # clipped to CLIP before the logit, identical 0s (or 100s) read [0.05, 0.05]: an interval that misses its mean
    for value in (0.0, 100.0, 37.5):
        interval = Interval.of([value, value, value])
        assert (interval.low, interval.mean, interval.high) == (value, value, value)


def test_a_missing_top1_leaves_the_budget_undefined_rather_than_failing():
    missing = paired.reach(*LADDER, math.nan)
    assert math.isnan(missing.budget) and "missing" in missing.why
    found = paired.compute_multiplier({0: LADDER, 1: LADDER}, {0: 40.0, 1: math.nan}, 10.0)
    assert math.isnan(found.effect.estimate) and "seed 1" in found.why
    # a missing rung is left out of the ladder
    gap = paired.reach([10.0, 20.0, 40.0], [30.0, math.nan, 50.0], 40.0)
    assert gap.budget == pytest.approx(20.0) and not gap.extrapolated


def test_the_accuracy_interval_holds_its_point_when_seeds_are_skewed():
    # the logit interval is centred near 99.9 for nine seeds at 100 and one at 50; the mean is 95
    for values in ([100.0] * 9 + [50.0], [1.0] * 9 + [50.0], [100.0, 100.0, 100.0, 99.99], [0.0, 0.0, 0.01]):
        interval = Interval.of(values)
        assert 0 <= interval.low <= interval.mean <= interval.high <= 100
        assert interval.mean == pytest.approx(np.mean(values))
