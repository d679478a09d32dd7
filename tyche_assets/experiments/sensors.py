"""Experiments as code: register every valid spec in experiments/ as a partition."""

import dagster as dg
import duckdb

from ..partitions import experiment_partitions, register_partitions
from ..resources import ExperimentCatalog
from ..storage import TycheStorage


def register_experiments(
    instance: dg.DagsterInstance, experiments: ExperimentCatalog, storage: TycheStorage
) -> tuple[list[str], dict[str, str]]:
    """Add each valid spec's experiment partition and publish its round-1 plan.

    Returns the newly registered ids and the spec errors by file; a bad spec never stops the others.
    """
    specs, errors = experiments.load_all()
    new = [i for i in sorted(specs) if not instance.has_dynamic_partition(experiment_partitions.name, i)]
    for experiment_id in new:
        register_partitions(instance, experiment_id)
    for spec in specs.values():
        storage.ensure_initial_plan(spec)
    return new, {f: str(e) for f, e in errors.items()}


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def experiment_specs_sensor(context: dg.SensorEvaluationContext, experiments: ExperimentCatalog, storage: TycheStorage):
    """Registers new experiment specs; reports invalid ones (file and field) in the sensor log."""
    try:
        new, errors = register_experiments(context.instance, experiments, storage)
    except duckdb.IOException as e:
        # A run holds the DuckDB write lock; the next tick registers.
        return dg.SkipReason(f"DuckDB busy, will retry: {e}")
    for file, message in errors.items():
        context.log.error(f"invalid experiment spec {file}: {message}")
    parts = []
    if new:
        parts.append(f"registered {', '.join(new)}")
    if errors:
        parts.append("invalid specs: " + "; ".join(errors.values()))
    return dg.SkipReason(" | ".join(parts) or "no new experiments")
