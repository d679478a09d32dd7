"""Blocking checks on round_visitors: data quality, sample ratio, recorded assignment probabilities.

A failure stops everything downstream of the round: no plan is published, the plan in force stays
in force, and the raw rows stay stored for the investigation. Each result is also written to the
``round_checks`` table, where the posterior looks up which rounds it may use.
"""

import json

import dagster as dg
import numpy as np
import pandas as pd

from tyche_lib import ExperimentSpec, Plan, TycheError, quality_check, sample_ratio_check

from ..partitions import experiment_and_round, experiment_round_partitions
from ..resources import DUCKDB_POOL, ExperimentCatalog
from ..storage import TycheStorage

# The asset the checks guard, by key: the ingest domain defines it.
ROUND_VISITORS = dg.AssetKey("round_visitors")

# Recorded probabilities are written by the serving side as floats: equal up to rounding.
PROBABILITY_TOLERANCE = 1e-9
SAMPLE_RATIO_ALPHA = 0.001
EXAMPLE_ROWS = 5
# What the routing checks read of a row, besides the covariates the plan's rules test.
ASSIGNMENT_COLUMNS = ["visitor_id", "cell", "segment_id", "arm", "assignment_prob"]


def _record(
    context, storage: TycheStorage, name: str, experiment_id: str, round_: int, passed: bool, message: str, details
) -> None:
    with storage.connect() as conn, storage.transaction(conn):
        conn.execute(
            "DELETE FROM round_checks WHERE experiment_id = ? AND round = ? AND check_name = ?",
            [experiment_id, round_, name],
        )
        conn.execute(
            "INSERT INTO round_checks VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                experiment_id,
                round_,
                name,
                passed,
                message,
                json.dumps(details, sort_keys=True, default=str),
                context.run.run_id,
            ],
        )


def _typed_rows_and_plan(storage: TycheStorage, spec: ExperimentSpec, round_: int) -> tuple[pd.DataFrame, Plan]:
    """The round's staged typed assignment columns and covariates (no outcomes), and the plan that routed them."""
    experiment_id = spec.id
    rows = storage.load_staged_rows(experiment_id, round_, columns=[*ASSIGNMENT_COLUMNS, *spec.covariate_names])
    plan = storage.plan_in_force(experiment_id, round_)
    if plan is None:
        raise dg.Failure(f"no plan in force for {experiment_id} round {round_}: register the experiment first")
    return rows, plan


def _result(context, storage, experiment_id, round_, passed, message, details, metadata=None):
    name = context.check_specs[0].name
    _record(context, storage, name, experiment_id, round_, passed, message, details)
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=message,
        metadata={"message": message, **(metadata or {})},
    )


@dg.asset_check(asset=ROUND_VISITORS, blocking=True, partitions_def=experiment_round_partitions, pool=DUCKDB_POOL)
def round_visitors_quality(
    context: dg.AssetCheckExecutionContext, storage: TycheStorage, experiments: ExperimentCatalog
):
    """The row schema (types, nulls, ranges, known arms and cells, the partition's experiment and round,
    unique non-blank visitor ids, probabilities in (0, 1]) and visitors not seen in an earlier round."""
    experiment_id, round_ = experiment_and_round(context)
    spec = experiments.spec(experiment_id)
    raw = storage.load_raw_rows(experiment_id, round_)
    result = quality_check(raw, spec, experiment_id=experiment_id, round=round_)
    failures = result.failures_frame()
    details = failures.astype(str).to_dict("records")
    metadata = {
        "rows": len(raw),
        "unknown_columns": dg.MetadataValue.json(list(result.unknown_columns)),
        "statistics": dg.MetadataValue.json(
            {k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.statistics.items()}
        ),
    }
    if len(failures):
        metadata["failures"] = dg.MetadataValue.md(failures.astype(str).to_markdown(index=False))
    passed, message = bool(result.success), result.message
    if "visitor_id" in raw.columns:
        repeat = storage.visitors_seen_before(experiment_id, round_, raw["visitor_id"].dropna())
        metadata["returning_visitors"] = len(repeat)
        if len(repeat) and not spec.repeat_visitors:
            examples = ", ".join(f"{v} (round {r})" for v, r in repeat.head(EXAMPLE_ROWS).itertuples(index=False))
            passed = False
            message = (
                f"{message}; column 'visitor_id': {len(repeat)} visitor(s) already seen in an earlier round, e.g. "
                f"{examples}. A visitor is randomised once per experiment: fix the ids, or declare "
                "repeat_visitors: true in the spec (the analysis then counts each visitor at first exposure)"
            )
            details.append({"column": "visitor_id", "returning_visitors": len(repeat), "examples": examples})
        elif len(repeat):
            message = (
                f"{message}; {len(repeat)} returning visitor(s) (the spec allows repeat visitors): the analysis "
                "counts each visitor once, at first exposure"
            )
    return _result(context, storage, experiment_id, round_, passed, message, details, metadata)


@dg.asset_check(asset=ROUND_VISITORS, blocking=True, partitions_def=experiment_round_partitions, pool=DUCKDB_POOL)
def round_visitors_sample_ratio(
    context: dg.AssetCheckExecutionContext, storage: TycheStorage, experiments: ExperimentCatalog
):
    """Chi-square of visitors per cell, and of arms within each (cell, segment), against the plan in force."""
    experiment_id, round_ = experiment_and_round(context)
    rows, plan = _typed_rows_and_plan(storage, experiments.spec(experiment_id), round_)
    if rows.empty:
        message = "rows could not be normalised (see round_visitors_quality): sample ratio not testable"
        return _result(context, storage, experiment_id, round_, False, message, {})
    result = sample_ratio_check(rows, plan, alpha=SAMPLE_RATIO_ALPHA)
    tests = result.tests if isinstance(result.tests, pd.DataFrame) else pd.DataFrame(result.tests)
    details = {
        "pvalue": float(result.pvalue),
        "statistic": float(result.statistic),
        "method": result.method,
        "plan_round": plan.round,
    }
    if not result.passed:
        storage.write_halt_report(experiment_id, round_, result.message, context.run.run_id)
    return _result(
        context,
        storage,
        experiment_id,
        round_,
        result.passed,
        result.message,
        details,
        {
            "pvalue": float(result.pvalue),
            "plan_in_force": plan.round,
            "tests": dg.MetadataValue.md(tests.astype(str).to_markdown(index=False)) if len(tests) else "none",
        },
    )


@dg.asset_check(asset=ROUND_VISITORS, blocking=True, partitions_def=experiment_round_partitions, pool=DUCKDB_POOL)
def round_visitors_probabilities(
    context: dg.AssetCheckExecutionContext, storage: TycheStorage, experiments: ExperimentCatalog
):
    """Recorded assignment probabilities (and segments) equal the ones the plan in force implies."""
    experiment_id, round_ = experiment_and_round(context)
    rows, plan = _typed_rows_and_plan(storage, experiments.spec(experiment_id), round_)
    if rows.empty:
        message = "rows could not be normalised (see round_visitors_quality): probabilities not testable"
        return _result(context, storage, experiment_id, round_, False, message, {})
    try:
        implied = plan.assignment_probabilities(rows)
        segments = plan.segment_of(rows)
    except TycheError as e:
        return _result(context, storage, experiment_id, round_, False, f"plan in force cannot route the rows: {e}", {})
    gap = np.abs(rows["assignment_prob"].to_numpy() - implied)
    bad = gap > PROBABILITY_TOLERANCE
    wrong_segment = rows["segment_id"].notna().to_numpy() & (
        rows["segment_id"].astype(str).to_numpy() != segments.astype(str)
    )
    if bad.any() or wrong_segment.any():
        examples = (
            rows.loc[bad | wrong_segment, ["visitor_id", "cell", "segment_id", "arm", "assignment_prob"]]
            .head(EXAMPLE_ROWS)
            .copy()
        )
        examples["plan_probability"] = implied[bad | wrong_segment][:EXAMPLE_ROWS]
        examples["plan_segment"] = segments[bad | wrong_segment][:EXAMPLE_ROWS]
        message = (
            f"column 'assignment_prob': {int(bad.sum())} row(s) differ from the plan in force (round {plan.round}) "
            f"by more than {PROBABILITY_TOLERANCE}; column 'segment_id': {int(wrong_segment.sum())} row(s) differ "
            f"from the plan's segment; largest gap {gap.max():.3g}. Record p(arm | x) from the plan that routed the visitor."
        )
        return _result(
            context,
            storage,
            experiment_id,
            round_,
            False,
            message,
            examples.astype(str).to_dict("records"),
            {"examples": dg.MetadataValue.md(examples.astype(str).to_markdown(index=False))},
        )
    message = f"all {len(rows)} recorded probabilities match the plan in force (round {plan.round})"
    return _result(context, storage, experiment_id, round_, True, message, {"max_gap": float(gap.max())})
