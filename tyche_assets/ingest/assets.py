"""round_visitors: receive a round's rows from the experiment's source and stage them for the checks."""

import dagster as dg
import pandas as pd

from tyche_lib import RowsError, TycheError, source_from_config, unknown_columns, validate_rows
from tyche_lib.core import ROW_COLUMNS

from ..lineage import frame_version
from ..partitions import experiment_and_round, experiment_round_partitions
from ..resources import DUCKDB_POOL, ExperimentCatalog
from ..storage import TycheStorage, raw_for_storage
from .landing import held_reason, spec_revision_problem


def _fail(experiment_id: str, round_: int, problem: str, **metadata) -> dg.Failure:
    return dg.Failure(
        description=f"round {round_} of {experiment_id} refused: {problem}",
        metadata={"experiment": experiment_id, "round": round_, **metadata},
        allow_retries=False,
    )


@dg.asset(
    partitions_def=experiment_round_partitions,
    pool=DUCKDB_POOL,
    code_version="round_visitors-2",
    group_name="ingest",
    kinds={"parquet"},
)
def round_visitors(context: dg.AssetExecutionContext, storage: TycheStorage, experiments: ExperimentCatalog):
    """The round's visitor rows as received (``storage/raw``) and typed (``storage/staged``).

    Refused before anything is stored: a round whose previous round has no published plan (rounds
    run in order), a spec that changes the experiment without a valid revision, a source that cannot
    be read (named by file), a round with no rows, and different rows for a round that later rounds
    already followed (published history is immutable; the same rows again are a no-op).
    Rows that fail normalisation are stored raw and staged without typed rows: the blocking
    checks say what is wrong. Nothing reaches DuckDB until every blocking check passed
    (``posterior`` accepts the round into the experiment's history).
    """
    experiment_id, round_ = experiment_and_round(context)
    spec = experiments.spec(experiment_id)
    storage.ensure_initial_plan(spec)
    revision = spec_revision_problem(spec, storage, round_)
    if revision is not None:
        raise _fail(experiment_id, round_, str(revision), field=revision.field)
    held = held_reason(spec.id, storage, round_)
    if held is not None:
        raise _fail(experiment_id, round_, held)
    try:
        rows = source_from_config(spec.source, root=storage.root).load_round(experiment_id, round_)
    except TycheError as e:
        raise _fail(experiment_id, round_, f"its source could not be read: {e}") from None
    if rows.empty:
        what = "no data has landed for it" if len(rows.columns) == 0 else "its files hold a header and no rows"
        raise _fail(experiment_id, round_, f"{what}; a round needs at least one visitor row")
    for col, value in (("experiment_id", experiment_id), ("round", round_)):
        if col not in rows.columns:
            rows.insert(0, col, value)
    raw = raw_for_storage(rows)
    version = frame_version(raw)

    later = [r for r in storage.received_rounds(experiment_id) if r > round_]
    if later:
        stored = storage.staged_meta(experiment_id, round_) or {}
        if stored.get("data_version") != version:
            raise _fail(
                experiment_id,
                round_,
                f"round {round_} is history: round(s) {later} were received after it, served under the plan built "
                f"from its rows, so different rows for it (data version {version[:12]}, stored "
                f"{str(stored.get('data_version'))[:12]}) would rewrite published history. Restore the files "
                f"of round {round_} as they were, or correct the experiment as a new experiment id.",
                stored_data_version=str(stored.get("data_version")),
                landed_data_version=version,
            )
        context.log.info(f"round {round_} of {experiment_id}: the same rows again; history unchanged")
        return dg.MaterializeResult(
            data_version=dg.DataVersion(version), metadata={"rows": len(rows), "unchanged": True}
        )

    storage.save_raw_rows(experiment_id, round_, raw)
    keep = [*ROW_COLUMNS, *spec.covariate_names, *(m.name for m in spec.metrics)]
    if spec.pre_period:
        keep.append(spec.pre_period)
    try:
        typed = validate_rows(rows, spec, experiment_id=experiment_id, round=round_)
        problem = None
    except RowsError as e:
        typed, problem = None, str(e)
    if typed is not None:
        typed["experiment_id"] = experiment_id
        typed["round"] = round_
        typed["assigned_at"] = pd.to_datetime(typed["assigned_at"], utc=True)
        typed = typed[[c for c in keep if c in typed.columns]]
    extra = unknown_columns(rows, spec)
    storage.stage_round(
        experiment_id,
        round_,
        typed,
        {
            "data_version": version,
            "n_rows": len(rows),
            "columns": list(map(str, rows.columns)),
            "unknown_columns": extra,
            "normalisation": problem or "ok",
            "spec": spec.revision_snapshot(),
            "spec_hash": spec.content_hash(),
            "run_id": context.run.run_id,
        },
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "rows": len(rows),
            "columns": dg.MetadataValue.json(list(map(str, rows.columns))),
            "unknown_columns": dg.MetadataValue.json(extra),
            "arms": dg.MetadataValue.json(rows["arm"].astype(str).value_counts().to_dict() if "arm" in rows else {}),
            "normalisation": problem or "ok",
            "data_version": version,
            "preview": dg.MetadataValue.md(raw.head(5).to_markdown(index=False)),
        },
    )
