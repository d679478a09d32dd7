"""The decision-quality evaluation (eval/decision_quality.py): its baselines and its --quick run.

The quick run fits real posteriors (about a minute on two idle cores), so it is marked slow; it
asserts on the result that ``main`` returns, not on numbers typed here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tyche_lib import derive_seed
from tyche_lib.simulate import segment_flip, simulate_round

EVAL_SCRIPT = Path(__file__).resolve().parents[1] / "eval" / "decision_quality.py"


def load_eval():
    """Import the script as module ``decision_quality`` (eval/ is a folder of scripts, not a package)."""
    if "decision_quality" not in sys.modules:
        spec = importlib.util.spec_from_file_location("decision_quality", EVAL_SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["decision_quality"] = module  # dataclasses look their module up by name
        spec.loader.exec_module(module)
    return sys.modules["decision_quality"]


def test_uniform_plan_gives_every_arm_one_over_k():
    dq = load_eval()
    spec = segment_flip().spec()
    probs = dq.uniform_plan(spec, 1).segment_arm_probabilities()
    np.testing.assert_allclose(probs.to_numpy(), 1.0 / len(spec.arms))


def test_thompson_baseline_sends_traffic_to_the_clear_winner():
    dq = load_eval()
    spec = segment_flip().spec()
    # 2,000 visitors per arm; "mild" converts at 30%, the others at 10%: P(mild is best) is 1
    # to many decimals, so all but Monte Carlo noise of the 10,000 draws goes to mild.
    rate = {"control": 0.1, "flip": 0.1, "flat": 0.1, "mild": 0.3}
    rows = pd.DataFrame(
        [{"arm": arm, "converted": int(i < rate[arm] * 2000)} for arm in spec.arms for i in range(2000)]
    )
    state = dq.thompson_baseline(spec, 2, rows, seed=1)
    allocation = state.plan.segments[0].allocation
    assert state.leading_arm == "mild"
    assert allocation["mild"] == 1.0
    assert sum(allocation.values()) == pytest.approx(1.0)


def test_thompson_baseline_splits_evenly_between_identical_arms():
    dq = load_eval()
    spec = segment_flip().spec()
    rows = pd.DataFrame([{"arm": arm, "converted": int(i % 10 == 0)} for arm in spec.arms for i in range(1000)])
    allocation = dq.thompson_baseline(spec, 2, rows, seed=3).plan.segments[0].allocation
    # Each share is a mean of 10,000 indicator draws with p = 1/4: SE 0.0043, so 0.02 is 4.6 SE.
    for share in allocation.values():
        assert share == pytest.approx(0.25, abs=0.02)


def test_the_same_seed_gives_every_design_the_same_visitors_and_outcomes():
    # The common-random-number contract the evaluation relies on: simulate_round draws covariates,
    # cell and arm uniforms and outcome latents in an order that does not depend on the plan.
    dq = load_eval()
    scenario = segment_flip()
    spec = scenario.spec()
    seed = derive_seed("eval_crn_check", 1, "visitors")
    uniform = simulate_round(scenario, dq.uniform_plan(spec, 1), 4000, 1, seed)
    skewed = dq.single_segment_plan(spec, 1, {"control": 0.1, "flip": 0.6, "flat": 0.1, "mild": 0.2}, "skewed")
    other = simulate_round(scenario, skewed, 4000, 1, seed)
    pd.testing.assert_frame_equal(uniform[list(spec.covariate_names)], other[list(spec.covariate_names)])
    same_arm = (uniform["arm"] == other["arm"]).to_numpy()
    assert 0 < same_arm.sum() < len(same_arm)
    # Same visitor, same arm: same potential outcome.
    np.testing.assert_array_equal(uniform["converted"][same_arm], other["converted"][same_arm])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    dq = load_eval()
    report = tmp_path_factory.mktemp("eval") / "results.md"
    result = dq.main(["--quick", "--workers", "1", "--output", str(report)])
    return dq, result, report


@pytest.mark.slow
def test_quick_run_meets_the_loose_targets(quick_run):
    dq, result, _ = quick_run
    assert dq.quick_failures(result) == []
    regret = result.regret.set_index(["scenario", "design"])
    # The oracle is the reference; every other design's regret is positive.
    assert (regret.xs("oracle", level="design")["cumulative_regret"] == 0).all()
    flip = regret.loc["segment_flip"]
    assert flip.loc["tyche", "cumulative_regret"] < flip.loc["thompson", "cumulative_regret"]
    assert flip.loc["tyche", "cumulative_regret"] < flip.loc["uniform", "cumulative_regret"]
    # value + regret = the oracle's value, for every design
    oracle_value = flip.loc["oracle", "value"]
    for design in dq.DESIGNS:
        assert flip.loc[design, "value"] + flip.loc[design, "cumulative_regret"] == pytest.approx(oracle_value)


@pytest.mark.slow
def test_quick_run_designs_share_their_first_round(quick_run):
    _, result, _ = quick_run
    raw = pd.DataFrame(result.raw.regret)
    first = raw[raw["round"] == 1].pivot_table(index=["scenario", "replicate"], columns="design", values="regret")
    # Uniform and Thompson both start from the uniform plan: on the same visitors, the same arms.
    np.testing.assert_array_equal(first["uniform"].to_numpy(), first["thompson"].to_numpy())


@pytest.mark.slow
def test_quick_run_writes_every_table_of_its_result(quick_run):
    _, result, report = quick_run
    text = report.read_text()
    for heading in (
        "## Targets",
        "## Cumulative regret",
        "## Calibration",
        "## Simulation-based calibration",
        "## Anytime-valid",
        "## Policy quality",
    ):
        assert heading in text
    for check in result.targets:
        assert check.name in text
    assert f"{result.target('regret ratio tyche/thompson, segment_flip').value:.3f}" in text
    assert "--quick" in text


def test_policy_share_counts_arms_tied_for_best():
    dq = load_eval()
    scenario = segment_flip()
    population = dq.policy_population("segment_flip", scenario)
    visitors = population.visitors
    non_mobile = (visitors["device"] != "mobile").to_numpy()
    returning = visitors["returning"].to_numpy(dtype=bool)
    # mild is best for returning non-mobile visitors and ties control and flat for new ones.
    assert population.share_best(scenario.arms, "mild") == pytest.approx(non_mobile.mean())
    # flat never beats control: it is best exactly where control is, for new non-mobile visitors.
    assert population.share_best(scenario.arms, "flat") == pytest.approx((non_mobile & ~returning).mean())
    oracle = np.where(non_mobile, np.where(returning, "mild", "control"), "flip")
    assert population.share_best(scenario.arms, oracle) == 1.0
