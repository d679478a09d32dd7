"""round_visitors: load a round's rows from the experiment's source and store them."""

import dagster as dg
import pandas as pd

from tyche_lib import RowsError, source_from_config, validate_rows
from tyche_lib.core import ROW_COLUMNS

from ..experiments.plans import ensure_initial_plan
from ..lineage import frame_version
from ..partitions import experiment_and_round, experiment_round_partitions, round_key
from ..resources import DUCKDB_POOL, ExperimentCatalog, TycheStorage
from ..storage import connect, replace_partition, table_exists, visitors_table


def _raw_for_storage(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows as received, with mixed-type columns kept as text so any input can be stored for investigation.

    The other columns are shared with ``rows``, not copied: neither frame is modified afterwards.
    """
    return pd.DataFrame(
        {col: _as_text(rows[col]) if rows[col].dtype == object else rows[col] for col in rows.columns}, copy=False
    )


def _as_text(values: pd.Series) -> pd.Series:
    """An object column as nullable text: ``str(v)`` of every value, nulls kept null."""
    if pd.api.types.infer_dtype(values, skipna=True) == "string":
        # Already text (the common case): a vectorised conversion, the same values as str() gives.
        return values.astype("string")
    return values.map(lambda v: None if pd.isna(v) else str(v)).astype("string")


@dg.asset(
    partitions_def=experiment_round_partitions,
    pool=DUCKDB_POOL,
    code_version="round_visitors-1",
    output_required=False,
    group_name="ingest",
    kinds={"duckdb", "parquet"},
)
def round_visitors(context: dg.AssetExecutionContext, storage: TycheStorage, experiments: ExperimentCatalog):
    """The round's visitor rows, as received (parquet) and typed (DuckDB ``visitors_<experiment>``).

    A round the experiment does not have produces nothing, so everything downstream is skipped.
    Rows that fail normalisation are still stored raw; the blocking checks say what is wrong.
    """
    experiment_id, round_ = experiment_and_round(context)
    spec = experiments.spec(experiment_id)
    rows = source_from_config(spec.source, root=storage.root).load_round(experiment_id, round_)
    if rows.empty:
        context.log.info(f"{experiment_id} has no data for round {round_}: nothing to materialise")
        return
    for col, value in (("experiment_id", experiment_id), ("round", round_)):
        if col not in rows.columns:
            rows.insert(0, col, value)
    raw = _raw_for_storage(rows)
    raw.to_parquet(storage.raw_rows_path(experiment_id, round_key(round_)), index=False)
    version = frame_version(raw)

    keep = [*ROW_COLUMNS, *spec.covariate_names, *(m.name for m in spec.metrics)]
    if spec.pre_period:
        keep.append(spec.pre_period)
    try:
        typed = validate_rows(rows, spec)
        problem = None
    except RowsError as e:
        typed, problem = None, str(e)
    table = visitors_table(experiment_id)
    with connect(storage) as conn:
        ensure_initial_plan(conn, storage, spec)
        if typed is not None:
            # validate_rows returned a copy of its own: set the columns there, then keep only the stored ones.
            typed["experiment_id"] = experiment_id
            typed["round"] = round_
            if "assigned_at" in typed.columns:
                typed["assigned_at"] = pd.to_datetime(typed["assigned_at"], utc=True)
            typed = typed[[c for c in keep if c in typed.columns]]
            replace_partition(conn, table, experiment_id, round_, typed)
        elif table_exists(conn, table):
            # Earlier typed rows of this round no longer describe what was received.
            replace_partition(conn, table, experiment_id, round_, pd.DataFrame())
        replace_partition(
            conn,
            "round_data",
            experiment_id,
            round_,
            pd.DataFrame(
                [
                    {
                        "experiment_id": experiment_id,
                        "round": round_,
                        "data_version": version,
                        "n_rows": len(rows),
                        "run_id": context.run.run_id,
                    }
                ]
            ),
        )
        # Check results describe the rows they checked: stale once the rows are replaced.
        conn.execute("DELETE FROM round_checks WHERE experiment_id = ? AND round = ?", [experiment_id, round_])
    yield dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "rows": len(rows),
            "columns": dg.MetadataValue.json(list(map(str, rows.columns))),
            "arms": dg.MetadataValue.json(rows["arm"].astype(str).value_counts().to_dict() if "arm" in rows else {}),
            "normalisation": problem or "ok",
            "data_version": version,
            "preview": dg.MetadataValue.md(raw.head(5).to_markdown(index=False)),
        },
    )
