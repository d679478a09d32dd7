"""Per-experiment round schedules: a spec's ``schedule`` runs its landed rounds on that cadence."""

from collections.abc import Iterable

import dagster as dg

from tyche_lib import ExperimentSpec

from ..jobs import round_job
from ..partitions import register_partitions
from ..storage import TycheStorage
from .landing import landed_rounds, round_run_request


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
        register_partitions(context.instance, spec.id, [r for r, _ in rounds])
        # Run keys already used are skipped by Dagster, so only new content runs.
        return [round_run_request(spec, r, fp) for r, fp in rounds]

    return _schedule


def round_schedules(specs: Iterable[ExperimentSpec]) -> list[dg.ScheduleDefinition]:
    """One schedule per spec that has a ``schedule``."""
    return [round_schedule(s) for s in specs if s.schedule]
