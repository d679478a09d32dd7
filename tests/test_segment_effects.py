"""segment_effects: honest per-segment effects on the round a plan governed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from tyche_lib import RowsError, Rule, build_plan, segment_effects, simulate, true_contrasts
from tyche_lib.core import Condition


def mobile_plan(scenario, round_=2):
    """Two segments (mobile / not), each leaning on a different arm: an adaptive plan's routing."""
    spec = scenario.spec()
    mobile = Condition("device", "in", levels=("mobile",))
    other = Condition("device", "not in", levels=("mobile",))
    tree = SimpleNamespace(
        segments=[SimpleNamespace(id="s1", rule=Rule((other,))), SimpleNamespace(id="s2", rule=Rule((mobile,)))]
    )
    lean = {
        "s1": {"control": 0.55, "mild": 0.25, "flip": 0.1, "flat": 0.1},
        "s2": {"control": 0.05, "mild": 0.05, "flip": 0.85, "flat": 0.05},
    }
    return spec, build_plan(spec, round_, tree, {s: {a: lean[s][a] for a in spec.arms} for s in lean})


def test_intervals_cover_the_members_average_effect_at_their_level():
    # 150 independent rounds of 3,000 visitors under an adaptive two-segment plan; each yields
    # 2 segments x 3 treatments intervals. Coverage SE with rounds as clusters is about
    # sqrt(0.09 / 900) x 1.5 (intervals of one round share the control arm) ~ 0.015 for 90%
    # and ~ 0.025 for 50%: the bounds are 3 SE.
    scenario = simulate.segment_flip()
    spec, plan = mobile_plan(scenario)
    assert scenario.arms == spec.arms
    hits = {0.5: [], 0.9: []}
    for rep in range(150):
        rows = simulate.simulate_round(scenario, plan, 3000, 2, rng=1000 + rep)
        table = segment_effects(rows, spec, rng=rep).table
        truth = pd.DataFrame(true_contrasts(scenario, rows), columns=list(spec.treatments))
        truth["segment_id"] = rows["segment_id"].to_numpy()
        target = truth.groupby("segment_id").mean()
        for row in table.itertuples(index=False):
            t = target.loc[row.segment_id, row.treatment]
            hits[0.5].append(row.lower_50 <= t <= row.upper_50)
            hits[0.9].append(row.lower_90 <= t <= row.upper_90)
    assert abs(np.mean(hits[0.9]) - 0.90) < 0.045
    assert abs(np.mean(hits[0.5]) - 0.50) < 0.075


def test_same_seed_same_table_and_counts_per_arm():
    scenario = simulate.segment_flip()
    spec, plan = mobile_plan(scenario)
    rows = simulate.simulate_round(scenario, plan, 4000, 2, rng=3)
    first, again = segment_effects(rows, spec, rng=11), segment_effects(rows, spec, rng=11)
    pd.testing.assert_frame_equal(first.table, again.table)
    counts = rows.groupby(["segment_id", "arm"]).size()
    for row in first.table.itertuples(index=False):
        assert row.n_control == counts[row.segment_id, "control"]
        assert row.n_treatment == counts[row.segment_id, row.treatment]
    assert first.model == "beta-binomial" and set(first.table["segment_id"]) == {"s1", "s2"}
    # The posterior mean is the difference in arm means, up to the Jeffreys prior's half counts.
    y = rows.groupby(["segment_id", "arm"])[spec.primary.name].mean()
    for row in first.table.itertuples(index=False):
        assert row.mean == pytest.approx(y[row.segment_id, row.treatment] - y[row.segment_id, "control"], abs=0.004)


def test_continuous_metric_uses_the_normal_mean_posterior():
    scenario = simulate.continuous()
    spec = scenario.spec()
    from tyche_lib import initial_plan

    rows = simulate.simulate_round(scenario, initial_plan(spec), 4000, 1, rng=5)
    effects = segment_effects(rows, spec, rng=2)
    assert effects.model == "normal-mean"
    y = rows.groupby("arm")[spec.primary.name]
    for row in effects.table.itertuples(index=False):
        se = np.sqrt(y.var()[row.treatment] / y.size()[row.treatment] + y.var()[spec.control] / y.size()[spec.control])
        assert row.sd == pytest.approx(se, rel=0.05)  # t with thousands of df: sd of the difference


def test_an_arm_without_rows_gives_nan_not_a_crash():
    scenario = simulate.segment_flip()
    spec, plan = mobile_plan(scenario)
    rows = simulate.simulate_round(scenario, plan, 2000, 2, rng=8)
    rows = rows[~((rows["segment_id"] == "s2") & (rows["arm"] == "flat"))]
    table = segment_effects(rows, spec, rng=1).table.set_index(["segment_id", "treatment"])
    assert np.isnan(table.loc[("s2", "flat"), "mean"]) and table.loc[("s2", "flat"), "n_treatment"] == 0
    assert not np.isnan(table.loc[("s1", "flat"), "mean"])


def test_rows_not_from_one_plan_are_rejected_with_the_field():
    scenario = simulate.segment_flip()
    spec, plan = mobile_plan(scenario)
    rows = simulate.simulate_round(scenario, plan, 1000, 2, rng=9)
    with pytest.raises(RowsError, match="'round'.*one round"):
        segment_effects(pd.concat([rows, rows.assign(round=3)]), spec, rng=1)
    shifted = rows.copy()
    shifted.loc[shifted.index[0], "assignment_prob"] *= 0.5
    with pytest.raises(ValueError, match="assignment_prob varies within segment"):
        segment_effects(shifted, spec, rng=1)
    with pytest.raises(RowsError, match="'segment_id'"):
        segment_effects(rows.drop(columns="segment_id"), spec, rng=1)
    with pytest.raises(RowsError, match="unknown arm"):
        segment_effects(rows.assign(arm="purple"), spec, rng=1)
