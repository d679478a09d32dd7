"""Plans: the three cells, p(arm | x), JSON round trips and validation."""

import json

import numpy as np
import pandas as pd
import pytest

from tyche_lib import Condition, Plan, PlanError, PlanSegment, Rule, initial_plan, spec_from_dict

SPEC = spec_from_dict(
    {
        "id": "exp",
        "arms": ["control", "b", "c"],
        "covariates": {"device": {"type": "categorical", "levels": ["mobile", "desktop"]}, "age": "numeric"},
        "metrics": {"primary": {"name": "y", "family": "binary"}},
        "cells": {"min_control_weight": 0.1, "min_explore_weight": 0.06},
    }
)
MOBILE = Condition("device", "in", levels=("mobile",))


def two_segment_plan(**overrides):
    segments = (
        PlanSegment("s1", Rule((MOBILE,)), {"control": 0.1, "b": 0.7, "c": 0.2}),
        PlanSegment(
            "s2", Rule((Condition("device", "not in", levels=("mobile",)),)), {"control": 0.5, "b": 0.25, "c": 0.25}
        ),
    )
    kwargs = dict(
        experiment_id="exp",
        round=2,
        arms=SPEC.arms,
        weights={"control": 0.1, "explore": 0.06, "optimized": 0.84},
        segments=segments,
    )
    kwargs.update(overrides)
    return Plan(**kwargs)


def test_initial_plan_is_uniform_in_the_optimized_cell():
    plan = initial_plan(SPEC)
    assert plan.round == 1 and plan.segment_ids == ("all",)
    assert plan.segments[0].allocation == {"control": 1 / 3, "b": 1 / 3, "c": 1 / 3}
    probs = plan.segment_arm_probabilities().loc["all"]
    assert probs["control"] == pytest.approx(0.1 + 0.06 / 3 + 0.84 / 3)
    assert probs["b"] == pytest.approx(0.06 / 3 + 0.84 / 3)


def test_arm_probabilities_follow_the_formula_and_sum_to_one():
    plan = two_segment_plan()
    rows = pd.DataFrame({"device": ["mobile", "desktop", "tablet"], "age": [20, 30, 40]})
    p = plan.arm_probabilities(rows)
    assert list(p.columns) == ["control", "b", "c"]
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    # mobile: w_c·[control] + w_e/K + w_o·alloc
    assert p.loc[0, "control"] == pytest.approx(0.1 + 0.02 + 0.84 * 0.1)
    assert p.loc[0, "b"] == pytest.approx(0.02 + 0.84 * 0.7)
    # an unseen level ("tablet") falls on the "not in" side
    assert p.loc[2, "c"] == pytest.approx(0.02 + 0.84 * 0.25)
    rows["arm"] = ["b", "control", "c"]
    np.testing.assert_allclose(plan.assignment_probabilities(rows), [p.loc[0, "b"], p.loc[1, "control"], p.loc[2, "c"]])


def test_json_round_trip_is_canonical():
    plan = two_segment_plan(lineage={"seed": np.int64(7)})
    text = plan.to_json()
    again = Plan.from_json(text)
    assert again.to_json() == text
    assert json.loads(text)["segments"][0]["rule_text"] == "device in {mobile}"


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda d: d["cells"].update(control=0.5), "sum to"),
        (lambda d: d["cells"].update(explore=-0.1, optimized=1.0), "must be in [0, 1]"),
        (lambda d: d["segments"][0]["allocation"].update(d=0.0), "unknown arm 'd'"),
        (lambda d: d["segments"][0]["allocation"].pop("c"), "lacks arm 'c'"),
        (lambda d: d["segments"][1].update(id="s1"), "distinct"),
        (lambda d: d.update(schema_version=99), "schema_version"),
        (lambda d: d.pop("arms"), "lacks field 'arms'"),
    ],
)
def test_invalid_plans_are_refused(mutate, fragment):
    d = json.loads(two_segment_plan().to_json())
    mutate(d)
    with pytest.raises(PlanError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        Plan.from_json(json.dumps(d))


def test_rows_matching_no_segment_are_refused():
    plan = two_segment_plan(segments=(PlanSegment("s1", Rule((MOBILE,)), {"control": 0.2, "b": 0.4, "c": 0.4}),))
    with pytest.raises(PlanError, match="matches no segment"):
        plan.segment_of(pd.DataFrame({"device": ["mobile", "desktop"]}))
    rows = pd.DataFrame({"device": ["mobile"], "arm": ["z"]})
    with pytest.raises(PlanError, match="'z'"):
        plan.assignment_probabilities(rows)
