"""landing_sensor: turn landed rounds into partitions and round_job runs."""

import json

import dagster as dg

from tyche_lib import TycheError

from ..jobs import round_job
from ..partitions import register_partitions
from ..resources import ExperimentCatalog
from ..storage import TycheStorage
from .landing import held_reason, landed_round_id, landed_rounds, round_run_request, spec_revision_problem


@dg.sensor(job=round_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def landing_sensor(context: dg.SensorEvaluationContext, experiments: ExperimentCatalog, storage: TycheStorage):
    """New round files → new experiment/round partitions and one run per new round content.

    A round whose previous round has no published plan is held: not requested, not marked seen,
    so a later tick requests it once the plan is there. An experiment whose spec changed without a
    valid revision gets no runs until the spec is fixed.
    """
    seen = json.loads(context.cursor) if context.cursor else {}
    specs, errors = experiments.load_all()
    for file, err in errors.items():
        context.log.error(f"invalid experiment spec {file}: {err}")
    requests = []
    for spec in specs.values():
        problem = spec_revision_problem(spec, storage)
        if problem is not None:
            context.log.error(f"{spec.id}: no rounds run until the spec is fixed: {problem}")
            continue
        try:
            rounds = landed_rounds(spec, storage)
        except (TycheError, OSError) as e:
            context.log.error(f"{spec.id}: cannot list landed rounds: {e}")
            continue
        new = []
        for r, fp in rounds:
            key = landed_round_id(spec.id, r)
            if seen.get(key) == fp:
                continue
            held = held_reason(spec.id, storage, r)
            if held is not None:
                context.log.info(f"{spec.id}: {held}")
                continue
            seen[key] = fp
            new.append(r)
            requests.append(round_run_request(spec, r, fp))
        if new:
            register_partitions(context.instance, spec.id, new)
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))
