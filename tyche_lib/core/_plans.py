"""The published plan: three cells, the policy tree's segments and their allocations."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ._errors import PlanError
from ._rules import Rule
from ._spec import ExperimentSpec

__all__ = ["PlanSegment", "Plan", "PlanError", "initial_plan", "build_plan", "PLAN_SCHEMA_VERSION"]

# Version 1: every arm of the plan is active. Version 2 adds ``retired_arms``; it is written only for
# a plan that retires an arm, so a plan without one keeps the exact bytes of version 1, and a reader
# that predates retirement refuses a plan it would misread (its explore split is over the active arms).
PLAN_SCHEMA_VERSION = 2
CELLS = ("control", "explore", "optimized")
_TOL = 1e-9


@dataclass(frozen=True)
class PlanSegment:
    """One leaf of the policy tree as published: its rule and its arm allocation."""

    id: str
    rule: Rule
    allocation: Mapping[str, float]

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "rule": self.rule.to_dict(),
            "rule_text": str(self.rule),
            "allocation": {a: float(w) for a, w in self.allocation.items()},
        }


@dataclass(frozen=True)
class Plan:
    """How round ``round`` of experiment ``experiment_id`` routes its visitors.

    Traffic splits into a control cell (everyone gets the control arm), an explore cell (uniform over
    the active arms) and an optimized cell (the visitor's segment's allocation). The probability that
    a visitor with covariates ``x`` gets ``arm`` is::

        p(arm | x) = w_control·[arm = control] + w_explore / K_active·[arm active]
                     + w_optimized · alloc[segment(x)][arm]

    where ``K_active`` counts the arms that are not retired. A retired arm has probability 0
    everywhere: no explore share and no allocation (``Plan`` refuses one that gives it weight).

    Attributes
    ----------
    experiment_id : str
    round : int
        The round this plan governs.
    arms : tuple of str
        Every arm of the spec, control first, retired ones included, so that rows of rounds in which
        a retired arm still got traffic share the plan's columns.
    weights : mapping
        Cell weights ``{"control", "explore", "optimized"}``, summing to 1.
    segments : tuple of PlanSegment
        Their rules partition the visitors. Every allocation lists every arm of ``arms``.
    lineage : mapping
        What produced the plan (data versions, code version, seed, model summary).
    retired_arms : tuple of str
        Arms of ``arms`` that get no traffic (keyword only; default none). Never the control.
    schema_version : int
        Read only: 1 for a plan without retired arms, 2 for one with them (see :meth:`to_dict`).

    Examples
    --------
    Arm ``c`` is retired: it leaves the explore cell, which splits 0.06 over two arms, and its
    allocation must be 0.

    >>> plan = Plan("demo", 3, ("control", "b", "c"), {"control": 0.1, "explore": 0.06, "optimized": 0.84},
    ...             (PlanSegment("all", Rule(), {"control": 0.25, "b": 0.75, "c": 0.0}),), retired_arms=("c",))
    >>> plan.active_arms, plan.schema_version
    (('control', 'b'), 2)
    >>> plan.segment_arm_probabilities().round(4).to_dict("records")
    [{'control': 0.34, 'b': 0.66, 'c': 0.0}]
    """

    experiment_id: str
    round: int
    arms: tuple[str, ...]
    weights: Mapping[str, float]
    segments: tuple[PlanSegment, ...]
    lineage: Mapping[str, Any] = field(default_factory=dict)
    retired_arms: tuple[str, ...] = field(default=(), kw_only=True)

    def __post_init__(self):
        self.validate()

    @property
    def control(self) -> str:
        return self.arms[0]

    @property
    def active_arms(self) -> tuple[str, ...]:
        """The arms that get traffic: ``arms`` minus ``retired_arms``, control first."""
        return tuple(a for a in self.arms if a not in self.retired_arms)

    @property
    def schema_version(self) -> int:
        """The JSON schema version this plan is written with: 2 only when it retires an arm."""
        return 2 if self.retired_arms else 1

    @property
    def explore_allocation(self) -> dict[str, float]:
        """The explore cell's split ``{arm: 1 / K_active}``, 0 for a retired arm; arms in plan order."""
        k_active = len(self.active_arms)
        return {a: 0.0 if a in self.retired_arms else 1.0 / k_active for a in self.arms}

    @property
    def segment_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.segments)

    def segment(self, segment_id: str) -> PlanSegment:
        for s in self.segments:
            if s.id == segment_id:
                return s
        raise PlanError(f"plan for {self.experiment_id} round {self.round} has no segment {segment_id!r}")

    def validate(self) -> None:
        """Raise :class:`PlanError` naming the field when the plan is inconsistent."""
        if len(self.arms) < 2 or len(set(self.arms)) != len(self.arms):
            raise PlanError(f"plan.arms = {list(self.arms)}: need at least two distinct arms, control first")
        if not isinstance(self.round, (int, np.integer)) or self.round < 1:
            raise PlanError(f"plan.round = {self.round!r}: must be an integer >= 1")
        if not isinstance(self.retired_arms, tuple):
            raise PlanError(f"plan.retired_arms = {self.retired_arms!r}: must be a tuple of arm names")
        for arm in self.retired_arms:
            if arm not in self.arms:
                raise PlanError(f"plan.retired_arms has {arm!r}, not one of plan.arms {list(self.arms)}")
            if arm == self.control:
                raise PlanError(f"plan.retired_arms has the control arm {arm!r}: the control is never retired")
        if len(set(self.retired_arms)) != len(self.retired_arms):
            raise PlanError(f"plan.retired_arms = {list(self.retired_arms)}: must be distinct")
        if set(self.weights) != set(CELLS):
            raise PlanError(f"plan.weights has cells {sorted(self.weights)}: must be exactly {list(CELLS)}")
        for cell, w in self.weights.items():
            if not (isinstance(w, (int, float)) and 0.0 <= w <= 1.0) or math.isnan(w):
                raise PlanError(f"plan.weights.{cell} = {w!r}: must be in [0, 1]")
        total = sum(self.weights.values())
        if abs(total - 1.0) > 1e-6:
            raise PlanError(f"plan.weights sum to {total!r}: must sum to 1")
        if not self.segments:
            raise PlanError("plan.segments is empty: at least one segment (e.g. 'all visitors') is needed")
        ids = [s.id for s in self.segments]
        if len(set(ids)) != len(ids):
            raise PlanError(f"plan.segments ids {ids}: must be distinct")
        for s in self.segments:
            unknown = set(s.allocation) - set(self.arms)
            if unknown:
                raise PlanError(
                    f"plan.segments[{s.id}].allocation has unknown arm {sorted(unknown)[0]!r}; "
                    f"arms are {list(self.arms)}"
                )
            missing = set(self.arms) - set(s.allocation)
            if missing:
                raise PlanError(f"plan.segments[{s.id}].allocation lacks arm {sorted(missing)[0]!r}")
            for arm, w in s.allocation.items():
                if not (0.0 <= w <= 1.0) or math.isnan(w):
                    raise PlanError(f"plan.segments[{s.id}].allocation.{arm} = {w!r}: must be in [0, 1]")
                if arm in self.retired_arms and w != 0.0:
                    raise PlanError(
                        f"plan.segments[{s.id}].allocation.{arm} = {w!r}: arm {arm!r} is retired "
                        f"(plan.retired_arms), so its weight must be 0"
                    )
            seg_total = sum(s.allocation.values())
            if abs(seg_total - 1.0) > 1e-6:
                raise PlanError(f"plan.segments[{s.id}].allocation sums to {seg_total!r}: must sum to 1")

    # -- routing -----------------------------------------------------------------------------

    def segment_of(self, rows: pd.DataFrame) -> np.ndarray:
        """Segment id of each row (object array, row order).

        Raises
        ------
        PlanError
            When a row matches no segment or more than one (the rules must partition visitors).
        """
        out = np.empty(len(rows), dtype=object)
        hits = np.zeros(len(rows), dtype=np.int64)
        for s in self.segments:
            mask = s.rule.matches(rows)
            out[mask] = s.id
            hits += mask
        if len(rows) and (hits != 1).any():
            i = int(np.flatnonzero(hits != 1)[0])
            what = "no segment" if hits[i] == 0 else f"{hits[i]} segments"
            raise PlanError(
                f"row {i} matches {what} of the plan for {self.experiment_id} round {self.round}: "
                f"the segment rules must partition the visitors"
            )
        return out

    def segment_arm_probabilities(self) -> pd.DataFrame:
        """``p(arm | segment)`` for each segment: rows are segment ids, columns arms (0 for a retired arm)."""
        w_c, w_e, w_o = (self.weights[c] for c in CELLS)
        explore = np.array([w_e * share for share in self.explore_allocation.values()])
        table = np.array([[s.allocation[a] for a in self.arms] for s in self.segments]) * w_o + explore
        table[:, 0] += w_c
        return pd.DataFrame(table, index=pd.Index(self.segment_ids, name="segment_id"), columns=list(self.arms))

    def arm_probabilities(self, rows: pd.DataFrame) -> pd.DataFrame:
        """``p(arm | x)`` for every row and arm under this plan.

        Parameters
        ----------
        rows : DataFrame
            Must hold the covariates the segment rules test.

        Returns
        -------
        DataFrame
            Indexed like ``rows``, one column per arm (control first, retired arms at 0); each row
            sums to 1.
        """
        table = self.segment_arm_probabilities()
        seg = self.segment_of(rows)
        values = table.loc[seg].to_numpy() if len(rows) else np.empty((0, len(self.arms)))
        return pd.DataFrame(values, index=rows.index, columns=list(self.arms))

    def assignment_probabilities(self, rows: pd.DataFrame) -> np.ndarray:
        """Probability of the arm each row actually got (column ``arm``).

        A row of a retired arm gets 0: the plan could not have assigned it, which the sample-ratio
        and recorded-probability checks report.

        Raises
        ------
        PlanError
            When a row's ``arm`` is not an arm of the plan, or its covariates match no segment.
        """
        probs = self.arm_probabilities(rows)
        unknown = ~rows["arm"].isin(self.arms)
        if unknown.any():
            bad = rows["arm"][unknown].iloc[0]
            raise PlanError(f"column 'arm' has value {bad!r}, not an arm of the plan {list(self.arms)}")
        col = pd.Index(self.arms).get_indexer(rows["arm"])
        return probs.to_numpy()[np.arange(len(rows)), col]

    # -- serialisation -----------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The plan as JSON-ready data.

        ``retired_arms`` is written only when the plan retires an arm, with ``schema_version`` 2;
        a plan without one is written exactly as version 1 always was.
        """
        table = self.segment_arm_probabilities()
        d = {
            "schema_version": self.schema_version,
            "experiment_id": self.experiment_id,
            "round": int(self.round),
            "arms": list(self.arms),
            "cells": {c: float(self.weights[c]) for c in CELLS},
            "segments": [s.to_dict() for s in self.segments],
            "arm_probabilities": {sid: {a: float(table.loc[sid, a]) for a in self.arms} for sid in self.segment_ids},
            "lineage": _jsonable(dict(self.lineage)),
        }
        if self.retired_arms:
            d["retired_arms"] = list(self.retired_arms)
        return d

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): the same plan always gives the same bytes."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Plan:
        """Rebuild and validate a plan from :meth:`to_dict` output (schema version 1 or 2)."""
        version = d.get("schema_version")
        if version not in (1, 2) or isinstance(version, bool):
            raise PlanError(f"plan.schema_version = {version!r}: this Tyche reads versions 1 to {PLAN_SCHEMA_VERSION}")
        retired = d.get("retired_arms")
        # Each layout has one spelling, so that reading and writing a plan gives back its bytes.
        if version == 1 and retired is not None:
            raise PlanError(
                "plan.retired_arms is not a field of schema_version 1: a plan that retires arms is version 2"
            )
        if version == 2 and not (isinstance(retired, list) and retired):
            raise PlanError(
                f"plan.retired_arms = {retired!r}: schema_version 2 lists at least one retired arm "
                f"(a plan without retired arms is version 1)"
            )
        try:
            segments = tuple(
                PlanSegment(id=str(s["id"]), rule=Rule.from_dict(s["rule"]), allocation=dict(s["allocation"]))
                for s in d["segments"]
            )
            plan = cls(
                experiment_id=str(d["experiment_id"]),
                round=int(d["round"]),
                arms=tuple(d["arms"]),
                weights={c: float(w) for c, w in d["cells"].items()},
                segments=segments,
                lineage=dict(d.get("lineage", {})),
                retired_arms=tuple(retired or ()),
            )
        except KeyError as e:
            raise PlanError(f"plan JSON lacks field {e.args[0]!r}") from None
        return plan

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """Parse and validate a plan written by :meth:`to_json`."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise PlanError(f"plan JSON is not valid JSON: {e}") from None
        return cls.from_dict(d)


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _cell_weights(spec: ExperimentSpec) -> dict[str, float]:
    return {
        "control": spec.min_control_weight,
        "explore": spec.min_explore_weight,
        "optimized": spec.optimized_weight,
    }


def _retired(spec: ExperimentSpec) -> tuple[str, ...]:
    # In the order of the arms, whatever order the spec lists them in: one plan, one JSON.
    return tuple(a for a in spec.arms if a in spec.retired_arms)


def initial_plan(spec: ExperimentSpec) -> Plan:
    """The plan for round 1: no data yet, so the optimized cell is uniform over the active arms.

    A retired arm of the spec is in ``plan.arms`` with weight 0 everywhere (``plan.retired_arms``).

    Examples
    --------
    >>> from tyche_lib import spec_from_dict
    >>> spec = spec_from_dict({"id": "demo", "arms": ["a", "b"], "covariates": {},
    ...                        "metrics": {"primary": {"name": "y", "family": "binary"}}})
    >>> plan = initial_plan(spec)
    >>> plan.segment_arm_probabilities().round(3).to_dict("records")
    [{'a': 0.525, 'b': 0.475}]
    """
    k_active = len(spec.active_arms)
    allocation = {a: 0.0 if a in spec.retired_arms else 1.0 / k_active for a in spec.arms}
    return Plan(
        experiment_id=spec.id,
        round=1,
        arms=spec.arms,
        weights=_cell_weights(spec),
        segments=(PlanSegment(id="all", rule=Rule(), allocation=allocation),),
        lineage={"source": "initial_plan", "spec_hash": spec.content_hash()},
        retired_arms=_retired(spec),
    )


def build_plan(
    spec: ExperimentSpec,
    round: int,
    tree: Any,
    allocation: Mapping[str, Mapping[str, float]],
    lineage: Mapping[str, Any] | None = None,
) -> Plan:
    """Assemble the plan that governs ``round`` from a policy tree and its allocations.

    The plan has every arm of the spec (``plan.arms``), retires the spec's retired arms
    (``plan.retired_arms``: no explore share, no allocation) and routes an arm the spec added since
    the last plan through the explore cell at once.

    Parameters
    ----------
    spec : ExperimentSpec
        The spec in force for ``round``; its revision decides which arms are active.
    round : int
        The round the plan governs (the pipeline's round ``r`` publishes the plan for ``r + 1``).
    tree : PolicyTree
        Anything with ``.segments``, each having ``.id`` and ``.rule``.
    allocation : mapping
        ``{segment_id: {arm: weight}}`` over every arm of the spec, as returned by
        :func:`thompson_allocation` for a posterior fitted with this spec.
    lineage : mapping, optional

    Returns
    -------
    Plan

    Raises
    ------
    PlanError
        When the allocation's segments differ from the tree's, an allocation lacks an arm of the spec
        or names another, gives weight to a retired arm (the message names
        ``plan.segments[<id>].allocation.<arm>``), or is otherwise invalid.
    """
    seg_ids = [s.id for s in tree.segments]
    if set(seg_ids) != set(allocation):
        raise PlanError(f"allocation segments {sorted(allocation)} differ from the tree's segments {sorted(seg_ids)}")
    segments = tuple(
        PlanSegment(id=s.id, rule=s.rule, allocation={a: float(allocation[s.id][a]) for a in spec.arms})
        if set(allocation[s.id]) == set(spec.arms)
        else _raise_arms(s.id, allocation[s.id], spec.arms)
        for s in tree.segments
    )
    return Plan(
        experiment_id=spec.id,
        round=int(round),
        arms=spec.arms,
        weights=_cell_weights(spec),
        segments=segments,
        lineage=dict(lineage or {}),
        retired_arms=_retired(spec),
    )


def _raise_arms(seg_id: str, alloc: Mapping[str, float], arms: Sequence[str]):
    raise PlanError(f"allocation for segment {seg_id!r} has arms {sorted(alloc)}; the spec's arms are {list(arms)}")
