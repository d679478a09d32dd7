"""experiment_registry: every experiment spec in one table."""

import json

import dagster as dg
import pandas as pd

from tyche_lib import RegistryEntry

from ..lineage import text_version
from ..resources import DUCKDB_POOL, ExperimentCatalog
from ..storage import TycheStorage

# Unpartitioned and replaced whole on each materialisation, so not one of the storage layer's TABLES
# (which are written per experiment × round).
REGISTRY_DDL = """
    CREATE TABLE IF NOT EXISTS experiment_registry (
        experiment_id VARCHAR, status VARCHAR, owner VARCHAR, start_date DATE, end_date DATE,
        audience_json VARCHAR, traffic_share DOUBLE, layer VARCHAR, spec_hash VARCHAR)"""
REGISTRY_COLUMNS = [
    "experiment_id",
    "status",
    "owner",
    "start_date",
    "end_date",
    "audience_json",
    "traffic_share",
    "layer",
    "spec_hash",
]


def _registry_frame(specs) -> pd.DataFrame:
    rows = []
    for spec in sorted(specs, key=lambda s: s.id):
        entry = RegistryEntry.from_spec(spec)
        rows.append(
            {
                "experiment_id": entry.id,
                "status": entry.status,
                "owner": entry.owner,
                "start_date": entry.start_date,
                "end_date": entry.end_date,
                "audience_json": json.dumps({k: list(v) for k, v in entry.audience.items()}, sort_keys=True),
                "traffic_share": entry.traffic_share,
                "layer": entry.layer,
                "spec_hash": spec.content_hash(),
            }
        )
    return pd.DataFrame(rows, columns=REGISTRY_COLUMNS)


@dg.asset(
    pool=DUCKDB_POOL,
    group_name="experiments",
    kinds={"duckdb"},
)
def experiment_registry(context: dg.AssetExecutionContext, storage: TycheStorage, experiments: ExperimentCatalog):
    """Every valid experiment spec: status, dates, audience, traffic share, layer and owner.

    Stored in the DuckDB table ``experiment_registry`` (replaced whole: the specs folder is the
    truth); invalid specs are left out and listed in the metadata.
    """
    specs, errors = experiments.load_all()
    frame = _registry_frame(specs.values())
    with storage.connect() as conn:
        conn.execute(REGISTRY_DDL)
        with storage.transaction(conn):
            conn.execute("DELETE FROM experiment_registry")
            if len(frame):
                conn.register("_tyche_registry", frame)
                conn.execute("INSERT INTO experiment_registry BY NAME SELECT * FROM _tyche_registry")
                conn.unregister("_tyche_registry")
    shown = frame.drop(columns=["spec_hash"])
    return dg.MaterializeResult(
        data_version=dg.DataVersion(text_version(frame.to_json(orient="records", date_format="iso"))),
        metadata={
            "experiments": len(frame),
            "live": sum(RegistryEntry.from_spec(s).live for s in specs.values()),
            "registry": dg.MetadataValue.md(shown.to_markdown(index=False) if len(frame) else "no experiments"),
            "invalid_specs": dg.MetadataValue.md("\n".join(f"- {e}" for e in errors.values()) or "none"),
        },
    )
