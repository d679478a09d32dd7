"""Sample-ratio check: flags mismatched cells and arms, passes honest routing, explains itself."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tyche_lib import Condition, Plan, PlanSegment, RowsError, Rule, initial_plan
from tyche_lib.measure._srm import _exact_multinomial_pvalue, sample_ratio_check
from tyche_lib.simulate import segment_flip, simulate_round

ARMS = ("control", "flip", "flat", "mild")


def half_half_plan() -> Plan:
    """Control cell 50%, optimized cell 50% (all to 'b'): cells split 50/50."""
    return Plan(
        "demo",
        1,
        ("a", "b"),
        {"control": 0.5, "explore": 0.0, "optimized": 0.5},
        (PlanSegment("all", Rule(), {"a": 0.0, "b": 1.0}),),
    )


def split_rows(n_control: int, n_optimized: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "cell": ["control"] * n_control + ["optimized"] * n_optimized,
            "arm": ["a"] * n_control + ["b"] * n_optimized,
            "segment_id": "all",
        }
    )


def device_plan(mobile_alloc=(0.1, 0.6, 0.0, 0.3), other_alloc=(0.4, 0.1, 0.2, 0.3)) -> Plan:
    return Plan(
        "segment_flip",
        2,
        ARMS,
        {"control": 0.1, "explore": 0.15, "optimized": 0.75},
        (
            PlanSegment(
                "mobile", Rule((Condition("device", "in", levels=("mobile",)),)), dict(zip(ARMS, mobile_alloc))
            ),
            PlanSegment(
                "other", Rule((Condition("device", "not in", levels=("mobile",)),)), dict(zip(ARMS, other_alloc))
            ),
        ),
    )


def test_a_48_52_split_of_10000_is_flagged():
    result = sample_ratio_check(split_rows(4800, 5200), half_half_plan())
    assert result.verdict == "fail" and not result.passed
    assert result.method == "chi-square" and result.df == 1
    # Pearson: 2 · 200² / 5000 = 16 on 1 df
    assert result.statistic == pytest.approx(16.0)
    assert result.pvalue == pytest.approx(stats.chi2.sf(16.0, 1))  # ≈ 6.3e-5
    assert result.observed == {"control": 4800, "explore": 0, "optimized": 5200}
    cells = result.tests[result.tests["level"] == "cells"].iloc[0]
    assert cells["failed"] and cells["pvalue"] == result.pvalue
    assert "visitors per cell" in result.message and "6.33e-05" in result.message


def test_a_correct_split_passes():
    result = sample_ratio_check(split_rows(4985, 5015), half_half_plan())
    assert result.verdict == "pass"
    assert result.pvalue == pytest.approx(stats.chi2.sf(2 * 15**2 / 5000, 1))
    assert "passed" in result.message


def test_simulated_rounds_pass_and_the_false_alarm_rate_is_controlled():
    scenario, plan = segment_flip(), device_plan()
    # Big round: every component uses chi-square.
    big = sample_ratio_check(simulate_round(scenario, plan, 100_000, 2, 1), plan)
    assert big.passed and set(big.tests["method"]) <= {"chi-square", "single category", "recorded vs plan rules"}
    assert big.n_tests == 5  # cells + (explore, optimized) × 2 segments
    # Many small rounds (exact and pooled paths): the check's false-alarm rate must not exceed
    # alpha = 0.05 beyond Monte Carlo error (3 SE over 200 rounds = 0.046); without the Bonferroni
    # correction five tests at 0.05 would fail about 20% of rounds.
    rng = np.random.default_rng(2)
    fails = [
        not sample_ratio_check(simulate_round(scenario, plan, 150, 2, rng), plan, alpha=0.05).passed for _ in range(200)
    ]
    assert np.mean(fails) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 200)


def test_an_arm_starved_in_one_segment_is_caught():
    scenario, plan = segment_flip(), device_plan()
    rows = simulate_round(scenario, plan, 60_000, 2, 3)
    # A routing bug: a fifth of the mobile optimized visitors meant for 'flip' got 'mild' instead.
    starve = (rows["cell"] == "optimized") & (rows["segment_id"] == "mobile") & (rows["arm"] == "flip")
    rows.loc[starve[starve].index[::5], "arm"] = "mild"
    result = sample_ratio_check(rows, plan)
    assert result.verdict == "fail"
    failed = result.tests[result.tests["failed"]]
    assert failed[["level", "cell", "segment"]].values.tolist() == [["arms", "optimized", "mobile"]]
    assert "arms in the optimized cell, segment 'mobile'" in result.message
    # the cell counts are untouched, and the same starvation pooled over segments would be diluted
    assert not result.tests.loc[result.tests["level"] == "cells", "failed"].any()


def test_impossible_arms_fail_with_p_zero():
    scenario, plan = segment_flip(), device_plan()
    rows = simulate_round(scenario, plan, 5000, 2, 4)
    bad = rows.copy()
    bad.loc[bad.index[bad["cell"] == "control"][0], "arm"] = "flip"
    result = sample_ratio_check(bad, plan)
    assert result.verdict == "fail" and result.pvalue == 0.0 and result.method == "zero-probability category"
    assert "arms in the control cell" in result.message and "'flip': 1" in result.message
    # 'flat' has allocation 0 in the mobile segment: seeing it in the optimized cell is impossible too
    bad = rows.copy()
    bad.loc[bad.index[(bad["cell"] == "optimized") & (bad["segment_id"] == "mobile")][0], "arm"] = "flat"
    failed = sample_ratio_check(bad, plan).tests.query("failed")
    assert failed[["cell", "segment", "method"]].values.tolist() == [
        ["optimized", "mobile", "zero-probability category"]
    ]


def test_recorded_segment_must_match_the_plans_rules():
    scenario, plan = segment_flip(), device_plan()
    rows = simulate_round(scenario, plan, 5000, 2, 5)
    rows.loc[rows.index[rows["segment_id"] == "mobile"][:3], "segment_id"] = "other"
    result = sample_ratio_check(rows, plan)
    seg = result.tests[result.tests["level"] == "segments"].iloc[0]
    assert seg["failed"] and seg["observed"] == {"mismatched": 3}
    assert "recorded segment_id" in result.message and "rules give 'mobile'" in result.message
    # without the covariates the rules test, that comparison is skipped (and nothing crashes)
    slim = rows[["cell", "arm", "segment_id"]]
    assert "segments" not in set(sample_ratio_check(slim, plan).tests["level"])


def test_exact_tests_when_expected_counts_are_tiny():
    plan = device_plan()
    rows = simulate_round(segment_flip(), plan, 40, 2, 6)
    tests = sample_ratio_check(rows, plan).tests.set_index(["cell", "segment"])
    arms = tests[tests["level"] == "arms"]
    assert (arms["method"].isin(["exact multinomial", "exact binomial", "single category"])).all()
    assert "exact multinomial" in set(arms["method"])
    assert arms.loc[arms["method"] == "exact multinomial", "note"].str.contains("< 5").all()

    two_arm = Plan(
        "demo",
        1,
        ("a", "b"),
        {"control": 0.05, "explore": 0.05, "optimized": 0.9},
        (PlanSegment("all", Rule(), {"a": 0.3, "b": 0.7}),),
    )
    rows = pd.DataFrame({"cell": "optimized", "arm": ["a"] * 1 + ["b"] * 9, "segment_id": "all"})
    row = sample_ratio_check(rows, two_arm).tests.query("cell == 'optimized'").iloc[0]
    assert row["method"] == "exact binomial"
    assert row["pvalue"] == pytest.approx(stats.binomtest(1, 10, 0.3).pvalue)


def test_exact_multinomial_agrees_with_the_binomial_test_and_sums_to_one():
    for k, n, p in [(2, 12, 0.3), (7, 20, 0.5), (0, 9, 0.2)]:
        ours = _exact_multinomial_pvalue(np.array([k, n - k]), np.array([p, 1 - p]))
        assert ours == pytest.approx(stats.binomtest(k, n, p).pvalue, rel=1e-9)
    # the observed outcome that is the least likely of all has p-value = its own probability
    p = np.array([0.6, 0.3, 0.1])
    assert _exact_multinomial_pvalue(np.array([0, 0, 8]), p) == pytest.approx(0.1**8, rel=1e-6)
    # the most likely outcome has p-value 1 (every outcome is at most as likely)
    assert _exact_multinomial_pvalue(np.array([6, 3, 1]), p) == pytest.approx(1.0)


def floor_plan(alloc) -> Plan:
    return Plan(
        "demo",
        1,
        ARMS,
        {"control": 0.05, "explore": 0.05, "optimized": 0.9},
        (PlanSegment("all", Rule(), dict(zip(ARMS, alloc))),),
    )


def test_pooling_when_exact_enumeration_is_too_large():
    floor = floor_plan((0.97, 0.01, 0.01, 0.01))
    # 300 visitors, expected (291, 3, 3, 3): 4.6 million outcomes, so the three small arms are pooled
    rows = pd.DataFrame(
        {"cell": "optimized", "arm": ["control"] * 291 + ["flip", "flat", "mild"] * 3, "segment_id": "all"}
    )
    row = sample_ratio_check(rows, floor).tests.query("cell == 'optimized'").iloc[0]
    assert row["method"] == "chi-square, pooled" and row["df"] == 1
    assert "pooled ['flip', 'flat', 'mild']" in row["note"]
    assert row["pvalue"] == pytest.approx(1.0)
    # 200 visitors, expected (197, 1, 1, 1): even pooled the small arms expect 3, so exact binomial
    rows = pd.DataFrame(
        {"cell": "optimized", "arm": ["control"] * 188 + ["flip", "flat", "mild"] * 4, "segment_id": "all"}
    )
    row = sample_ratio_check(rows, floor_plan((0.985, 0.005, 0.005, 0.005))).tests.query("cell == 'optimized'").iloc[0]
    assert row["method"] == "exact binomial, pooled"
    assert row["pvalue"] == pytest.approx(stats.binomtest(12, 200, 0.015).pvalue)


def test_bad_input_raises_a_named_error():
    plan = initial_plan(segment_flip().spec())
    rows = simulate_round(segment_flip(), plan, 50, 1, 0)
    with pytest.raises(RowsError, match="'segment_id'.*must have a 'segment_id' column"):
        sample_ratio_check(rows.drop(columns="segment_id"), plan)
    with pytest.raises(RowsError, match="'arm': 'purple'.*not an arm of the plan"):
        sample_ratio_check(rows.assign(arm=["purple"] + list(rows["arm"][1:])), plan)
    with pytest.raises(RowsError, match="'cell': 'holdout'.*unknown cell"):
        sample_ratio_check(rows.assign(cell="holdout"), plan)
    with pytest.raises(RowsError, match="'segment_id': 'leaf_9'.*not a segment of the plan"):
        sample_ratio_check(rows.assign(segment_id="leaf_9"), plan)
    with pytest.raises(RowsError, match="'arm'.*null"):
        sample_ratio_check(rows.assign(arm=None), plan)
    with pytest.raises(ValueError, match="alpha = 1.5"):
        sample_ratio_check(rows, plan, alpha=1.5)
    empty = sample_ratio_check(rows.iloc[:0], plan)
    assert empty.passed and empty.tests.empty and "no visitors" in empty.message
