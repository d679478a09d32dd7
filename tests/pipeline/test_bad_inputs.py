"""Trustworthy rounds: bad inputs and faults against the real pipeline, on a root that already holds valid rounds.

A module-scoped base project holds two experiments, ``alpha`` (four arms) and ``beta`` (two arms, a hurdle
``revenue`` metric), each with rounds 1 and 2 run through ``round_job``, interleaved. Every case copies that
project to a fresh folder and a fresh Dagster instance, lands one bad input (files or a spec change), runs the
round and asserts:

1. the round is refused (``not result.success``), or, for the cases that must pass, succeeds;
2. the failure text (step failures and failed asset checks) names the field, file or round;
3. no plan is published for the round after it;
4. every stored row, plan, report and file of the other rounds and experiments is byte-for-byte unchanged;
   only the raw and staged copies, typed rows and check results of a new failing round may appear (and its
   HALT report after a sample-ratio failure). A refused re-landing of an existing round changes nothing at all.

The cases are written to the required behaviour of the "trustworthy rounds" issue, not to what the pipeline
did when they were written. Kill-and-rerun, interleaved experiments and the backfill of the latest round are
at the end; tests/pipeline/test_rounds.py covers a backfill of a single-round experiment and its lineage.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import Project, spec_yaml

from tyche_assets.definitions import build_definitions
from tyche_assets.experiments.sensors import register_experiments
from tyche_assets.partitions import round_key
from tyche_assets.storage import TycheStorage
from tyche_lib import Plan, derive_seed

pytestmark = pytest.mark.slow

ALPHA_ARMS = ("control", "flip", "flat", "mild")
BETA_ARMS = ("control", "flip")
BASE_VISITORS = {"alpha": 8_000, "beta": 3_000}
CASE_VISITORS = 3_000  # a bad round: small, it stops at ingest or at the checks
SRM_VISITORS = 20_000
DUCKDB_FILE = Path("storage") / "tyche.duckdb"
# Columns that name the run that wrote a row: a re-run that reproduces a round may change only these.
RUN_COLUMNS = {"run_id", "fit_seconds"}


def beta_spec(**extra) -> dict:
    spec = spec_yaml("beta", arms=BETA_ARMS, **extra)
    spec["metrics"]["secondary"] = [{"name": "revenue", "family": "hurdle"}]
    return spec


def write_spec(root: Path, spec: dict) -> None:
    (root / "experiments" / f"{spec['id']}.yaml").write_text(yaml.safe_dump(spec))


def open_project(root: Path, instance: dg.DagsterInstance) -> Project:
    return Project(root=root, instance=instance, defs=build_definitions(str(root)))


def traffic(project: Project, experiment_id: str, round_: int, n: int) -> pd.DataFrame:
    """The round's traffic routed by the plan in force, with beta's hurdle revenue column."""
    rows = project.simulate(experiment_id, round_, n).copy()
    if experiment_id == "beta":
        rng = np.random.default_rng(derive_seed(experiment_id, round_, "test-revenue"))
        rows["revenue"] = np.round(rows["converted"].to_numpy() * rng.gamma(2.0, 20.0, len(rows)), 2)
    return rows


# -- the base project --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """alpha and beta, rounds 1 and 2 each, run interleaved; no DuckDB connection stays open."""
    root = tmp_path_factory.mktemp("base")
    (root / "experiments").mkdir()
    write_spec(root, spec_yaml("alpha", arms=ALPHA_ARMS))
    write_spec(root, beta_spec())
    with dg.instance_for_test() as instance:
        project = open_project(root, instance)
        register_experiments(instance, project.defs.resources["experiments"], project.storage)
        for round_ in (1, 2):
            for exp in ("alpha", "beta"):
                project.land(exp, round_, traffic(project, exp, round_, BASE_VISITORS[exp]))
            for exp in ("alpha", "beta"):
                result = project.run_round(exp, round_)
                assert result.success, (exp, round_, failure_text(result))
        for exp in ("alpha", "beta"):
            assert (root / "plans" / exp / f"{round_key(3)}.json").exists()
    return root


def copy_project(base: Path, dest: Path) -> Path:
    shutil.copytree(base, dest)
    return dest


@pytest.fixture(scope="module")
def base_snapshot(base) -> Snapshot:
    return snapshot(base)


@pytest.fixture
def fresh(base, base_snapshot, tmp_path):
    """A copy of the base project on a fresh Dagster instance, and the base's snapshot."""
    root = copy_project(base, tmp_path / "project")
    with dg.instance_for_test() as instance:
        yield open_project(root, instance), base_snapshot


# -- snapshots ---------------------------------------------------------------------------------------------


_PROJECT_PATH = re.compile(r"/[^'\"\s]*?/(storage|plans|reports|landing)/")


@dataclass
class Snapshot:
    tables: dict[str, tuple[list[str], list[tuple]]]  # name -> (columns, sorted rows as repr tuples)
    files: dict[str, bytes]  # path relative to the root -> bytes


def snapshot(root: Path) -> Snapshot:
    """Every DuckDB table's rows (sorted) and the bytes of every file under plans/, reports/, storage/.

    Values that hold a project path (posterior_fits.netcdf_path) show the project folder as ``<root>``: a
    copy of the project, whose database still names the original's files, is compared with the original.
    """
    tables = {}
    db = root / DUCKDB_FILE
    if db.exists():
        conn = duckdb.connect(str(db), read_only=True)
        try:
            names = [n for (n,) in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()]
            for name in names:
                cur = conn.execute(f'SELECT * FROM "{name}"')
                columns = [d[0] for d in cur.description]
                rows = sorted(tuple(_PROJECT_PATH.sub(r"<root>/\1/", repr(v)) for v in row) for row in cur.fetchall())
                tables[name] = (columns, rows)
        finally:
            conn.close()
    files = {}
    for top in ("plans", "reports", "storage"):
        for path in sorted((root / top).rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and rel != DUCKDB_FILE and not rel.name.startswith(str(DUCKDB_FILE.name)):
                files[rel.as_posix()] = path.read_bytes()
    return Snapshot(tables, files)


@dataclass(frozen=True)
class Allowed:
    """What a case may change: the new failing round's own raw copy, typed rows and check results."""

    experiment_id: str | None = None
    round: int | None = None
    new_round: bool = False  # the round had nothing stored before the case
    round_report: bool = False  # the round's report may appear (the HALT of a sample-ratio failure)
    new_experiments: tuple[str, ...] = ()  # experiments the case registers: anything of theirs may appear
    ignore_run_columns: bool = False  # a successful re-run may name its own run
    ignore_posterior_files: bool = False  # a re-fit writes NetCDF draws (their attributes carry a timestamp)
    partial_round: bool = False  # a run killed mid-way may leave the new round's intermediate files
    whole_round: bool = False  # the round succeeds: anything of it, and the plan it publishes, may appear

    def row_may_change(self, table: str, columns: list[str], row: tuple) -> bool:
        values = dict(zip(columns, row))
        exp = values.get("experiment_id")
        if exp is not None and any(exp == repr(e) for e in self.new_experiments):
            return True
        if table.startswith("visitors_") and table[len("visitors_") :] in self.new_experiments:
            return True
        if self.experiment_id is None or exp != repr(self.experiment_id) or values.get("round") != repr(self.round):
            return False
        if self.whole_round:
            return True
        if table in {"plans"}:
            return False  # a plan produced by the failing round would be a published plan
        if table in {"reports", "report_effects", "held_out_segment_effects"}:
            return self.round_report
        return self.new_round

    def file_may_change(self, path: str) -> bool:
        parts = path.split("/")
        if any(e in parts for e in self.new_experiments):
            return True
        if self.ignore_run_columns and path.endswith(".run.json"):
            return True
        if self.ignore_run_columns and parts[0] == "plans" and parts[-1] == "evolution.gif":
            return True
        if self.ignore_posterior_files and parts[:2] == ["storage", "posteriors"] and path.endswith(".nc"):
            return True
        if self.experiment_id is None or self.experiment_id not in parts:
            return False
        key = round_key(self.round)
        if self.whole_round and (
            parts[-1].startswith(key) or parts[-1].startswith(round_key(self.round + 1)) or parts[-1] == "evolution.gif"
        ):
            return True
        if self.partial_round and parts[0] == "storage" and parts[-1].startswith(key):
            return True
        if parts[0] == "storage" and parts[1] in {"raw", "staged"} and parts[-1].startswith(key):
            return self.new_round  # the rows as received (and typed), kept for the investigation
        if parts[0] == "reports" and parts[-1] == f"{key}.json":
            return self.round_report
        return False


def _without_run_ids(data: bytes):
    """A JSON file's content without the ``run_id`` keys (a re-run names itself; nothing else may move)."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in RUN_COLUMNS}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads(data))


@dataclass(frozen=True)
class _AnyOf:
    allowances: tuple[Allowed, ...]

    @property
    def ignore_run_columns(self) -> bool:
        return any(a.ignore_run_columns for a in self.allowances)

    def row_may_change(self, table, columns, row) -> bool:
        return any(a.row_may_change(table, columns, row) for a in self.allowances)

    def file_may_change(self, path) -> bool:
        return any(a.file_may_change(path) for a in self.allowances)


def assert_unchanged(before: Snapshot, after: Snapshot, *allowances: Allowed) -> None:
    """Every stored row and file no allowance covers is byte-for-byte what it was."""
    allowed = _AnyOf(allowances)
    problems = []
    for name in sorted(set(before.tables) | set(after.tables)):
        cols_b, rows_b = before.tables.get(name, (None, []))
        cols_a, rows_a = after.tables.get(name, (None, []))
        if cols_b is not None and cols_a is not None and cols_b != cols_a:
            problems.append(f"table {name}: columns {cols_b} -> {cols_a}")
            continue
        cols = cols_a or cols_b
        run_idx = [i for i, c in enumerate(cols) if c in RUN_COLUMNS] if allowed.ignore_run_columns else []

        def kept(rows, cols=cols, name=name, run_idx=run_idx):
            out = []
            for row in rows:
                if allowed.row_may_change(name, cols, row):
                    continue
                out.append(tuple("<run>" if i in run_idx else v for i, v in enumerate(row)))
            return sorted(out)

        kb, ka = kept(rows_b), kept(rows_a)
        if kb != ka:
            gone = [r for r in kb if r not in set(ka)][:3]
            new = [r for r in ka if r not in set(kb)][:3]
            problems.append(f"table {name}: {len(kb)} -> {len(ka)} rows; removed/changed e.g. {gone}; added {new}")
    for path in sorted(set(before.files) | set(after.files)):
        if allowed.file_may_change(path):
            continue
        b, a = before.files.get(path), after.files.get(path)
        if b is not None and a is not None and allowed.ignore_run_columns and path.endswith(".json"):
            b, a = _without_run_ids(b), _without_run_ids(a)
        if b != a:
            state = "added" if b is None else "removed" if a is None else "changed"
            problems.append(f"file {path} {state}")
    assert not problems, "stored state changed:\n" + "\n".join(problems)


# -- what the pipeline said --------------------------------------------------------------------------------


def _metadata_text(metadata) -> list[str]:
    out = []
    for key, value in (metadata or {}).items():
        out.append(f"{key}: {getattr(value, 'value', value)}")
    return out


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Every message a person would read about why the run failed: step failures and failed checks."""
    parts = []
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            err = data.error
            seen = 0
            while err is not None and seen < 10:
                parts.append(err.message)
                err = err.cause or err.context
                seen += 1
            if data.user_failure_data is not None:
                parts.append(data.user_failure_data.description or "")
                parts.extend(_metadata_text(data.user_failure_data.metadata))
        elif event.is_failure and event.message:  # the run's own failure
            parts.append(event.message)
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            parts.append(f"[{evaluation.check_name}] {evaluation.description or ''}")
            parts.extend(_metadata_text(evaluation.metadata))
    return "\n".join(parts)


def check_metadata_text(result: dg.ExecuteInProcessResult, check_name: str) -> str:
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.check_name == check_name:
            return "\n".join([evaluation.description or "", *_metadata_text(evaluation.metadata)])
    return ""


def names_round(round_: int) -> re.Pattern:
    """'round 3', 'round=3', 'rounds [2, 3]', 'rounds 1 and 3', 'round(s) (3)', 'r000003', 'r003'."""
    return re.compile(
        rf"\brounds?(?:\(s\))?[ =:#(\[]*(?:\d+(?:,|\s+and|\s+or)?\s*)*?(?<!\d){round_}(?!\d)|\br0*{round_}(?!\d)",
        re.I,
    )


def lit(*alternatives: str) -> tuple[str, ...]:
    return alternatives


# -- the cases ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """``make(project)`` lands the bad input (or changes a spec); the run of ``experiment`` ``round`` must be
    refused with every fragment group named (a group is alternatives: a literal or a regex)."""

    id: str
    make: Callable[[Project], None]
    fragments: tuple = ()
    experiment: str = "alpha"
    round: int = 3
    new_round: bool = True
    halt: bool = False
    new_experiments: tuple[str, ...] = ()
    rebuild: bool = False  # rebuild the definitions after make (a spec changed)
    failing_check: str | None = None  # when set, this blocking check must fail
    forbidden: tuple[str, ...] = ()  # texts that must not be the whole story


def land_rows(change: Callable[[pd.DataFrame, Plan], pd.DataFrame], exp="alpha", round_=3, fmt="parquet", n=None):
    """A case that lands ``change(clean rows, plan in force)`` as the round's one file."""

    def make(project: Project) -> None:
        rows = traffic(project, exp, round_, n or CASE_VISITORS)
        plan = project.plan_in_force(exp, round_)
        project.land(exp, round_, change(rows, plan), fmt=fmt)

    return make


def set_column(column: str, value, rows_slice=slice(3, 7), dtype=None):
    def change(rows, plan):
        if dtype is not None:
            rows[column] = rows[column].astype(dtype)
        idx = rows.index[rows_slice]
        rows.loc[idx, column] = value
        return rows

    return change


def drop_column(column: str):
    return lambda rows, plan: rows.drop(columns=[column])


def round_folder(project: Project, exp="alpha", round_=3) -> Path:
    folder = project.root / "landing" / exp / f"round={round_}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def land_files(write: Callable[[Path, pd.DataFrame], None], exp="alpha", round_=3):
    """A case that writes files itself into the round folder (given the clean rows)."""

    def make(project: Project) -> None:
        write(round_folder(project, exp, round_), traffic(project, exp, round_, CASE_VISITORS))

    return make


def change_spec(exp="alpha", **changes):
    """A case that replaces the spec of ``exp`` (keys set to ``None`` are removed) and lands a clean round 3."""

    def make(project: Project) -> None:
        path = project.root / "experiments" / f"{exp}.yaml"
        spec = yaml.safe_load(path.read_text())
        for k, v in changes.items():
            if v is None:
                spec.pop(k, None)
            else:
                spec[k] = v
        path.write_text(yaml.safe_dump(spec))
        project.land(exp, 3, traffic(project, exp, 3, CASE_VISITORS))

    return make


# Row-rule changes ------------------------------------------------------------------------------------------


def _shuffle_segments(rows, plan):
    """Optimized rows recorded with another segment of the plan (or a segment the plan does not have)."""
    ids = list(plan.segment_ids)
    optimized = rows.index[rows["cell"] == "optimized"][:40]
    if len(ids) > 1:
        rows.loc[optimized, "segment_id"] = [
            ids[(ids.index(s) + 1) % len(ids)] for s in rows.loc[optimized, "segment_id"]
        ]
    else:
        rows.loc[optimized, "segment_id"] = "s_not_in_plan"
    return rows


def _bool_text(true: str, false: str):
    """The boolean covariate exported as text the row schema does not accept (stored as a text column)."""

    def change(rows, plan):
        rows["returning"] = np.where(rows["returning"].astype(bool), true, false)
        return rows

    return change


def _probabilities_off_plan(rows, plan):
    rows.loc[:49, "assignment_prob"] = rows.loc[:49, "assignment_prob"] * 0.9
    return rows


def _duplicate_visitors(rows, plan):
    rows.loc[5, "visitor_id"] = rows.loc[4, "visitor_id"]
    return rows


def _duplicate_row(rows, plan):
    return pd.concat([rows, rows.iloc[[10]]], ignore_index=True)


def _visitors_of_round(earlier: int):
    def change(rows, plan):
        rows.loc[:19, "visitor_id"] = [f"r{earlier:03d}-{i:07d}" for i in range(20)]
        return rows

    return change


def _rows_say(column: str, value):
    def change(rows, plan):
        rows[column] = value
        return rows

    return change


def _mixed_rounds(rows, plan):
    rows["round"] = 3
    rows.loc[:99, "round"] = 4
    return rows


def _negative_revenue(rows, plan):
    rows.loc[rows.index[:5], "revenue"] = -12.5
    return rows


def _arm_lost(arm: str, share: float, cell: str | None):
    """Drop ``share`` of ``arm``'s rows (of one cell, or all): probabilities stay exact, only the ratio is off."""

    def change(rows, plan):
        mask = rows["arm"] == arm
        if cell is not None:
            mask &= rows["cell"] == cell
        idx = rows.index[mask]
        rng = np.random.default_rng(7)
        drop = rng.choice(idx, size=int(share * len(idx)), replace=False)
        return rows.drop(index=drop).reset_index(drop=True)

    return change


def _srm_arm(cell: str | None) -> str:
    """An alpha arm with thousands of rows (in ``cell``) under round 3's plan: the loss is plainly visible."""
    return "flip" if cell == "optimized" else "mild"


def _cell_lost(rows, plan):
    explore = rows.index[rows["cell"] == "explore"]
    return rows.drop(index=explore[: len(explore) // 2]).reset_index(drop=True)


# File-level changes --------------------------------------------------------------------------------------


def _zero_byte(name):
    return lambda folder, rows: (folder / name).write_bytes(b"")


def _truncated_parquet(folder, rows):
    rows.to_parquet(folder / "visitors.parquet", index=False)
    data = (folder / "visitors.parquet").read_bytes()
    (folder / "visitors.parquet").write_bytes(data[: len(data) // 2])


def _delimited(sep):
    return lambda folder, rows: rows.to_csv(folder / "visitors.csv", index=False, sep=sep)


def _stray_file(name, content=b'{"note": "export log"}'):
    def write(folder, rows):
        rows.to_parquet(folder / "visitors.parquet", index=False)
        (folder / name).write_bytes(content)

    return write


def _two_files_different_columns(folder, rows):
    half = len(rows) // 2
    rows.iloc[:half].to_parquet(folder / "part-1.parquet", index=False)
    rows.iloc[half:].drop(columns=["latency_ms"]).to_parquet(folder / "part-2.parquet", index=False)


def _header_only(fmt):
    def write(folder, rows):
        empty = rows.iloc[:0]
        empty.to_parquet(folder / "visitors.parquet", index=False) if fmt == "parquet" else empty.to_csv(
            folder / "visitors.csv", index=False
        )

    return write


def _non_utf8_csv(folder, rows):
    text = rows.to_csv(index=False)
    (folder / "visitors.csv").write_bytes(text.replace("mobile", "m\xf6bile", 3).encode("latin-1"))


def _subfolder(folder, rows):
    rows.to_parquet(folder / "visitors.parquet", index=False)
    (folder / "archive").mkdir()


def _hidden_only(folder, rows):
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")


def _empty_folder(folder, rows):
    pass


# Order and partition changes ------------------------------------------------------------------------------


def _land_round_4_without_3(project):
    project.land("alpha", 4, traffic(project, "alpha", 4, CASE_VISITORS))


def _land_rounds_3_and_4_run_4(project):
    project.land("alpha", 3, traffic(project, "alpha", 3, CASE_VISITORS))
    project.land("alpha", 4, traffic(project, "alpha", 4, CASE_VISITORS))


def _new_experiment_round_2_first(project):
    project.add_experiment("gamma", arms=("control", "flip"))
    project.land("gamma", 1, project.simulate("gamma", 1, CASE_VISITORS))
    project.land("gamma", 2, project.simulate("gamma", 2, CASE_VISITORS))


def _nothing_landed(project):
    pass


def _reland_round_1(change):
    """Round 1 of alpha landed again after round 2 ran."""

    def make(project: Project) -> None:
        rows = traffic(project, "alpha", 1, BASE_VISITORS["alpha"])
        project.land("alpha", 1, change(rows))

    return make


def _flip_outcomes(rows):
    rows.loc[:99, "converted"] = 1 - rows.loc[:99, "converted"]
    return rows


ROUND_2 = names_round(2)
ROUND_1 = names_round(1)
ROUND_3 = names_round(3)
FIX_WORDS = re.compile(
    r"correct|revision|new experiment|backfill|re-?run|later round|next round|new round|restore|re-?land|rerun",
    re.I,
)

VALUE_CASES = [
    # wrong types per column (CSV: a column may hold any mix of text and numbers)
    Case(
        "type_assignment_prob_text",
        land_rows(set_column("assignment_prob", "high", dtype=object), fmt="csv"),
        (lit("assignment_prob"),),
    ),
    Case(
        "type_converted_text", land_rows(set_column("converted", "yes", dtype=object), fmt="csv"), (lit("converted"),)
    ),
    Case(
        "type_latency_text", land_rows(set_column("latency_ms", "fast", dtype=object), fmt="csv"), (lit("latency_ms"),)
    ),
    Case("type_device_number", land_rows(set_column("device", 3, dtype=object), fmt="csv"), (lit("device"),)),
    Case(
        "type_returning_text", land_rows(set_column("returning", "maybe", dtype=object), fmt="csv"), (lit("returning"),)
    ),
    Case("type_round_text", land_rows(_rows_say("round", "three"), fmt="csv"), (lit("round"),)),
    Case(
        "type_revenue_text",
        land_rows(set_column("revenue", "n/a", dtype=object), exp="beta", fmt="csv"),
        (lit("revenue"),),
        experiment="beta",
    ),
    # nulls in required columns
    Case("null_visitor_id", land_rows(set_column("visitor_id", None)), (lit("visitor_id"),)),
    Case("null_arm", land_rows(set_column("arm", None)), (lit("arm"),)),
    Case("null_cell", land_rows(set_column("cell", None)), (lit("cell"),)),
    Case("null_segment_id", land_rows(set_column("segment_id", None)), (lit("segment_id"),)),
    Case("null_assignment_prob", land_rows(set_column("assignment_prob", None)), (lit("assignment_prob"),)),
    Case("null_converted", land_rows(set_column("converted", np.nan)), (lit("converted"),)),
    Case("null_latency_ms", land_rows(set_column("latency_ms", np.nan)), (lit("latency_ms"),)),
    Case("null_device", land_rows(set_column("device", None)), (lit("device"),)),
    Case("null_returning", land_rows(set_column("returning", None, dtype=object)), (lit("returning"),)),
    Case("null_assigned_at", land_rows(set_column("assigned_at", None, dtype=object)), (lit("assigned_at"),)),
    Case("null_revenue", land_rows(set_column("revenue", np.nan), exp="beta"), (lit("revenue"),), experiment="beta"),
    # unknown arm / cell / levels
    Case("unknown_arm", land_rows(set_column("arm", "purple")), (lit("arm"),)),
    Case(
        "arm_of_another_experiment", land_rows(set_column("arm", "flat"), exp="beta"), (lit("arm"),), experiment="beta"
    ),
    Case("unknown_cell", land_rows(set_column("cell", "holdout")), (lit("cell"),)),
    Case("unknown_device_level", land_rows(set_column("device", "phone")), (lit("device"),)),
    Case("device_level_wrong_case", land_rows(set_column("device", "Mobile")), (lit("device"),)),
    # probabilities
    Case("probability_zero", land_rows(set_column("assignment_prob", 0.0)), (lit("assignment_prob"),)),
    Case("probability_above_one", land_rows(set_column("assignment_prob", 1.2)), (lit("assignment_prob"),)),
    Case("probability_negative", land_rows(set_column("assignment_prob", -0.1)), (lit("assignment_prob"),)),
    Case("probability_nan", land_rows(set_column("assignment_prob", np.nan)), (lit("assignment_prob"),)),
    Case("probability_infinite", land_rows(set_column("assignment_prob", np.inf)), (lit("assignment_prob"),)),
    Case(
        "probabilities_off_plan",
        land_rows(_probabilities_off_plan),
        (lit("assignment_prob"),),
        failing_check="round_visitors_probabilities",
    ),
    Case(
        "segment_id_off_plan_rules",
        land_rows(_shuffle_segments),
        (lit("segment_id"),),
    ),
    Case(
        "segment_id_unknown", land_rows(set_column("segment_id", "s_not_in_plan", slice(0, 40))), (lit("segment_id"),)
    ),
    # outcomes
    Case("binary_outcome_two", land_rows(set_column("converted", 2)), (lit("converted"),)),
    Case("binary_outcome_half", land_rows(set_column("converted", 0.5)), (lit("converted"),)),
    Case("continuous_infinite", land_rows(set_column("latency_ms", np.inf)), (lit("latency_ms"),)),
    Case("negative_revenue", land_rows(_negative_revenue, exp="beta"), (lit("revenue"),), experiment="beta"),
    # booleans
    Case("boolean_TRUE_text", land_rows(_bool_text("TRUE", "FALSE")), (lit("returning"),)),
    Case("boolean_1.0_text", land_rows(_bool_text("1.0", "0.0")), (lit("returning"),)),
    Case("boolean_yes_text", land_rows(_bool_text("yes", "no")), (lit("returning"),)),
    # timestamps
    Case(
        "timestamp_yesterday",
        land_rows(set_column("assigned_at", "yesterday", dtype=object), fmt="csv"),
        (lit("assigned_at"),),
    ),
    Case(
        "timestamp_number",
        land_rows(set_column("assigned_at", "12345", dtype=object), fmt="csv"),
        (lit("assigned_at"),),
    ),
    # visitor ids
    Case("duplicate_visitor_in_round", land_rows(_duplicate_visitors), (lit("visitor_id"),)),
    Case("duplicate_row", land_rows(_duplicate_row), (lit("visitor_id"),)),
    Case("visitor_id_empty", land_rows(set_column("visitor_id", "")), (lit("visitor_id"),)),
    Case("visitor_id_blank", land_rows(set_column("visitor_id", "   ")), (lit("visitor_id"),)),
    Case("visitor_ids_seen_in_round_1", land_rows(_visitors_of_round(1)), (lit("visitor_id"),)),
    Case("visitor_ids_seen_in_round_2", land_rows(_visitors_of_round(2)), (lit("visitor_id"),)),
    Case(
        "beta_visitor_ids_seen_in_round_1",
        land_rows(_visitors_of_round(1), exp="beta"),
        (lit("visitor_id"),),
        experiment="beta",
    ),
    # partition columns
    Case("rows_say_round_2", land_rows(_rows_say("round", 2)), (lit("round"),)),
    Case("rows_say_round_0", land_rows(_rows_say("round", 0)), (lit("round"),)),
    Case("rows_say_two_rounds", land_rows(_mixed_rounds), (lit("round"),)),
    Case("rows_say_experiment_beta", land_rows(_rows_say("experiment_id", "beta")), (lit("experiment_id"),)),
    Case(
        "rows_say_experiment_alpha",
        land_rows(_rows_say("experiment_id", "alpha"), exp="beta"),
        (lit("experiment_id"),),
        experiment="beta",
    ),
    # missing columns
    Case("missing_assigned_at", land_rows(drop_column("assigned_at")), (lit("assigned_at"),)),
    Case("missing_converted", land_rows(drop_column("converted")), (lit("converted"),)),
    Case("missing_arm", land_rows(drop_column("arm")), (lit("arm"),)),
    Case("missing_device", land_rows(drop_column("device")), (lit("device"),)),
    Case("missing_segment_id", land_rows(drop_column("segment_id")), (lit("segment_id"),)),
    Case("missing_assignment_prob", land_rows(drop_column("assignment_prob")), (lit("assignment_prob"),)),
    Case("missing_revenue", land_rows(drop_column("revenue"), exp="beta"), (lit("revenue"),), experiment="beta"),
    # sample ratio (20k-visitor rounds; recorded probabilities stay exact)
    Case(
        "srm_arm_lost_40pct_of_optimized_rows",
        land_rows(_arm_lost(_srm_arm("optimized"), 0.4, "optimized"), n=SRM_VISITORS),
        (lit(_srm_arm("optimized")),),
        halt=True,
        failing_check="round_visitors_sample_ratio",
    ),
    Case(
        "srm_arm_lost_20pct_of_rows",
        land_rows(_arm_lost(_srm_arm(None), 0.2, None), n=SRM_VISITORS),
        (lit(_srm_arm(None)),),
        halt=True,
        failing_check="round_visitors_sample_ratio",
    ),
    Case(
        "srm_explore_cell_lost_half",
        land_rows(_cell_lost, n=SRM_VISITORS),
        (lit("explore"),),
        halt=True,
        failing_check="round_visitors_sample_ratio",
    ),
]

RAW_EXCEPTIONS = ("EmptyDataError", "ArrowInvalid", "ParserError", "UnicodeDecodeError")

FILE_CASES = [
    Case("csv_zero_bytes", land_files(_zero_byte("visitors.csv")), (lit("visitors.csv"),), forbidden=RAW_EXCEPTIONS),
    Case(
        "parquet_zero_bytes",
        land_files(_zero_byte("visitors.parquet")),
        (lit("visitors.parquet"),),
        forbidden=RAW_EXCEPTIONS,
    ),
    Case("parquet_truncated", land_files(_truncated_parquet), (lit("visitors.parquet"),), forbidden=RAW_EXCEPTIONS),
    Case(
        "csv_semicolon_delimited",
        land_files(_delimited(";")),
        (lit("visitors.csv"), lit("';'", '";"', "semicolon")),
        forbidden=RAW_EXCEPTIONS,
    ),
    Case(
        "csv_tab_delimited",
        land_files(_delimited("\t")),
        (lit("visitors.csv"), lit("'\\t'", "tab")),
        forbidden=RAW_EXCEPTIONS,
    ),
    Case("csv_not_utf8", land_files(_non_utf8_csv), (lit("visitors.csv"),), forbidden=RAW_EXCEPTIONS),
    Case("stray_json_file", land_files(_stray_file("notes.json")), (lit("notes.json"),), forbidden=RAW_EXCEPTIONS),
    Case(
        "stray_xlsx_file",
        land_files(_stray_file("visitors.xlsx", b"PK\3\4")),
        (lit("visitors.xlsx"),),
        forbidden=RAW_EXCEPTIONS,
    ),
    Case("subfolder_in_round", land_files(_subfolder), (lit("archive"),), forbidden=RAW_EXCEPTIONS),
    Case(
        "two_files_different_columns",
        land_files(_two_files_different_columns),
        (lit("part-2.parquet"), lit("latency_ms")),
        forbidden=RAW_EXCEPTIONS,
    ),
    Case(
        "header_only_csv",
        land_files(_header_only("csv")),
        (lit("visitors.csv", "no rows", "zero rows", "0 rows", "at least one row"),),
    ),
    Case(
        "header_only_parquet",
        land_files(_header_only("parquet")),
        (lit("visitors.parquet", "no rows", "zero rows", "0 rows", "at least one row"),),
    ),
    Case("round_folder_empty", land_files(_empty_folder), (lit("round=3"),)),
    Case("round_folder_hidden_files_only", land_files(_hidden_only), (lit("round=3"),)),
    Case("round_with_no_data_at_all", _nothing_landed, (ROUND_3,)),
]

ORDER_CASES = [
    Case("round_4_with_round_3_missing", _land_round_4_without_3, (ROUND_3,), round=4),
    Case("round_4_before_round_3_ran", _land_rounds_3_and_4_run_4, (ROUND_3,), round=4),
    Case(
        "new_experiment_round_2_before_round_1",
        _new_experiment_round_2_first,
        (ROUND_1,),
        experiment="gamma",
        round=2,
        new_experiments=("gamma",),
    ),
    # History is immutable: round 1 re-landed after round 2 ran changes nothing, whatever it holds.
    Case(
        "reland_round_1_changed_outcomes",
        _reland_round_1(_flip_outcomes),
        (ROUND_1, ROUND_2, (FIX_WORDS,)),
        round=1,
        new_round=False,
    ),
    Case(
        "reland_round_1_extra_rows",
        _reland_round_1(
            lambda rows: pd.concat([rows, rows.iloc[:10].assign(visitor_id=lambda d: d["visitor_id"] + "x")])
        ),
        (ROUND_1, ROUND_2),
        round=1,
        new_round=False,
    ),
    Case(
        "reland_round_1_fewer_rows",
        _reland_round_1(lambda rows: rows.iloc[:-10]),
        (ROUND_1, ROUND_2),
        round=1,
        new_round=False,
    ),
    Case(
        "reland_round_1_bad_rows",
        _reland_round_1(lambda rows: rows.assign(assignment_prob=rows["assignment_prob"].where(rows.index > 0, 0.0))),
        ((ROUND_2, "assignment_prob"),),
        round=1,
        new_round=False,
    ),
]

SPEC_CASES = [
    Case(
        "spec_treatment_listed_first",
        change_spec(arms=["flip", "control", "flat", "mild"]),
        (lit("arms.0"),),
        rebuild=True,
    ),
    Case(
        "spec_control_renamed", change_spec(arms=["baseline", "flip", "flat", "mild"]), (lit("arms.0"),), rebuild=True
    ),
    Case(
        "spec_control_changed_with_revision",
        change_spec(arms=["baseline", "flip", "flat", "mild"], revision=2),
        (lit("arms.0"),),
        rebuild=True,
    ),
    Case(
        "spec_treatments_reordered",
        change_spec(arms=["control", "flat", "flip", "mild"]),
        (lit("arms.1"),),
        rebuild=True,
    ),
    Case("spec_arm_renamed", change_spec(arms=["control", "flip", "flat", "strong"]), (lit("arms.3"),), rebuild=True),
    Case("spec_arm_removed", change_spec(arms=["control", "flip", "flat"]), (lit("arms.3"),), rebuild=True),
    Case(
        "spec_arm_removed_with_revision",
        change_spec(arms=["control", "flip", "flat"], revision=2),
        (lit("arms.3"),),
        rebuild=True,
    ),
    Case(
        "spec_arm_added_without_revision",
        change_spec(arms=[*ALPHA_ARMS, "bold"]),
        (re.compile(r"\barms\b"), lit("revision")),
        rebuild=True,
    ),
    Case(
        "spec_covariate_added",
        change_spec(
            covariates={
                "device": {"type": "categorical", "levels": ["mobile", "desktop", "tablet"]},
                "returning": "boolean",
                "country": "categorical",
            }
        ),
        (lit("covariates"),),
        rebuild=True,
    ),
    Case(
        "spec_covariate_removed_with_revision",
        change_spec(
            covariates={"device": {"type": "categorical", "levels": ["mobile", "desktop", "tablet"]}}, revision=2
        ),
        (lit("covariates"),),
        rebuild=True,
    ),
    Case(
        "spec_primary_metric_changed",
        change_spec(
            metrics={
                "primary": {"name": "latency_ms", "family": "continuous"},
            }
        ),
        (lit("metrics.primary"),),
        rebuild=True,
    ),
]

CASES = VALUE_CASES + FILE_CASES + ORDER_CASES + SPEC_CASES


def _run_refused_case(project: Project, before: Snapshot, case: Case) -> None:
    case.make(project)
    if case.rebuild:
        project = open_project(project.root, project.instance)
    result = project.run_round(case.experiment, case.round)
    text = failure_text(result)

    # 1. refused
    assert not result.success, f"{case.id}: the run succeeded"
    # 2. the failure names the field / file / round
    for group in case.fragments:
        group = group if isinstance(group, tuple) else (group,)
        found = any(p.search(text) if isinstance(p, re.Pattern) else p in text for p in group)
        assert found, f"{case.id}: none of {group} in the failure text:\n{text}"
    if case.forbidden:
        # The file is named by a message of Tyche's own, not only inside a quoted parser exception.
        own = [line for line in text.splitlines() if not any(word in line for word in case.forbidden)]
        named = case.fragments[0]
        assert any(f in line for line in own for f in named), f"{case.id}: only a raw exception names it:\n{text}"
    if case.failing_check is not None:
        failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
        assert case.failing_check in failed, f"{case.id}: {case.failing_check} did not fail ({failed})\n{text}"
    # 3. no plan published for the round after it
    next_plan = project.root / "plans" / case.experiment / f"{round_key(case.round + 1)}.json"
    assert (
        not next_plan.exists()
        or before.files.get(f"plans/{case.experiment}/{next_plan.name}") == next_plan.read_bytes()
    )
    # 4. nothing else stored changed (a failed sample-ratio check may write the round's HALT report)
    failed_checks = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
    after = snapshot(project.root)
    assert_unchanged(
        before,
        after,
        Allowed(
            experiment_id=case.experiment,
            round=case.round,
            new_round=case.new_round,
            round_report=case.halt or "round_visitors_sample_ratio" in failed_checks,
            new_experiments=case.new_experiments,
        ),
    )
    if case.halt:
        report = project.root / "reports" / case.experiment / f"{round_key(case.round)}.json"
        assert report.exists(), f"{case.id}: no HALT report"
        assert json.loads(report.read_text())["recommendation"]["decision"] == "HALT"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_and_changes_nothing_else(fresh, case):
    project, before = fresh
    _run_refused_case(project, before, case)


def test_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES) >= 60


# -- inputs that must pass ---------------------------------------------------------------------------------


def _published(project: Project, experiment_id: str, governs_round: int) -> bytes | None:
    path = project.root / "plans" / experiment_id / f"{round_key(governs_round)}.json"
    return path.read_bytes() if path.exists() else None


def test_round_1_relanded_unchanged_is_a_noop(fresh):
    """The same content landed again for round 1 after round 2 ran: success, every plan byte-identical."""
    project, before = fresh
    project.land("alpha", 1, traffic(project, "alpha", 1, BASE_VISITORS["alpha"]))
    result = project.run_round("alpha", 1)
    assert result.success, failure_text(result)
    assert_unchanged(before, snapshot(project.root), Allowed(ignore_run_columns=True, ignore_posterior_files=True))


def test_backfill_of_the_latest_round_reproduces_its_plan(fresh):
    """Round 2 of alpha run again (a backfill): the plan for round 3 byte for byte, nothing else moved."""
    project, before = fresh
    result = project.run_round("alpha", 2)
    assert result.success, failure_text(result)
    assert _published(project, "alpha", 3) == before.files[f"plans/alpha/{round_key(3)}.json"]
    assert_unchanged(before, snapshot(project.root), Allowed(ignore_run_columns=True, ignore_posterior_files=True))


def test_extra_unknown_column_is_kept_and_listed(fresh):
    project, before = fresh
    rows = traffic(project, "alpha", 3, CASE_VISITORS).assign(utm_source="newsletter")
    project.land("alpha", 3, rows)
    result = project.run_round("alpha", 3)
    assert result.success, failure_text(result)
    raw = pd.read_parquet(project.root / "storage" / "raw" / "alpha" / f"{round_key(3)}.parquet")
    assert raw["utm_source"].eq("newsletter").all()
    assert "utm_source" in check_metadata_text(result, "round_visitors_quality")
    assert _published(project, "alpha", 4) is not None
    assert_unchanged(before, snapshot(project.root), Allowed("alpha", 3, whole_round=True))


def test_a_new_revision_may_add_an_arm(fresh):
    project, before = fresh
    change_spec(arms=[*ALPHA_ARMS, "bold"], revision=2)(project)
    project = open_project(project.root, project.instance)
    result = project.run_round("alpha", 3)
    assert result.success, failure_text(result)
    plan = Plan.from_json(_published(project, "alpha", 4).decode())
    assert plan.arms == (*ALPHA_ARMS, "bold")
    assert_unchanged(before, snapshot(project.root), Allowed("alpha", 3, whole_round=True))


def test_repeat_visitors_pass_when_the_spec_declares_them(fresh):
    """Visitor ids of round 1 again in round 3: refused above, accepted once the spec says repeat_visitors."""
    project, before = fresh
    change_spec(repeat_visitors=True)(project)
    project.land("alpha", 3, _visitors_of_round(1)(traffic(project, "alpha", 3, CASE_VISITORS), None))
    project = open_project(project.root, project.instance)
    result = project.run_round("alpha", 3)
    assert result.success, failure_text(result)
    assert _published(project, "alpha", 4) is not None
    assert_unchanged(before, snapshot(project.root), Allowed("alpha", 3, whole_round=True))


def test_first_round_missing_a_column_then_corrected(fresh):
    """A refused first round leaves no table behind that would refuse the corrected one."""
    project, before = fresh
    project.add_experiment("gamma", arms=("control", "flip"))
    rows = project.simulate("gamma", 1, CASE_VISITORS)
    project.land("gamma", 1, rows.drop(columns=["assigned_at"]))
    result = project.run_round("gamma", 1)
    assert not result.success
    assert "assigned_at" in failure_text(result)
    assert _published(project, "gamma", 2) is None

    project.land("gamma", 1, rows)
    result = project.run_round("gamma", 1)
    assert result.success, failure_text(result)
    assert _published(project, "gamma", 2) is not None
    stored = project.query("SELECT count(*) AS n, count(assigned_at) AS stamped FROM visitors_gamma")
    assert stored["n"].iloc[0] == stored["stamped"].iloc[0] == len(rows)
    assert_unchanged(before, snapshot(project.root), Allowed(new_experiments=("gamma",)))


# -- faults: kill and re-run, interleaved experiments ------------------------------------------------------


@pytest.fixture(scope="module")
def reference_round_3(base, tmp_path_factory) -> dict[str, bytes]:
    """Round 3 of alpha, then of beta, run cleanly on a copy of the base: the plans they publish."""
    root = copy_project(base, tmp_path_factory.mktemp("reference") / "project")
    with dg.instance_for_test() as instance:
        project = open_project(root, instance)
        for exp in ("alpha", "beta"):
            project.land(exp, 3, traffic(project, exp, 3, CASE_VISITORS))
        for exp in ("alpha", "beta"):
            result = project.run_round(exp, 3)
            assert result.success, failure_text(result)
        return {exp: _published(project, exp, 4) for exp in ("alpha", "beta")}


def test_a_run_killed_after_ingest_then_rerun_reproduces_the_plan(fresh, reference_round_3, monkeypatch):
    project, before = fresh
    project.land("alpha", 3, traffic(project, "alpha", 3, CASE_VISITORS))

    def killed(self, *args, **kwargs):
        raise RuntimeError("injected fault: the round_plan step died before publishing")

    # The run dies after ingest, the checks, the posterior, the tree and the allocation are stored.
    with monkeypatch.context() as patch:
        patch.setattr(TycheStorage, "publish_plan", killed)
        result = project.run_round("alpha", 3)
    assert not result.success
    assert "injected fault" in failure_text(result)
    assert _published(project, "alpha", 4) is None
    assert project.plan_in_force("alpha", 4).round == 3
    assert_unchanged(
        before, snapshot(project.root), Allowed("alpha", 3, new_round=True, partial_round=True, round_report=True)
    )

    result = project.run_round("alpha", 3)
    assert result.success, failure_text(result)
    assert _published(project, "alpha", 4) == reference_round_3["alpha"]
    assert_unchanged(before, snapshot(project.root), Allowed("alpha", 3, whole_round=True))


def test_interleaved_experiments_publish_the_same_plans(fresh, reference_round_3):
    """Rounds of alpha and beta landed together and run in the other order: the same plans, byte for byte."""
    project, before = fresh
    for exp in ("beta", "alpha"):
        project.land(exp, 3, traffic(project, exp, 3, CASE_VISITORS))
    for exp in ("beta", "alpha"):
        result = project.run_round(exp, 3)
        assert result.success, failure_text(result)
    for exp in ("alpha", "beta"):
        assert _published(project, exp, 4) == reference_round_3[exp], exp
    after = snapshot(project.root)
    assert_unchanged(before, after, Allowed("alpha", 3, whole_round=True), Allowed("beta", 3, whole_round=True))
