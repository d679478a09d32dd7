"""Segment rules: readable, serialisable conjunctions of covariate conditions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ._errors import RowsError
from ._profiles import covariate_profiles

__all__ = ["Condition", "Rule"]

OPERATORS = ("<=", ">", "in", "not in", "is")


@dataclass(frozen=True)
class Condition:
    """One test on one covariate.

    Attributes
    ----------
    feature : str
        Covariate column.
    operator : {"<=", ">", "in", "not in", "is"}
        ``<=`` / ``>`` compare a numeric covariate with ``threshold``; ``in`` / ``not in`` test a
        categorical covariate against ``levels``; ``is`` tests a boolean covariate against
        ``bool(threshold)``.
    threshold : float, optional
    levels : tuple of str, optional
    """

    feature: str
    operator: str
    threshold: float | None = None
    levels: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.operator not in OPERATORS:
            raise ValueError(f"Condition.operator = {self.operator!r}: must be one of {OPERATORS}")
        if self.operator in ("in", "not in"):
            if not self.levels:
                raise ValueError(f"Condition on '{self.feature}': operator '{self.operator}' needs levels")
            object.__setattr__(self, "levels", tuple(sorted(str(v) for v in self.levels)))
        elif self.threshold is None:
            raise ValueError(f"Condition on '{self.feature}': operator '{self.operator}' needs a threshold")

    def matches(self, rows: pd.DataFrame) -> np.ndarray:
        """Boolean mask of the rows satisfying the condition."""
        if self.feature not in rows.columns:
            raise RowsError(
                self.feature, "<missing>", f"a segment rule needs column '{self.feature}'; add it to the rows"
            )
        col = rows[self.feature]
        if self.operator == "<=":
            return np.asarray(col.astype(float) <= self.threshold)
        if self.operator == ">":
            return np.asarray(col.astype(float) > self.threshold)
        if self.operator == "is":
            return np.asarray(col.astype(bool) == bool(self.threshold))
        inside = np.asarray(col.astype(str).isin(self.levels))
        return inside if self.operator == "in" else ~inside

    def __str__(self) -> str:
        if self.operator == "is":
            return f"{self.feature} is {bool(self.threshold)}"
        if self.operator in ("in", "not in"):
            return f"{self.feature} {self.operator} {{{', '.join(self.levels or ())}}}"
        return f"{self.feature} {self.operator} {self.threshold:.6g}"

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"feature": self.feature, "operator": self.operator}
        if self.levels is not None:
            d["levels"] = list(self.levels)
        if self.threshold is not None:
            d["threshold"] = float(self.threshold)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Condition:
        levels = d.get("levels")
        return cls(
            feature=str(d["feature"]),
            operator=str(d["operator"]),
            threshold=None if d.get("threshold") is None else float(d["threshold"]),
            levels=None if levels is None else tuple(levels),
        )


@dataclass(frozen=True)
class Rule:
    """A conjunction of conditions; the empty rule matches every visitor.

    Examples
    --------
    >>> import pandas as pd
    >>> rule = Rule((Condition("device", "in", levels=("mobile",)), Condition("age", "<=", 40.0)))
    >>> str(rule)
    'device in {mobile} and age <= 40'
    >>> rule.matches(pd.DataFrame({"device": ["mobile", "desktop"], "age": [30, 30]})).tolist()
    [True, False]
    >>> Rule.from_dict(rule.to_dict()) == rule
    True
    """

    conditions: tuple[Condition, ...] = ()

    def matches(self, rows: pd.DataFrame) -> np.ndarray:
        """Boolean mask (one entry per row, in row order) of the rows the rule covers."""
        mask = np.ones(len(rows), dtype=bool)
        for cond in self.conditions:
            mask &= cond.matches(rows)
        return mask

    def __and__(self, other: Rule | Condition) -> Rule:
        extra = (other,) if isinstance(other, Condition) else other.conditions
        return Rule(self.conditions + extra)

    def __str__(self) -> str:
        return " and ".join(str(c) for c in self.conditions) if self.conditions else "all visitors"

    def to_dict(self) -> dict:
        return {"conditions": [c.to_dict() for c in self.conditions]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Rule:
        return cls(tuple(Condition.from_dict(c) for c in d.get("conditions", [])))


def rule_masks(rules: Sequence[Rule], rows: pd.DataFrame) -> np.ndarray:
    """Which rows each rule matches: boolean array (rules × rows), row order.

    Equal to ``np.stack([rule.matches(rows) for rule in rules])``, but the rules are evaluated once
    per unique combination of the columns they test, so a million rows cost one group-by.
    """
    features = tuple(sorted({c.feature for rule in rules for c in rule.conditions}))
    for name in features:
        if name not in rows.columns:
            raise RowsError(name, "<missing>", f"a segment rule needs column '{name}'; found {sorted(rows.columns)}")
    combos = covariate_profiles(rows, features)
    per_combo = np.stack([rule.matches(combos.frame) for rule in rules])
    return per_combo[:, combos.index]
