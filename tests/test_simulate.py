"""Simulated rounds route visitors exactly as the plan says and draw outcomes from the stated truth."""

import time

import numpy as np
import pandas as pd
import pytest

from tyche_lib import Condition, Plan, PlanSegment, RowsError, Rule, SpecError, initial_plan, simulate, validate_rows
from tyche_lib.simulate import (
    Scenario,
    continuous,
    hurdle_revenue,
    no_heterogeneity,
    segment_flip,
    simulate_round,
    true_best_arm,
    true_contrasts,
)

# Every Monte Carlo comparison below allows 5 standard errors: with a fixed seed the test is
# deterministic, and 5 SE keeps a correct implementation passing for any seed (two-sided tail
# 5.7e-7 per comparison, < 1e-4 over all comparisons in this file) while a wrong routing weight or
# outcome model shifts the estimate by far more than 5 SE at these sample sizes.
Z = 5.0


def two_segment_plan(scenario: Scenario, weights=None) -> Plan:
    """Mobile and non-mobile segments with deliberately different allocations, one arm at zero."""
    mobile = Rule((Condition("device", "in", levels=("mobile",)),))
    other = Rule((Condition("device", "not in", levels=("mobile",)),))
    arms = scenario.arms
    return Plan(
        experiment_id=scenario.name,
        round=2,
        arms=arms,
        weights=weights or {"control": 0.1, "explore": 0.15, "optimized": 0.75},
        segments=(
            PlanSegment("mobile", mobile, dict(zip(arms, (0.1, 0.6, 0.0, 0.3)))),
            PlanSegment("other", other, dict(zip(arms, (0.4, 0.1, 0.2, 0.3)))),
        ),
    )


@pytest.fixture(scope="module")
def routed():
    scenario = segment_flip()
    plan = two_segment_plan(scenario)
    return scenario, plan, simulate_round(scenario, plan, n=200_000, round=3, rng=11)


def test_columns_and_types(routed):
    scenario, plan, rows = routed
    expected = [
        "experiment_id",
        "round",
        "visitor_id",
        "assigned_at",
        "cell",
        "segment_id",
        "arm",
        "assignment_prob",
        "device",
        "returning",
        "region",
        "age",
        "converted",
        "latency_ms",
    ]
    assert list(rows.columns) == expected
    assert (rows["experiment_id"] == plan.experiment_id).all() and (rows["round"] == 3).all()
    assert rows["visitor_id"].is_unique and rows["visitor_id"].str.startswith("r003-").all()
    assert str(rows["assigned_at"].dt.tz) == "UTC" and rows["assigned_at"].is_monotonic_increasing
    # round 3 of one-day rounds starting 2026-01-05: all of 2026-01-07
    assert rows["assigned_at"].min() >= pd.Timestamp("2026-01-07", tz="UTC")
    assert rows["assigned_at"].max() < pd.Timestamp("2026-01-08", tz="UTC")
    assert set(rows["converted"].unique()) <= {0, 1}
    # the rows satisfy the spec's own validation
    validate_rows(rows, scenario.spec())


def test_recorded_probabilities_and_segments_follow_the_design_formula(routed):
    # Computed by hand from DESIGN.md, not by the Plan methods the simulator itself uses:
    # p(arm | x) = w_control·[arm = control] + w_explore / K + w_optimized · alloc[segment(x)][arm]
    scenario, plan, rows = routed
    segment = np.where(rows["device"] == "mobile", "mobile", "other")
    np.testing.assert_array_equal(rows["segment_id"].to_numpy(dtype=object), segment)
    alloc = {
        "mobile": dict(zip(scenario.arms, (0.1, 0.6, 0.0, 0.3))),
        "other": dict(zip(scenario.arms, (0.4, 0.1, 0.2, 0.3))),
    }
    w_control, w_explore, w_optimized = 0.1, 0.15, 0.75
    expected = [
        w_control * (arm == "control") + w_explore / 4 + w_optimized * alloc[seg][arm]
        for arm, seg in zip(rows["arm"], segment)
    ]
    np.testing.assert_allclose(rows["assignment_prob"].to_numpy(), expected, rtol=0, atol=1e-12)


def test_routing_frequencies_match_the_plan(routed):
    _, plan, rows = routed
    n = len(rows)
    for cell, w in plan.weights.items():
        share = (rows["cell"] == cell).mean()
        assert abs(share - w) < Z * np.sqrt(w * (1 - w) / n), cell
    assert (rows.loc[rows["cell"] == "control", "arm"] == plan.control).all()
    for seg in plan.segments:
        for cell in ("explore", "optimized"):
            part = rows[(rows["cell"] == cell) & (rows["segment_id"] == seg.id)]
            for arm in plan.arms:
                p = 1 / len(plan.arms) if cell == "explore" else seg.allocation[arm]
                share = (part["arm"] == arm).mean()
                if p == 0:
                    assert share == 0, (seg.id, arm)
                else:
                    assert abs(share - p) < Z * np.sqrt(p * (1 - p) / len(part)), (cell, seg.id, arm)


def test_inverse_probability_weights_average_to_one(routed):
    # E[1{arm = a} / p(a | x)] = 1 for every arm when the recorded probabilities are the true ones.
    _, plan, rows = routed
    for arm in plan.arms:
        w = np.where(rows["arm"] == arm, 1 / rows["assignment_prob"], 0.0)
        assert abs(w.mean() - 1) < Z * w.std() / np.sqrt(len(w)), arm


@pytest.mark.parametrize("make", [segment_flip, no_heterogeneity, hurdle_revenue, continuous])
def test_outcomes_follow_the_truth(make):
    scenario = make()
    rows = simulate_round(scenario, initial_plan(scenario.spec()), n=120_000, round=1, rng=5)
    y = rows[scenario.metric].to_numpy(dtype=float)
    truth = scenario.true_means(rows)
    expected = truth.to_numpy()[np.arange(len(rows)), truth.columns.get_indexer(rows["arm"])]
    by_device = "device" if "device" in rows else "returning"
    for _, idx in rows.groupby(["arm", by_device]).groups.items():
        resid = y[idx] - expected[idx]
        assert abs(resid.mean()) < Z * y[idx].std() / np.sqrt(len(idx)) + 1e-12


def test_hurdle_parts_follow_the_truth():
    scenario = hurdle_revenue()
    rows = simulate_round(scenario, initial_plan(scenario.spec()), n=150_000, round=1, rng=8)
    y = rows["revenue"].to_numpy()
    assert (y >= 0).all()
    x = rows[["device", "returning", "region"]]
    for arm in scenario.arms:
        sel = (rows["arm"] == arm).to_numpy()
        p = scenario.outcome.prob(x[sel], arm)
        hit = y[sel] > 0
        assert abs(hit.mean() - p.mean()) < Z * np.sqrt(p.mean() * (1 - p.mean()) / sel.sum())
        # log of a positive amount is normal(log_mu, log_sigma)
        resid = np.log(y[sel][hit]) - scenario.outcome.log_mu(x[sel], arm)[hit]
        assert abs(resid.mean()) < Z * 0.8 / np.sqrt(hit.sum())
        assert abs(resid.std() - 0.8) < Z * 0.8 / np.sqrt(2 * hit.sum())


def test_planted_segment_flip_truth():
    scenario = segment_flip(effect=0.05, mild_effect=0.02)
    rows = scenario.draw_covariates(5000, rng=1)
    c = true_contrasts(scenario, rows)
    mobile = (rows["device"] == "mobile").to_numpy()
    returning = rows["returning"].to_numpy()
    assert c.shape == (5000, 3)
    np.testing.assert_allclose(c[:, 0], np.where(mobile, 0.05, -0.05), atol=1e-12)
    np.testing.assert_allclose(c[:, 1], 0.0, atol=1e-12)
    np.testing.assert_allclose(c[:, 2], np.where(returning, 0.02, 0.0), atol=1e-12)
    best = true_best_arm(scenario, rows)
    np.testing.assert_array_equal(best, np.where(mobile, "flip", np.where(returning, "mild", "control")))


def test_best_arms_of_the_other_scenarios():
    rows = no_heterogeneity().draw_covariates(2000, rng=2)
    assert (true_best_arm(no_heterogeneity(), rows) == "large_lift").all()

    rows = continuous().draw_covariates(2000, rng=3)
    young = (rows["age"] <= 40).to_numpy()
    np.testing.assert_array_equal(true_best_arm(continuous(), rows), np.where(young, "tutorial", "reminder"))

    scenario = hurdle_revenue()
    rows = scenario.draw_covariates(5000, rng=4)
    device, returning = rows["device"].to_numpy(), rows["returning"].to_numpy()
    expected = np.select(
        [device == "desktop", ~returning, device == "mobile"], ["bundle", "discount", "free_shipping"], "control"
    )
    np.testing.assert_array_equal(true_best_arm(scenario, rows), expected)
    # the hurdle contrast is on E[Y] = P(Y > 0) E[Y | Y > 0], not on either part alone
    means = scenario.true_means(rows)
    x = rows[["device", "returning", "region"]]
    direct = scenario.outcome.prob(x, "bundle") * np.exp(scenario.outcome.log_mu(x, "bundle") + 0.8**2 / 2)
    np.testing.assert_allclose(means["bundle"], direct)


def test_guardrail_regression_is_planted():
    scenario = segment_flip(latency_regression_ms={"flip": 40.0})
    rows = simulate_round(scenario, initial_plan(scenario.spec()), n=40_000, round=1, rng=6)
    np.testing.assert_allclose(true_contrasts(scenario, rows, metric="latency_ms")[:, 0], 40.0)
    np.testing.assert_allclose(true_contrasts(scenario, rows, metric="latency_ms")[:, 1:], 0.0)
    # the drawn latencies scatter around the true mean of the arm received (noise sd 30 ms)
    truth = scenario.true_means(rows, "latency_ms")
    expected = truth.to_numpy()[np.arange(len(rows)), truth.columns.get_indexer(rows["arm"])]
    resid = rows["latency_ms"].to_numpy() - expected
    for arm in scenario.arms:
        sel = (rows["arm"] == arm).to_numpy()
        assert abs(resid[sel].mean()) < Z * 30.0 / np.sqrt(sel.sum()), arm
    guardrail = scenario.spec().guardrails[0]
    assert (guardrail.name, guardrail.direction) == ("latency_ms", "increase_is_bad")
    with pytest.raises(ValueError, match="unknown arm 'nope'"):
        segment_flip(latency_regression_ms={"nope": 1.0})


def test_pre_period_column_is_correlated_with_the_outcome():
    scenario = continuous(pre_period_correlation=0.7)
    assert scenario.spec().pre_period == "pre_value"
    rows = simulate_round(scenario, initial_plan(scenario.spec()), n=100_000, round=1, rng=9)
    truth = scenario.true_means(rows)
    arm_mean = truth.to_numpy()[np.arange(len(rows)), truth.columns.get_indexer(rows["arm"])]
    r = np.corrcoef(rows["value"] - arm_mean, rows["pre_value"] - truth["control"])[0, 1]
    # sampling sd of a correlation near 0.7 is (1 - 0.49) / sqrt(n) ≈ 0.0016
    assert abs(r - 0.7) < Z * 0.0016
    assert "pre_value" not in simulate_round(segment_flip(), initial_plan(segment_flip().spec()), 10, 1, 0)


def test_reproducible_with_a_seed_and_accepts_a_generator():
    scenario = segment_flip()
    plan = initial_plan(scenario.spec())
    a = simulate_round(scenario, plan, 500, 1, 42)
    b = simulate_round(scenario, plan, 500, 1, np.random.default_rng(42))
    c = simulate_round(scenario, plan, 500, 1, 43)
    pd.testing.assert_frame_equal(a, b)
    assert not a["arm"].equals(c["arm"])
    later = simulate_round(scenario, plan, 500, 2, 42)
    assert set(a["visitor_id"]).isdisjoint(later["visitor_id"])
    assert len(simulate_round(scenario, plan, 0, 1, 0)) == 0


def test_spec_matches_the_scenario_and_takes_overrides():
    scenario = hurdle_revenue()
    spec = scenario.spec("rev_test", posterior={"draws": 200}, epsilon=0.1)
    assert spec.id == "rev_test" and spec.draws == 200 and spec.epsilon == 0.1
    assert spec.arms == scenario.arms and spec.primary.family == "hurdle" and spec.primary.name == "revenue"
    assert spec.covariate("device").levels == ("mobile", "desktop", "tablet")
    assert segment_flip().spec().covariate("age").buckets == 4
    with pytest.raises(SpecError, match="epsilon"):
        scenario.spec(epsilon=2.0)
    assert set(simulate.SCENARIOS) == {"no_heterogeneity", "segment_flip", "hurdle_revenue", "continuous"}


def test_bad_input_is_named():
    scenario = segment_flip()
    other = initial_plan(hurdle_revenue().spec())
    with pytest.raises(ValueError, match="plan.arms"):
        simulate_round(scenario, other, 10, 1, 0)
    with pytest.raises(ValueError, match="n = -1"):
        simulate_round(scenario, initial_plan(scenario.spec()), -1, 1, 0)
    with pytest.raises(ValueError, match="round = 0"):
        simulate_round(scenario, initial_plan(scenario.spec()), 10, 0, 0)
    with pytest.raises(RowsError, match="device"):
        true_contrasts(scenario, pd.DataFrame({"age": [30.0]}))


def test_a_million_visitors_in_seconds():
    # A per-visitor Python loop takes minutes here; the vectorised path takes ~2 s on one core.
    scenario = segment_flip()
    plan = two_segment_plan(scenario)
    t0 = time.perf_counter()
    rows = simulate_round(scenario, plan, 1_000_000, 1, 0)
    assert len(rows) == 1_000_000
    assert time.perf_counter() - t0 < 20
