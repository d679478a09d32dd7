"""round_visitors: load a round's rows from the experiment's source and store them."""

import dagster as dg
import pandas as pd

from tyche_lib import RowsError, source_from_config, validate_rows
from tyche_lib.core import ROW_COLUMNS

from ..lineage import frame_version
from ..partitions import experiment_and_round, experiment_round_partitions
from ..resources import DUCKDB_POOL, ExperimentCatalog
from ..storage import TycheStorage


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
    raw = storage.save_raw_rows(experiment_id, round_, rows)
    version = frame_version(raw)

    keep = [*ROW_COLUMNS, *spec.covariate_names, *(m.name for m in spec.metrics)]
    if spec.pre_period:
        keep.append(spec.pre_period)
    try:
        typed = validate_rows(rows, spec)
        problem = None
    except RowsError as e:
        typed, problem = None, str(e)
    table = storage.visitors_table(experiment_id)
    storage.ensure_initial_plan(spec)
    with storage.connect() as conn:
        if typed is not None:
            # validate_rows returned a copy of its own: set the columns there, then keep only the stored ones.
            typed["experiment_id"] = experiment_id
            typed["round"] = round_
            if "assigned_at" in typed.columns:
                typed["assigned_at"] = pd.to_datetime(typed["assigned_at"], utc=True)
            typed = typed[[c for c in keep if c in typed.columns]]
            storage.replace_partition(conn, table, experiment_id, round_, typed)
        elif storage.table_exists(conn, table):
            # Earlier typed rows of this round no longer describe what was received.
            storage.replace_partition(conn, table, experiment_id, round_, pd.DataFrame())
        storage.replace_partition(
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
