"""experiment_registry: every experiment spec in one table, and the check that they fit together."""

import json

import dagster as dg
import pandas as pd

from tyche_lib import RegistryEntry, find_conflicts

from ..lineage import text_version
from ..resources import DUCKDB_POOL, ExperimentCatalog, TycheStorage
from ..storage import connect, transaction

# Unpartitioned and replaced whole on each materialisation, so not one of storage.TABLES (which are
# written per experiment × round).
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
    with connect(storage) as conn:
        conn.execute(REGISTRY_DDL)
        with transaction(conn):
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


@dg.asset_check(asset=experiment_registry, blocking=True, pool=DUCKDB_POOL)
def experiment_registry_conflicts(context: dg.AssetCheckExecutionContext, storage: TycheStorage):
    """Live experiments whose dates and audiences overlap must fit in 100% of the traffic.

    Experiments in one mutual-exclusion layer split its traffic, so for them the layer's shares
    must fit in 100% instead. Stopped and shipped experiments hold no traffic.
    """
    with connect(storage) as conn:
        conn.execute(REGISTRY_DDL)
        rows = conn.execute(
            "SELECT experiment_id, status, owner, start_date, end_date, audience_json, traffic_share, layer "
            "FROM experiment_registry ORDER BY experiment_id"
        ).fetchall()
    entries = [
        RegistryEntry(
            id=id_,
            status=status,
            owner=owner,
            start_date=start,
            end_date=end,
            audience={k: tuple(v) for k, v in json.loads(audience).items()},
            traffic_share=share,
            layer=layer,
        )
        for id_, status, owner, start, end, audience, share, layer in rows
    ]
    conflicts = find_conflicts(entries)
    table = pd.DataFrame(
        [
            {
                "experiments": " & ".join(c.experiments),
                "kind": c.kind,
                "layer": c.layer or "",
                "dates": c.describe_window(),
                "audience": c.describe_audience() if c.kind == "traffic" else "",
                "shares": " + ".join(f"{c.shares[e]:.0%}" for e in c.experiments) + f" = {c.total_share:.0%}",
            }
            for c in conflicts
        ]
    )
    return dg.AssetCheckResult(
        passed=not conflicts,
        description=("; ".join(str(c) for c in conflicts) if conflicts else f"{len(entries)} experiments fit together"),
        metadata={
            "conflicts": len(conflicts),
            "experiments_checked": len(entries),
            "report": dg.MetadataValue.md(table.to_markdown(index=False) if conflicts else "no conflicts"),
        },
    )
