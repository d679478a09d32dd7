"""The Dagster UI as an operator meets it: the GraphQL API the UI runs on, a backfill launched through
it and carried out by the daemon, and the asset pages rendered by a real browser."""

import time

import pytest

from tyche_lib import Plan

from .conftest import EXPERIMENT

pytestmark = pytest.mark.slow

ROUND_ASSETS = ["round_visitors", "posterior", "policy_tree", "allocation", "round_plan", "round_report"]
ROUND_CHECKS = {"round_visitors_quality", "round_visitors_sample_ratio", "round_visitors_probabilities"}
PARTITION = f"{EXPERIMENT}|r000001"  # a multi-partition key: dimension keys in dimension-name order
BACKFILL_TIMEOUT_S = 240

ASSETS_QUERY = """{
  assetNodes {
    assetKey { path } groupName isPartitioned jobNames pools
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } }
  }
}"""
PARTITIONS_QUERY = """query ($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    ... on AssetNode { partitionKeysByDimension { name partitionKeys } }
  }
}"""


def partition_keys(ui, asset: str) -> dict[str, list[str]]:
    node = ui.graphql(PARTITIONS_QUERY, path=[asset])["assetNodeOrError"]
    return {d["name"]: d["partitionKeys"] for d in node["partitionKeysByDimension"]}


def test_graphql_lists_the_assets_checks_and_partitions(dagster_ui):
    nodes = {"/".join(n["assetKey"]["path"]): n for n in dagster_ui.graphql(ASSETS_QUERY)["assetNodes"]}
    assert set(ROUND_ASSETS) | {"experiment_registry"} <= set(nodes)
    for name in ROUND_ASSETS:
        assert nodes[name]["isPartitioned"], name
        assert "round_job" in nodes[name]["jobNames"], name
        assert nodes[name]["pools"] == ["tyche_duckdb"], name
    registry = nodes["experiment_registry"]
    assert registry["groupName"] == "experiments" and not registry["isPartitioned"]
    assert "round_job" not in registry["jobNames"]
    checks = {c["name"]: c["blocking"] for c in nodes["round_visitors"]["assetChecksOrError"]["checks"]}
    assert checks == {name: True for name in ROUND_CHECKS}
    assert registry["assetChecksOrError"]["checks"] == [{"name": "experiment_registry_conflicts", "blocking": True}]
    # The experiment was registered as a partition; no round has been added yet.
    assert partition_keys(dagster_ui, "round_plan") == {"experiment": [EXPERIMENT], "round": []}


def test_a_backfill_launched_through_graphql_publishes_the_plan(dagster_ui):
    ui, selector = dagster_ui, dagster_ui.repository_selector()
    added = ui.graphql(
        'mutation ($s: RepositorySelector!) { addDynamicPartition(partitionKey: "r000001", partitionsDefName: "round",'
        " repositorySelector: $s) { __typename ... on AddDynamicPartitionSuccess { partitionKey }"
        " ... on PythonError { message } } }",
        s=selector,
    )["addDynamicPartition"]
    assert added == {"__typename": "AddDynamicPartitionSuccess", "partitionKey": "r000001"}, added
    assert partition_keys(ui, "round_plan")["round"] == ["r000001"]

    launched = ui.graphql(
        "mutation ($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) { __typename"
        " ... on LaunchBackfillSuccess { backfillId } ... on Error { message } } }",
        p={
            "selector": {"partitionSetName": "round_job_partition_set", "repositorySelector": selector},
            "partitionNames": [PARTITION],
            "title": "ui test: round 1 of flip",
            # One process for the whole run: each multiprocess step would re-import PyMC (≈ 10 s on two
            # cores). Steps in separate processes are tested against Postgres in tests/postgres/.
            "runConfigData": {"execution": {"config": {"in_process": {}}}},
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched

    started = time.monotonic()
    while True:
        backfill = ui.graphql(
            "query ($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill {"
            " status partitionNames error { message } runs { runId status stepStats { stepKey status } } } } }",
            id=launched["backfillId"],
        )["partitionBackfillOrError"]
        runs = backfill["runs"]
        finished = runs and all(r["status"] in {"SUCCESS", "FAILURE", "CANCELED"} for r in runs)
        if backfill["status"] not in {"REQUESTED", "CANCELING"} and finished:
            break
        assert backfill["status"] not in {"FAILED", "CANCELED"}, backfill
        assert time.monotonic() - started < BACKFILL_TIMEOUT_S, f"backfill not done: {backfill}\n{ui.log_tail()}"
        time.sleep(3)
    print(f"\nbackfill of {PARTITION}: {time.monotonic() - started:.0f} s to a finished run")
    assert backfill["partitionNames"] == [PARTITION]
    [run] = runs
    assert run["status"] == "SUCCESS", f"{run}\n{ui.log_tail()}"
    steps = {s["stepKey"]: s["status"] for s in run["stepStats"]}
    assert all(steps.get(a) == "SUCCESS" for a in ROUND_ASSETS), steps

    plan_file = ui.root / "plans" / EXPERIMENT / "r000002.json"
    assert plan_file.exists()
    plan = Plan.from_json(plan_file.read_text())
    assert (plan.experiment_id, plan.round) == (EXPERIMENT, 2)
    assert (ui.root / "plans" / EXPERIMENT / "evolution.gif").read_bytes()[:6] == b"GIF89a"

    materializations = ui.graphql(
        'query ($p: [String!]) { assetNodeOrError(assetKey: {path: ["round_plan"]}) { ... on AssetNode {'
        " assetMaterializations(partitions: $p) { runId partition metadataEntries { label } } } } }",
        p=[PARTITION],
    )["assetNodeOrError"]["assetMaterializations"]
    assert [m["runId"] for m in materializations] == [run["runId"]]
    labels = {e["label"] for e in materializations[0]["metadataEntries"]}
    assert {"plan_file", "lineage", "evolution", "evolution_gif"} <= labels
    for check in sorted(ROUND_CHECKS):
        [execution] = ui.graphql(
            'query ($c: String!, $p: String) { assetCheckExecutions(assetKey: {path: ["round_visitors"]},'
            " checkName: $c, partition: $p, limit: 5) { runId status } }",
            c=check,
            p=PARTITION,
        )["assetCheckExecutions"]
        assert execution == {"runId": run["runId"], "status": "SUCCEEDED"}, (check, execution)


def test_the_browser_shows_the_round_graph_and_the_round_plan_page(dagster_ui, browse, tmp_path):
    graph_png, plan_png = tmp_path / "round_graph.png", tmp_path / "round_plan.png"
    # The lineage of round_visitors, downstream: the whole round as the UI draws it.
    graph_dom = browse(
        f"{dagster_ui.url}/assets/round_visitors?view=lineage&lineageScope=downstream&lineageDepth=5",
        screenshot=graph_png,
    )
    for name in ROUND_ASSETS:
        assert name in graph_dom, f"the asset graph does not show {name}"
    plan_dom = browse(f"{dagster_ui.url}/assets/round_plan?view=partitions&partition={PARTITION}", screenshot=plan_png)
    # The partition's latest materialization and its metadata, as the operator reads them.
    for text in (
        "round_plan",
        PARTITION,
        "Materialized",
        "plans/flip/r000002.json",
        "evolution_gif",
        "plans/flip/evolution.gif",
    ):
        assert text in plan_dom, f"the round_plan page does not show {text!r}"
    print(f"\nscreenshots: {graph_png} {plan_png}")
    for png in (graph_png, plan_png):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000, png
