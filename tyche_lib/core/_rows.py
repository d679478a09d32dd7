"""Round rows: one declarative schema from which every check of the rows is derived.

:func:`row_schema` describes a round's columns (kind, required, nullable, allowed values, bounds,
uniqueness, meaning) for one experiment spec. :meth:`RowSchema.checks` turns that description into
an ordered list of :class:`RowCheck` s; :func:`validate_rows` evaluates them with pandas and the
Great Expectations suite (``tyche_lib.measure.quality_suite``) turns each into one expectation, so
the two cannot disagree about what a valid row is. :func:`rows_reference_markdown` writes the same
schema as the reference table in ``docs/rows.md``.

Accepted encodings, one rule per kind (both consumers apply them to the values as given):

- ``string``: any value; normalised with ``str()``.
- ``int``: integer or boolean dtypes, or Python/NumPy integers and booleans in an object column
  (a boolean counts as 0/1, as in Python); text and floats are refused.
- ``float``: numeric or boolean dtypes, or Python/NumPy numbers and booleans in an object column;
  text is refused, and every float column must be finite.
- ``bool``: ``True``/``False`` (Python or NumPy), the numbers 0 and 1, or exactly the text
  ``"true"``, ``"false"``, ``"True"``, ``"False"``, ``"0"``, ``"1"`` (``"TRUE"``, ``"1.0"``,
  ``" true"`` and ``"yes"`` are refused).
- ``timestamp``: datetime values, or ISO 8601 text (``2026-01-07``, ``2026-01-07T10:30:00Z``,
  ``2026-01-07 10:30:00.5+02:00``); the check reads ``str(value)``, naive times are taken as UTC.
- ``category``: values equal to one of the allowed values (compared as given, so the number 1 is
  not the level ``"1"``); normalised with ``str()``. Without listed levels, any value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from ._errors import RowsError
from ._spec import Covariate, ExperimentSpec, Metric

__all__ = [
    "RowsError",
    "validate_rows",
    "model_frame",
    "row_schema",
    "unknown_columns",
    "rows_reference_markdown",
    "RowSchema",
    "ColumnRule",
    "RowCheck",
    "ROW_COLUMNS",
    "CELL_NAMES",
]

CELL_NAMES = ("control", "explore", "optimized")
# Columns of a round row besides covariates and metrics, with the dtype they are normalised to.
ROW_COLUMNS = {
    "experiment_id": "string",
    "round": "int64",
    "visitor_id": "string",
    "assigned_at": "datetime64[ns, UTC]",
    "cell": "string",
    "segment_id": "string",
    "arm": "string",
    "assignment_prob": "float64",
}
KINDS = ("string", "int", "float", "bool", "timestamp", "category")
# The accepted encodings of each kind, in words (docs and messages).
ENCODINGS = {
    "string": "any value, stored as text",
    "int": "whole numbers (integer dtype or int values; booleans count as 0/1); no text, no floats",
    "float": "finite numbers (numeric dtype or int/float values; booleans count as 0/1); no text",
    "bool": "True/False, 0/1, or exactly the text true/false/True/False/0/1",
    "timestamp": "datetimes or ISO 8601 text, e.g. 2026-01-07T10:30:00Z (naive times are UTC)",
    "category": "one of the allowed values, as given (the number 1 is not the level '1')",
}
# Values a bool column may hold; pandas' isin matches 1/0 and 1.0/0.0 to True/False, as Python does.
BOOLEAN_TRUE = (True, "true", "True", "1")
BOOLEAN_FALSE = (False, "false", "False", "0")
BOOLEAN_VALUES = BOOLEAN_TRUE + BOOLEAN_FALSE
# Type names as Great Expectations' expect_column_values_to_be_in_type_list resolves them: dtypes of
# whole columns, and the types of values in an object column. validate_rows mirrors them below.
INT_TYPE_NAMES = (
    "int",
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "Int8Dtype",
    "Int16Dtype",
    "Int32Dtype",
    "Int64Dtype",
    "UInt8Dtype",
    "UInt16Dtype",
    "UInt32Dtype",
    "UInt64Dtype",
    "BooleanDtype",
)
FLOAT_TYPE_NAMES = (*INT_TYPE_NAMES, "float", "float16", "float32", "float64", "Float32Dtype", "Float64Dtype")
_INT_VALUE_TYPES = (int, np.integer, np.bool_)
_FLOAT_VALUE_TYPES = (*_INT_VALUE_TYPES, float, np.floating)
_MASKED_INT_DTYPES = (pd.Int8Dtype, pd.Int16Dtype, pd.Int32Dtype, pd.Int64Dtype, pd.BooleanDtype)
_MASKED_UINT_DTYPES = (pd.UInt8Dtype, pd.UInt16Dtype, pd.UInt32Dtype, pd.UInt64Dtype)
_MASKED_FLOAT_DTYPES = (pd.Float32Dtype, pd.Float64Dtype)
# ISO 8601 date, optional time and offset; matched against str(value), which is how a datetime
# column prints ("2026-01-07 10:30:00.123456789+00:00").
TIMESTAMP_PATTERN = (
    r"^\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
    r"(?:[T ](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d+)?)?)?"
    r"(?:Z|[+-](?:[01]\d|2[0-3]):?[0-5]\d)?$"
)
# A visitor id must contain something other than whitespace.
NON_BLANK_PATTERN = r"\S"
# Largest finite float: "finite" is checked as a range, which Great Expectations can express.
FINITE_MAX = float(np.finfo(np.float64).max)


@dataclass(frozen=True)
class ColumnRule:
    """What one column of a round's rows must hold.

    Attributes
    ----------
    name : str
    kind : {"string", "int", "float", "bool", "timestamp", "category"}
        Decides the accepted encodings (see :data:`ENCODINGS`) and the normalised dtype.
    meaning : str
        One line for the reference table.
    group : {"assignment", "covariate", "metric"}
        ``validate_rows(..., assignment=False)`` or ``metrics=False`` leave that group out.
    required : bool
        The column must be present; an optional column is checked only when present.
    nullable : bool
    allowed : tuple, optional
        The only values allowed (arms, cells, listed levels, 0/1, the partition's id or round).
    allowed_rule, allowed_fix : str
        The value-set rule in words and the fix, e.g. ``"arm is one of the spec's arms"``
        (the rule alone, without ``allowed``, describes a set only a spec can list).
    minimum, maximum : float, optional
        Bounds; ``strict_minimum`` makes the lower one exclusive. Float columns are always finite.
    range_rule, range_fix : str
    unique : bool
        No value may repeat within the rows.
    non_blank : bool
        Refuse values whose text is empty or whitespace only.
    """

    name: str
    kind: str
    meaning: str
    group: str
    required: bool = True
    nullable: bool = False
    allowed: tuple | None = None
    allowed_rule: str = ""
    allowed_fix: str = ""
    minimum: float | None = None
    maximum: float | None = None
    strict_minimum: bool = False
    range_rule: str = ""
    range_fix: str = ""
    unique: bool = False
    non_blank: bool = False

    @property
    def rule(self) -> str:
        """What the column must satisfy beyond its kind's encodings, in one line (for the reference table)."""
        parts = [text for text in (self.allowed_rule, self.range_rule) if text]
        if self.non_blank:
            parts.append(f"{self.name} is not empty or whitespace")
        if self.unique:
            parts.append(f"{self.name} is unique within the round")
        return "; ".join(parts) or f"any {self.kind} value"


@dataclass(frozen=True)
class RowCheck:
    """One test of the rows, as both :func:`validate_rows` and the quality suite evaluate it.

    Attributes
    ----------
    column : str
        The column tested (``"rows"`` for the row count).
    test : {"rows", "present", "not_null", "type", "in_set", "between", "pattern", "unique"}
    rule : str
        What is expected, in words; unique within a schema's checks.
    fix : str
        How to repair rows that break it.
    value_set : tuple
        For ``in_set``.
    type_names : tuple of str
        For ``type``: :data:`INT_TYPE_NAMES` or :data:`FLOAT_TYPE_NAMES`.
    minimum, maximum, strict_minimum
        For ``between`` (``maximum`` inclusive).
    pattern : str
        For ``pattern``: a regular expression ``str(value)`` must contain.
    """

    column: str
    test: str
    rule: str
    fix: str
    value_set: tuple = ()
    type_names: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    strict_minimum: bool = False
    pattern: str = ""


@dataclass(frozen=True)
class RowSchema:
    """The columns of one experiment's round rows, in order (fixed, covariates, metrics, pre-period).

    Attributes
    ----------
    experiment_id : str
        The spec's id.
    columns : tuple of ColumnRule
    allow_empty : bool
        Zero rows are acceptable.
    """

    experiment_id: str
    columns: tuple[ColumnRule, ...]
    allow_empty: bool = False
    _by_name: dict[str, ColumnRule] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {c.name: c for c in self.columns})

    def __getitem__(self, name: str) -> ColumnRule:
        return self._by_name[name]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def select(self, *, assignment: bool = True, metrics: bool = True) -> RowSchema:
        """The schema without the assignment or the metric columns (covariates always stay)."""
        keep = {"covariate"} | ({"assignment"} if assignment else set()) | ({"metric"} if metrics else set())
        return replace(self, columns=tuple(c for c in self.columns if c.group in keep))

    def checks(self, present: Iterable[str] | None = None) -> tuple[RowCheck, ...]:
        """Every test of the rows, in evaluation order: row count, presence, then column by column.

        Parameters
        ----------
        present : iterable of str, optional
            The columns the rows have: optional columns not among them are not tested. ``None``
            tests every column as if present.
        """
        have = None if present is None else set(present)
        out = []
        if not self.allow_empty:
            out.append(RowCheck("rows", "rows", "the round has rows", "a round needs at least one row"))
        tested = [c for c in self.columns if c.required or have is None or c.name in have]
        for c in tested:
            if c.required:
                out.append(
                    RowCheck(
                        c.name, "present", f"column {c.name} is present", f"the rows must have a '{c.name}' column"
                    )
                )
        for c in tested:
            out.extend(_column_checks(c))
        return tuple(out)

    def reference_markdown(self) -> str:
        """The schema as a markdown table: name, type, required/nullable, meaning, rule."""
        lines = ["| column | type | required | nullable | meaning | rule |", "| --- | --- | --- | --- | --- | --- |"]
        for c in self.columns:
            required = "yes" if c.required else "no"
            nullable = "yes" if c.nullable else "no"
            cells = [f"`{c.name}`", c.kind, required, nullable, c.meaning, c.rule]
            # A literal "|" (as in "p(arm | x)") would end a markdown cell.
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        return "\n".join(lines) + "\n"


def _column_checks(c: ColumnRule) -> list[RowCheck]:
    out = []
    if not c.nullable:
        out.append(
            RowCheck(c.name, "not_null", f"{c.name} has no nulls", f"fill or drop the rows with a null {c.name}")
        )
    if c.kind in ("int", "float"):
        names = INT_TYPE_NAMES if c.kind == "int" else FLOAT_TYPE_NAMES
        what = "an integer" if c.kind == "int" else "numeric"
        out.append(
            RowCheck(c.name, "type", f"{c.name} is {what}", f"{c.name} takes {ENCODINGS[c.kind]}", type_names=names)
        )
    elif c.kind == "bool":
        out.append(
            RowCheck(
                c.name, "in_set", f"{c.name} is true or false", f"a boolean takes {ENCODINGS['bool']}", BOOLEAN_VALUES
            )
        )
    elif c.kind == "timestamp":
        out.append(
            RowCheck(
                c.name,
                "pattern",
                f"{c.name} is an ISO 8601 timestamp",
                f"a timestamp is {ENCODINGS['timestamp']}",
                pattern=TIMESTAMP_PATTERN,
            )
        )
    if c.allowed is not None:
        out.append(RowCheck(c.name, "in_set", c.allowed_rule, c.allowed_fix, c.allowed))
    if c.kind == "float" or c.minimum is not None or c.maximum is not None:
        lo = c.minimum if c.minimum is not None else (-FINITE_MAX if c.kind == "float" else None)
        hi = c.maximum if c.maximum is not None else (FINITE_MAX if c.kind == "float" else None)
        out.append(
            RowCheck(
                c.name, "between", c.range_rule, c.range_fix, minimum=lo, maximum=hi, strict_minimum=c.strict_minimum
            )
        )
    if c.non_blank:
        out.append(
            RowCheck(
                c.name,
                "pattern",
                f"{c.name} is not blank",
                f"a {c.name} must not be empty or whitespace",
                pattern=NON_BLANK_PATTERN,
            )
        )
    if c.unique:
        out.append(
            RowCheck(
                c.name, "unique", f"{c.name} is unique", f"duplicate {c.name}; each visitor appears once per round"
            )
        )
    return out


def _range_text(name: str, lo: float | None, hi: float | None, fix: str) -> tuple[str, str]:
    """The rule of a float column's range in numbers (an open side means finite), and its fix."""
    if lo is None and hi is None:
        return f"{name} is finite", f"{name} must be a finite number"
    if hi is None:
        return f"{name} is >= {lo:g}", fix
    if lo is None:
        return f"{name} is <= {hi:g}", fix
    return f"{name} is in [{lo:g}, {hi:g}]", fix


def _covariate_rule(cov: Covariate) -> ColumnRule:
    meaning = f"covariate ({cov.type})"
    if cov.type == "boolean":
        return ColumnRule(cov.name, "bool", meaning, "covariate")
    if cov.type == "categorical":
        if cov.levels is None:
            return ColumnRule(cov.name, "category", meaning, "covariate")
        return ColumnRule(
            cov.name,
            "category",
            meaning,
            "covariate",
            allowed=tuple(cov.levels),
            allowed_rule=f"{cov.name} is a level listed in the spec",
            allowed_fix=f"not a level of the spec {list(cov.levels)}",
        )
    rule, fix = _range_text(cov.name, cov.minimum, cov.maximum, f"the spec allows [{cov.minimum}, {cov.maximum}]")
    return ColumnRule(
        cov.name,
        "float",
        meaning,
        "covariate",
        minimum=cov.minimum,
        maximum=cov.maximum,
        range_rule=rule,
        range_fix=fix,
    )


def _metric_rule(metric: Metric, role: str) -> ColumnRule:
    meaning = f"{role} metric ({metric.family})"
    lo, hi = metric.minimum, metric.maximum
    allowed: dict[str, Any] = {}
    if metric.family == "binary":
        allowed = dict(
            allowed=(0, 1), allowed_rule=f"{metric.name} is 0 or 1", allowed_fix="a binary metric takes 0 or 1"
        )
    elif metric.family == "hurdle":
        lo = 0.0 if lo is None else max(lo, 0.0)
    fix = f"the spec allows [{metric.minimum}, {metric.maximum}]"
    if metric.family == "hurdle" and (lo, hi) == (0.0, None):
        fix = "a hurdle metric is zero or a positive amount"
    rule, fix = _range_text(metric.name, lo, hi, fix)
    return ColumnRule(
        metric.name, "float", meaning, "metric", minimum=lo, maximum=hi, range_rule=rule, range_fix=fix, **allowed
    )


def row_schema(
    spec: ExperimentSpec | None = None,
    *,
    experiment_id: str | None = None,
    round: int | None = None,
    allow_empty: bool = False,
) -> RowSchema:
    """The declarative description of a round's rows for ``spec``.

    Parameters
    ----------
    spec : ExperimentSpec, optional
        Without a spec, only the fixed columns (arms unchecked): the reference table's content.
    experiment_id, round : optional
        The partition the rows belong to: rows whose ``experiment_id`` or ``round`` differ are refused.
    allow_empty : bool
        Accept zero rows.

    Returns
    -------
    RowSchema
        Fixed columns (``ROW_COLUMNS``), the spec's covariates, its metrics (primary, guardrails,
        secondary) and its pre-period column.

    Examples
    --------
    >>> from tyche_lib.core import spec_from_dict
    >>> spec = spec_from_dict({"id": "checkout", "arms": ["control", "green"],
    ...     "covariates": {"device": {"type": "categorical", "levels": ["mobile", "desktop"]}},
    ...     "metrics": {"primary": {"name": "converted", "family": "binary"}}})
    >>> schema = row_schema(spec)
    >>> schema.names[-2:], schema["arm"].allowed, schema["visitor_id"].unique
    (('device', 'converted'), ('control', 'green'), True)
    >>> schema["assignment_prob"].range_rule
    'assignment_prob is in (0, 1]'
    """
    # Without a spec (the reference table) the arm rule is described but has no values to test.
    arms: dict[str, Any] = {"allowed_rule": "arm is one of the spec's arms"}
    if spec is not None:
        arms.update(allowed=tuple(spec.arms), allowed_fix=f"unknown arm; the spec's arms are {list(spec.arms)}")
    ids: dict[str, Any] = {}
    if experiment_id is not None:
        ids = dict(
            allowed=(experiment_id,),
            allowed_rule="experiment_id is the partition's experiment",
            allowed_fix=f"these rows must all belong to experiment {experiment_id!r}",
        )
    rounds: dict[str, Any] = {}
    if round is not None:
        rounds = dict(
            allowed=(round,),
            allowed_rule="round is the partition's round",
            allowed_fix=f"these rows must all belong to round {round}",
        )
    columns = [
        ColumnRule(
            "experiment_id",
            "string",
            "the experiment's id; filled from the partition when absent",
            "assignment",
            required=False,
            **ids,
        ),
        ColumnRule(
            "round",
            "int",
            "the round the visitor was assigned in (1, 2, ...); filled from the partition when absent",
            "assignment",
            required=False,
            minimum=1,
            range_rule="round is >= 1",
            range_fix="rounds count from 1",
            **rounds,
        ),
        ColumnRule(
            "visitor_id",
            "string",
            "the visitor's id (the randomisation unit)",
            "assignment",
            unique=True,
            non_blank=True,
        ),
        # Required: the anytime-valid sequences read the rows in arrival order.
        ColumnRule("assigned_at", "timestamp", "when the visitor was assigned (arrival order)", "assignment"),
        ColumnRule(
            "cell",
            "category",
            "the cell that routed the visitor",
            "assignment",
            allowed=CELL_NAMES,
            allowed_rule="cell is control, explore or optimized",
            allowed_fix=f"unknown cell; cells are {list(CELL_NAMES)}",
        ),
        ColumnRule(
            "segment_id", "string", "the plan segment the visitor fell in (recorded for every visitor)", "assignment"
        ),
        ColumnRule("arm", "category", "the arm served", "assignment", **arms),
        ColumnRule(
            "assignment_prob",
            "float",
            "p(arm | x) under the plan in force, summed over the cells",
            "assignment",
            minimum=0.0,
            maximum=1.0,
            strict_minimum=True,
            range_rule="assignment_prob is in (0, 1]",
            range_fix="a recorded assignment probability must be > 0 and <= 1",
        ),
    ]
    if spec is not None:
        columns += [_covariate_rule(cov) for cov in spec.covariates]
        columns.append(_metric_rule(spec.primary, "primary"))
        columns += [_metric_rule(m, "guardrail") for m in spec.guardrails]
        columns += [_metric_rule(m, "secondary") for m in spec.secondary]
        if spec.pre_period:
            # Recorded with the assignment (it is known before the visit): a model fit, which
            # validates without the assignment group, does not need it.
            rule, fix = _range_text(spec.pre_period, None, None, "")
            columns.append(
                ColumnRule(
                    spec.pre_period,
                    "float",
                    "pre-period value of the primary metric (CUPED)",
                    "assignment",
                    range_rule=rule,
                    range_fix=fix,
                )
            )
    return RowSchema(spec.id if spec is not None else "", tuple(columns), allow_empty=allow_empty)


def unknown_columns(rows: pd.DataFrame, spec: ExperimentSpec) -> list[str]:
    """Columns of ``rows`` the spec's row schema does not describe (kept as they are by validate_rows).

    Examples
    --------
    >>> from tyche_lib.core import spec_from_dict
    >>> spec = spec_from_dict({"id": "checkout", "arms": ["control", "green"],
    ...     "metrics": {"primary": {"name": "converted", "family": "binary"}}})
    >>> unknown_columns(pd.DataFrame(columns=["arm", "converted", "utm_source"]), spec)
    ['utm_source']
    """
    known = set(row_schema(spec).names)
    return [str(c) for c in rows.columns if c not in known]


def _failing(check: RowCheck, values: pd.Series) -> pd.Series:
    """Which non-null ``values`` break ``check`` (for ``not_null``: which are null).

    The semantics mirror the Great Expectations expectation the quality suite uses for the same
    test (type names as it resolves them, ``isin`` for value sets, ``str(value)`` for patterns,
    duplicates counted on the values as given), so the two agree value for value.
    """
    if check.test == "not_null":
        return values.isna()
    notna = values.notna()
    if check.test == "type":
        return notna & ~_type_ok(values, integer=check.type_names == INT_TYPE_NAMES)
    if check.test == "in_set":
        return notna & ~values.isin(list(check.value_set))
    if check.test == "unique":
        return notna & values.duplicated(keep=False)
    bad = pd.Series(False, index=values.index)
    if check.test == "pattern":
        if check.pattern == TIMESTAMP_PATTERN and pd.api.types.is_datetime64_any_dtype(values.dtype):
            # A datetime column prints as ISO 8601 by construction; printing 100k rows takes a second.
            return bad
        bad[notna] = ~values[notna].astype(str).str.contains(check.pattern, regex=True)
    elif check.test == "between":
        # Only reached once the type check passed: every non-null value is a number or a boolean.
        x = values[notna].to_numpy(dtype=float)
        low = (
            np.zeros(len(x), dtype=bool)
            if check.minimum is None
            else x <= check.minimum
            if check.strict_minimum
            else x < check.minimum
        )
        high = np.zeros(len(x), dtype=bool) if check.maximum is None else x > check.maximum
        bad[notna] = low | high
    else:
        raise ValueError(f"unknown check test {check.test!r}")
    return bad


def _type_ok(values: pd.Series, *, integer: bool) -> pd.Series:
    dtype = values.dtype
    if pd.api.types.is_object_dtype(dtype):
        kinds = _INT_VALUE_TYPES if integer else _FLOAT_VALUE_TYPES
        return values.map(lambda v: isinstance(v, kinds)).astype(bool)
    masked = _MASKED_INT_DTYPES + _MASKED_UINT_DTYPES + (() if integer else _MASKED_FLOAT_DTYPES)
    ok = isinstance(dtype, masked) or (isinstance(dtype, np.dtype) and dtype.kind in ("iub" if integer else "iubf"))
    return pd.Series(ok, index=values.index)


def validate_rows(
    rows: pd.DataFrame,
    spec: ExperimentSpec,
    *,
    metrics: bool = True,
    assignment: bool = True,
    experiment_id: str | None = None,
    round: int | None = None,
    allow_empty: bool = False,
) -> pd.DataFrame:
    """Check round rows against :func:`row_schema` and return them with normalised dtypes.

    Parameters
    ----------
    rows : DataFrame
    spec : ExperimentSpec
    metrics : bool
        Require and check the metric columns (outcomes).
    assignment : bool
        Require and check the assignment record (visitor_id, cell, segment_id, arm,
        assigned_at, assignment_prob, the pre-period column; experiment_id and round when present).
        A model fit over several rounds passes False: visitor ids may repeat across rounds.
    experiment_id, round : optional
        The partition the rows belong to: a row with another ``experiment_id`` or ``round`` is refused.
    allow_empty : bool
        Accept zero rows (otherwise a ``RowsError`` on column ``"rows"``).

    Returns
    -------
    DataFrame
        A copy: strings and categories as str, int as int64, float as float64, bool as bool,
        timestamps as UTC datetimes. Columns the schema does not describe are kept as they are
        (see :func:`unknown_columns`).

    Raises
    ------
    RowsError
        For the first check that fails (in :meth:`RowSchema.checks` order), naming the column, an
        offending value and the fix; a missing column has the value ``"<missing>"``.

    Examples
    --------
    >>> from tyche_lib.core import spec_from_dict
    >>> spec = spec_from_dict({"id": "checkout", "arms": ["control", "green"],
    ...     "covariates": {"returning": "boolean"},
    ...     "metrics": {"primary": {"name": "converted", "family": "binary"}}})
    >>> rows = pd.DataFrame({"visitor_id": ["a", "b"], "assigned_at": "2026-01-07T10:30:00Z",
    ...     "cell": "explore", "segment_id": "all",
    ...     "arm": ["control", "green"], "assignment_prob": 0.5, "returning": ["true", 0],
    ...     "converted": [1, 0], "utm_source": ["ads", "mail"]})
    >>> validate_rows(rows, spec)[["returning", "utm_source"]].to_dict("list")
    {'returning': [True, False], 'utm_source': ['ads', 'mail']}
    >>> validate_rows(rows.assign(returning="TRUE"), spec)
    Traceback (most recent call last):
    ...
    tyche_lib.core._errors.RowsError: column 'returning': 'TRUE' — a boolean takes True/False, 0/1, or exactly the text true/false/True/False/0/1 (2 row(s) break 'returning is true or false', first at row 0)
    """
    schema = row_schema(spec, experiment_id=experiment_id, round=round, allow_empty=allow_empty)
    schema = schema.select(assignment=assignment, metrics=metrics)
    for check in schema.checks(present=rows.columns):
        if check.test == "rows":
            if len(rows) == 0:
                raise RowsError("rows", 0, f"{check.fix}; pass allow_empty=True when an empty round is expected")
        elif check.test == "present":
            if check.column not in rows.columns:
                raise RowsError(check.column, "<missing>", f"{check.fix}; found {sorted(map(str, rows.columns))}")
        else:
            bad = _failing(check, rows[check.column])
            if bad.any():
                first = int(np.flatnonzero(bad.to_numpy())[0])
                value = rows[check.column].iloc[first]
                value = None if check.test == "not_null" else value.item() if isinstance(value, np.generic) else value
                raise RowsError(
                    check.column,
                    value,
                    f"{check.fix} ({int(bad.sum())} row(s) break '{check.rule}', first at row {rows.index[first]})",
                )
    out = rows.copy()
    for c in schema.columns:
        if c.name in out.columns:
            out[c.name] = _normalised(out[c.name], c)
    return out


def _normalised(values: pd.Series, c: ColumnRule) -> pd.Series:
    if c.kind == "int":
        return values.astype("int64")
    if c.kind == "float":
        return values.astype(float)
    if c.kind == "bool":
        return values.isin(list(BOOLEAN_TRUE)).astype(bool)
    if c.kind == "timestamp":
        try:
            # "mixed" parses each value on its own: "ISO8601" misreads naive text that follows
            # text with an offset in the same column (pandas 2.3).
            return pd.to_datetime(values, utc=True, format="mixed")
        except (ValueError, TypeError) as e:
            # The pattern admits a few impossible dates (2026-02-30): name the column anyway.
            raise RowsError(c.name, str(e), f"a timestamp is {ENCODINGS['timestamp']}") from None
    return values.astype(str)


def rows_reference_markdown(spec: ExperimentSpec | None = None) -> str:
    """The reference table of a round's columns (``docs/rows.md`` is this without a spec).

    Parameters
    ----------
    spec : ExperimentSpec, optional
        With a spec, its covariates and metrics follow the fixed columns.

    Returns
    -------
    str
        Markdown: a title, the accepted encodings of each kind, and one row per column with its
        type, whether it is required and nullable, its meaning and the rule.

    Examples
    --------
    >>> print(rows_reference_markdown().splitlines()[0])
    # Round rows
    """
    title = "# Round rows" if spec is None else f"# Round rows of `{spec.id}`"
    kinds = "\n".join(f"- `{kind}`: {text}" for kind, text in ENCODINGS.items())
    return (
        f"{title}\n\n"
        "<!-- Generated by docs/generate_rows_reference.py from tyche_lib.core._rows.row_schema; do not edit. -->\n\n"
        "Every round's rows are checked against one schema: `validate_rows` (normalisation) and the\n"
        "Great Expectations suite of the `round_visitors_quality` check are both derived from it.\n"
        "Besides the fixed columns below, the rows carry the spec's covariates (categorical: a listed\n"
        "level; boolean; numeric: finite, within the spec's range), its metrics (binary: 0 or 1;\n"
        "hurdle: >= 0; continuous: finite; within the spec's range) and its pre-period column, all\n"
        "required and non-null. Columns the schema does not describe are kept as they are and listed.\n"
        "No column may hold nulls, and a round has at least one row.\n\n"
        f"Accepted encodings, by type:\n\n{kinds}\n\n"
        f"{row_schema(spec).reference_markdown()}"
    )


def model_frame(rows: pd.DataFrame, spec: ExperimentSpec) -> pd.DataFrame:
    """Covariates and arm typed for model formulas.

    ``arm`` becomes an ordered Categorical with control first (formulae would otherwise pick the
    alphabetically first arm as the reference) and booleans become ``"true"``/``"false"`` strings
    (formulae gives a bare boolean no level label).
    """
    out = pd.DataFrame(index=rows.index)
    for cov in spec.covariates:
        col = rows[cov.name]
        if cov.type == "boolean":
            out[cov.name] = pd.Categorical(np.where(col.astype(bool), "true", "false"), categories=["false", "true"])
        elif cov.type == "categorical":
            levels = list(cov.levels) if cov.levels else sorted(col.astype(str).unique())
            out[cov.name] = pd.Categorical(col.astype(str), categories=levels)
        else:
            out[cov.name] = col.astype(float)
    if "arm" in rows.columns:
        out["arm"] = pd.Categorical(rows["arm"].astype(str), categories=list(spec.arms), ordered=True)
    return out
