"""Assignment: deterministic, faithful to the plan, independent across salts, moving few visitors."""

import os
import subprocess
import sys
from io import StringIO

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from tyche_lib import (
    Assigner,
    Condition,
    Plan,
    PlanError,
    PlanSegment,
    Rule,
    initial_plan,
    sample_ratio_check,
    spec_from_dict,
    validate_rows,
)
from tyche_lib.cli import main
from tyche_lib.simulate import segment_flip, simulate_round

N = 200_000
ARMS = ("control", "blue", "green", "red")
# Sample-ratio checks fail at p < 0.001 in production; a correct assigner passes them.
SRM_ALPHA = 0.001


def _plan(mobile_alloc=(0.1, 0.2, 0.3, 0.4), other_alloc=(0.6, 0.2, 0.1, 0.1), weights=(0.1, 0.1, 0.8), rnd=2):
    mobile = Rule((Condition("device", "in", levels=("mobile",)),))
    other = Rule((Condition("device", "not in", levels=("mobile",)),))
    return Plan(
        experiment_id="checkout",
        round=rnd,
        arms=ARMS,
        weights=dict(zip(("control", "explore", "optimized"), weights)),
        segments=(
            PlanSegment("mobile", mobile, dict(zip(ARMS, mobile_alloc))),
            PlanSegment("other", other, dict(zip(ARMS, other_alloc))),
        ),
    )


@pytest.fixture(scope="module")
def visitors():
    rng = np.random.default_rng(20240611)
    return pd.DataFrame(
        {
            "visitor_id": [f"u{i:07d}" for i in range(N)],
            "device": rng.choice(["mobile", "desktop", "tablet"], size=N, p=[0.5, 0.3, 0.2]),
        }
    )


@pytest.fixture(scope="module")
def assigned(visitors):
    return Assigner(_plan(), salt="s1").assign(visitors)


def test_same_visitor_same_assignment_across_calls_and_row_order(visitors, assigned):
    subset = visitors.sample(1000, random_state=1)
    again = Assigner(_plan(), salt="s1").assign(subset)
    cols = ["cell", "segment_id", "arm", "assignment_prob"]
    pd.testing.assert_frame_equal(again[cols], assigned.loc[subset.index, cols])
    one = Assigner(_plan(), salt="s1").assign_one(subset["visitor_id"].iloc[0], {"device": subset["device"].iloc[0]})
    expected = assigned.loc[subset.index[0]]
    assert (one.cell, one.segment_id, one.arm, one.assignment_prob) == tuple(expected[cols])


def test_cli_in_another_process_gives_the_same_assignment(tmp_path, visitors, assigned):
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(_plan().to_json())
    subset = visitors.iloc[:2000]
    csv = tmp_path / "visitors.csv"
    subset.to_csv(csv, index=False)
    # A different PYTHONHASHSEED: Python's own hash() would then disagree between processes.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tyche_lib.cli",
            "assign",
            "--plan",
            str(plan_path),
            "--visitors",
            str(csv),
            "--salt",
            "s1",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    out = pd.read_csv(StringIO(result.stdout), dtype={"visitor_id": str})
    assert out["visitor_id"].tolist() == subset["visitor_id"].tolist()
    assert out["arm"].tolist() == assigned["arm"].iloc[:2000].tolist()
    assert out["cell"].tolist() == assigned["cell"].iloc[:2000].tolist()
    np.testing.assert_allclose(out["assignment_prob"], assigned["assignment_prob"].iloc[:2000], rtol=1e-12)
    # Every column a round row needs besides outcomes, so the output can be landed with the outcomes added.
    assert (out["experiment_id"] == "checkout").all() and (out["round"] == 2).all()
    spec = spec_from_dict(
        {
            "id": "checkout",
            "arms": list(ARMS),
            "covariates": {"device": "categorical"},
            "metrics": {"primary": {"name": "converted", "family": "binary"}},
        }
    )
    validate_rows(out.assign(converted=0), spec, experiment_id="checkout", round=2)


def test_cli_reports_bad_input_naming_the_column(tmp_path):
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(_plan().to_json())
    csv = tmp_path / "visitors.csv"
    pd.DataFrame({"visitor_id": ["a", "b"]}).to_csv(csv, index=False)
    assert main(["assign", "--plan", str(plan_path), "--visitors", str(csv), "--out", str(tmp_path / "o.csv")]) == 2


def test_sample_ratio_of_cells_and_of_arms_within_segment_matches_the_plan(assigned):
    plan = _plan()
    cells = assigned["cell"].value_counts().reindex(["control", "explore", "optimized"])
    expected = np.array([plan.weights[c] for c in cells.index]) * N
    assert stats.chisquare(cells.to_numpy(), expected).pvalue > SRM_ALPHA

    table = plan.segment_arm_probabilities()
    for seg_id, group in assigned.groupby("segment_id"):
        counts = group["arm"].value_counts().reindex(list(ARMS), fill_value=0).to_numpy()
        assert stats.chisquare(counts, table.loc[seg_id].to_numpy() * len(group)).pvalue > SRM_ALPHA
        # Within the optimized cell the arm follows the segment's allocation, within explore it is uniform.
        for cell, probs in (("optimized", [plan.segment(seg_id).allocation[a] for a in ARMS]), ("explore", [0.25] * 4)):
            sub = group[group["cell"] == cell]["arm"].value_counts().reindex(list(ARMS), fill_value=0).to_numpy()
            assert stats.chisquare(sub, np.array(probs) * sub.sum()).pvalue > SRM_ALPHA
    assert (assigned.loc[assigned["cell"] == "control", "arm"] == "control").all()


def test_recorded_probability_follows_the_design_formula(assigned):
    # By hand from DESIGN.md, not through the Plan methods the Assigner uses:
    # p(arm | x) = w_control·[arm = control] + w_explore / K + w_optimized · alloc[segment(x)][arm]
    segment = np.where(assigned["device"] == "mobile", "mobile", "other")
    assert (assigned["segment_id"] == segment).all()
    alloc = {"mobile": dict(zip(ARMS, (0.1, 0.2, 0.3, 0.4))), "other": dict(zip(ARMS, (0.6, 0.2, 0.1, 0.1)))}
    expected = [
        0.1 * (arm == "control") + 0.1 / 4 + 0.8 * alloc[seg][arm] for arm, seg in zip(assigned["arm"], segment)
    ]
    np.testing.assert_allclose(assigned["assignment_prob"].to_numpy(), expected, rtol=0, atol=1e-12)


def test_salts_and_experiments_give_independent_assignments(visitors, assigned):
    other_salt = Assigner(_plan(), salt="s2").assign(visitors)
    # Both arms depend on the segment, so independence holds within a segment.
    for seg_id in ("mobile", "other"):
        inside = assigned["segment_id"] == seg_id
        table = pd.crosstab(assigned.loc[inside, "arm"], other_salt.loc[inside, "arm"])
        assert stats.chi2_contingency(table).pvalue > SRM_ALPHA
    assert (assigned["arm"] != other_salt["arm"]).mean() > 0.3

    other_experiment = Plan.from_dict({**_plan().to_dict(), "experiment_id": "pricing"})
    moved = Assigner(other_experiment, salt="s1").assign(visitors)
    assert stats.chi2_contingency(pd.crosstab(assigned["cell"], moved["cell"])).pvalue > SRM_ALPHA


def test_traffic_share_enrols_the_share_and_ramping_up_keeps_everyone(visitors):
    share = 0.3
    small = Assigner(_plan(), salt="s1", traffic_share=share).assign(visitors)
    enrolled = small["cell"] != "excluded"
    # Binomial(N, 0.3) share: sd = sqrt(0.3 * 0.7 / N) ≈ 0.001; 5 sd is a false alarm once in 3 million.
    assert abs(enrolled.mean() - share) < 5 * np.sqrt(share * (1 - share) / N)
    assert small.loc[~enrolled, "arm"].isna().all() and small.loc[~enrolled, "assignment_prob"].isna().all()
    larger = Assigner(_plan(), salt="s1", traffic_share=0.5).assign(visitors)
    assert (larger.loc[enrolled, "cell"] != "excluded").all()
    assert (larger.loc[enrolled, "arm"] == small.loc[enrolled, "arm"]).all()


def test_excluded_visitors_are_never_enrolled(visitors, assigned):
    excluded = set(visitors["visitor_id"].iloc[:50])
    out = Assigner(_plan(), salt="s1", excluded=excluded).assign(visitors.iloc[:500])
    is_excluded = out["visitor_id"].isin(excluded)
    assert (out.loc[is_excluded, "cell"] == "excluded").all() and out.loc[is_excluded, "arm"].isna().all()
    assert (out.loc[~is_excluded, "arm"] == assigned["arm"].iloc[:500][~is_excluded]).all()
    assert Assigner(_plan(), salt="s1", excluded=excluded).assign_one("u0000000", {"device": "mobile"}).arm is None


def _moved_fraction(visitors, old, new):
    a = Assigner(old, salt="s1").assign(visitors)
    b = Assigner(new, salt="s1").assign(visitors)
    optimized = (a["cell"] == "optimized").to_numpy()
    assert (b["cell"].to_numpy()[optimized] == "optimized").all()  # same cell weights: nobody changes cell
    mobile = optimized & (a["segment_id"] == "mobile").to_numpy()
    return (a["arm"].to_numpy()[mobile] != b["arm"].to_numpy()[mobile]).mean(), mobile.sum()


def test_plan_change_toward_a_winner_moves_only_the_total_variation_distance(visitors):
    old = (0.25, 0.25, 0.25, 0.25)
    new = (0.1, 0.1, 0.1, 0.7)
    tv = 0.5 * np.abs(np.subtract(old, new)).sum()
    moved, n = _moved_fraction(visitors, _plan(mobile_alloc=old), _plan(mobile_alloc=new))
    # The moved fraction is a binomial mean over n ≈ 72,000 visitors: 4 sd ≈ 0.0075.
    tol = 4 * np.sqrt(tv * (1 - tv) / n)
    assert moved <= tv + tol
    assert moved >= tv - tol  # nobody can move fewer than TV: the marginals must change that much


def test_any_plan_change_moves_the_p_minhash_fraction_at_most_twice_tv(visitors):
    old = np.array([0.5, 0.3, 0.15, 0.05])
    new = np.array([0.15, 0.3, 0.5, 0.05])
    tv = 0.5 * np.abs(old - new).sum()
    # Moulton & Jiang (2018): P(same arm) = J_P = sum_a 1 / sum_b max(w_b / w_a, w'_b / w'_a).
    j_p = sum(1.0 / np.maximum(old / old[a], new / new[a]).sum() for a in range(len(old)))
    moved, n = _moved_fraction(visitors, _plan(mobile_alloc=tuple(old)), _plan(mobile_alloc=tuple(new)))
    tol = 4 * np.sqrt(0.25 / n)  # 4 binomial sd at worst-case variance
    assert abs(moved - (1 - j_p)) < tol
    assert moved <= 2 * tv / (1 + tv) + tol


def test_bad_input_names_the_field(visitors):
    with pytest.raises(ValueError, match="traffic_share"):
        Assigner(_plan(), traffic_share=1.5)
    with pytest.raises(ValueError, match="device"):
        Assigner(_plan()).assign(visitors[["visitor_id"]])
    with pytest.raises(ValueError, match="visitor_id"):
        Assigner(_plan()).assign(pd.DataFrame({"visitor_id": ["a", None], "device": ["mobile", "mobile"]}))
    with pytest.raises(TypeError, match="excluded"):
        Assigner(_plan(), excluded="u1")
    gap = Plan.from_dict({**_plan().to_dict(), "segments": _plan().to_dict()["segments"][:1]})
    with pytest.raises(PlanError, match="no segment"):
        Assigner(gap).assign(visitors.iloc[:100])


def test_cli_takes_salt_and_traffic_share_from_the_spec(tmp_path, visitors):
    spec = {
        "id": "checkout",
        "arms": list(ARMS),
        "covariates": {"device": "categorical"},
        "metrics": {"primary": {"name": "converted", "family": "binary"}},
        "salt": "from-spec",
        "traffic_share": 0.5,
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "plan.json").write_text(_plan().to_json())
    visitors.iloc[:3000].to_csv(tmp_path / "visitors.csv", index=False)
    args = ["assign", "--plan", str(tmp_path / "plan.json"), "--visitors", str(tmp_path / "visitors.csv")]
    assert main([*args, "--spec", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "out.csv")]) == 0
    out = pd.read_csv(tmp_path / "out.csv", dtype={"visitor_id": str})
    expected = Assigner(_plan(), salt="from-spec", traffic_share=0.5).assign(visitors.iloc[:3000])
    assert out["cell"].tolist() == expected["cell"].tolist()
    assert out["arm"].fillna("").tolist() == expected["arm"].fillna("").tolist()
    other = {**spec, "id": "pricing"}
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    assert main([*args, "--spec", str(tmp_path / "other.yaml"), "--out", str(tmp_path / "o.csv")]) == 2


# -- spec revisions: a retired arm -------------------------------------------------------------------

RETIRED_N = 50_000


def _retired_plan():
    """_plan() with red retired; each segment's remaining arms keep their proportions."""
    plan = _plan()
    segments = tuple(
        PlanSegment(
            s.id,
            s.rule,
            {a: 0.0 if a == "red" else w / (1.0 - s.allocation["red"]) for a, w in s.allocation.items()},
        )
        for s in plan.segments
    )
    return Plan(plan.experiment_id, plan.round, ARMS, plan.weights, segments, retired_arms=("red",))


@pytest.fixture(scope="module")
def retired_assigned(visitors):
    return Assigner(_retired_plan(), salt="s1").assign(visitors.iloc[:RETIRED_N])


def test_a_retired_arm_is_never_assigned_and_explore_is_uniform_over_the_active_arms(retired_assigned):
    assert "red" not in set(retired_assigned["arm"])
    explore = retired_assigned.loc[retired_assigned["cell"] == "explore", "arm"].value_counts()
    counts = explore.reindex(["control", "blue", "green"], fill_value=0).to_numpy()
    assert counts.sum() == explore.sum()
    assert stats.chisquare(counts, np.full(3, counts.sum() / 3)).pvalue > SRM_ALPHA
    # By hand: p(arm | x) = w_control·[arm = control] + w_explore / K_active + w_optimized · alloc, K_active = 3.
    alloc = {
        "mobile": dict(zip(ARMS, (0.1 / 0.6, 0.2 / 0.6, 0.3 / 0.6, 0.0))),
        "other": dict(zip(ARMS, (0.6 / 0.9, 0.2 / 0.9, 0.1 / 0.9, 0.0))),
    }
    expected = [
        0.1 * (arm == "control") + 0.1 / 3 + 0.8 * alloc[seg][arm]
        for arm, seg in zip(retired_assigned["arm"], retired_assigned["segment_id"])
    ]
    np.testing.assert_allclose(retired_assigned["assignment_prob"].to_numpy(), expected, rtol=0, atol=1e-12)


def test_retiring_an_arm_moves_only_its_visitors(assigned, retired_assigned):
    before = assigned.iloc[:RETIRED_N]
    kept = (before["arm"] != "red").to_numpy()
    assert (retired_assigned["cell"].to_numpy() == before["cell"].to_numpy()).all()
    assert (retired_assigned["arm"].to_numpy()[kept] == before["arm"].to_numpy()[kept]).all()


def test_sample_ratio_check_fails_naming_a_retired_arm_that_got_rows(retired_assigned):
    plan = _retired_plan()
    assert sample_ratio_check(retired_assigned, plan).passed
    tampered = retired_assigned.copy()
    tampered.loc[tampered.index[tampered["cell"] == "explore"][0], "arm"] = "red"
    result = sample_ratio_check(tampered, plan)
    assert not result.passed
    assert "probability 0 under the plan received visitors: {'red': 1}" in result.message


def test_simulated_rounds_route_no_visitor_to_a_retired_arm():
    scenario = segment_flip()
    spec = spec_from_dict(
        {
            "id": scenario.name,
            "revision": 2,
            "arms": list(scenario.arms),
            "retired_arms": ["flat"],
            "covariates": {},
            "metrics": {"primary": {"name": scenario.metric, "family": "binary"}},
        }
    )
    plan = initial_plan(spec)
    rows = simulate_round(scenario, plan, n=20_000, round=4, rng=3)
    assert "flat" not in set(rows["arm"])
    explore = rows.loc[rows["cell"] == "explore", "arm"].value_counts().reindex(["control", "flip", "mild"])
    assert stats.chisquare(explore.to_numpy(), np.full(3, explore.sum() / 3)).pvalue > SRM_ALPHA
    np.testing.assert_allclose(rows["assignment_prob"], plan.assignment_probabilities(rows), rtol=0, atol=0)
    assert sample_ratio_check(rows, plan).passed
