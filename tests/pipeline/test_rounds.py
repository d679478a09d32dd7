"""End to end in process: rounds through the real pipeline, plans fed back into the traffic."""

import json

import numpy as np
import pytest

from tyche_assets.partitions import round_key
from tyche_lib import Plan, simulate

pytestmark = pytest.mark.slow

VISITORS = 8_000


def published_plan(project, experiment_id, governs_round):
    path = project.root / "plans" / experiment_id / f"{round_key(governs_round)}.json"
    return path.read_text() if path.exists() else None


def _condition_holds(condition: dict, value) -> bool:
    op = condition["operator"]
    if op == "in":
        return str(value) in condition["levels"]
    if op == "not in":
        return str(value) not in condition["levels"]
    if op == "is":
        return bool(value) == bool(condition["threshold"])
    if op == "<=":
        return float(value) <= condition["threshold"]
    assert op == ">", op
    return float(value) > condition["threshold"]


def probabilities_from_plan_json(text: str, rows) -> tuple[np.ndarray, np.ndarray]:
    """``p(arm | x) = w_control·[arm = control] + w_explore / K + w_optimized · alloc[segment(x)][arm]`` for each
    row, and its segment, computed from the plan's JSON alone (DESIGN.md), not with the Plan class."""
    plan = json.loads(text)
    w, arms = plan["cells"], plan["arms"]
    probabilities, segment_ids = np.empty(len(rows)), np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows.to_dict("records")):
        [segment] = [
            s for s in plan["segments"] if all(_condition_holds(c, row[c["feature"]]) for c in s["rule"]["conditions"])
        ]
        segment_ids[i] = segment["id"]
        probabilities[i] = (
            w["control"] * (row["arm"] == arms[0])
            + w["explore"] / len(arms)
            + w["optimized"] * segment["allocation"][row["arm"]]
        )
    return probabilities, segment_ids


def test_three_rounds_concentrate_on_the_true_best_arm(project):
    project.add_experiment("flip")
    scenario = simulate.segment_flip()
    for round_ in (1, 2, 3):
        rows = project.simulate("flip", round_, VISITORS)
        project.land("flip", round_, rows)
        result = project.run_round("flip", round_)
        assert result.success, round_
        text = published_plan(project, "flip", round_ + 1)
        assert text is not None
        plan = Plan.from_json(text)  # validates
        assert plan.round == round_ + 1
        stored = project.query(
            "SELECT plan_json FROM plans WHERE experiment_id = 'flip' AND governs_round = ?", [round_ + 1]
        )
        assert stored["plan_json"].iloc[0] == text
        report = json.loads((project.root / "reports" / "flip" / f"{round_key(round_)}.json").read_text())
        assert report["recommendation"]["decision"] in {"CONTINUE", "SHIP", "STOP"}
        assert report["recommendation"]["reasons"]
        primary = [e for e in report["effects"] if e["role"] == "primary"]
        assert sorted(e["arm"] for e in primary) == ["flat", "flip", "mild"]
        assert all(e["lower"] is None or e["lower"] <= e["estimate"] <= e["upper"] for e in primary)
        assert {e["segment_id"] for e in report["segment_effects"]} == set(plan.segment_ids)
        assert [g["metric"] for g in report["guardrails"]] == ["latency_ms"] * 3
        # Held out: the segments of the plan that routed this round, scored on this round's rows only.
        routed_by = Plan.from_json(published_plan(project, "flip", round_))
        held_out = report["held_out_segment_effects"]
        assert {e["segment_id"] for e in held_out} == set(rows["segment_id"]) <= set(routed_by.segment_ids)
        counts = rows.groupby(["segment_id", "arm"]).size()
        for e in held_out:
            assert e["rule_text"] == str(routed_by.segment(e["segment_id"]).rule)
            assert (e["n_control"], e["n_treatment"]) == (
                counts[e["segment_id"], "control"],
                counts[e["segment_id"], e["treatment"]],
            )
            assert e["lower_90"] <= e["lower_50"] <= e["mean"] <= e["upper_50"] <= e["upper_90"]
        stored = project.query(
            "SELECT * FROM held_out_segment_effects WHERE experiment_id = 'flip' AND round = ?", [round_]
        )
        assert len(stored) == len(held_out) == 3 * len(set(rows["segment_id"]))

    # Optimized traffic that lands on each visitor's true best arm, under the last plan versus uniform (1/4).
    rows = project.simulate("flip", 4, 20_000)
    plan = Plan.from_json(published_plan(project, "flip", 4))
    segments = plan.segment_of(rows)
    best = simulate.true_best_arm(scenario, rows)
    on_best = np.array([plan.segment(s).allocation[b] for s, b in zip(segments, best)])
    mobile = rows["device"].to_numpy() == "mobile"
    # flip is mobile's best arm by 5 points: after 24k visitors the plan gives it most mobile traffic.
    assert on_best[mobile].mean() > 0.6
    assert on_best.mean() > 0.45
    # The round-4 traffic was routed by that plan: the recorded probabilities are the plan's, by the formula.
    expected, segment_ids = probabilities_from_plan_json(published_plan(project, "flip", 4), rows)
    np.testing.assert_allclose(rows["assignment_prob"], expected, atol=1e-12)
    optimized = (rows["cell"] == "optimized").to_numpy()
    assert (rows["segment_id"].to_numpy()[optimized] == segment_ids[optimized]).all()


def test_backfill_reproduces_the_plan_and_lineage_tracks_rows(project):
    project.add_experiment("flip")
    rows = project.simulate("flip", 1, 4_000)
    project.land("flip", 1, rows)
    assert project.run_round("flip", 1).success
    first = published_plan(project, "flip", 2)
    runs_before = project.query("SELECT run_id FROM plans WHERE experiment_id = 'flip' AND governs_round = 2")

    assert project.run_round("flip", 1).success  # a backfill of the same partition
    assert published_plan(project, "flip", 2) == first  # byte for byte
    runs_after = project.query("SELECT run_id FROM plans WHERE experiment_id = 'flip' AND governs_round = 2")
    assert runs_after["run_id"].iloc[0] != runs_before["run_id"].iloc[0]  # the audit trail names the new run
    sidecar = json.loads((project.root / "plans" / "flip" / "r000002.run.json").read_text())
    assert sidecar["run_id"] == runs_after["run_id"].iloc[0]

    lineage = json.loads(first)["lineage"]
    assert lineage["rows_per_round"] == {"r000001": 4_000}
    assert set(lineage["data_versions"]) == {"round_visitors", "posterior", "policy_tree", "allocation"}
    assert lineage["spec_hash"] and lineage["code_version"]

    changed = rows.copy()
    changed.loc[0, "converted"] = 1 - changed.loc[0, "converted"]  # one outcome flipped
    project.land("flip", 1, changed)
    assert project.run_round("flip", 1).success
    relineage = json.loads(published_plan(project, "flip", 2))["lineage"]
    assert (
        relineage["data_versions"]["round_visitors"]["r000001"] != lineage["data_versions"]["round_visitors"]["r000001"]
    )
    assert relineage["data_versions"]["posterior"] != lineage["data_versions"]["posterior"]


def test_a_round_with_no_data_fails_by_name_and_publishes_nothing(project):
    project.add_experiment("flip")
    result = project.run_round("flip", 1)  # nothing landed for round 1
    assert not result.success
    assert result.get_asset_materialization_events() == []
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.user_failure_data.description
    assert "round 1 of flip refused: no data has landed for it" in message
    assert published_plan(project, "flip", 2) is None


def test_two_experiments_do_not_interfere(project):
    project.add_experiment("left")
    project.add_experiment("right", arms=("control", "flip"))
    for exp in ("left", "right"):
        project.land(exp, 1, project.simulate(exp, 1, 3_000))
    for exp in ("left", "right"):
        assert project.run_round(exp, 1).success
    left = project.query("SELECT DISTINCT experiment_id FROM visitors_left")
    right = project.query("SELECT count(*) AS n, min(arm) AS lo, max(arm) AS hi FROM visitors_right")
    assert left["experiment_id"].tolist() == ["left"]
    assert right["n"].iloc[0] == 3_000 and {right["lo"].iloc[0], right["hi"].iloc[0]} <= {"control", "flip"}
    assert Plan.from_json(published_plan(project, "left", 2)).arms == ("control", "flip", "flat", "mild")
    assert Plan.from_json(published_plan(project, "right", 2)).arms == ("control", "flip")


def test_a_posterior_that_did_not_converge_publishes_no_plan(project):
    # 20 draws per chain cannot give a bulk ESS of 100: the gate must stop the round.
    project.add_experiment("flip", posterior={"draws": 20, "tune": 20, "chains": 2})
    project.land("flip", 1, project.simulate("flip", 1, 2_000))
    result = project.run_round("flip", 1)
    assert not result.success
    (gate,) = [e for e in result.get_asset_check_evaluations() if e.asset_check_key.name == "posterior_convergence"]
    assert not gate.passed
    message = gate.metadata["message"].value
    assert "no plan is built" in message and ("ess_bulk of " in message or "r_hat of " in message)
    assert "ess_bulk" in gate.metadata["failures"].value  # every failed criterion is listed
    assert published_plan(project, "flip", 2) is None
    assert project.plan_in_force("flip", 2).round == 1  # the plan in force stays in force
    assert not (project.root / "reports" / "flip" / "r000001.json").exists()
