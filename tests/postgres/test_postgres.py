"""Past one machine: Dagster's storage in PostgreSQL (the repo's dagster.postgres.yaml), two experiments'
rounds at once, every step in its own process, and the tyche_duckdb pool keeping DuckDB to one writer
across all of them."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from tyche_assets.partitions import experiment_round_partitions, partition_key
from tyche_lib import Plan

from .conftest import BIN, EXPERIMENTS, REPO

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 420
# The multiprocess executor, each step forked from a server that imported Tyche once: a fresh interpreter
# per step would re-import PyMC (about 10 s a step on two cores).
MULTIPROCESS_CONFIG = {
    "execution": {
        "config": {"multiprocess": {"start_method": {"forkserver": {"preload_modules": ["tyche_assets.definitions"]}}}}
    }
}
STEP_EVENTS = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
# How far apart a freed slot and its success event's timestamp may be logged (see the pool test).
BOOKKEEPING_SECONDS = 1.0


def launch_round(project, experiment_id: str, config_file: Path, log: Path) -> subprocess.Popen:
    """`dagster job execute` of one experiment's round 1: the run is orchestrated in this new process."""
    key = partition_key(experiment_id, 1)
    tags = {**experiment_round_partitions.get_tags_for_partition_key(key), "tyche/experiment": experiment_id}
    cmd = [
        BIN / "dagster",
        "job",
        "execute",
        "-m",
        "tyche_assets.definitions",
        "-j",
        "round_job",
        "--tags",
        json.dumps(tags),
        "-c",
        config_file,
    ]
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(c) for c in cmd],
            cwd=REPO,
            env=project.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_all(processes: list[subprocess.Popen], logs: list[Path]) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        for proc in processes:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        tails = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in logs)
        pytest.fail(f"rounds not done after {RUN_TIMEOUT_S} s:\n{tails}")
    finally:
        for proc in processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_two_experiments_rounds_run_at_once_with_duckdb_steps_one_at_a_time(postgres_project, tmp_path):
    with dg.DagsterInstance.get() as instance:
        # The repo's dagster.postgres.yaml is what configured this instance.
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert instance.event_log_storage.supports_global_concurrency_limits

    config_file = tmp_path / "multiprocess.yaml"
    config_file.write_text(yaml.safe_dump(MULTIPROCESS_CONFIG))
    logs = [tmp_path / f"{e}.log" for e in EXPERIMENTS]
    started = time.monotonic()
    processes = [launch_round(postgres_project, e, config_file, log) for e, log in zip(EXPERIMENTS, logs)]
    wait_all(processes, logs)
    print(f"\ntwo rounds, two processes, Postgres storage: {time.monotonic() - started:.0f} s")

    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert sorted(r.tags["tyche/experiment"] for r in runs) == sorted(EXPERIMENTS)
        for run in runs:
            assert run.status == dg.DagsterRunStatus.SUCCESS, (run.tags, [log.read_text()[-3000:] for log in logs])
            assert run.run_config["execution"]["config"]["multiprocess"], run.run_config
        records = {run.run_id: instance.all_logs(run.run_id) for run in runs}
        pool = instance.event_log_storage.get_concurrency_info("tyche_duckdb")

    for experiment_id in EXPERIMENTS:
        plan = Plan.from_json((postgres_project.root / "plans" / experiment_id / "r000002.json").read_text())
        assert (plan.experiment_id, plan.round) == (experiment_id, 2)
        assert (postgres_project.root / "plans" / experiment_id / "evolution.gif").exists()

    messages = [
        str(e.dagster_event.event_specific_data) + (e.user_message or "")
        for entries in records.values()
        for e in entries
        if e.dagster_event is not None
    ]
    assert not [m for m in messages if "Could not set lock" in m or "IOException" in m], "a DuckDB step met a lock"

    # Every step of round_job is in the pool tyche_duckdb (limit 1): no two steps, of either run, overlap,
    # while the two runs do run at the same time and take turns.
    intervals = []
    for run_id, entries in records.items():
        start: dict[str, float] = {}
        for e in entries:
            if e.dagster_event is None or e.dagster_event.event_type not in STEP_EVENTS:
                continue
            if e.dagster_event.event_type == dg.DagsterEventType.STEP_START:
                start[e.step_key] = e.timestamp
            else:
                intervals.append((start.pop(e.step_key), e.timestamp, run_id, e.step_key))
        assert not start, f"steps that started and never ended: {start}"
    intervals.sort()
    assert len(intervals) == 2 * 10  # six assets and four checks per round
    # The orchestrator frees a step's slot when it handles the step's success event, and the event's
    # timestamp is taken in another process: the next step's start may be logged a moment before
    # that event (0.2 s seen on a loaded machine). Without the pool, DuckDB steps overlap by seconds.
    for (_, end, run_a, step_a), (begin, _, run_b, step_b) in zip(intervals, intervals[1:]):
        assert begin >= end - BOOKKEEPING_SECONDS, (
            f"{step_b} ({run_b}) started {end - begin:.2f} s before {step_a} ({run_a}) ended: the pool did not hold"
        )
    turns = sum(a[2] != b[2] for a, b in zip(intervals, intervals[1:]))
    assert turns >= 2, f"the runs did not take turns: {[(s, r[:8]) for *_, r, s in intervals]}"
    print(
        f"pool tyche_duckdb: limit {pool.slot_count}, {len(intervals)} steps in sequence, {turns} hand-overs between runs"
    )
    assert pool.slot_count == 1 and not pool.claimed_slots and not pool.pending_steps
