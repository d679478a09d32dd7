"""experiment_registry_conflicts: live experiments must fit together in the traffic."""

import json

import dagster as dg
import pandas as pd

from tyche_lib import RegistryEntry, find_conflicts

from ..resources import DUCKDB_POOL
from ..storage import TycheStorage
from .assets import REGISTRY_DDL, experiment_registry


@dg.asset_check(asset=experiment_registry, blocking=True, pool=DUCKDB_POOL)
def experiment_registry_conflicts(context: dg.AssetCheckExecutionContext, storage: TycheStorage):
    """Live experiments whose dates and audiences overlap must fit in 100% of the traffic.

    Experiments in one mutual-exclusion layer split its traffic, so for them the layer's shares
    must fit in 100% instead. Stopped and shipped experiments hold no traffic.
    """
    with storage.connect() as conn:
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
