"""Experiment specification: config as code, one YAML file per experiment."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ._errors import SpecError

__all__ = [
    "SpecError",
    "Covariate",
    "Metric",
    "Guardrail",
    "SourceConfig",
    "DecisionSettings",
    "ExperimentSpec",
    "load_spec",
    "spec_from_dict",
]

COVARIATE_TYPES = ("categorical", "boolean", "numeric")
METRIC_FAMILIES = ("binary", "continuous", "hurdle")
GUARDRAIL_DIRECTIONS = ("increase_is_bad", "decrease_is_bad")
_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Columns every round row carries; a covariate or metric may not reuse these names.
RESERVED_COLUMNS = (
    "experiment_id",
    "round",
    "visitor_id",
    "assigned_at",
    "cell",
    "segment_id",
    "arm",
    "assignment_prob",
)


@dataclass(frozen=True)
class Covariate:
    """A visitor covariate the model and the policy tree may use.

    Attributes
    ----------
    name : str
        Column name in the round rows.
    type : {"categorical", "boolean", "numeric"}
    levels : tuple of str, optional
        Known levels of a categorical covariate (the first is the model's reference level).
        Rows with another level fail the quality check.
    buckets : int, optional
        For a numeric covariate: cut into this many quantile buckets so a binary outcome can
        be fitted on sufficient statistics (counts per covariate profile × arm).
    minimum, maximum : float, optional
        Allowed range of a numeric covariate.
    """

    name: str
    type: str
    levels: tuple[str, ...] | None = None
    buckets: int | None = None
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Metric:
    """An outcome column and its family (``binary``, ``continuous`` or ``hurdle``)."""

    name: str
    family: str
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Guardrail(Metric):
    """A metric that must not move the wrong way by more than ``tolerance`` (absolute)."""

    direction: str = "decrease_is_bad"
    tolerance: float = 0.0


@dataclass(frozen=True)
class SourceConfig:
    """Where a round's rows come from: ``kind`` names a registered source, ``options`` its settings."""

    kind: str = "landing"
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DecisionSettings:
    """How a round report measures and decides (YAML block ``decision:``).

    Attributes
    ----------
    planned_visitors : int
        Expected total visitors, fixed before the experiment starts: the ``t_star`` at which the
        anytime-valid confidence sequences are tightest.
    alpha : float
        Level of the confidence sequences (default 0.05).
    fdr : float
        Benjamini–Hochberg false discovery rate across metrics × treatments (default 0.05).
    loss_threshold : float
        Largest expected loss per visitor (outcome scale) accepted when shipping.
    prob_best : float
        Smallest P(best) of the arm to ship.
    sustained_rounds : int
        Rounds in a row the ship criteria must hold.
    stop_prob : float
        A treatment with P(worse than control) at least this, overall and in every segment, is stopped.
    """

    planned_visitors: int = 100_000
    alpha: float = 0.05
    fdr: float = 0.05
    loss_threshold: float = 0.001
    prob_best: float = 0.95
    sustained_rounds: int = 3
    stop_prob: float = 0.95


@dataclass(frozen=True)
class ExperimentSpec:
    """Everything Tyche needs to know about one experiment.

    Attributes
    ----------
    id : str
        Lower-case identifier, also the Dagster partition key.
    arms : tuple of str
        Arm names, control first.
    covariates : tuple of Covariate
    primary : Metric
        The metric the allocation optimises.
    guardrails, secondary : tuple of Metric
    min_control_weight, min_explore_weight : float
        Weights of the control and explore cells (default 0.05 each).
    epsilon : float
        Thompson safety floor (default 0.02): no arm below ``epsilon / K`` within a segment.
    max_depth, min_segment_share : int, float
        Policy-tree depth and the smallest segment, as a share of visitors.
    split_confidence : float
        Posterior probability a policy-tree split needs to stand (default 0.8): in each of two
        sibling segments, the segment's leading arm must beat the sibling's leading arm with at
        least this probability, or the two are merged back (see :func:`fit_policy_tree`).
    draws, tune, chains : int
        Posterior sampling settings.
    """

    id: str
    arms: tuple[str, ...]
    covariates: tuple[Covariate, ...]
    primary: Metric
    guardrails: tuple[Guardrail, ...] = ()
    secondary: tuple[Metric, ...] = ()
    min_control_weight: float = 0.05
    min_explore_weight: float = 0.05
    epsilon: float = 0.02
    max_depth: int = 2
    min_segment_share: float = 0.05
    split_confidence: float = 0.8
    draws: int = 1000
    tune: int = 1000
    chains: int = 2
    source: SourceConfig = field(default_factory=SourceConfig)
    schedule: str | None = None
    traffic_share: float = 1.0
    audience: Mapping[str, Any] = field(default_factory=dict)
    layer: str | None = None
    salt: str | None = None
    owner: str | None = None
    status: str = "running"
    start_date: _dt.date | None = None
    end_date: _dt.date | None = None
    pre_period: str | None = None
    description: str = ""
    decision: DecisionSettings = field(default_factory=DecisionSettings)

    @property
    def control(self) -> str:
        """The control arm (always the first)."""
        return self.arms[0]

    @property
    def treatments(self) -> tuple[str, ...]:
        return self.arms[1:]

    @property
    def covariate_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.covariates)

    @property
    def optimized_weight(self) -> float:
        return 1.0 - (self.min_control_weight + self.min_explore_weight)

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return (self.primary, *self.guardrails, *self.secondary)

    def covariate(self, name: str) -> Covariate:
        for c in self.covariates:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["source"] = {"kind": self.source.kind, **dict(self.source.options)}
        for k in ("start_date", "end_date"):
            if d[k] is not None:
                d[k] = d[k].isoformat()
        return d

    def content_hash(self) -> str:
        """SHA-256 of the spec's canonical JSON: recorded in plan lineage."""
        payload = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(payload).hexdigest()


def _require(d: Mapping, key: str, path: str) -> Any:
    if key not in d or d[key] is None:
        raise SpecError(f"{path}{key}", None, "this field is required")
    return d[key]


def _number(value: Any, field_: str, lo: float, hi: float, *, integer: bool = False) -> Any:
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not (lo <= value <= hi):
        raise SpecError(field_, value, f"must be {kind} in [{lo}, {hi}]")
    return value


def _metric(d: Any, path: str, cls=Metric) -> Metric:
    if isinstance(d, str):
        raise SpecError(path, d, "a metric is a mapping with 'name' and 'family'")
    if not isinstance(d, Mapping):
        raise SpecError(path, d, "a metric is a mapping with 'name' and 'family'")
    name = _require(d, "name", path + ".")
    if not isinstance(name, str) or not name.isidentifier():
        raise SpecError(f"{path}.name", name, "must be a Python identifier (a column name)")
    if name in RESERVED_COLUMNS:
        raise SpecError(f"{path}.name", name, f"must not be one of the reserved columns {RESERVED_COLUMNS}")
    family = _require(d, "family", path + ".")
    if family not in METRIC_FAMILIES:
        raise SpecError(f"{path}.family", family, f"must be one of {METRIC_FAMILIES}")
    kwargs: dict[str, Any] = dict(name=name, family=family)
    for bound in ("minimum", "maximum"):
        if d.get(bound) is not None:
            kwargs[bound] = float(_number(d[bound], f"{path}.{bound}", -1e300, 1e300))
    if cls is Guardrail:
        direction = d.get("direction", "decrease_is_bad")
        if direction not in GUARDRAIL_DIRECTIONS:
            raise SpecError(f"{path}.direction", direction, f"must be one of {GUARDRAIL_DIRECTIONS}")
        kwargs["direction"] = direction
        kwargs["tolerance"] = float(_number(d.get("tolerance", 0.0), f"{path}.tolerance", 0, 1e300))
    unknown = set(d) - {"name", "family", "minimum", "maximum", "direction", "tolerance"}
    if unknown:
        raise SpecError(f"{path}.{sorted(unknown)[0]}", d[sorted(unknown)[0]], "unknown field")
    return cls(**kwargs)


def _covariate(name: Any, d: Any, path: str) -> Covariate:
    if not isinstance(name, str) or not name.isidentifier():
        raise SpecError(path, name, "a covariate name must be a Python identifier (a column name)")
    if name in RESERVED_COLUMNS:
        raise SpecError(path, name, f"must not be one of the reserved columns {RESERVED_COLUMNS}")
    if isinstance(d, str):
        d = {"type": d}
    if not isinstance(d, Mapping):
        raise SpecError(path, d, "a covariate is a type name or a mapping with 'type'")
    ctype = d.get("type")
    if ctype not in COVARIATE_TYPES:
        raise SpecError(f"{path}.type", ctype, f"must be one of {COVARIATE_TYPES}")
    levels = d.get("levels")
    if levels is not None:
        if ctype != "categorical":
            raise SpecError(f"{path}.levels", levels, "only a categorical covariate has levels")
        if not isinstance(levels, (list, tuple)) or len(levels) < 2 or len(set(map(str, levels))) != len(levels):
            raise SpecError(f"{path}.levels", levels, "must list at least two distinct levels")
        levels = tuple(str(v) for v in levels)
    buckets = d.get("buckets")
    if buckets is not None:
        if ctype != "numeric":
            raise SpecError(f"{path}.buckets", buckets, "only a numeric covariate can be bucketed")
        _number(buckets, f"{path}.buckets", 2, 100, integer=True)
    bounds = {}
    for bound in ("minimum", "maximum"):
        if d.get(bound) is not None:
            if ctype != "numeric":
                raise SpecError(f"{path}.{bound}", d[bound], "only a numeric covariate has a range")
            bounds[bound] = float(_number(d[bound], f"{path}.{bound}", -1e300, 1e300))
    unknown = set(d) - {"type", "levels", "buckets", "minimum", "maximum"}
    if unknown:
        key = sorted(unknown)[0]
        raise SpecError(f"{path}.{key}", d[key], "unknown field")
    return Covariate(name=name, type=ctype, levels=levels, buckets=buckets, **bounds)


def _date(value: Any, field_: str) -> _dt.date | None:
    if value is None:
        return None
    if isinstance(value, _dt.date):
        return value
    try:
        return _dt.date.fromisoformat(str(value))
    except ValueError:
        raise SpecError(field_, value, "must be an ISO date, e.g. 2026-11-23") from None


_TOP_LEVEL = {
    "id",
    "arms",
    "covariates",
    "metrics",
    "cells",
    "epsilon",
    "tree",
    "posterior",
    "source",
    "schedule",
    "traffic_share",
    "audience",
    "layer",
    "salt",
    "owner",
    "status",
    "start_date",
    "end_date",
    "pre_period",
    "description",
    "decision",
}
STATUSES = ("draft", "running", "paused", "stopped", "shipped")


def spec_from_dict(d: Mapping[str, Any], source: str | None = None) -> ExperimentSpec:
    """Validate a mapping (parsed YAML) into an :class:`ExperimentSpec`.

    Parameters
    ----------
    d : mapping
        The parsed spec.
    source : str, optional
        The file it came from, quoted in error messages.

    Returns
    -------
    ExperimentSpec

    Raises
    ------
    SpecError
        Naming the field, the value and what is allowed.

    Examples
    --------
    >>> spec = spec_from_dict({
    ...     "id": "checkout", "arms": ["control", "green"],
    ...     "covariates": {"device": "categorical"},
    ...     "metrics": {"primary": {"name": "converted", "family": "binary"}}})
    >>> spec.control, spec.optimized_weight
    ('control', 0.9)
    """
    try:
        return _spec_from_dict(d)
    except SpecError as e:
        raise e.with_source(source) if source else e


def _spec_from_dict(d: Mapping[str, Any]) -> ExperimentSpec:
    if not isinstance(d, Mapping):
        raise SpecError("<root>", d, "a spec is a YAML mapping")
    unknown = set(d) - _TOP_LEVEL
    if unknown:
        key = sorted(unknown)[0]
        raise SpecError(key, d[key], f"unknown field; allowed fields are {sorted(_TOP_LEVEL)}")
    exp_id = _require(d, "id", "")
    if not isinstance(exp_id, str) or not _ID_PATTERN.match(exp_id):
        raise SpecError("id", exp_id, "must match [a-z][a-z0-9_]* (at most 63 characters)")
    arms = _require(d, "arms", "")
    if not isinstance(arms, (list, tuple)) or len(arms) < 2:
        raise SpecError("arms", arms, "must list at least two arms, control first")
    arms = tuple(str(a) for a in arms)
    if len(set(arms)) != len(arms):
        raise SpecError("arms", list(arms), "arm names must be distinct")
    for a in arms:
        if not a or "," in a or a.strip() != a:
            raise SpecError("arms", a, "an arm name must be non-empty, without commas or surrounding spaces")
    covs = d.get("covariates") or {}
    if not isinstance(covs, Mapping):
        raise SpecError("covariates", covs, "a mapping of column name to type")
    covariates = tuple(_covariate(k, v, f"covariates.{k}") for k, v in covs.items())
    metrics = _require(d, "metrics", "")
    if not isinstance(metrics, Mapping):
        raise SpecError("metrics", metrics, "a mapping with 'primary', optional 'guardrails' and 'secondary'")
    primary = _metric(_require(metrics, "primary", "metrics."), "metrics.primary")
    guardrails = tuple(
        _metric(g, f"metrics.guardrails[{i}]", Guardrail) for i, g in enumerate(metrics.get("guardrails") or [])
    )
    secondary = tuple(_metric(m, f"metrics.secondary[{i}]") for i, m in enumerate(metrics.get("secondary") or []))
    names = [m.name for m in (primary, *guardrails, *secondary)] + [c.name for c in covariates]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SpecError("metrics", dup[0], "metric and covariate column names must be distinct")

    cells = d.get("cells") or {}
    w_c = float(_number(cells.get("min_control_weight", 0.05), "cells.min_control_weight", 0.0, 1.0))
    w_e = float(_number(cells.get("min_explore_weight", 0.05), "cells.min_explore_weight", 0.0, 1.0))
    if w_c <= 0:
        raise SpecError("cells.min_control_weight", w_c, "must be > 0: the control cell is never dropped")
    if w_c + w_e >= 1:
        raise SpecError("cells", dict(cells), "min_control_weight + min_explore_weight must be < 1")
    epsilon = float(_number(d.get("epsilon", 0.02), "epsilon", 0.0, 1.0))
    tree = d.get("tree") or {}
    if not isinstance(tree, Mapping):
        raise SpecError("tree", tree, "a mapping with max_depth, min_segment_share and split_confidence")
    unknown_tree = sorted(set(tree) - {"max_depth", "min_segment_share", "split_confidence"})
    if unknown_tree:
        raise SpecError(
            f"tree.{unknown_tree[0]}",
            tree[unknown_tree[0]],
            "unknown field; allowed: max_depth, min_segment_share, split_confidence",
        )
    max_depth = _number(tree.get("max_depth", 2), "tree.max_depth", 1, 4, integer=True)
    min_share = float(_number(tree.get("min_segment_share", 0.05), "tree.min_segment_share", 0.001, 0.5))
    split_confidence = float(_number(tree.get("split_confidence", 0.8), "tree.split_confidence", 0.0, 1.0))
    if split_confidence >= 1:
        raise SpecError(
            "tree.split_confidence", split_confidence, "must be < 1 (1 would never split); 0 keeps every split"
        )
    post = d.get("posterior") or {}
    draws = _number(post.get("draws", 1000), "posterior.draws", 10, 100_000, integer=True)
    tune = _number(post.get("tune", 1000), "posterior.tune", 10, 100_000, integer=True)
    chains = _number(post.get("chains", 2), "posterior.chains", 1, 16, integer=True)

    src = d.get("source") or {"kind": "landing"}
    if not isinstance(src, Mapping) or not isinstance(src.get("kind"), str):
        raise SpecError("source", src, "a mapping with 'kind' (e.g. landing or sql) and its settings")
    source = SourceConfig(kind=src["kind"], options={k: v for k, v in src.items() if k != "kind"})

    schedule = d.get("schedule")
    if schedule is not None and (not isinstance(schedule, str) or len(schedule.split()) != 5):
        raise SpecError("schedule", schedule, "must be a five-field cron string, e.g. '0 6 * * *'")
    traffic = float(_number(d.get("traffic_share", 1.0), "traffic_share", 0.0, 1.0))
    audience = d.get("audience") or {}
    if not isinstance(audience, Mapping):
        raise SpecError("audience", audience, "a mapping of covariate name to allowed levels")
    status = d.get("status", "running")
    if status not in STATUSES:
        raise SpecError("status", status, f"must be one of {STATUSES}")
    start, end = _date(d.get("start_date"), "start_date"), _date(d.get("end_date"), "end_date")
    if start and end and end < start:
        raise SpecError("end_date", end.isoformat(), f"must not be before start_date {start.isoformat()}")
    pre = d.get("pre_period")
    if pre is not None and (not isinstance(pre, str) or not pre.isidentifier()):
        raise SpecError("pre_period", pre, "must name a numeric column of pre-period values")
    decision = _decision(d.get("decision") or {})
    return ExperimentSpec(
        decision=decision,
        id=exp_id,
        arms=arms,
        covariates=covariates,
        primary=primary,
        guardrails=guardrails,
        secondary=secondary,
        min_control_weight=w_c,
        min_explore_weight=w_e,
        epsilon=epsilon,
        max_depth=max_depth,
        min_segment_share=min_share,
        split_confidence=split_confidence,
        draws=draws,
        tune=tune,
        chains=chains,
        source=source,
        schedule=schedule,
        traffic_share=traffic,
        audience=dict(audience),
        layer=d.get("layer"),
        salt=str(d["salt"]) if d.get("salt") is not None else None,
        owner=d.get("owner"),
        status=status,
        start_date=start,
        end_date=end,
        pre_period=pre,
        description=str(d.get("description", "")),
    )


def _decision(d: Any) -> DecisionSettings:
    if not isinstance(d, Mapping):
        raise SpecError("decision", d, "a mapping of decision settings")
    unknown = set(d) - set(DecisionSettings.__dataclass_fields__)
    if unknown:
        key = sorted(unknown)[0]
        raise SpecError(
            f"decision.{key}", d[key], f"unknown field; allowed: {sorted(DecisionSettings.__dataclass_fields__)}"
        )
    defaults = DecisionSettings()
    return DecisionSettings(
        planned_visitors=_number(
            d.get("planned_visitors", defaults.planned_visitors), "decision.planned_visitors", 1, 10**12, integer=True
        ),
        alpha=float(_number(d.get("alpha", defaults.alpha), "decision.alpha", 1e-9, 0.5)),
        fdr=float(_number(d.get("fdr", defaults.fdr), "decision.fdr", 1e-9, 0.5)),
        loss_threshold=float(
            _number(d.get("loss_threshold", defaults.loss_threshold), "decision.loss_threshold", 0.0, 1e300)
        ),
        prob_best=float(_number(d.get("prob_best", defaults.prob_best), "decision.prob_best", 0.0, 1.0)),
        sustained_rounds=_number(
            d.get("sustained_rounds", defaults.sustained_rounds), "decision.sustained_rounds", 1, 1000, integer=True
        ),
        stop_prob=float(_number(d.get("stop_prob", defaults.stop_prob), "decision.stop_prob", 0.0, 1.0)),
    )


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate one experiment spec from a YAML file.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    ExperimentSpec

    Raises
    ------
    SpecError
        When the file is not valid YAML or a field is invalid; the message starts with the path.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpecError("<yaml>", str(e).splitlines()[0], "the file must be valid YAML", str(path)) from None
    return spec_from_dict(data, source=str(path))
