"""Data quality of round rows: a Great Expectations suite built from the experiment spec.

Great Expectations is imported on first use (importing it takes seconds), into one ephemeral
context per process: nothing is written to disk and no usage statistics are sent.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..core._rows import CELL_NAMES
from ..core._spec import ExperimentSpec

# Must be set before great_expectations is imported; a user's explicit setting wins.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

__all__ = ["QualityFailure", "QualityResult", "quality_check", "quality_suite"]

# dtype names (non-object columns) and Python type names (object columns) that count as numeric.
NUMERIC_TYPES = [
    "int",
    "float",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "UInt8",
    "UInt16",
    "UInt32",
    "UInt64",
    "Float32",
    "Float64",
]
# Values a boolean covariate may take (validate_rows accepts the same).
BOOLEAN_VALUES = [True, False, "true", "false", "True", "False", "1", "0"]
# Unexpected values and rows quoted per failure.
N_EXAMPLES = 5
_FINITE = float(np.finfo(np.float64).max)
_lock = threading.Lock()
_gx: dict[str, Any] = {}


@dataclass(frozen=True)
class QualityFailure:
    """One expectation the rows do not meet.

    Attributes
    ----------
    rule : str
        What was expected, in words, e.g. ``"arm is one of the spec's arms"``.
    expectation : str
        The Great Expectations expectation type, e.g. ``"expect_column_values_to_be_in_set"``.
    column : str
    message : str
        The rule, how many rows break it, an example and the fix.
    examples : list
        Up to five offending values (``None`` for a null).
    example_rows : list
        Their row labels (the DataFrame index).
    unexpected_count : int
        Rows breaking the rule (for a missing column or a wrong dtype: all rows).
    """

    rule: str
    expectation: str
    column: str
    message: str
    examples: list = field(default_factory=list)
    example_rows: list = field(default_factory=list)
    unexpected_count: int = 0


@dataclass(frozen=True)
class QualityResult:
    """Outcome of :func:`quality_check`.

    Attributes
    ----------
    success : bool
    failures : tuple of QualityFailure
        In suite order (schema first), one per failed expectation; expectations that could not be
        evaluated because their column is missing or mistyped are folded into that failure.
    statistics : dict
        ``rows``, ``expectations``, ``successful``, ``failed``, ``seconds``.
    """

    success: bool
    failures: tuple[QualityFailure, ...]
    statistics: dict

    @property
    def message(self) -> str:
        n, rows = self.statistics["expectations"], self.statistics["rows"]
        if self.success:
            return f"quality check passed: {n} expectations on {rows} rows"
        head = f"quality check failed: {len(self.failures)} problem(s) in {rows} rows ({n} expectations)"
        return "\n".join([head, *(f"- {f.message}" for f in self.failures)])

    def failures_frame(self) -> pd.DataFrame:
        """The failures as a table (for reports and asset-check metadata)."""
        return pd.DataFrame(
            [(f.column, f.rule, f.unexpected_count, f.examples, f.example_rows, f.expectation) for f in self.failures],
            columns=["column", "rule", "unexpected_count", "examples", "example_rows", "expectation"],
        )


def _context() -> dict[str, Any]:
    """The process's ephemeral context and its whole-dataframe batch definition (created once)."""
    if not _gx:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        asset = context.data_sources.add_pandas("tyche_rows").add_dataframe_asset("round_rows")
        _gx.update(gx=gx, context=context, batch_definition=asset.add_batch_definition_whole_dataframe("all_rows"))
    return _gx


def _required_columns(spec: ExperimentSpec) -> list[str]:
    cols = ["visitor_id", "cell", "arm", "assignment_prob", "segment_id", *spec.covariate_names]
    cols += [m.name for m in spec.metrics]
    if spec.pre_period:
        cols.append(spec.pre_period)
    return cols


def quality_suite(spec: ExperimentSpec):
    """The Great Expectations suite that round rows of ``spec`` must meet.

    Schema (required columns present), no nulls in them, numeric types where numbers are
    expected, unique ``visitor_id``, ``arm`` among the spec's arms, ``cell`` among
    control/explore/optimized, ``assignment_prob`` in (0, 1], each metric within its family's range
    (binary 0/1, hurdle >= 0, continuous finite) and the spec's minimum/maximum, categorical
    covariates within their listed levels, boolean covariates true/false, numeric covariates within
    their range. Each expectation's ``meta`` holds the rule in words and the fix.

    Parameters
    ----------
    spec : ExperimentSpec

    Returns
    -------
    great_expectations.ExpectationSuite
    """
    with _lock:
        return _build_suite(spec)


def _build_suite(spec: ExperimentSpec):
    gx = _context()["gx"]
    gxe = gx.expectations
    suite = gx.ExpectationSuite(name=f"{spec.id}_round_rows")

    def add(cls, column: str, rule: str, fix: str, **kwargs):
        # "order" lets results (which come back unordered) be reported in suite order.
        meta = {"rule": rule, "fix": fix, "order": len(suite.expectations)}
        suite.add_expectation(cls(column=column, meta=meta, **kwargs))

    def numeric(column: str, what: str):
        add(
            gxe.ExpectColumnValuesToBeInTypeList,
            column,
            f"{column} is numeric",
            f"{what} must be numbers",
            type_list=NUMERIC_TYPES,
        )

    def between(column: str, lo: float | None, hi: float | None, rule: str, fix: str, strict_min: bool = False):
        add(gxe.ExpectColumnValuesToBeBetween, column, rule, fix, min_value=lo, max_value=hi, strict_min=strict_min)

    required = _required_columns(spec)
    for col in required:
        add(gxe.ExpectColumnToExist, col, f"column {col} is present", f"the rows must have a '{col}' column")
    for col in required:
        add(gxe.ExpectColumnValuesToNotBeNull, col, f"{col} has no nulls", f"fill or drop the rows with a null {col}")
    add(
        gxe.ExpectColumnValuesToBeUnique,
        "visitor_id",
        "visitor_id is unique",
        "each visitor appears once per round; remove the duplicates",
    )
    add(
        gxe.ExpectColumnValuesToBeInSet,
        "arm",
        "arm is one of the spec's arms",
        f"the spec's arms are {list(spec.arms)}",
        value_set=list(spec.arms),
    )
    add(
        gxe.ExpectColumnValuesToBeInSet,
        "cell",
        "cell is control, explore or optimized",
        f"cells are {list(CELL_NAMES)}",
        value_set=list(CELL_NAMES),
    )
    numeric("assignment_prob", "assignment probabilities")
    between(
        "assignment_prob",
        0.0,
        1.0,
        "assignment_prob is in (0, 1]",
        "a recorded assignment probability must be > 0 and <= 1",
        strict_min=True,
    )

    for cov in spec.covariates:
        if cov.type == "categorical" and cov.levels:
            add(
                gxe.ExpectColumnValuesToBeInSet,
                cov.name,
                f"{cov.name} is a level listed in the spec",
                f"the spec's levels are {list(cov.levels)}",
                value_set=list(cov.levels),
            )
        elif cov.type == "boolean":
            add(
                gxe.ExpectColumnValuesToBeInSet,
                cov.name,
                f"{cov.name} is true or false",
                "a boolean covariate takes true/false (or 1/0)",
                value_set=BOOLEAN_VALUES,
            )
        elif cov.type == "numeric":
            numeric(cov.name, f"covariate {cov.name}")
            if cov.minimum is not None or cov.maximum is not None:
                between(
                    cov.name,
                    cov.minimum,
                    cov.maximum,
                    f"{cov.name} is within the spec's range",
                    f"the spec allows [{cov.minimum}, {cov.maximum}]",
                )

    for metric in spec.metrics:
        numeric(metric.name, f"metric {metric.name} values")
        if metric.family == "binary":
            add(
                gxe.ExpectColumnValuesToBeInSet,
                metric.name,
                f"{metric.name} is 0 or 1",
                "a binary metric takes 0 or 1",
                value_set=[0, 1],
            )
        elif metric.family == "hurdle":
            between(metric.name, 0.0, None, f"{metric.name} is >= 0", "a hurdle metric is zero or a positive amount")
        else:
            between(metric.name, -_FINITE, _FINITE, f"{metric.name} is finite", "a continuous metric must be finite")
        if metric.minimum is not None or metric.maximum is not None:
            between(
                metric.name,
                metric.minimum,
                metric.maximum,
                f"{metric.name} is within the spec's range",
                f"the spec allows [{metric.minimum}, {metric.maximum}]",
            )
    if spec.pre_period:
        numeric(spec.pre_period, "pre-period values")
        between(spec.pre_period, -_FINITE, _FINITE, f"{spec.pre_period} is finite", "pre-period values must be finite")
    return suite


def quality_check(rows: pd.DataFrame, spec: ExperimentSpec) -> QualityResult:
    """Validate a round's rows against :func:`quality_suite` in an ephemeral GX context.

    Parameters
    ----------
    rows : DataFrame
        The round's visitor rows as loaded (before normalisation).
    spec : ExperimentSpec

    Returns
    -------
    QualityResult
        ``success`` is False when any expectation fails; each failure names the column, the rule,
        how many rows break it, example values and rows, and the fix. A missing column is reported
        once, as missing (its other expectations are not reported separately).

    Examples
    --------
    >>> from tyche_lib import initial_plan
    >>> from tyche_lib.simulate import segment_flip, simulate_round
    >>> scenario = segment_flip()
    >>> rows = simulate_round(scenario, initial_plan(scenario.spec()), 500, 1, rng=0)
    >>> quality_check(rows, scenario.spec()).success
    True
    >>> bad = rows.assign(assignment_prob=rows["assignment_prob"].where(rows.index != 3, 1.2))
    >>> print(quality_check(bad, scenario.spec()).failures[0].message)
    column 'assignment_prob': assignment_prob is in (0, 1] — 1 row(s) break it, e.g. 1.2 at row 3; a recorded assignment probability must be > 0 and <= 1
    """
    start = time.perf_counter()
    with _lock:
        suite = _build_suite(spec)
        batch = _context()["batch_definition"].get_batch(batch_parameters={"dataframe": rows})
        validation = batch.validate(suite, result_format={"result_format": "SUMMARY"})
    results = sorted(validation.results, key=lambda r: r.expectation_config.meta["order"])
    failures = _failures(results, rows)
    n = len(results)
    statistics = {
        "rows": len(rows),
        "expectations": n,
        "successful": sum(r.success for r in results),
        "failed": n - sum(r.success for r in results),
        "seconds": round(time.perf_counter() - start, 3),
    }
    return QualityResult(success=not failures, failures=tuple(failures), statistics=statistics)


def _failures(results: list, rows: pd.DataFrame) -> list[QualityFailure]:
    missing = {
        r.expectation_config.kwargs["column"]
        for r in results
        if r.expectation_config.type == "expect_column_to_exist" and not r.success
    }
    mistyped = {
        r.expectation_config.kwargs["column"]
        for r in results
        if r.expectation_config.type == "expect_column_values_to_be_in_type_list" and not r.success
    }
    failures = []
    for r in results:
        if r.success:
            continue
        config = r.expectation_config
        column, rule, fix = config.kwargs["column"], config.meta["rule"], config.meta["fix"]
        raised = _exception_message(r)
        if config.type == "expect_column_to_exist":
            failures.append(
                QualityFailure(
                    rule,
                    config.type,
                    column,
                    f"column '{column}': missing — {fix}; found {sorted(map(str, rows.columns))}",
                    unexpected_count=len(rows),
                )
            )
        elif column in missing or (raised and column in mistyped):
            continue  # already reported as a missing or mistyped column
        elif raised:
            failures.append(
                QualityFailure(
                    rule, config.type, column, f"column '{column}': {rule} could not be evaluated: {raised}; {fix}"
                )
            )
        else:
            failures.append(_value_failure(r.result, rows, column, rule, fix, config.type))
    return failures


def _exception_message(result) -> str | None:
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return info.get("exception_message")
    for value in info.values():  # keyed by metric when a metric failed to resolve
        if isinstance(value, dict) and value.get("raised_exception"):
            return value.get("exception_message")
    return None


def _value_failure(res: dict, rows: pd.DataFrame, column: str, rule: str, fix: str, kind: str) -> QualityFailure:
    if "partial_unexpected_list" in res:
        values = [_plain(v) for v in res["partial_unexpected_list"][:N_EXAMPLES]]
        where = [_plain(i) for i in res.get("partial_unexpected_index_list", [])[:N_EXAMPLES]]
        count = int(res.get("unexpected_count", len(values)))
    else:
        # Column-level results (a non-numeric dtype) quote no values: show the first rows.
        values = [_plain(v) for v in rows[column].head(N_EXAMPLES)]
        where = [_plain(i) for i in rows.index[:N_EXAMPLES]]
        count = len(rows)
        observed = res.get("observed_value")
        if observed is not None:
            fix = f"dtype is {observed}; {fix}"
    example = f"e.g. {values[0]!r} at row {where[0]}" if values and where else ""
    message = f"column '{column}': {rule} — {count} row(s) break it, {example}; {fix}"
    return QualityFailure(rule, kind, column, message, values, where, count)


def _plain(value: Any) -> Any:
    """A JSON-friendly Python value: numpy scalars unwrapped, NaN/NA as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value
