"""Bad rounds fail the right blocking check, publish no plan, and lose nothing already stored."""

import json

import numpy as np
import pandas as pd
import pytest


def _missing_column(rows, plan):
    return rows.drop(columns=["converted"])


def _wrong_type(rows, plan):
    rows = rows.astype({"assignment_prob": object})
    rows.loc[3, "assignment_prob"] = "high"
    return rows


def _duplicate_ids(rows, plan):
    rows.loc[5, "visitor_id"] = rows.loc[4, "visitor_id"]
    return rows


def _unknown_arm(rows, plan):
    rows.loc[2, "arm"] = "purple"
    return rows


def _zero_probability(rows, plan):
    rows.loc[1, "assignment_prob"] = 0.0
    return rows


def _probability_above_one(rows, plan):
    rows.loc[1, "assignment_prob"] = 1.2
    return rows


def _probabilities_off_plan(rows, plan):
    rows.loc[:49, "assignment_prob"] = rows.loc[:49, "assignment_prob"] * 0.9
    return rows


def _sample_ratio_mismatch(rows, plan):
    """48/52 instead of the planned split: relabel treatment rows as control, probabilities kept exact."""
    rng = np.random.default_rng(0)
    treated = np.flatnonzero(rows["arm"].to_numpy() == "flip")
    move = rng.choice(treated, size=int(0.04 * len(rows)), replace=False)
    rows.loc[move, "arm"] = "control"
    rows.loc[move, "cell"] = "explore"
    rows["assignment_prob"] = plan.assignment_probabilities(rows)
    return rows


CASES = [
    (_missing_column, "round_visitors_quality", "converted"),
    (_wrong_type, "round_visitors_quality", "assignment_prob"),
    (_duplicate_ids, "round_visitors_quality", "visitor_id"),
    (_unknown_arm, "round_visitors_quality", "arm"),
    (_zero_probability, "round_visitors_quality", "assignment_prob"),
    (_probability_above_one, "round_visitors_quality", "assignment_prob"),
    (_probabilities_off_plan, "round_visitors_probabilities", "assignment_prob"),
    (_sample_ratio_mismatch, "round_visitors_sample_ratio", "arm"),
]


def _check_results(result):
    return {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}


@pytest.mark.parametrize("corrupt, failing_check, field", CASES, ids=[c[0].__name__.strip("_") for c in CASES])
def test_bad_round_fails_its_check_and_publishes_nothing(project, corrupt, failing_check, field):
    project.add_experiment("flip", arms=("control", "flip"))
    project.add_experiment("other", arms=("control", "flip"))
    # The other experiment's round 1 is stored before the bad round arrives.
    other_rows = project.simulate("other", 1, 2_000)
    project.land("other", 1, other_rows)
    project.run_round("other", 1)
    other_before = project.query("SELECT * FROM visitors_other ORDER BY visitor_id")
    plans_before = project.query("SELECT * FROM plans ORDER BY experiment_id, governs_round")

    plan = project.plan_in_force("flip", 1)
    rows = corrupt(project.simulate("flip", 1, 5_000).copy(), plan)
    project.land("flip", 1, rows, fmt="csv")  # CSV: a column can hold any mix of text and numbers
    result = project.run_round("flip", 1)

    assert not result.success
    checks = _check_results(result)
    assert not checks[failing_check].passed
    message = checks[failing_check].metadata["message"].value
    assert field in message, message
    if failing_check != "round_visitors_quality":
        # Well-formed rows: only the one rule they break fails.
        assert checks["round_visitors_quality"].passed
        assert [n for n, e in checks.items() if not e.passed] == [failing_check]
    # No plan for round 2; the plan in force (round 1's) stays in force.
    assert not (project.root / "plans" / "flip" / "r000002.json").exists()
    assert project.plan_in_force("flip", 2).round == 1
    pd.testing.assert_frame_equal(
        project.query("SELECT * FROM plans ORDER BY experiment_id, governs_round"), plans_before
    )
    pd.testing.assert_frame_equal(project.query("SELECT * FROM visitors_other ORDER BY visitor_id"), other_before)
    if failing_check == "round_visitors_sample_ratio":
        report = json.loads((project.root / "reports" / "flip" / "r000001.json").read_text())
        assert report["recommendation"]["decision"] == "HALT" and report["effects"] == []
    # The raw rows stay stored for the investigation.
    raw = pd.read_parquet(project.root / "storage" / "raw" / "flip" / "r000001.parquet")
    assert len(raw) == len(rows)
