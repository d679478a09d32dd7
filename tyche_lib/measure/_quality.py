"""Data quality of round rows: a Great Expectations suite derived from the row schema.

Each expectation is one check of :func:`tyche_lib.core.row_schema`, the schema
:func:`tyche_lib.validate_rows` also evaluates, so the suite and the normalisation agree on what a
valid row is.

Great Expectations is imported on first use (importing it takes seconds), into one ephemeral
context per process: nothing is written to disk and no usage statistics are sent.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..core._rows import RowSchema, row_schema, unknown_columns
from ..core._spec import ExperimentSpec

# Must be set before great_expectations is imported; a user's explicit setting wins.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

__all__ = ["QualityFailure", "QualityResult", "quality_check", "quality_suite"]

# Unexpected values and rows quoted per failure.
N_EXAMPLES = 5
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
        ``"rows"`` for the row count.
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
        ``rows``, ``expectations``, ``successful``, ``failed``, ``seconds`` and
        ``unknown_columns`` (the same list as the attribute, for asset-check metadata).
    unknown_columns : tuple of str
        Columns the row schema does not describe: not checked, kept as they are.
    """

    success: bool
    failures: tuple[QualityFailure, ...]
    statistics: dict
    unknown_columns: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        n, rows = self.statistics["expectations"], self.statistics["rows"]
        extra = (
            f"; columns not in the schema (kept, not checked): {list(self.unknown_columns)}"
            if self.unknown_columns
            else ""
        )
        if self.success:
            return f"quality check passed: {n} expectations on {rows} rows{extra}"
        head = f"quality check failed: {len(self.failures)} problem(s) in {rows} rows ({n} expectations){extra}"
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


def quality_suite(
    spec: ExperimentSpec,
    *,
    experiment_id: str | None = None,
    round: int | None = None,
    columns: Iterable[str] | None = None,
    allow_empty: bool = False,
):
    """The Great Expectations suite that round rows of ``spec`` must meet.

    One expectation per check of the row schema (:func:`tyche_lib.core.row_schema`), the same
    checks :func:`tyche_lib.validate_rows` evaluates: at least one row, required columns present,
    no nulls, types and encodings, value sets (arms, cells, listed levels, binary 0/1, the
    partition's experiment and round), ranges (``assignment_prob`` in (0, 1], hurdle >= 0, floats
    finite, the spec's minimum/maximum), non-blank and unique ``visitor_id``. Each expectation's
    ``meta`` holds the column, the rule in words and the fix.

    Parameters
    ----------
    spec : ExperimentSpec
    experiment_id, round : optional
        The partition the rows belong to: other values of those columns fail.
    columns : iterable of str, optional
        The columns the rows have: optional columns (``experiment_id``, ``round``,
        ``assigned_at``) not among them get no expectations. ``None``: all included.
    allow_empty : bool
        Leave out the row-count expectation.

    Returns
    -------
    great_expectations.ExpectationSuite

    Examples
    --------
    >>> from tyche_lib.simulate import segment_flip
    >>> suite = quality_suite(segment_flip().spec())
    >>> [e.meta["rule"] for e in suite.expectations if e.meta["column"] == "visitor_id"]
    ['column visitor_id is present', 'visitor_id has no nulls', 'visitor_id is not blank', 'visitor_id is unique']
    """
    schema = row_schema(spec, experiment_id=experiment_id, round=round, allow_empty=allow_empty)
    with _lock:
        return _build_suite(schema, columns)


def _build_suite(schema: RowSchema, columns: Iterable[str] | None):
    gx = _context()["gx"]
    gxe = gx.expectations
    suite = gx.ExpectationSuite(name=f"{schema.experiment_id}_round_rows")
    for order, check in enumerate(schema.checks(present=columns)):
        # "order" lets results (which come back unordered) be reported in suite order.
        meta = {"column": check.column, "rule": check.rule, "fix": check.fix, "order": order}
        if check.test == "rows":
            suite.add_expectation(gxe.ExpectTableRowCountToBeBetween(min_value=1, meta=meta))
            continue
        kwargs: dict[str, Any] = {"column": check.column, "meta": meta}
        if check.test == "present":
            expectation = gxe.ExpectColumnToExist(**kwargs)
        elif check.test == "not_null":
            expectation = gxe.ExpectColumnValuesToNotBeNull(**kwargs)
        elif check.test == "type":
            expectation = gxe.ExpectColumnValuesToBeInTypeList(type_list=list(check.type_names), **kwargs)
        elif check.test == "in_set":
            expectation = gxe.ExpectColumnValuesToBeInSet(value_set=list(check.value_set), **kwargs)
        elif check.test == "between":
            expectation = gxe.ExpectColumnValuesToBeBetween(
                min_value=check.minimum, max_value=check.maximum, strict_min=check.strict_minimum, **kwargs
            )
        elif check.test == "pattern":
            expectation = gxe.ExpectColumnValuesToMatchRegex(regex=check.pattern, **kwargs)
        elif check.test == "unique":
            expectation = gxe.ExpectColumnValuesToBeUnique(**kwargs)
        else:
            raise ValueError(f"no expectation for the row check {check.test!r}")
        suite.add_expectation(expectation)
    return suite


def quality_check(
    rows: pd.DataFrame,
    spec: ExperimentSpec,
    *,
    experiment_id: str | None = None,
    round: int | None = None,
    allow_empty: bool = False,
) -> QualityResult:
    """Validate a round's rows against :func:`quality_suite` in an ephemeral GX context.

    Parameters
    ----------
    rows : DataFrame
        The round's visitor rows as loaded (before normalisation).
    spec : ExperimentSpec
    experiment_id, round : optional
        The partition the rows belong to (see :func:`quality_suite`).
    allow_empty : bool
        Accept zero rows.

    Returns
    -------
    QualityResult
        ``success`` is False when any expectation fails; each failure names the column, the rule,
        how many rows break it, example values and rows, and the fix. A missing column is reported
        once, as missing (its other expectations are not reported separately). Columns the schema
        does not describe are listed in ``unknown_columns``.

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
    >>> quality_check(rows.assign(utm_source="ads"), scenario.spec()).unknown_columns
    ('utm_source',)
    """
    start = time.perf_counter()
    schema = row_schema(spec, experiment_id=experiment_id, round=round, allow_empty=allow_empty)
    with _lock:
        suite = _build_suite(schema, rows.columns)
        batch = _context()["batch_definition"].get_batch(batch_parameters={"dataframe": rows})
        validation = batch.validate(suite, result_format={"result_format": "SUMMARY"})
    results = sorted(validation.results, key=lambda r: r.expectation_config.meta["order"])
    failures = _failures(results, rows)
    unknown = tuple(unknown_columns(rows, spec))
    n = len(results)
    statistics = {
        "rows": len(rows),
        "expectations": n,
        "successful": sum(r.success for r in results),
        "failed": n - sum(r.success for r in results),
        "seconds": float(np.round(time.perf_counter() - start, 3)),
        "unknown_columns": list(unknown),
    }
    return QualityResult(success=not failures, failures=tuple(failures), statistics=statistics, unknown_columns=unknown)


def _failures(results: list, rows: pd.DataFrame) -> list[QualityFailure]:
    def failed(kind: str) -> set[str]:
        return {
            r.expectation_config.meta["column"] for r in results if r.expectation_config.type == kind and not r.success
        }

    missing = failed("expect_column_to_exist")
    mistyped = failed("expect_column_values_to_be_in_type_list")
    failures = []
    for r in results:
        if r.success:
            continue
        config = r.expectation_config
        column, rule, fix = config.meta["column"], config.meta["rule"], config.meta["fix"]
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
        elif config.type == "expect_table_row_count_to_be_between":
            failures.append(QualityFailure(rule, config.type, column, f"rows: none — {fix}"))
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
