"""The code location: its asset graph as a snapshot, lazy loading, schedules, and bad specs that stay local."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
from pathlib import Path

import dagster as dg
import yaml

from tyche_assets.definitions import build_definitions
from tyche_assets.experiments.sensors import experiment_specs_sensor
from tyche_assets.partitions import experiment_round_partitions

REPO = Path(__file__).resolve().parents[2]

# The whole graph: a renamed, dropped or rewired asset or check fails here first.
ASSET_PARENTS = {
    "round_visitors": set(),
    "posterior": {"round_visitors"},
    "policy_tree": {"posterior"},
    "allocation": {"policy_tree"},
    "round_plan": {"allocation"},
    "round_report": {"policy_tree"},
    "experiment_registry": set(),
}
ROUND_ASSETS = set(ASSET_PARENTS) - {"experiment_registry"}
ASSET_GROUPS = {
    "round_visitors": "ingest",
    "posterior": "model",
    "policy_tree": "policy",
    "allocation": "policy",
    "round_plan": "policy",
    "round_report": "report",
    "experiment_registry": "experiments",
}
CHECKS = {
    ("round_visitors", "round_visitors_quality"),
    ("round_visitors", "round_visitors_sample_ratio"),
    ("posterior", "posterior_convergence"),
    ("round_visitors", "round_visitors_probabilities"),
    ("experiment_registry", "experiment_registry_conflicts"),
}
SENSORS = {"landing_sensor", "experiment_specs_sensor"}


def spec_yaml(experiment_id: str, **extra) -> dict:
    return {"id": experiment_id, "arms": ["a", "b"], "metrics": {"primary": {"name": "y", "family": "binary"}}, **extra}


def write_spec(root: Path, name: str, spec: dict) -> Path:
    path = root / "experiments" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec))
    return path


def test_asset_graph_snapshot(tmp_path):
    write_spec(tmp_path, "weekly", spec_yaml("weekly", schedule="0 6 * * 1"))
    definitions = build_definitions(str(tmp_path))
    dg.Definitions.validate_loadable(definitions)
    graph = definitions.resolve_asset_graph()

    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == set(ASSET_PARENTS)
    for name, parents in ASSET_PARENTS.items():
        node = graph.get(dg.AssetKey(name))
        assert {p.to_user_string() for p in node.parent_keys} == parents, name
        assert node.group_name == ASSET_GROUPS[name], name
        assert node.pools == {"tyche_duckdb"}, name
        expected_partitions = experiment_round_partitions if name in ROUND_ASSETS else None
        assert node.partitions_def == expected_partitions, name

    assert {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys} == CHECKS
    for key in graph.asset_check_keys:
        assert graph.get_check_spec(key).blocking, key.name

    job = definitions.resolve_job_def("round_job")
    assert job.partitions_def == experiment_round_partitions
    assert {k.to_user_string() for k in job.asset_layer.asset_graph.executable_asset_keys} == ROUND_ASSETS
    assert {j.name for j in definitions.resolve_all_job_defs() if not j.name.startswith("__")} == {"round_job"}
    assert {s.name for s in definitions.sensors} == SENSORS
    assert {s.name: s.cron_schedule for s in definitions.schedules} == {"weekly_round_schedule": "0 6 * * 1"}
    assert set(definitions.resources) == {"storage", "experiments"}


def test_importing_the_code_location_reads_no_file(tmp_path):
    """``defs`` is built when Dagster (or a caller) loads it, not at import: an empty project stays empty."""
    project, home = tmp_path / "project", tmp_path / "home"
    project.mkdir()
    home.mkdir()  # where PyMC, matplotlib and friends keep their caches
    script = (
        "import os, dagster as dg, tyche_assets.definitions as d; "
        "assert not callable(getattr(d.defs, 'resolve_asset_graph', None)), 'Definitions built at import'; "
        "assert os.listdir('.') == [], os.listdir('.'); "
        "assert isinstance(d.defs(), dg.Definitions); "
        "assert os.listdir('.') == [], os.listdir('.')"
    )
    env = {"PATH": str(Path(sys.executable).parent), "TYCHE_ROOT": str(project), "HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=project, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_workspace_loads_with_dagster_s_cli(tmp_path):
    write_spec(tmp_path, "weekly", spec_yaml("weekly", schedule="0 6 * * 1"))
    env = {"PATH": str(Path(sys.executable).parent), "TYCHE_ROOT": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_a_schedule_tick_requests_each_landed_round(project):
    project.add_experiment("weekly", arms=("control", "flip"), schedule="0 6 * * 1")
    # Schedules come from the specs the code location loads with.
    definitions = build_definitions(str(project.root))
    schedule = definitions.resolve_schedule_def("weekly_round_schedule")
    tick_time = dt.datetime(2026, 3, 2, 6, 0, tzinfo=dt.UTC)

    with dg.build_schedule_context(
        instance=project.instance, scheduled_execution_time=tick_time, resources=definitions.resources
    ) as context:
        assert isinstance(schedule(context), dg.SkipReason)  # nothing landed yet

    project.land("weekly", 1, project.simulate("weekly", 1, 300))
    with dg.build_schedule_context(
        instance=project.instance,
        scheduled_execution_time=tick_time,
        resources=definitions.resources,
        repository_def=definitions.get_repository_def(),
    ) as context:
        data = schedule.evaluate_tick(context)  # as the daemon does: the requests are resolved against round_job
    [request] = data.run_requests
    assert request.partition_key == dg.MultiPartitionKey({"experiment": "weekly", "round": "r000001"})
    assert request.tags["tyche/experiment"] == "weekly"
    assert request.run_key.startswith("weekly/r001/")
    # The tick registered the partitions the request names.
    assert project.instance.get_dynamic_partitions("round") == ["r000001"]
    assert project.instance.has_dynamic_partition("experiment", "weekly")


def test_a_bad_spec_never_takes_the_code_location_down(project, caplog):
    """A spec Dagster cannot schedule and a spec with an unknown field: reported with file and field, and
    the good experiment keeps its schedule, its partition and its round-1 plan."""
    root = project.root
    write_spec(root, "good", spec_yaml("good", schedule="0 6 * * *"))
    bad_cron = write_spec(root, "bad_cron", spec_yaml("bad_cron", schedule="99 99 * * *"))
    unknown_key = write_spec(root, "unknown_key", spec_yaml("unknown_key", colour="blue"))

    with caplog.at_level(logging.ERROR, logger="tyche"):
        definitions = build_definitions(str(root))
    dg.Definitions.validate_loadable(definitions)
    assert [s.name for s in definitions.schedules] == ["good_round_schedule"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for file, field in ((bad_cron, "'schedule'"), (unknown_key, "'colour'")):
        assert str(file) in logged and field in logged, logged

    with dg.build_sensor_context(instance=project.instance, resources=definitions.resources) as context:
        result = experiment_specs_sensor(context)
    assert "registered good" in result.skip_message
    for file, field in ((bad_cron, "'schedule'"), (unknown_key, "'colour'")):
        assert str(file) in result.skip_message and field in result.skip_message, result.skip_message
    assert project.instance.get_dynamic_partitions("experiment") == ["good"]
    assert project.plan_in_force("good", 1).round == 1
