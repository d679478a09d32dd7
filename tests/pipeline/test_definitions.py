"""The code location loads, validates, and has the asset graph Tyche documents."""

from __future__ import annotations

import dagster as dg

from tyche_assets.definitions import build_definitions
from tyche_assets.partitions import experiment_round_partitions

ROUND_ASSETS = {"round_visitors", "posterior", "policy_tree", "allocation", "round_plan", "round_report"}
BLOCKING_CHECKS = {"round_visitors_quality", "round_visitors_sample_ratio", "round_visitors_probabilities"}
UPSTREAM = {
    "posterior": {"round_visitors"},
    "policy_tree": {"posterior"},
    "allocation": {"policy_tree"},
    "round_plan": {"allocation"},
    "round_report": {"policy_tree"},
}


def test_definitions_load_and_validate(tmp_path):
    defs = build_definitions(str(tmp_path))
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert ROUND_ASSETS <= keys
    for name in ROUND_ASSETS:
        node = graph.get(dg.AssetKey(name))
        assert node.partitions_def == experiment_round_partitions, name
    for name, parents in UPSTREAM.items():
        assert {p.to_user_string() for p in graph.get(dg.AssetKey(name)).parent_keys} == parents


def test_blocking_checks_on_round_visitors(tmp_path):
    defs = build_definitions(str(tmp_path))
    graph = defs.resolve_asset_graph()
    checks = {key.name: key for key in graph.asset_check_keys}
    assert BLOCKING_CHECKS <= set(checks)
    for name in BLOCKING_CHECKS:
        spec = graph.get_check_spec(checks[name])
        assert spec.asset_key == dg.AssetKey("round_visitors")
        assert spec.blocking, name


def test_round_job_sensors_schedules(tmp_path):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "weekly.yaml").write_text(
        "id: weekly\narms: [a, b]\nmetrics: {primary: {name: y, family: binary}}\nschedule: '0 6 * * 1'\n"
    )
    (tmp_path / "experiments" / "broken.yaml").write_text(
        "id: broken\narms: [a]\nmetrics: {primary: {name: y, family: binary}}\n"
    )
    defs = build_definitions(str(tmp_path))
    assert defs.resolve_job_def("round_job").partitions_def == experiment_round_partitions
    assert {s.name for s in defs.sensors} == {"landing_sensor", "experiment_specs_sensor"}
    # The broken spec is reported, not fatal: the valid experiment still gets its schedule.
    schedules = {s.name: s for s in defs.schedules}
    assert set(schedules) == {"weekly_round_schedule"}
    assert schedules["weekly_round_schedule"].cron_schedule == "0 6 * * 1"
