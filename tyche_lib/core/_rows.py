"""Round rows: required columns, types, and the normalisation every consumer relies on."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from ._errors import RowsError
from ._spec import ExperimentSpec

__all__ = ["RowsError", "validate_rows", "model_frame", "ROW_COLUMNS", "CELL_NAMES"]

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


def _check_present(rows: pd.DataFrame, columns: Iterable[str]) -> None:
    for col in columns:
        if col not in rows.columns:
            raise RowsError(col, "<missing>", f"the rows must have a '{col}' column; found {sorted(rows.columns)}")


def _no_nulls(rows: pd.DataFrame, col: str) -> None:
    nulls = rows[col].isna()
    if nulls.any():
        raise RowsError(
            col,
            None,
            f"{int(nulls.sum())} null value(s), first at row {int(np.flatnonzero(nulls)[0])}; fill or drop them",
        )


def _numeric(rows: pd.DataFrame, col: str) -> pd.Series:
    values = pd.to_numeric(rows[col], errors="coerce")
    bad = values.isna() & rows[col].notna()
    if bad.any():
        raise RowsError(col, rows[col][bad].iloc[0], "must be numeric")
    return values.astype(float)


def _boolean(rows: pd.DataFrame, col: str) -> pd.Series:
    s = rows[col]
    if s.dtype == bool:
        return s
    mapping = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}
    as_text = s.astype(str).str.strip().str.lower()
    bad = ~as_text.isin(mapping)
    if bad.any():
        raise RowsError(col, s[bad].iloc[0], "a boolean covariate takes true/false (or 1/0)")
    return as_text.map(mapping).astype(bool)


def validate_rows(
    rows: pd.DataFrame,
    spec: ExperimentSpec,
    *,
    metrics: bool = True,
    assignment: bool = True,
) -> pd.DataFrame:
    """Check round rows against the spec and return them with normalised dtypes.

    Parameters
    ----------
    rows : DataFrame
    spec : ExperimentSpec
    metrics : bool
        Require and check the metric columns (outcomes).
    assignment : bool
        Require and check the assignment columns (visitor_id, cell, arm, assignment_prob).

    Returns
    -------
    DataFrame
        A copy: covariates typed (categorical → str, boolean → bool, numeric → float), ``arm`` as
        str, metrics as float, ``assignment_prob`` as float.

    Raises
    ------
    RowsError
        Naming the column, an offending value and the fix: a missing column, a null, a wrong type,
        an unknown arm or cell, a probability outside (0, 1], a duplicate visitor id, an outcome
        outside its family's range.
    """
    out = rows.copy()
    required = list(spec.covariate_names)
    if assignment:
        required += ["visitor_id", "cell", "arm", "assignment_prob"]
    if metrics:
        required += [m.name for m in spec.metrics]
    _check_present(out, required)
    for col in required:
        _no_nulls(out, col)
    for cov in spec.covariates:
        if cov.type == "numeric":
            out[cov.name] = _numeric(out, cov.name)
            for bound, op in (("minimum", np.less), ("maximum", np.greater)):
                limit = getattr(cov, bound)
                if limit is not None and op(out[cov.name], limit).any():
                    bad = out[cov.name][op(out[cov.name], limit)].iloc[0]
                    raise RowsError(cov.name, bad, f"outside the spec's {bound} {limit}")
        elif cov.type == "boolean":
            out[cov.name] = _boolean(out, cov.name)
        else:
            out[cov.name] = out[cov.name].astype(str)
            if cov.levels is not None:
                bad = ~out[cov.name].isin(cov.levels)
                if bad.any():
                    raise RowsError(cov.name, out[cov.name][bad].iloc[0], f"not a level of the spec {list(cov.levels)}")
    if assignment:
        out["arm"] = out["arm"].astype(str)
        bad = ~out["arm"].isin(spec.arms)
        if bad.any():
            raise RowsError("arm", out["arm"][bad].iloc[0], f"unknown arm; the spec's arms are {list(spec.arms)}")
        out["cell"] = out["cell"].astype(str)
        bad = ~out["cell"].isin(CELL_NAMES)
        if bad.any():
            raise RowsError("cell", out["cell"][bad].iloc[0], f"unknown cell; cells are {list(CELL_NAMES)}")
        out["assignment_prob"] = _numeric(out, "assignment_prob")
        p = out["assignment_prob"]
        bad = ~((p > 0) & (p <= 1))
        if bad.any():
            raise RowsError(
                "assignment_prob", float(p[bad].iloc[0]), "a recorded assignment probability must be in (0, 1]"
            )
        out["visitor_id"] = out["visitor_id"].astype(str)
        dup = out["visitor_id"].duplicated()
        if dup.any():
            raise RowsError(
                "visitor_id",
                out["visitor_id"][dup].iloc[0],
                "duplicate visitor id; each visitor appears once per round",
            )
    if metrics:
        for m in spec.metrics:
            out[m.name] = _numeric(out, m.name)
            y = out[m.name]
            if m.family == "binary":
                bad = ~y.isin((0.0, 1.0))
                rule = "a binary metric takes 0 or 1"
            elif m.family == "hurdle":
                bad = y < 0
                rule = "a hurdle metric is >= 0 (zero, or a positive amount)"
            else:
                bad = ~np.isfinite(y)
                rule = "a continuous metric must be finite"
            if bad.any():
                raise RowsError(m.name, float(y[bad].iloc[0]), rule)
            for bound, op in (("minimum", np.less), ("maximum", np.greater)):
                limit = getattr(m, bound)
                if limit is not None and op(y, limit).any():
                    raise RowsError(m.name, float(y[op(y, limit)].iloc[0]), f"outside the spec's {bound} {limit}")
    return out


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
