"""Landing sensor and per-experiment schedules: turn landed rounds into round_job runs."""

import json

import dagster as dg

from tyche_lib import ExperimentSpec, SpecError, source_from_config

from ..jobs import round_job
from ..partitions import experiment_partitions, partition_key, round_key, round_partitions
from ..resources import ExperimentCatalog, TycheStorage


def landed_rounds(spec: ExperimentSpec, storage: TycheStorage) -> list[tuple[int, str]]:
    """(round, content fingerprint) of every round the experiment's source has data for."""
    source = source_from_config(spec.source, root=storage.root)
    out = []
    for r in source.available_rounds(spec.id):
        fp = source.fingerprint(spec.id, r)
        if fp is not None:
            out.append((r, fp))
    return out


def round_run_request(spec: ExperimentSpec, round_: int, fingerprint: str) -> dg.RunRequest:
    # The run key carries the content: the same files dropped again never run twice.
    return dg.RunRequest(
        run_key=f"{spec.id}/{round_key(round_)}/{fingerprint[:20]}",
        partition_key=partition_key(spec.id, round_),
        tags={"tyche/experiment": spec.id},
    )


@dg.sensor(job=round_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def landing_sensor(context: dg.SensorEvaluationContext, experiments: ExperimentCatalog, storage: TycheStorage):
    """New round files → new experiment/round partitions and one run per new round content."""
    seen = json.loads(context.cursor) if context.cursor else {}
    specs, errors = experiments.load_all()
    for file, err in errors.items():
        context.log.error(f"invalid experiment spec {file}: {err}")
    requests, experiments_added, rounds_added = [], set(), set()
    known_rounds = set(context.instance.get_dynamic_partitions(round_partitions.name))
    for spec in specs.values():
        try:
            rounds = landed_rounds(spec, storage)
        except (SpecError, OSError) as e:
            context.log.error(f"{spec.id}: cannot list landed rounds: {e}")
            continue
        for r, fp in rounds:
            key = f"{spec.id}/{round_key(r)}"
            if seen.get(key) == fp:
                continue
            seen[key] = fp
            if not context.instance.has_dynamic_partition(experiment_partitions.name, spec.id):
                experiments_added.add(spec.id)
            if round_key(r) not in known_rounds:
                rounds_added.add(round_key(r))
            requests.append(round_run_request(spec, r, fp))
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[
            experiment_partitions.build_add_request(sorted(experiments_added)),
            round_partitions.build_add_request(sorted(rounds_added)),
        ],
        cursor=json.dumps(seen, sort_keys=True),
    )


def round_schedule(spec: ExperimentSpec) -> dg.ScheduleDefinition:
    """A plain schedule on the spec's cron: runs every landed round not yet run with its current content.

    (``build_schedule_from_partitioned_job`` rejects dynamic partitions.)
    """

    @dg.schedule(
        name=f"{spec.id}_round_schedule",
        cron_schedule=spec.schedule,
        job=round_job,
        description=f"Rounds of {spec.id} on its cadence ({spec.schedule})",
    )
    def _schedule(context: dg.ScheduleEvaluationContext, storage: TycheStorage):
        rounds = landed_rounds(spec, storage)
        if not rounds:
            return dg.SkipReason(f"no landed rounds for {spec.id}")
        if not context.instance.has_dynamic_partition(experiment_partitions.name, spec.id):
            context.instance.add_dynamic_partitions(experiment_partitions.name, [spec.id])
        known = set(context.instance.get_dynamic_partitions(round_partitions.name))
        missing = [round_key(r) for r, _ in rounds if round_key(r) not in known]
        if missing:
            context.instance.add_dynamic_partitions(round_partitions.name, missing)
        # Run keys already used are skipped by Dagster, so only new content runs.
        return [round_run_request(spec, r, fp) for r, fp in rounds]

    return _schedule


def round_schedules(experiments: ExperimentCatalog) -> list[dg.ScheduleDefinition]:
    specs, _ = experiments.load_all()
    return [round_schedule(s) for s in specs.values() if s.schedule]
