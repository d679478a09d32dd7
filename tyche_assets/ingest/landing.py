"""What the experiment's source has landed, and the run request for one landed round."""

import dagster as dg

from tyche_lib import ExperimentSpec, SpecError, check_spec_revision, source_from_config, spec_from_dict

from ..partitions import partition_key
from ..storage import TycheStorage


def landed_rounds(spec: ExperimentSpec, storage: TycheStorage) -> list[tuple[int, str]]:
    """(round, content fingerprint) of every round the experiment's source has data for."""
    source = source_from_config(spec.source, root=storage.root)
    out = []
    for r in source.available_rounds(spec.id):
        fp = source.fingerprint(spec.id, r)
        if fp is not None:
            out.append((r, fp))
    return out


def held_reason(experiment_id: str, storage: TycheStorage, round_: int) -> str | None:
    """Why round ``round_`` may not run yet, or None: rounds run in order, each under a published plan.

    Round r > 1 needs the plan that round r - 1 published for it; until then it is held.
    """
    if round_ == 1 or storage.plan_published_for(experiment_id, round_):
        return None
    return (
        f"round {round_ - 1} has no published plan for round {round_} yet (its rows have not been received, "
        f"failed a blocking check, or its run has not finished): round {round_} is held; materialise round "
        f"{round_ - 1} first, and round {round_} runs once the plan for it is published"
    )


def spec_revision_problem(spec: ExperimentSpec, storage: TycheStorage, round_: int | None = None) -> SpecError | None:
    """The SpecError of a spec that changes the experiment its received rounds followed without a valid revision.

    Compared with the spec of the latest round received before ``round_`` (any round when None).
    """
    previous = storage.previous_spec(spec.id, round_)
    if previous is None:
        return None
    earlier_round, snapshot = previous
    try:
        check_spec_revision(spec_from_dict(snapshot), spec)
    except SpecError as e:
        return SpecError(
            e.field,
            e.value,
            f"{e.allowed} (round {earlier_round} was received under revision {snapshot.get('revision', 1)})",
            f"spec of experiment {spec.id}",
        )
    return None


def landed_round_id(experiment_id: str, round_: int) -> str:
    """A landed round's name in run keys and the landing sensor's cursor, e.g. ``flip/r001``.

    Not the partition key: it keeps the first key layout (three digits), so that rounds requested
    before the keys grew to six digits are not requested again; run keys need not sort.
    """
    return f"{experiment_id}/r{round_:03d}"


def round_run_request(spec: ExperimentSpec, round_: int, fingerprint: str) -> dg.RunRequest:
    # The run key carries the content: the same files dropped again never run twice.
    return dg.RunRequest(
        run_key=f"{landed_round_id(spec.id, round_)}/{fingerprint[:20]}",
        partition_key=partition_key(spec.id, round_),
        tags={"tyche/experiment": spec.id},
    )
