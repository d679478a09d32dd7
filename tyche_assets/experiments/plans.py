"""Publishing plans: the DuckDB plans table and plans/<experiment>/rNNN.json."""

from __future__ import annotations

import duckdb

from tyche_lib import ExperimentSpec, Plan, initial_plan

from ..lineage import text_version
from ..partitions import round_key
from ..resources import TycheStorage
from ..storage import transaction, write_text_atomic


def publish_plan(
    conn: duckdb.DuckDBPyConnection, storage: TycheStorage, plan: Plan, produced_by_round: int, run_id: str
) -> str:
    """Store ``plan`` as the plan governing ``plan.round``; returns its JSON's data version.

    The table row is written in a transaction before the JSON file, so a published file always has
    its row (the serving side reads the file).
    """
    text = plan.to_json()
    version = text_version(text)
    with transaction(conn):
        conn.execute(
            "DELETE FROM plans WHERE experiment_id = ? AND governs_round = ?", [plan.experiment_id, plan.round]
        )
        conn.execute(
            "INSERT INTO plans VALUES (?, ?, ?, ?, ?, ?)",
            [plan.experiment_id, produced_by_round, plan.round, text, version, run_id],
        )
    write_text_atomic(storage.plan_path(plan.experiment_id, round_key(plan.round)), text)
    return version


def ensure_initial_plan(conn: duckdb.DuckDBPyConnection, storage: TycheStorage, spec: ExperimentSpec) -> None:
    """Publish ``initial_plan(spec)`` for round 1 unless the experiment already has a round-1 plan."""
    exists = conn.execute(
        "SELECT count(*) FROM plans WHERE experiment_id = ? AND governs_round = 1", [spec.id]
    ).fetchall()[0][0]
    if not exists:
        publish_plan(conn, storage, initial_plan(spec), produced_by_round=0, run_id="registration")
