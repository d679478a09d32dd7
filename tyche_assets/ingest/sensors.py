"""landing_sensor: turn landed rounds into partitions and round_job runs."""

import json

import dagster as dg

from tyche_lib import SpecError

from ..jobs import round_job
from ..partitions import register_partitions
from ..resources import ExperimentCatalog
from ..storage import TycheStorage
from .landing import landed_round_id, landed_rounds, round_run_request


@dg.sensor(job=round_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def landing_sensor(context: dg.SensorEvaluationContext, experiments: ExperimentCatalog, storage: TycheStorage):
    """New round files → new experiment/round partitions and one run per new round content."""
    seen = json.loads(context.cursor) if context.cursor else {}
    specs, errors = experiments.load_all()
    for file, err in errors.items():
        context.log.error(f"invalid experiment spec {file}: {err}")
    requests = []
    for spec in specs.values():
        try:
            rounds = landed_rounds(spec, storage)
        except (SpecError, OSError) as e:
            context.log.error(f"{spec.id}: cannot list landed rounds: {e}")
            continue
        new = []
        for r, fp in rounds:
            key = landed_round_id(spec.id, r)
            if seen.get(key) == fp:
                continue
            seen[key] = fp
            new.append(r)
            requests.append(round_run_request(spec, r, fp))
        if new:
            register_partitions(context.instance, spec.id, new)
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))
