"""Plans: the three cells, p(arm | x), JSON round trips and validation."""

import json
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from tyche_lib import Condition, Plan, PlanError, PlanSegment, Rule, build_plan, initial_plan, spec_from_dict

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


# -- spec revisions: retired and added arms ---------------------------------------------------------

# two_segment_plan(lineage={"seed": 7}).to_json() as written before plans could retire arms (commit
# 3f9d971): a plan without retired arms must keep these bytes, or republished plans would not reproduce.
PINNED_VERSION_1_JSON = """\
{
  "arm_probabilities": {
    "s1": {
      "b": 0.608,
      "c": 0.188,
      "control": 0.20400000000000001
    },
    "s2": {
      "b": 0.22999999999999998,
      "c": 0.22999999999999998,
      "control": 0.54
    }
  },
  "arms": [
    "control",
    "b",
    "c"
  ],
  "cells": {
    "control": 0.1,
    "explore": 0.06,
    "optimized": 0.84
  },
  "experiment_id": "exp",
  "lineage": {
    "seed": 7
  },
  "round": 2,
  "schema_version": 1,
  "segments": [
    {
      "allocation": {
        "b": 0.7,
        "c": 0.2,
        "control": 0.1
      },
      "id": "s1",
      "rule": {
        "conditions": [
          {
            "feature": "device",
            "levels": [
              "mobile"
            ],
            "operator": "in"
          }
        ]
      },
      "rule_text": "device in {mobile}"
    },
    {
      "allocation": {
        "b": 0.25,
        "c": 0.25,
        "control": 0.5
      },
      "id": "s2",
      "rule": {
        "conditions": [
          {
            "feature": "device",
            "levels": [
              "mobile"
            ],
            "operator": "not in"
          }
        ]
      },
      "rule_text": "device not in {mobile}"
    }
  ]
}
"""

REVISED = spec_from_dict(
    {
        "id": "exp",
        "revision": 2,
        "arms": ["control", "b", "c", "d"],
        "retired_arms": ["c"],
        "covariates": {"device": {"type": "categorical", "levels": ["mobile", "desktop"]}, "age": "numeric"},
        "metrics": {"primary": {"name": "y", "family": "binary"}},
        "cells": {"min_control_weight": 0.1, "min_explore_weight": 0.06},
    }
)


def retired_plan(**overrides):
    """Arm c retired (allocation 0), d newly added and not yet observed (allocation 0, explore only)."""
    segments = (
        PlanSegment("s1", Rule((MOBILE,)), {"control": 0.2, "b": 0.8, "c": 0.0, "d": 0.0}),
        PlanSegment(
            "s2",
            Rule((Condition("device", "not in", levels=("mobile",)),)),
            {"control": 0.6, "b": 0.4, "c": 0.0, "d": 0.0},
        ),
    )
    kwargs = dict(
        experiment_id="exp",
        round=5,
        arms=REVISED.arms,
        weights={"control": 0.1, "explore": 0.06, "optimized": 0.84},
        segments=segments,
        retired_arms=("c",),
    )
    kwargs.update(overrides)
    return Plan(**kwargs)


def test_version_1_json_without_retired_arms_keeps_its_bytes():
    plan = two_segment_plan(lineage={"seed": 7})
    assert plan.schema_version == 1
    assert plan.to_json() == PINNED_VERSION_1_JSON
    assert Plan.from_json(PINNED_VERSION_1_JSON).to_json() == PINNED_VERSION_1_JSON
    assert "retired_arms" not in json.loads(plan.to_json())


def test_retired_arm_leaves_explore_and_the_optimized_cell_and_a_new_arm_is_explored():
    plan = retired_plan()
    assert plan.active_arms == ("control", "b", "d")
    assert plan.explore_allocation == {"control": 1 / 3, "b": 1 / 3, "c": 0.0, "d": 1 / 3}
    rows = pd.DataFrame({"device": ["mobile", "desktop"], "age": [20, 30]})
    p = plan.arm_probabilities(rows)
    assert list(p.columns) == ["control", "b", "c", "d"]
    # p(arm | x) = w_control·[arm = control] + w_explore / K_active·[arm active] + w_optimized·alloc,
    # K_active = 3 (c is retired): 0.06 / 3 = 0.02 per active arm.
    assert p.loc[0, "control"] == pytest.approx(0.1 + 0.02 + 0.84 * 0.2)
    assert p.loc[0, "b"] == pytest.approx(0.02 + 0.84 * 0.8)
    assert p.loc[1, "control"] == pytest.approx(0.1 + 0.02 + 0.84 * 0.6)
    assert p.loc[1, "b"] == pytest.approx(0.02 + 0.84 * 0.4)
    assert (p["c"] == 0.0).all()
    np.testing.assert_allclose(p["d"], 0.02, rtol=1e-12)  # the added arm: explore only
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    rows["arm"] = ["d", "c"]
    np.testing.assert_allclose(plan.assignment_probabilities(rows), [0.02, 0.0])


def test_retired_plan_json_is_version_2_and_round_trips_byte_for_byte():
    plan = retired_plan(lineage={"seed": 7})
    d = json.loads(plan.to_json())
    assert d["schema_version"] == 2 and d["retired_arms"] == ["c"]
    assert d["arms"] == ["control", "b", "c", "d"]
    assert d["arm_probabilities"]["s1"]["c"] == 0.0
    again = Plan.from_json(plan.to_json())
    assert again.retired_arms == ("c",) and again.to_json() == plan.to_json()


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda d: d["segments"][0]["allocation"].update(b=0.7, c=0.1), "plan.segments[s1].allocation.c = 0.1"),
        (lambda d: d.update(retired_arms=["control"]), "the control is never retired"),
        (lambda d: d.update(retired_arms=["z"]), "plan.retired_arms has 'z'"),
        (lambda d: d.update(retired_arms=["c", "c"]), "must be distinct"),
        (lambda d: d.update(retired_arms=[]), "schema_version 2 lists at least one retired arm"),
        (lambda d: d.update(schema_version=1), "not a field of schema_version 1"),
        (lambda d: d.update(schema_version=3), "reads versions 1 to 2"),
    ],
)
def test_invalid_retirements_are_refused_naming_the_field(mutate, fragment):
    d = json.loads(retired_plan().to_json())
    mutate(d)
    with pytest.raises(PlanError, match=re.escape(fragment)):
        Plan.from_json(json.dumps(d))


def test_initial_and_built_plans_follow_the_spec_revision():
    plan = initial_plan(REVISED)
    assert plan.retired_arms == ("c",) and plan.arms == REVISED.arms
    assert plan.segments[0].allocation == {"control": 1 / 3, "b": 1 / 3, "c": 0.0, "d": 1 / 3}
    probs = plan.segment_arm_probabilities().loc["all"]
    assert probs["c"] == 0.0
    assert probs["d"] == pytest.approx(0.06 / 3 + 0.84 / 3)

    tree = SimpleNamespace(segments=retired_plan().segments)
    allocation = {s.id: dict(s.allocation) for s in retired_plan().segments}
    built = build_plan(REVISED, 5, tree, allocation)
    assert (
        built.retired_arms == ("c",)
        and built.to_dict()["arm_probabilities"] == retired_plan().to_dict()["arm_probabilities"]
    )
    allocation["s2"] = {"control": 0.5, "b": 0.4, "c": 0.1, "d": 0.0}
    with pytest.raises(PlanError, match=re.escape("plan.segments[s2].allocation.c = 0.1: arm 'c' is retired")):
        build_plan(REVISED, 5, tree, allocation)
