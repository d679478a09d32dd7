"""The storage layer: ``TycheStorage``, the resource every asset, check and sensor reads and writes through.

It owns the project folder (landing files, the DuckDB file, posteriors, trees, plans, reports), the
DuckDB tables, and every reader or writer that more than one asset uses, so that no domain reads
another's files or tables except through it. The one way Tyche writes a table is delete-then-insert
per partition in a transaction (:meth:`TycheStorage.replace_partition`); an asset's own writes are
spelled out in the asset with it.

Table names are fixed identifiers, except the per-experiment visitors table whose name is built from
an experiment id the spec already restricts to ``[a-z][a-z0-9_]*``; values are always bound parameters.
The functions taking a DuckDB connection are the statements the resource's methods run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from dagster_duckdb import DuckDBResource

from tyche_lib import Decision, ExperimentSpec, Plan, PolicyTree, Posterior, Recommendation, initial_plan
from tyche_lib.model import BinaryPosterior, ContinuousPosterior, HurdlePosterior

from .lineage import text_version
from .partitions import round_key, round_number, rounds_up_to

_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")

TABLES = {
    "round_data": """
        CREATE TABLE IF NOT EXISTS round_data (
            experiment_id VARCHAR, round INTEGER, data_version VARCHAR, n_rows BIGINT, run_id VARCHAR)""",
    "round_checks": """
        CREATE TABLE IF NOT EXISTS round_checks (
            experiment_id VARCHAR, round INTEGER, check_name VARCHAR, passed BOOLEAN,
            message VARCHAR, details VARCHAR, run_id VARCHAR)""",
    "posterior_fits": """
        CREATE TABLE IF NOT EXISTS posterior_fits (
            experiment_id VARCHAR, round INTEGER, family VARCHAR, method VARCHAR, n_rows BIGINT,
            rounds_used VARCHAR, seed UBIGINT, draws INTEGER, netcdf_path VARCHAR,
            data_version VARCHAR, fit_seconds DOUBLE, run_id VARCHAR)""",
    "posterior_summaries": """
        CREATE TABLE IF NOT EXISTS posterior_summaries (
            experiment_id VARCHAR, round INTEGER, parameter VARCHAR, mean DOUBLE, sd DOUBLE,
            hdi_low DOUBLE, hdi_high DOUBLE, r_hat DOUBLE, ess_bulk DOUBLE)""",
    "segments": """
        CREATE TABLE IF NOT EXISTS segments (
            experiment_id VARCHAR, round INTEGER, segment_id VARCHAR, rule_json VARCHAR,
            rule_text VARCHAR, share DOUBLE, n BIGINT, leading_arm VARCHAR, data_version VARCHAR)""",
    "allocations": """
        CREATE TABLE IF NOT EXISTS allocations (
            experiment_id VARCHAR, round INTEGER, segment_id VARCHAR, arm VARCHAR, weight DOUBLE,
            data_version VARCHAR)""",
    "plans": """
        CREATE TABLE IF NOT EXISTS plans (
            experiment_id VARCHAR, round INTEGER, governs_round INTEGER, plan_json VARCHAR,
            data_version VARCHAR, run_id VARCHAR)""",
    "decision_quantities": """
        CREATE TABLE IF NOT EXISTS decision_quantities (
            experiment_id VARCHAR, round INTEGER, segment VARCHAR, arm VARCHAR, prob_best DOUBLE,
            expected_loss DOUBLE, prob_worse DOUBLE, mean_effect DOUBLE, size BIGINT)""",
    "reports": """
        CREATE TABLE IF NOT EXISTS reports (
            experiment_id VARCHAR, round INTEGER, recommendation VARCHAR, report_json VARCHAR,
            run_id VARCHAR)""",
    "report_effects": """
        CREATE TABLE IF NOT EXISTS report_effects (
            experiment_id VARCHAR, round INTEGER, metric VARCHAR, role VARCHAR, segment_id VARCHAR,
            arm VARCHAR, estimate DOUBLE, lower DOUBLE, upper DOUBLE, p_value DOUBLE,
            q_value DOUBLE, significant BOOLEAN)""",
    "held_out_segment_effects": """
        CREATE TABLE IF NOT EXISTS held_out_segment_effects (
            experiment_id VARCHAR, round INTEGER, segment_id VARCHAR, rule_text VARCHAR,
            treatment VARCHAR, n_control BIGINT, n_treatment BIGINT, mean DOUBLE, sd DOUBLE,
            lower_50 DOUBLE, upper_50 DOUBLE, lower_90 DOUBLE, upper_90 DOUBLE, prob_positive DOUBLE)""",
}

# The stored report's effect columns (``discovery`` is stored as ``significant``) and held-out segment
# effect columns: the round report and the HALT report of a failed sample-ratio check write the same tables.
EFFECT_COLUMNS = [
    "metric",
    "role",
    "segment_id",
    "arm",
    "estimate",
    "lower",
    "upper",
    "p_value",
    "q_value",
    "discovery",
]
HELD_OUT_COLUMNS = [
    "segment_id",
    "rule_text",
    "treatment",
    "n_control",
    "n_treatment",
    "mean",
    "sd",
    "lower_50",
    "upper_50",
    "lower_90",
    "upper_90",
    "prob_positive",
]

# Visitor-count column of the stored posterior profiles: not an identifier, so it never names a covariate.
PROFILE_VISITORS = "visitors (count)"
_POSTERIOR_TYPES = {"binary": BinaryPosterior, "continuous": ContinuousPosterior, "hurdle": HurdlePosterior}


class TycheStorage(dg.ConfigurableResource):
    """The project folder: landing files, the DuckDB database, posteriors, trees, plans and reports.

    Layout under ``root``: ``experiments/`` (specs), ``landing/`` (default landing source),
    ``storage/tyche.duckdb``, ``storage/raw/<exp>/<round key>.parquet`` (rows as received),
    ``storage/posteriors/<exp>/<round key>.nc`` (draws) with ``.model.parquet`` (the frame the model
    was fitted on) and ``.profiles.parquet`` (covariate profiles of the rows, with visitor counts),
    ``storage/trees/<exp>/<round key>.json``, ``plans/<exp>/<round key>.json`` (with ``.run.json``,
    and ``evolution.gif``), ``reports/<exp>/<round key>.json``.
    """

    root: str
    duckdb: DuckDBResource

    # -- files -------------------------------------------------------------------------------------

    @property
    def root_path(self) -> Path:
        return Path(self.root)

    def path(self, *parts: str) -> Path:
        p = self.root_path.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def raw_rows_path(self, experiment_id: str, round_: int) -> Path:
        return self.path("storage", "raw", experiment_id, f"{round_key(round_)}.parquet")

    def staged_rows_path(self, experiment_id: str, round_: int) -> Path:
        return self.path("storage", "staged", experiment_id, f"{round_key(round_)}.parquet")

    def staged_meta_path(self, experiment_id: str, round_: int) -> Path:
        return self.path("storage", "staged", experiment_id, f"{round_key(round_)}.json")

    def posterior_path(self, experiment_id: str, round_: int) -> Path:
        return self.path("storage", "posteriors", experiment_id, f"{round_key(round_)}.nc")

    def posterior_model_data_path(self, experiment_id: str, round_: int) -> Path:
        return self.path("storage", "posteriors", experiment_id, f"{round_key(round_)}.model.parquet")

    def posterior_profiles_path(self, experiment_id: str, round_: int) -> Path:
        return self.path("storage", "posteriors", experiment_id, f"{round_key(round_)}.profiles.parquet")

    def tree_path(self, experiment_id: str, round_: int) -> Path:
        return self.path("storage", "trees", experiment_id, f"{round_key(round_)}.json")

    def plan_path(self, experiment_id: str, round_: int) -> Path:
        return self.path("plans", experiment_id, f"{round_key(round_)}.json")

    def evolution_gif_path(self, experiment_id: str) -> Path:
        return self.path("plans", experiment_id, "evolution.gif")

    def report_path(self, experiment_id: str, round_: int) -> Path:
        return self.path("reports", experiment_id, f"{round_key(round_)}.json")

    # -- DuckDB ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection with every fixed table created, closed on success and on every error.

        (``DuckDBResource.get_connection`` closes only on success: a connection left open by a failed
        step keeps the database file locked for every other process.)
        """
        Path(self.duckdb.database).parent.mkdir(parents=True, exist_ok=True)
        with self.duckdb.get_connection() as conn:
            try:
                for ddl in TABLES.values():
                    conn.execute(ddl)
                yield conn
            finally:
                conn.close()

    @staticmethod
    def visitors_table(experiment_id: str) -> str:
        if not _IDENT.match(experiment_id):
            raise ValueError(f"experiment id {experiment_id!r} cannot name a table: expected [a-z][a-z0-9_]*")
        return f"visitors_{experiment_id}"

    @staticmethod
    def table_exists(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
        [(count,)] = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
        ).fetchall()
        return bool(count)

    @staticmethod
    @contextlib.contextmanager
    def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
        """Commit on success, roll back on any error: a failed write leaves the stored rows as they were."""
        conn.execute("BEGIN TRANSACTION")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @staticmethod
    def replace_partition(
        conn: duckdb.DuckDBPyConnection, table: str, experiment_id: str, round_: int, frame: pd.DataFrame
    ) -> None:
        """Delete the (experiment, round) rows of ``table`` and insert ``frame``, atomically.

        A failure rolls back: the rows stored before stay as they were.
        """
        with TycheStorage.transaction(conn):
            TycheStorage._replace(conn, table, experiment_id, round_, frame)

    @staticmethod
    def _replace(
        conn: duckdb.DuckDBPyConnection, table: str, experiment_id: str, round_: int, frame: pd.DataFrame
    ) -> None:
        """Delete-then-insert of one partition, inside the caller's transaction."""
        visitors = TycheStorage.visitors_table(experiment_id)
        if table not in TABLES and table != visitors:
            raise ValueError(f"unknown table {table!r}")
        if table == visitors and not TycheStorage.table_exists(conn, table):
            conn.register("_tyche_frame", frame)
            conn.execute(f'CREATE TABLE "{table}" AS SELECT * FROM _tyche_frame LIMIT 0')
            conn.unregister("_tyche_frame")
        conn.execute(f'DELETE FROM "{table}" WHERE experiment_id = ? AND round = ?', [experiment_id, int(round_)])
        if len(frame):
            conn.register("_tyche_frame", frame)
            conn.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM _tyche_frame')
            conn.unregister("_tyche_frame")

    # -- rows --------------------------------------------------------------------------------------

    def save_raw_rows(self, experiment_id: str, round_: int, raw: pd.DataFrame) -> None:
        """Store the rows as received (``storage/raw``), as :func:`raw_for_storage` made them."""
        _write_parquet_atomic(raw, self.raw_rows_path(experiment_id, round_))

    # -- staged rounds: received and typed, not yet part of the experiment's history --------------

    def stage_round(self, experiment_id: str, round_: int, typed: pd.DataFrame | None, meta: dict) -> None:
        """Keep a received round's typed rows (or None: they failed normalisation) and what describes
        it (data version, rows, the spec it was received under) beside the raw copy.

        Nothing reaches DuckDB here: :meth:`accept_round` moves the rows into the experiment's
        history once every blocking check has passed, so a bad round never shapes a stored table.
        """
        rows_path = self.staged_rows_path(experiment_id, round_)
        if typed is not None:
            _write_parquet_atomic(typed, rows_path)
        elif rows_path.exists():
            rows_path.unlink()  # rows of an earlier landing no longer describe what was received
        # Keys keep their order: the spec snapshot's covariates are ordered, and order is part of the spec.
        write_text_atomic(self.staged_meta_path(experiment_id, round_), json.dumps(meta, indent=2))

    def staged_meta(self, experiment_id: str, round_: int) -> dict | None:
        path = self.staged_meta_path(experiment_id, round_)
        return json.loads(path.read_text()) if path.exists() else None

    def load_staged_rows(self, experiment_id: str, round_: int, columns: list[str] | None = None) -> pd.DataFrame:
        """The round's typed rows as received (empty when they failed normalisation)."""
        path = self.staged_rows_path(experiment_id, round_)
        if not path.exists():
            return pd.DataFrame()
        if columns is not None:
            present = set(pq.read_schema(path).names)
            columns = [c for c in dict.fromkeys(columns) if c in present]
        return pd.read_parquet(path, columns=columns)

    def received_rounds(self, experiment_id: str) -> list[int]:
        """Rounds whose rows have been received (ingested), whether or not they passed their checks."""
        folder = self.root_path / "storage" / "staged" / experiment_id
        if not folder.is_dir():
            return []
        return sorted(round_number(p.stem) for p in folder.glob("r*.json"))

    def previous_spec(self, experiment_id: str, round_: int | None = None) -> tuple[int, dict] | None:
        """(round, spec snapshot) of the latest round received before ``round_`` (any round when None)."""
        earlier = [r for r in self.received_rounds(experiment_id) if round_ is None or r < round_]
        for r in reversed(earlier):
            meta = self.staged_meta(experiment_id, r)
            if meta and meta.get("spec"):
                return r, meta["spec"]
        return None

    def accept_round(self, experiment_id: str, round_: int, run_id: str) -> None:
        """Move a round that passed every blocking check into the experiment's history, in one transaction.

        The visitors table and ``round_data`` change together or not at all. Accepting the same
        content again writes nothing.
        """
        meta = self.staged_meta(experiment_id, round_)
        if meta is None or not self.staged_rows_path(experiment_id, round_).exists():
            raise dg.Failure(
                f"round {round_} of {experiment_id} has no staged rows: materialise round_visitors for it first"
            )
        table = self.visitors_table(experiment_id)
        with self.connect() as conn:
            stored = conn.execute(
                "SELECT data_version FROM round_data WHERE experiment_id = ? AND round = ?", [experiment_id, round_]
            ).fetchall()
            if stored and stored[0][0] == meta["data_version"] and self.table_exists(conn, table):
                return
            typed = self.load_staged_rows(experiment_id, round_)
            record = pd.DataFrame(
                [
                    {
                        "experiment_id": experiment_id,
                        "round": round_,
                        "data_version": meta["data_version"],
                        "n_rows": meta["n_rows"],
                        "run_id": run_id,
                    }
                ]
            )
            with self.transaction(conn):
                self._replace(conn, table, experiment_id, round_, typed)
                self._replace(conn, "round_data", experiment_id, round_, record)

    def load_raw_rows(self, experiment_id: str, round_: int) -> pd.DataFrame:
        return pd.read_parquet(self.raw_rows_path(experiment_id, round_))

    def passed_rounds(self, experiment_id: str, up_to: int) -> list[int]:
        """Rounds <= ``up_to`` whose every blocking check passed: the data a posterior may use."""
        with self.connect() as conn:
            return _passed_rounds(conn, experiment_id, up_to)

    def load_visitors(
        self,
        experiment_id: str,
        rounds: list[int],
        columns: list[str] | None = None,
        *,
        first_exposure: bool = False,
    ) -> pd.DataFrame:
        """Typed rows of ``rounds`` in arrival order (round, assigned_at, visitor_id): all columns, or ``columns``.

        ``first_exposure``: one row per visitor, their earliest (a spec with ``repeat_visitors``).
        """
        with self.connect() as conn:
            return _load_visitors(conn, experiment_id, rounds, columns, first_exposure=first_exposure)

    def visitors_seen_before(self, experiment_id: str, round_: int, visitor_ids: pd.Series) -> pd.DataFrame:
        """Visitor ids of ``visitor_ids`` already in an earlier accepted round: ``visitor_id, round``."""
        table = self.visitors_table(experiment_id)
        with self.connect() as conn:
            if not self.table_exists(conn, table):
                return pd.DataFrame(columns=["visitor_id", "round"])
            conn.register("_tyche_ids", pd.DataFrame({"visitor_id": visitor_ids.astype(str).unique()}))
            try:
                return conn.execute(
                    f'SELECT v.visitor_id, min(v.round) AS round FROM "{table}" v JOIN _tyche_ids i USING (visitor_id) '
                    "WHERE v.experiment_id = ? AND v.round < ? GROUP BY v.visitor_id ORDER BY round, v.visitor_id",
                    [experiment_id, int(round_)],
                ).df()
            finally:
                conn.unregister("_tyche_ids")

    def check_result(self, experiment_id: str, round_: int, check_name: str) -> tuple[bool, str] | None:
        """(passed, message) of a blocking check on a round; ``None`` when it has no stored result."""
        with self.connect() as conn:
            row = conn.execute(
                "SELECT passed, message FROM round_checks WHERE experiment_id = ? AND round = ? AND check_name = ?",
                [experiment_id, round_, check_name],
            ).fetchall()
        return (bool(row[0][0]), row[0][1]) if row else None

    # -- posteriors --------------------------------------------------------------------------------

    def save_posterior(self, fitted: Posterior, experiment_id: str, round_: int) -> None:
        """Draws as NetCDF, with the frame they were fitted on and the covariate profiles of the rows.

        With those the consumers rebuild the posterior without reading the rows again. Both are small
        for a binary metric (counts per profile × arm); a row-level fit's frame is one row per visitor.
        """
        fitted.to_netcdf(self.posterior_path(experiment_id, round_))
        fitted.model_data.to_parquet(self.posterior_model_data_path(experiment_id, round_))
        profiles = fitted.profiles()
        profiles.frame.assign(**{PROFILE_VISITORS: profiles.counts}).to_parquet(
            self.posterior_profiles_path(experiment_id, round_), index=False
        )

    def load_posterior(self, spec: ExperimentSpec, round_: int) -> Posterior:
        """The posterior the ``posterior`` asset stored for this partition, rebuilt without reading its rows.

        Its ``observed`` holds the covariates of the visitors it was fitted on, one row per visitor,
        grouped by covariate profile: all the policy tree and the allocation read of it (see
        ``from_model_data``).
        """
        self._rounds_used(spec.id, round_)
        files = self._posterior_files(spec.id, round_)
        profiles = pd.read_parquet(files["profiles"])
        visitors = profiles.pop(PROFILE_VISITORS).to_numpy()
        observed = profiles.take(np.repeat(np.arange(len(profiles)), visitors)).reset_index(drop=True)
        fitted = _posterior_from_files(files, spec, observed)
        if len(observed) != fitted.model_info["n_rows"]:
            raise dg.Failure(
                f"stored profiles of {spec.id} round {round_} count {len(observed)} visitors, the posterior "
                f"{fitted.model_info['n_rows']}: materialise 'posterior' again"
            )
        return fitted

    def load_posterior_with_rows(self, spec: ExperimentSpec, round_: int, columns: list[str]) -> Posterior:
        """The stored posterior with ``columns`` of the rows it was fitted on, in arrival order, as ``observed``.

        The rows are read back from DuckDB (validated when stored) and checked against the draws.
        """
        rounds = self._rounds_used(spec.id, round_)
        files = self._posterior_files(spec.id, round_)
        rows = self.load_visitors(spec.id, rounds, columns=columns, first_exposure=spec.repeat_visitors)
        fitted = _posterior_from_files(files, spec, rows)
        if not fitted.fitted_on(rows):
            raise dg.Failure(
                f"the stored rows of {spec.id} rounds {rounds} are not the rows its round {round_} posterior was "
                "fitted on (was a round ingested again since?): materialise 'posterior' again"
            )
        return fitted

    def _rounds_used(self, experiment_id: str, round_: int) -> list[int]:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT rounds_used FROM posterior_fits WHERE experiment_id = ? AND round = ?", [experiment_id, round_]
            ).fetchall()[:1]
        if not row:
            raise dg.Failure(f"no posterior stored for {experiment_id} round {round_}: materialise 'posterior' first")
        return [int(r) for r in row[0][0].split(",")]

    def _posterior_files(self, experiment_id: str, round_: int) -> dict[str, Path]:
        files = {
            "draws": self.posterior_path(experiment_id, round_),
            "model frame": self.posterior_model_data_path(experiment_id, round_),
            "profiles": self.posterior_profiles_path(experiment_id, round_),
        }
        missing = [name for name, path in files.items() if not path.exists()]
        if missing:
            raise dg.Failure(
                f"the posterior of {experiment_id} round {round_} has no stored {' or '.join(missing)} (stored by an "
                "older version of the posterior asset?): materialise 'posterior' again"
            )
        return files

    # -- policy tree and allocation ----------------------------------------------------------------

    def save_tree(self, experiment_id: str, round_: int, tree: PolicyTree) -> str:
        """Store the tree as JSON; returns the text written (its hash is the tree's data version)."""
        text = json.dumps(tree.to_dict(), sort_keys=True, indent=2)
        write_text_atomic(self.tree_path(experiment_id, round_), text)
        return text

    def load_tree(self, experiment_id: str, round_: int) -> PolicyTree:
        path = self.tree_path(experiment_id, round_)
        if not path.exists():
            raise dg.Failure(
                f"no policy tree stored for {experiment_id} round {round_}: materialise 'policy_tree' first"
            )
        return PolicyTree.from_dict(json.loads(path.read_text()))

    def load_allocation(self, experiment_id: str, round_: int, arms) -> dict[str, dict[str, float]]:
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT segment_id, arm, weight FROM allocations WHERE experiment_id = ? AND round = ?",
                [experiment_id, round_],
            ).df()
        if rows.empty:
            raise dg.Failure(f"no allocation stored for {experiment_id} round {round_}: materialise 'allocation' first")
        return {
            seg: {a: float(group.set_index("arm").loc[a, "weight"]) for a in arms}
            for seg, group in rows.groupby("segment_id", sort=True)
        }

    def round_lineage(self, experiment_id: str, round_: int) -> dict:
        """What a round's plan was made from: data versions of the rows and of each asset, rows per
        round, the posterior's seed and its model summary, as the stored tables record them."""
        with self.connect() as conn:
            fit = conn.execute(
                "SELECT rounds_used, data_version, seed, method, n_rows, draws, family FROM posterior_fits "
                "WHERE experiment_id = ? AND round = ?",
                [experiment_id, round_],
            ).fetchall()[0]
            rounds_used = [int(r) for r in fit[0].split(",")]
            per_round = conn.execute(
                "SELECT round, data_version, n_rows FROM round_data WHERE experiment_id = ? AND list_contains(?, round) ORDER BY round",
                [experiment_id, rounds_used],
            ).fetchall()
            tree_version = conn.execute(
                "SELECT any_value(data_version) FROM segments WHERE experiment_id = ? AND round = ?",
                [experiment_id, round_],
            ).fetchall()[0][0]
            alloc_version = conn.execute(
                "SELECT any_value(data_version) FROM allocations WHERE experiment_id = ? AND round = ?",
                [experiment_id, round_],
            ).fetchall()[0][0]
            summary = conn.execute(
                "SELECT parameter, mean, sd FROM posterior_summaries WHERE experiment_id = ? AND round = ? ORDER BY parameter",
                [experiment_id, round_],
            ).fetchall()
        return {
            "data_versions": {
                "round_visitors": {round_key(r): v for r, v, _ in per_round},
                "posterior": fit[1],
                "policy_tree": tree_version,
                "allocation": alloc_version,
            },
            "rows_per_round": {round_key(r): int(n) for r, _, n in per_round},
            "posterior_seed": int(fit[2]),
            "model_summary": {
                "family": fit[6],
                "method": fit[3],
                "n_rows": int(fit[4]),
                "draws": int(fit[5]),
                "coefficients": {p: {"mean": round(m, 6), "sd": round(s, 6)} for p, m, s in summary},
            },
        }

    # -- plans -------------------------------------------------------------------------------------

    def publish_plan(self, plan: Plan, produced_by_round: int, run_id: str) -> str:
        """Store ``plan`` as the plan governing ``plan.round``; returns its JSON's data version.

        The table row is written in a transaction before the JSON file, so a published file always has
        its row (the serving side reads the file); ``<plan file>.run.json`` names the run. Once the
        round the plan governs has been received (served under it), the plan is history: the same
        plan again writes nothing, a different one is refused.
        """
        text = plan.to_json()
        version = text_version(text)
        with self.connect() as conn:
            stored = conn.execute(
                "SELECT plan_json FROM plans WHERE experiment_id = ? AND governs_round = ?",
                [plan.experiment_id, plan.round],
            ).fetchall()
        if stored and plan.round in self.received_rounds(plan.experiment_id):
            if stored[0][0] == text:
                return version  # history reproduced: the record of the run that published it stays
            raise dg.Failure(
                f"the plan for round {plan.round} of {plan.experiment_id} is history: round {plan.round} was "
                f"already received, served under the published plan ({self.plan_path(plan.experiment_id, plan.round)}), "
                "and the plan built now differs. Published history is never rewritten: the rows or code behind "
                "it changed; restore them, or correct the experiment as a new experiment id."
            )
        with self.connect() as conn, self.transaction(conn):
            conn.execute(
                "DELETE FROM plans WHERE experiment_id = ? AND governs_round = ?", [plan.experiment_id, plan.round]
            )
            conn.execute(
                "INSERT INTO plans VALUES (?, ?, ?, ?, ?, ?)",
                [plan.experiment_id, produced_by_round, plan.round, text, version, run_id],
            )
        write_text_atomic(self.plan_path(plan.experiment_id, plan.round), text)
        self.write_plan_run(plan, run_id, version)
        return version

    def ensure_initial_plan(self, spec: ExperimentSpec) -> None:
        """Publish ``initial_plan(spec)`` for round 1 unless the experiment already has a round-1 plan."""
        with self.connect() as conn:
            exists = conn.execute(
                "SELECT count(*) FROM plans WHERE experiment_id = ? AND governs_round = 1", [spec.id]
            ).fetchall()[0][0]
        if not exists:
            self.publish_plan(initial_plan(spec), produced_by_round=0, run_id="registration")

    def write_plan_run(self, plan: Plan, run_id: str, plan_version: str) -> Path:
        """``<plan file>.run.json``: the run that published the plan, kept out of the plan itself so that a
        re-run produces the same bytes."""
        plan_file = self.plan_path(plan.experiment_id, plan.round)
        write_text_atomic(
            plan_file.with_suffix(".run.json"),
            json.dumps({"run_id": run_id, "plan_data_version": plan_version, "plan_file": plan_file.name}, indent=2)
            + "\n",
        )
        return plan_file

    def plan_in_force(self, experiment_id: str, round_: int) -> Plan | None:
        """The plan governing ``round_``: the latest published plan for a round <= ``round_``."""
        with self.connect() as conn:
            text = plan_in_force_json(conn, experiment_id, round_)
        return None if text is None else Plan.from_json(text)

    def plan_published_for(self, experiment_id: str, round_: int) -> bool:
        """Whether a plan governing exactly ``round_`` has been published."""
        with self.connect() as conn:
            (count,) = conn.execute(
                "SELECT count(*) FROM plans WHERE experiment_id = ? AND governs_round = ?", [experiment_id, round_]
            ).fetchone()
        return bool(count)

    def published_plans(self, experiment_id: str) -> list[Plan]:
        """Every plan published for the experiment, in the order of the rounds they govern."""
        with self.connect() as conn:
            history = conn.execute(
                "SELECT plan_json FROM plans WHERE experiment_id = ? ORDER BY governs_round", [experiment_id]
            ).fetchall()
        return [Plan.from_json(text) for (text,) in history]

    # -- reports -----------------------------------------------------------------------------------

    def store_report(
        self,
        experiment_id: str,
        round_: int,
        report: dict,
        effects: pd.DataFrame,
        held_out: pd.DataFrame,
        run_id: str,
    ) -> None:
        """The report in the ``reports``, ``report_effects`` and ``held_out_segment_effects`` tables and
        ``reports/<experiment>/<round key>.json``."""
        text = json.dumps(json_safe(report), sort_keys=True, indent=2) + "\n"
        path = self.report_path(experiment_id, round_)
        later = [r for r in self.received_rounds(experiment_id) if r > round_]
        if later and path.exists():
            if path.read_text() == text:
                return
            raise dg.Failure(
                f"the report of round {round_} of {experiment_id} is history: round(s) {later} were received after "
                f"it, and the report built now differs from {path}. Published reports are never rewritten."
            )
        row = pd.DataFrame(
            [
                {
                    "experiment_id": experiment_id,
                    "round": round_,
                    "recommendation": report["recommendation"]["decision"],
                    "report_json": text,
                    "run_id": run_id,
                }
            ]
        )
        with self.connect() as conn:
            self.replace_partition(conn, "reports", experiment_id, round_, row)
            self.replace_partition(conn, "report_effects", experiment_id, round_, effects)
            self.replace_partition(
                conn,
                "held_out_segment_effects",
                experiment_id,
                round_,
                held_out.assign(experiment_id=experiment_id, round=round_),
            )
        write_text_atomic(self.report_path(experiment_id, round_), text)

    def write_halt_report(self, experiment_id: str, round_: int, message: str, run_id: str) -> None:
        """Record HALT for a round whose sample-ratio check failed: no effect is interpreted.

        The check writes it: a failed blocking check skips every asset downstream of the round,
        ``round_report`` included.
        """
        rec = Recommendation(
            decision=Decision.HALT,
            arm=None,
            reasons=(
                f"sample-ratio mismatch in round {round_}: the data cannot be trusted; investigate the assignment "
                f"before reading any effect",
                message,
            ),
        )
        report = {
            "experiment_id": experiment_id,
            "round": round_,
            "recommendation": recommendation_record(rec),
            "effects": [],
            "guardrails": [],
            "decision_quantities": [],
        }
        self.store_report(
            experiment_id,
            round_,
            report,
            effects_table(experiment_id, round_, pd.DataFrame()),
            pd.DataFrame(columns=HELD_OUT_COLUMNS),
            run_id,
        )

    # -- the demo ----------------------------------------------------------------------------------

    def purge_experiment(self, experiment_id: str) -> None:
        """Remove every stored row of one experiment (the demo starts over with this)."""
        with self.connect() as conn, self.transaction(conn):
            for table in TABLES:
                conn.execute(f'DELETE FROM "{table}" WHERE experiment_id = ?', [experiment_id])
            conn.execute(f'DROP TABLE IF EXISTS "{self.visitors_table(experiment_id)}"')


# -- the report's stored form ----------------------------------------------------------------------


def json_safe(value):
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def recommendation_record(rec: Recommendation) -> dict:
    return {
        "decision": str(rec.decision),
        "arm": rec.arm,
        "reasons": list(rec.reasons),
        "stop_arms": list(rec.stop_arms),
    }


def effects_table(experiment_id: str, round_: int, effects: pd.DataFrame) -> pd.DataFrame:
    """Effects as the ``report_effects`` table stores them."""
    out = effects.reindex(columns=EFFECT_COLUMNS).rename(columns={"discovery": "significant"}).copy()
    out.insert(0, "round", round_)
    out.insert(0, "experiment_id", experiment_id)
    out["significant"] = out["significant"].astype("boolean")
    return out


# -- statements on a connection --------------------------------------------------------------------


def _passed_rounds(conn: duckdb.DuckDBPyConnection, experiment_id: str, up_to: int) -> list[int]:
    rows = conn.execute(
        """SELECT round FROM round_checks WHERE experiment_id = ? AND list_contains(?, round)
           GROUP BY round HAVING bool_and(passed) ORDER BY round""",
        [experiment_id, rounds_up_to(up_to)],
    ).fetchall()
    return [int(r[0]) for r in rows]


def _load_visitors(
    conn: duckdb.DuckDBPyConnection,
    experiment_id: str,
    rounds: list[int],
    columns: list[str] | None = None,
    *,
    first_exposure: bool = False,
) -> pd.DataFrame:
    """Read through Arrow: about twice as fast as DuckDB's own DataFrame conversion for text columns."""
    table = TycheStorage.visitors_table(experiment_id)
    if not rounds or not TycheStorage.table_exists(conn, table):
        return pd.DataFrame()
    selected = ", ".join(f'"{c}"' for c in _stored_columns(conn, table, columns)) if columns else "*"
    # A returning visitor counts once, at the first exposure (ties in time broken by round).
    first = (
        "QUALIFY row_number() OVER (PARTITION BY visitor_id ORDER BY round, assigned_at) = 1 " if first_exposure else ""
    )
    return (
        conn.sql(
            f'SELECT {selected} FROM "{table}" WHERE experiment_id = $experiment AND list_contains($rounds, round) '
            f"{first}ORDER BY round, assigned_at, visitor_id",
            params={"experiment": experiment_id, "rounds": [int(r) for r in rounds]},
        )
        .to_arrow_table()
        .to_pandas()
    )


def _stored_columns(conn: duckdb.DuckDBPyConnection, table: str, wanted: list[str]) -> list[str]:
    """The ``wanted`` columns the table has, in the order asked (a column is never built into SQL unchecked)."""
    stored = {
        name
        for (name,) in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
        ).fetchall()
    }
    return [c for c in dict.fromkeys(wanted) if c in stored]


def plan_in_force_json(conn: duckdb.DuckDBPyConnection, experiment_id: str, round: int) -> str | None:
    """The JSON of the plan governing ``round``: the latest published plan for a round <= ``round``."""
    row = conn.execute(
        """SELECT plan_json FROM plans WHERE experiment_id = ? AND governs_round <= ?
           ORDER BY governs_round DESC LIMIT 1""",
        [experiment_id, int(round)],
    ).fetchall()[:1]
    return row[0][0] if row else None


def raw_for_storage(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows as received, mixed-type columns as text, so any input can be stored for the investigation.

    The other columns are shared with ``rows``, not copied: neither frame is modified afterwards.
    """
    return pd.DataFrame(
        {col: _as_text(rows[col]) if rows[col].dtype == object else rows[col] for col in rows.columns}, copy=False
    )


def _write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write a parquet file so readers see the old or the new one, never half of it (a killed step)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file so readers see the old or the new content, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _as_text(values: pd.Series) -> pd.Series:
    """An object column as nullable text: ``str(v)`` of every value, nulls kept null."""
    if pd.api.types.infer_dtype(values, skipna=True) == "string":
        # Already text (the common case): a vectorised conversion, the same values as str() gives.
        return values.astype("string")
    return values.map(lambda v: None if pd.isna(v) else str(v)).astype("string")


def _posterior_from_files(files: dict[str, Path], spec: ExperimentSpec, observed: pd.DataFrame) -> Posterior:
    return _POSTERIOR_TYPES[spec.primary.family].from_model_data(
        files["draws"], pd.read_parquet(files["model frame"]), spec, observed
    )
