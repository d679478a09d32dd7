"""What the experiment's source has landed, and the run request for one landed round."""

import dagster as dg

from tyche_lib import ExperimentSpec, source_from_config

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
