"""Per-experiment round schedules: a spec's ``schedule`` runs its landed rounds on that cadence."""

from collections.abc import Iterable

import dagster as dg

from tyche_lib import ExperimentSpec, TycheError

from ..jobs import round_job
from ..partitions import register_partitions
from ..storage import TycheStorage
from .landing import held_reason, landed_rounds, round_run_request, spec_revision_problem


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
        problem = spec_revision_problem(spec, storage)
        if problem is not None:
            return dg.SkipReason(f"no rounds run until the spec is fixed: {problem}")
        try:
            landed = landed_rounds(spec, storage)
        except TycheError as e:
            return dg.SkipReason(f"cannot list landed rounds of {spec.id}: {e}")
        # Rounds run in order: one whose previous round has published no plan waits for a later tick.
        rounds = [(r, fp) for r, fp in landed if held_reason(spec.id, storage, r) is None]
        if not rounds:
            return dg.SkipReason(f"no landed round of {spec.id} is ready to run")
        register_partitions(context.instance, spec.id, [r for r, _ in rounds])
        # Run keys already used are skipped by Dagster, so only new content runs.
        return [round_run_request(spec, r, fp) for r, fp in rounds]

    return _schedule


def round_schedules(specs: Iterable[ExperimentSpec]) -> list[dg.ScheduleDefinition]:
    """One schedule per spec that has a ``schedule``."""
    return [round_schedule(s) for s in specs if s.schedule]
