"""Sample-size planning: the fixed-horizon formulas and the adaptive simulation planner."""

import math

import pandas as pd
import pytest
from scipy import stats

from tyche_lib import Condition, Rule, plan_adaptive_sample_size, plan_sample_size
from tyche_lib.simulate import MetricTruth, Scenario, no_heterogeneity, segment_flip


def test_binary_calibration_point_from_the_issue():
    # External reference quoted in the issue: 10% baseline, +10% relative, alpha 0.05, power 0.8.
    result = plan_sample_size(0.10, 0.10, alpha=0.05, power=0.8)
    assert result.n_per_arm == 14_751
    assert result.n_total == 2 * 14_751
    assert math.isclose(result.treatment_value, 0.11)


def _power_two_proportions(p1, p2, n, alpha):
    """Power of the pooled two-sided z-test with n per arm, by direct computation."""
    p_bar = (p1 + p2) / 2
    se0 = math.sqrt(2 * p_bar * (1 - p_bar) / n)
    se1 = math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / n)
    z = stats.norm.ppf(1 - alpha / 2)
    return stats.norm.cdf((abs(p2 - p1) - z * se0) / se1)


@pytest.mark.parametrize("baseline, mde, relative", [(0.10, 0.10, True), (0.30, -0.05, False), (0.02, 0.25, True)])
def test_binary_size_is_the_smallest_reaching_the_power(baseline, mde, relative):
    result = plan_sample_size(baseline, mde, relative=relative, power=0.9)
    p2 = result.treatment_value
    assert _power_two_proportions(baseline, p2, result.n_per_arm, 0.05) >= 0.9
    assert _power_two_proportions(baseline, p2, result.n_per_arm - 1, 0.05) < 0.9


def test_continuous_size_gives_the_power_of_a_two_sample_z_test():
    result = plan_sample_size(20.0, 0.05, metric="continuous", sd=6.0, alpha=0.05, power=0.8)
    se = 6.0 * math.sqrt(2 / result.n_per_arm)
    power = stats.norm.cdf(abs(result.absolute_effect) / se - stats.norm.ppf(0.975))
    assert power >= 0.8
    se_less = 6.0 * math.sqrt(2 / (result.n_per_arm - 1))
    assert stats.norm.cdf(abs(result.absolute_effect) / se_less - stats.norm.ppf(0.975)) < 0.8
    assert math.isclose(result.absolute_effect, 1.0)


def test_bonferroni_and_one_sided_tests():
    three = plan_sample_size(0.10, 0.10, n_treatments=3)
    assert three.alpha_per_comparison == pytest.approx(0.05 / 3)
    assert three.n_per_arm == plan_sample_size(0.10, 0.10, alpha=0.05 / 3).n_per_arm
    assert three.n_total == 4 * three.n_per_arm
    # A one-sided test at alpha is the two-sided test at 2 alpha.
    assert plan_sample_size(0.10, 0.10, two_sided=False).n_per_arm == plan_sample_size(0.10, 0.10, alpha=0.10).n_per_arm


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(baseline=1.2, mde=0.1), "baseline"),
        (dict(baseline=0.1, mde=0.0), "mde"),
        (dict(baseline=0.9, mde=0.2), "mde"),
        (dict(baseline=0.1, mde=0.1, alpha=1.5), "alpha"),
        (dict(baseline=0.1, mde=0.1, power=0), "power"),
        (dict(baseline=0.1, mde=0.1, n_treatments=0), "n_treatments"),
        (dict(baseline=20.0, mde=0.1, metric="continuous"), "sd"),
        (dict(baseline=0.1, mde=0.1, metric="hurdle"), "metric"),
    ],
)
def test_bad_input_names_the_argument(kwargs, field):
    with pytest.raises(ValueError, match=field):
        plan_sample_size(**kwargs)


def _two_arm_scenario(p_control, lift):
    return Scenario(
        name="two_arms",
        arms=("control", "treatment"),
        covariates=(),
        outcome=MetricTruth("converted", "binary", prob=lambda x, arm: p_control + lift * (arm == "treatment")),
    )


def test_one_round_matches_the_normal_approximation_of_picking_the_better_arm():
    p, lift, visitors, n_sims = 0.10, 0.02, 1000, 400
    result = plan_adaptive_sample_size(
        _two_arm_scenario(p, lift), rounds_grid=[1], visitors_grid=[visitors], n_sims=n_sims, rng=11
    )
    # Round 1 routes by the initial plan: control gets 5% + 5%/2 + 90%/2 of the visitors.
    share_control = 0.05 + 0.05 / 2 + 0.90 / 2
    n_c, n_t = visitors * share_control, visitors * (1 - share_control)
    se = math.sqrt(p * (1 - p) / n_c + (p + lift) * (1 - p - lift) / n_t)
    expected = stats.norm.cdf(lift / se)
    estimate = result.grid["probability_correct"].iloc[0]
    # Binomial Monte Carlo error over n_sims experiments; 4 sd (about 0.07) covers it and the
    # small error of the normal approximation.
    assert abs(estimate - expected) < 4 * math.sqrt(expected * (1 - expected) / n_sims)
    assert result.best_arms == {"all visitors": ("treatment",)}


@pytest.fixture(scope="module")
def planned():
    return plan_adaptive_sample_size(
        no_heterogeneity(), rounds_grid=[1, 3], visitors_grid=[300, 3000], n_sims=60, rng=5, target_probability=0.8
    )


def test_more_data_gives_more_correct_decisions(planned):
    grid = planned.grid.set_index(["rounds", "visitors_per_round"])
    low, high = grid.loc[(1, 300)], grid.loc[(3, 3000)]
    combined_se = math.sqrt(max(low["standard_error"], 0.01) ** 2 + max(high["standard_error"], 0.01) ** 2)
    assert high["probability_correct"] > low["probability_correct"] + 4 * combined_se
    assert planned.best_arms == {"all visitors": ("large_lift",)}


def test_recommendation_is_the_cheapest_grid_point_reaching_the_target(planned):
    grid = planned.grid
    assert len(grid) == 4 and set(grid["total_visitors"]) == {300, 900, 3000, 9000}
    assert planned.reached
    assert planned.probability_correct >= planned.target_probability
    cheaper = grid[grid["total_visitors"] < planned.total_visitors]
    assert (cheaper["probability_correct"] < planned.target_probability).all()
    assert planned.total_visitors == planned.rounds * planned.visitors_per_round


def test_same_seed_same_plan_and_segments_get_their_own_best_arm():
    mobile = Rule((Condition("device", "in", levels=("mobile",)),))
    other = Rule((Condition("device", "not in", levels=("mobile",)),))
    kwargs = dict(rounds_grid=[1, 2], visitors_grid=[400], n_sims=4, rng=9, segments=[mobile, other])
    first = plan_adaptive_sample_size(segment_flip(), **kwargs)
    pd.testing.assert_frame_equal(first.grid, plan_adaptive_sample_size(segment_flip(), **kwargs).grid)
    # flip helps mobile only; mild helps returning visitors (40% of them), so it wins off mobile.
    assert first.best_arms == {str(mobile): ("flip",), str(other): ("mild",)}


def test_an_unreachable_target_is_reported_not_guessed():
    # A lift of 0.1 percentage point is a coin flip at 100 visitors: 20 of 20 correct has odds 1e-6.
    result = plan_adaptive_sample_size(
        _two_arm_scenario(0.10, 0.001),
        rounds_grid=[1],
        visitors_grid=[100],
        n_sims=20,
        rng=2,
        target_probability=0.99,
    )
    assert not result.reached
    assert result.rounds is None and result.visitors_per_round is None and result.probability_correct is None


def test_adaptive_bad_input_names_the_argument():
    scenario = no_heterogeneity()
    base = dict(rounds_grid=[1], visitors_grid=[100], rng=1, n_sims=1)
    with pytest.raises(ValueError, match="rounds_grid"):
        plan_adaptive_sample_size(scenario, **{**base, "rounds_grid": [0]})
    with pytest.raises(ValueError, match="visitors_grid"):
        plan_adaptive_sample_size(scenario, **{**base, "visitors_grid": []})
    with pytest.raises(ValueError, match="target_probability"):
        plan_adaptive_sample_size(scenario, **{**base, "target_probability": 1.0})
    nobody = Rule((Condition("device", "in", levels=("watch",)),))
    everyone_else = Rule((Condition("device", "not in", levels=("watch",)),))
    with pytest.raises(ValueError, match="matches no visitor"):
        plan_adaptive_sample_size(scenario, **{**base, "segments": [nobody, everyone_else]})
