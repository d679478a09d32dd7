"""experiment_registry and its blocking conflict check, materialised in process on a throw-away project."""

import datetime as dt
import json

import dagster as dg

from tyche_assets.experiments.assets import experiment_registry
from tyche_assets.experiments.checks import experiment_registry_conflicts
from tyche_assets.jobs import round_job


def materialize_registry(project) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [experiment_registry, experiment_registry_conflicts],
        resources=project.defs.resources,
        instance=project.instance,
        raise_on_error=False,
    )


def check_result(result) -> dg.AssetCheckEvaluation:
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == "experiment_registry_conflicts"
    return evaluation


def test_registry_lists_every_spec_and_passes_when_experiments_fit(project):
    project.add_experiment(
        "checkout_color",
        owner="growth",
        traffic_share=0.6,
        audience={"country": ["DE", "FR"]},
        start_date="2026-01-01",
        end_date="2026-03-31",
        layer="checkout",
    )
    project.add_experiment(
        "checkout_copy", owner="copy", traffic_share=0.4, audience={"country": ["FR"]}, layer="checkout"
    )
    project.add_experiment("search_rank", owner="search", traffic_share=1.0, audience={"country": ["US"]})
    project.add_experiment("old_banner", traffic_share=1.0, status="stopped")
    result = materialize_registry(project)
    assert result.success
    evaluation = check_result(result)
    assert evaluation.passed
    assert evaluation.metadata["experiments_checked"].value == 4

    rows = project.query("SELECT * FROM experiment_registry ORDER BY experiment_id")
    assert list(rows["experiment_id"]) == ["checkout_color", "checkout_copy", "old_banner", "search_rank"]
    color = rows.set_index("experiment_id").loc["checkout_color"]
    assert (color["status"], color["owner"], color["layer"], color["traffic_share"]) == (
        "running",
        "growth",
        "checkout",
        0.6,
    )
    assert json.loads(color["audience_json"]) == {"country": ["DE", "FR"]}
    assert color["start_date"].date() == dt.date(2026, 1, 1) and color["end_date"].date() == dt.date(2026, 3, 31)
    assert rows.set_index("experiment_id").loc["old_banner", "status"] == "stopped"

    [materialization] = result.asset_materializations_for_node("experiment_registry")
    assert materialization.metadata["experiments"].value == 4
    assert materialization.metadata["live"].value == 3


def test_overlapping_experiments_past_full_traffic_fail_the_check_naming_both(project):
    project.add_experiment(
        "checkout_color", traffic_share=0.7, audience={"country": ["DE", "FR"]}, start_date="2026-01-01"
    )
    project.add_experiment("checkout_copy", traffic_share=0.5, audience={"country": ["FR"]}, end_date="2026-06-30")
    result = materialize_registry(project)
    assert not result.success  # a blocking check that fails fails its step
    evaluation = check_result(result)
    assert not evaluation.passed
    assert evaluation.metadata["conflicts"].value == 1
    report = evaluation.metadata["report"].value
    for part in ("checkout_color & checkout_copy", "2026-01-01 to 2026-06-30", "country in {FR}", "70% + 50% = 120%"):
        assert part in report, part
    assert "checkout_color and checkout_copy overlap" in evaluation.description

    # The registry is stored all the same, for the owners to look at.
    assert len(project.query("SELECT * FROM experiment_registry")) == 2

    # Moving one experiment into a layer with the other, at shares that fit, resolves it.
    project.add_experiment("checkout_color", traffic_share=0.5, audience={"country": ["DE", "FR"]}, layer="checkout")
    project.add_experiment("checkout_copy", traffic_share=0.5, audience={"country": ["FR"]}, layer="checkout")
    assert check_result(materialize_registry(project)).passed


def test_registry_is_not_part_of_the_round_job(project):
    graph = project.defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey("experiment_registry"))
    assert node.group_name == "experiments" and node.partitions_def is None
    assert node.pools == {"tyche_duckdb"}
    check = graph.get_check_spec(dg.AssetCheckKey(dg.AssetKey("experiment_registry"), "experiment_registry_conflicts"))
    assert check.blocking
    job_keys = project.defs.resolve_job_def(round_job.name).asset_layer.asset_graph.executable_asset_keys
    assert dg.AssetKey("experiment_registry") not in job_keys
