"""Experiment specification: config as code, one YAML file per experiment.

The spec is one declarative contract: pydantic models whose fields mirror the YAML file, block by
block (``cells:``, ``tree:``, ``posterior:``, ``metrics:``, ``decision:``, ``source:`` ...). Every
block is frozen and forbids keys it does not declare; ranges and allowed values live in the field
types. A key left empty in YAML (``epsilon:``) means "use the default", as if it were absent.

Every validation failure is one :class:`SpecError` whose ``field`` is the dotted path of the
offending key as written in the YAML file: list items by their position from 0
(``metrics.guardrails.0.direction``, ``arms.2``), covariates by their column name
(``covariates.device.type``), the whole document as ``<root>``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import yaml
from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails

from ._errors import SpecError

__all__ = [
    "SpecError",
    "Covariate",
    "Metric",
    "Guardrail",
    "SourceConfig",
    "DecisionSettings",
    "ExperimentSpec",
    "check_spec_revision",
    "load_spec",
    "spec_from_dict",
]

CovariateType = Literal["categorical", "boolean", "numeric"]
MetricFamily = Literal["binary", "continuous", "hurdle"]
GuardrailDirection = Literal["increase_is_bad", "decrease_is_bad"]
Status = Literal["draft", "running", "paused", "stopped", "shipped"]
COVARIATE_TYPES: tuple[str, ...] = get_args(CovariateType)
METRIC_FAMILIES: tuple[str, ...] = get_args(MetricFamily)
GUARDRAIL_DIRECTIONS: tuple[str, ...] = get_args(GuardrailDirection)
STATUSES: tuple[str, ...] = get_args(Status)
ID_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
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


# The validators below raise SpecError with ``field`` relative to the value they check ("" for the
# value itself); _spec_error puts the path pydantic records in front of it.


def _in_range(lo: float, hi: float) -> WrapValidator:
    """A closed range ``[lo, hi]`` for a strict number field; ``int`` bounds mean an integer field.

    One message states the kind of number and both bounds, whether the value is out of range or
    not a number at all (pydantic's own messages name only the bound that was crossed).
    """
    allowed = f"must be {'an integer' if isinstance(lo, int) else 'a number'} in [{lo}, {hi}]"

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            number = handler(value)
        except ValidationError:
            raise SpecError("", value, allowed) from None
        if not lo <= number <= hi:
            raise SpecError("", value, allowed)
        return number

    return WrapValidator(check)


def _scalar_to_str(value: Any) -> Any:
    """YAML reads ``arms: [0, 1]`` or ``levels: [yes, no]`` as numbers and booleans; they are names."""
    return str(value) if isinstance(value, (int, float)) else value


def _column_name(name: str) -> str:
    if not name.isidentifier():
        raise SpecError("", name, "must be a Python identifier (a column name)")
    if name in RESERVED_COLUMNS:
        raise SpecError("", name, f"must not be one of the reserved columns {RESERVED_COLUMNS}")
    return name


def _arm_name(name: str) -> str:
    if not name or "," in name or name.strip() != name:
        raise SpecError("", name, "an arm name must be non-empty, without commas or surrounding spaces")
    return name


def _identifier(name: str) -> str:
    if not name.isidentifier():
        raise SpecError("", name, "must name a numeric column of pre-period values (a Python identifier)")
    return name


def _iso_date(value: Any) -> Any:
    # YAML reads an unquoted 2026-11-23 as a date, a quoted one as a string; a timestamp is neither.
    if isinstance(value, _dt.date) and not isinstance(value, _dt.datetime):
        return value
    try:
        return _dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise SpecError("", value, "must be an ISO date, e.g. 2026-11-23") from None


def _cron(schedule: str) -> str:
    """Accept exactly the cron strings Dagster's schedules accept.

    Dagster refuses the others when it loads the code location, which would take every
    experiment's schedule down with the one bad spec.
    """
    allowed = "must be a five-field cron string (minute hour day-of-month month day-of-week), e.g. '0 6 * * *'"
    if not croniter.is_valid(schedule):
        raise SpecError("", schedule, allowed)
    fields, _ = croniter.expand(schedule)
    if len(fields) != 5:
        raise SpecError("", schedule, allowed)
    day, month = fields[2], fields[3]
    if month == [2] and len(day) == 1 and day[0] in (30, 31):
        raise SpecError("", schedule, "never fires: February has no 30th or 31st")
    return schedule


Share = Annotated[StrictFloat, _in_range(0.0, 1.0)]
Finite = Annotated[StrictFloat, Field(allow_inf_nan=False)]
NonNegative = Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False)]
ColumnName = Annotated[str, AfterValidator(_column_name)]
ArmName = Annotated[str, BeforeValidator(_scalar_to_str), AfterValidator(_arm_name)]
IsoDate = Annotated[_dt.date, BeforeValidator(_iso_date)]


class _Block(BaseModel):
    """One block of the spec: frozen, with no keys beyond its fields; an empty key means the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Fields the YAML file gives other than as a key of the block (not listed as allowed keys).
    _implicit: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        # Checked here rather than left to extra="forbid" so that the message lists the allowed keys.
        if isinstance(data, BaseModel):
            return data
        keys = {info.alias or name for name, info in cls.model_fields.items()}
        allowed = sorted(keys - cls._implicit)
        if not isinstance(data, Mapping):
            raise SpecError("", data, f"must be a mapping with the keys {allowed}")
        for key, value in data.items():
            if key not in keys:
                raise SpecError(str(key), value, f"unknown field; allowed fields are {allowed}")
        return {key: value for key, value in data.items() if value is not None}


class Covariate(_Block):
    """A visitor covariate the model and the policy tree may use.

    In YAML a covariate is an entry under ``covariates:``, keyed by its column name, whose value is
    its type (``returning: boolean``) or a mapping (``age: {type: numeric, buckets: 4}``).

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

    # The name is the covariate's key under ``covariates:``.
    _implicit: ClassVar[frozenset[str]] = frozenset({"name"})

    name: ColumnName
    type: CovariateType
    levels: tuple[Annotated[str, BeforeValidator(_scalar_to_str)], ...] | None = None
    buckets: Annotated[StrictInt, _in_range(2, 100)] | None = None
    minimum: Finite | None = None
    maximum: Finite | None = None

    @model_validator(mode="after")
    def _settings_fit_type(self) -> Covariate:
        if self.levels is not None:
            if self.type != "categorical":
                raise SpecError("levels", list(self.levels), "only a categorical covariate has levels")
            if len(self.levels) < 2 or len(set(self.levels)) != len(self.levels):
                raise SpecError("levels", list(self.levels), "must list at least two distinct levels")
        if self.buckets is not None and self.type != "numeric":
            raise SpecError("buckets", self.buckets, "only a numeric covariate can be bucketed")
        for bound in ("minimum", "maximum"):
            if getattr(self, bound) is not None and self.type != "numeric":
                raise SpecError(bound, getattr(self, bound), "only a numeric covariate has a range")
        return self


class Metric(_Block):
    """An outcome column and its family (``binary``, ``continuous`` or ``hurdle``).

    Attributes
    ----------
    name : str
        Column name in the round rows.
    family : {"binary", "continuous", "hurdle"}
    minimum, maximum : float, optional
        Allowed range of the outcome.
    """

    name: ColumnName
    family: MetricFamily
    minimum: Finite | None = None
    maximum: Finite | None = None


class Guardrail(Metric):
    """A metric that must not move the wrong way by more than ``tolerance`` (absolute).

    Attributes
    ----------
    direction : {"decrease_is_bad", "increase_is_bad"}
        Which way is the wrong way (default ``decrease_is_bad``).
    tolerance : float
        How far the wrong way is still acceptable, on the outcome scale (default 0).
    """

    direction: GuardrailDirection = "decrease_is_bad"
    tolerance: NonNegative = 0.0


class MetricSet(_Block):
    """The YAML block ``metrics:``: the primary metric, guardrails and secondary metrics."""

    primary: Metric
    guardrails: tuple[Guardrail, ...] = ()
    secondary: tuple[Metric, ...] = ()


class CellWeights(_Block):
    """The YAML block ``cells:``: weights of the control and explore cells (the optimized cell gets the rest)."""

    min_control_weight: Share = 0.05
    min_explore_weight: Share = 0.05

    @field_validator("min_control_weight")
    @classmethod
    def _control_stays(cls, weight: float) -> float:
        if weight <= 0:
            raise SpecError("", weight, "must be > 0: the control cell is never dropped")
        return weight

    @model_validator(mode="after")
    def _room_for_optimized(self) -> CellWeights:
        if self.min_control_weight + self.min_explore_weight >= 1:
            raise SpecError("", self.model_dump(), "min_control_weight + min_explore_weight must be < 1")
        return self


class TreeSettings(_Block):
    """The YAML block ``tree:``: policy-tree depth, smallest segment and split confidence."""

    max_depth: Annotated[StrictInt, _in_range(1, 4)] = 2
    min_segment_share: Annotated[StrictFloat, _in_range(0.001, 0.5)] = 0.05
    split_confidence: Share = 0.8

    @field_validator("split_confidence")
    @classmethod
    def _can_split(cls, confidence: float) -> float:
        if confidence >= 1:
            raise SpecError("", confidence, "must be < 1 (1 would never split); 0 keeps every split")
        return confidence


class PosteriorSettings(_Block):
    """The YAML block ``posterior:``: NUTS draws, tuning steps and chains."""

    draws: Annotated[StrictInt, _in_range(10, 100_000)] = 1000
    tune: Annotated[StrictInt, _in_range(10, 100_000)] = 1000
    chains: Annotated[StrictInt, _in_range(1, 16)] = 2


class SourceConfig(_Block):
    """Where a round's rows come from: ``kind`` names a registered source, ``options`` its settings.

    In YAML the options sit beside the kind: ``source: {kind: landing, path: landing}``.

    Parameters
    ----------
    kind : str
        A kind registered with :func:`register_source` (default ``landing``).
    options : mapping, optional
        Keyword arguments of that source's constructor.
    """

    kind: str = "landing"
    options: Mapping[str, Any] = Field(default_factory=dict)

    def __init__(self, kind: str = "landing", options: Mapping[str, Any] | None = None):
        fields: dict[str, Any] = {"kind": kind, "options": dict(options or {})}
        super().__init__(**fields)


class DecisionSettings(_Block):
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

    planned_visitors: Annotated[StrictInt, _in_range(1, 10**12)] = 100_000
    alpha: Annotated[StrictFloat, _in_range(1e-9, 0.5)] = 0.05
    fdr: Annotated[StrictFloat, _in_range(1e-9, 0.5)] = 0.05
    loss_threshold: NonNegative = 0.001
    prob_best: Share = 0.95
    sustained_rounds: Annotated[StrictInt, _in_range(1, 1000)] = 3
    stop_prob: Share = 0.95


def _name_covariate_error(error: ErrorDetails, names: list[Any]) -> InitErrorDetails:
    """Re-address an error in the i-th covariate to its column name, as the YAML file keys it."""
    index, *rest = error["loc"]
    loc = (names[int(index)], *rest) if rest != ["name"] else (names[int(index)],)
    details: InitErrorDetails = {"type": error["type"], "loc": loc, "input": error["input"]}
    if "ctx" in error:
        details["ctx"] = error["ctx"]
    return details


class ExperimentSpec(_Block):
    """Everything Tyche needs to know about one experiment: the YAML file, validated.

    The fields follow the file's blocks; the flat attributes callers use (``primary``,
    ``min_control_weight``, ``max_depth``, ``draws`` ...) read the blocks.

    Attributes
    ----------
    id : str
        Lower-case identifier, also the Dagster partition key.
    revision : int
        Revision of the spec (default 1). Changing the arms needs a higher revision; see
        :func:`check_spec_revision` for what a revision may change.
    arms : tuple of str
        Arm names, control first. Arms are append-only across revisions.
    retired_arms : tuple of str
        Arms that no longer get traffic (default none): each one of ``arms``, never the control,
        never un-retired in a later revision. They keep their place in ``arms`` so that rows and
        plans that name them stay readable.
    repeat_visitors : bool
        Whether a visitor may come back in a later round (default False: a visitor id seen in an
        earlier round of the experiment is refused by the quality check). When True, the analysis
        counts each visitor once, at their first exposure.
    covariates : tuple of Covariate
    metric_set : MetricSet
        The YAML block ``metrics:``; read through ``primary``, ``guardrails``, ``secondary`` and ``metrics``.
    cells : CellWeights
        Weights of the control and explore cells (default 0.05 each).
    epsilon : float
        Thompson safety floor (default 0.02): no arm below ``epsilon / K`` within a segment.
    tree : TreeSettings
        Policy-tree depth and the smallest segment, as a share of visitors. ``split_confidence``
        is the posterior probability a split needs to stand (default 0.8): in each of two sibling
        segments, the segment's leading arm must beat the sibling's leading arm with at least this
        probability, or the two are merged back (see :func:`fit_policy_tree`).
    posterior : PosteriorSettings
        Posterior sampling settings: ``draws``, ``tune``, ``chains``.
    decision : DecisionSettings
    source : SourceConfig
    schedule : str or None
        Five-field cron string of the round schedule.
    traffic_share : float
        Share of the audience's visitors the experiment enrols (default 1).
    audience : mapping
        Covariate name to the levels the experiment enrols (for conflict checks).
    layer, salt, owner : str or None
    status : {"draft", "running", "paused", "stopped", "shipped"}
    start_date, end_date : datetime.date or None
    pre_period : str or None
        Numeric column of pre-period values (CUPED).
    description : str
    """

    id: Annotated[str, Field(pattern=ID_PATTERN)]
    revision: Annotated[StrictInt, Field(ge=1)] = 1
    description: Annotated[str, BeforeValidator(_scalar_to_str)] = ""
    owner: str | None = None
    status: Status = "running"
    arms: tuple[ArmName, ...]
    retired_arms: tuple[ArmName, ...] = ()
    repeat_visitors: StrictBool = False
    covariates: tuple[Covariate, ...] = ()
    metric_set: MetricSet = Field(alias="metrics")
    cells: CellWeights = Field(default_factory=CellWeights)
    epsilon: Share = 0.02
    tree: TreeSettings = Field(default_factory=TreeSettings)
    posterior: PosteriorSettings = Field(default_factory=PosteriorSettings)
    decision: DecisionSettings = Field(default_factory=DecisionSettings)
    source: SourceConfig = Field(default_factory=SourceConfig)
    schedule: Annotated[str, AfterValidator(_cron)] | None = None
    traffic_share: Share = 1.0
    audience: Mapping[str, Any] = Field(default_factory=dict)
    layer: str | None = None
    salt: Annotated[str, BeforeValidator(_scalar_to_str)] | None = None
    start_date: IsoDate | None = None
    end_date: IsoDate | None = None
    pre_period: Annotated[str, AfterValidator(_identifier)] | None = None

    @field_validator("arms")
    @classmethod
    def _two_distinct_arms(cls, arms: tuple[str, ...]) -> tuple[str, ...]:
        if len(arms) < 2:
            raise SpecError("", list(arms), "must list at least two arms, control first")
        if len(set(arms)) != len(arms):
            raise SpecError("", list(arms), "arm names must be distinct")
        return arms

    @field_validator("covariates", mode="wrap")
    @classmethod
    def _covariates_by_name(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> tuple[Covariate, ...]:
        # YAML keys each covariate by its column name; the spec keeps them in order, named.
        if not isinstance(value, Mapping):
            raise SpecError("", value, "a mapping of column name to type, e.g. {device: categorical}")
        names = list(value)
        entries = []
        for name, entry in value.items():
            if isinstance(entry, str):
                entry = {"type": entry}
            if not isinstance(entry, Mapping):
                raise SpecError(
                    str(name),
                    entry,
                    f"a covariate is a type {COVARIATE_TYPES} or a mapping with 'type' and its settings",
                )
            if "name" in entry:
                raise SpecError(f"{name}.name", entry["name"], "unknown field; a covariate is named by its key")
            entries.append({"name": name, **entry})
        try:
            return handler(entries)
        except ValidationError as e:
            raise ValidationError.from_exception_data(
                e.title, [_name_covariate_error(error, names) for error in e.errors()]
            ) from None

    @field_validator("source", mode="before")
    @classmethod
    def _source_options_beside_kind(cls, value: Any) -> Any:
        if isinstance(value, SourceConfig):
            return value
        if not isinstance(value, Mapping):
            raise SpecError("", value, "a mapping with 'kind' (e.g. landing or sql) and the source's settings")
        return {"kind": value.get("kind", "landing"), "options": {k: v for k, v in value.items() if k != "kind"}}

    @field_validator("source")
    @classmethod
    def _source_options_fit(cls, source: SourceConfig) -> SourceConfig:
        # Imported here: _sources imports this module. A kind not registered yet (a custom source
        # registered after the spec is read) is checked when the source is built.
        from ._sources import SOURCE_KINDS

        source_class = SOURCE_KINDS.get(source.kind)
        if source_class is None:
            return source
        parameters = inspect.signature(source_class).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return source
        # ``root`` is the project folder, passed by the pipeline, never by the spec.
        allowed = sorted({"kind", *(p.name for p in parameters if p.name != "root")})
        for key in source.options:
            if key not in allowed:
                # The value is not echoed: source options may carry credentials.
                raise SpecError(key, key, f"unknown field; source '{source.kind}' accepts {allowed}")
        return source

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        names = [m.name for m in self.metrics] + list(self.covariate_names)
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise SpecError("metrics", duplicated[0], "metric and covariate column names must be distinct")
        for i, arm in enumerate(self.retired_arms):
            if arm not in self.arms:
                raise SpecError(f"retired_arms.{i}", arm, f"must be one of the arms {list(self.arms)}")
            if arm == self.control:
                raise SpecError(f"retired_arms.{i}", arm, "the control arm is never retired")
            if arm in self.retired_arms[:i]:
                raise SpecError(f"retired_arms.{i}", arm, "is listed twice")
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise SpecError(
                "end_date", self.end_date.isoformat(), f"must not be before start_date {self.start_date.isoformat()}"
            )
        return self

    @property
    def control(self) -> str:
        """The control arm (always the first)."""
        return self.arms[0]

    @property
    def treatments(self) -> tuple[str, ...]:
        """Every arm but the control, retired ones included."""
        return self.arms[1:]

    @property
    def active_arms(self) -> tuple[str, ...]:
        """The arms that still get traffic: ``arms`` minus ``retired_arms``, control first."""
        return tuple(a for a in self.arms if a not in self.retired_arms)

    @property
    def covariate_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.covariates)

    @property
    def primary(self) -> Metric:
        """The metric the allocation optimises."""
        return self.metric_set.primary

    @property
    def guardrails(self) -> tuple[Guardrail, ...]:
        return self.metric_set.guardrails

    @property
    def secondary(self) -> tuple[Metric, ...]:
        return self.metric_set.secondary

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """Primary, guardrails and secondary metrics, in that order."""
        return (self.primary, *self.guardrails, *self.secondary)

    @property
    def min_control_weight(self) -> float:
        return self.cells.min_control_weight

    @property
    def min_explore_weight(self) -> float:
        return self.cells.min_explore_weight

    @property
    def optimized_weight(self) -> float:
        return 1.0 - (self.min_control_weight + self.min_explore_weight)

    @property
    def max_depth(self) -> int:
        return self.tree.max_depth

    @property
    def min_segment_share(self) -> float:
        return self.tree.min_segment_share

    @property
    def split_confidence(self) -> float:
        return self.tree.split_confidence

    @property
    def draws(self) -> int:
        return self.posterior.draws

    @property
    def tune(self) -> int:
        return self.posterior.tune

    @property
    def chains(self) -> int:
        return self.posterior.chains

    def covariate(self, name: str) -> Covariate:
        """The covariate named ``name``; ``KeyError`` when there is none."""
        for c in self.covariates:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data, flat: one key per attribute, the source's options beside its kind."""
        return {
            "id": self.id,
            "revision": self.revision,
            "arms": list(self.arms),
            "retired_arms": list(self.retired_arms),
            "repeat_visitors": self.repeat_visitors,
            "covariates": [c.model_dump() for c in self.covariates],
            "primary": self.primary.model_dump(),
            "guardrails": [g.model_dump() for g in self.guardrails],
            "secondary": [m.model_dump() for m in self.secondary],
            **self.cells.model_dump(),
            "epsilon": self.epsilon,
            **self.tree.model_dump(),
            **self.posterior.model_dump(),
            "source": {"kind": self.source.kind, **dict(self.source.options)},
            "schedule": self.schedule,
            "traffic_share": self.traffic_share,
            "audience": dict(self.audience),
            "layer": self.layer,
            "salt": self.salt,
            "owner": self.owner,
            "status": self.status,
            "start_date": self.start_date.isoformat() if self.start_date else None,
            "end_date": self.end_date.isoformat() if self.end_date else None,
            "pre_period": self.pre_period,
            "description": self.description,
            "decision": self.decision.model_dump(),
        }

    def revision_snapshot(self) -> dict[str, Any]:
        """What :func:`check_spec_revision` compares, as a mapping :func:`spec_from_dict` reads back.

        Stored with every round received, so that a later spec can be checked against the one the
        experiment's history was collected under.

        Examples
        --------
        >>> spec = spec_from_dict({"id": "demo", "arms": ["a", "b"], "covariates": {"device": "categorical"},
        ...     "metrics": {"primary": {"name": "converted", "family": "binary"}}})
        >>> check_spec_revision(spec_from_dict(spec.revision_snapshot()), spec)
        >>> spec.revision_snapshot()["arms"]
        ['a', 'b']
        """

        def present(d: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in d.items() if v is not None}

        return {
            "id": self.id,
            "revision": self.revision,
            "arms": list(self.arms),
            "retired_arms": list(self.retired_arms),
            "covariates": {
                c.name: {k: v for k, v in present(c.model_dump(mode="json")).items() if k != "name"}
                for c in self.covariates
            },
            "metrics": {"primary": present(self.primary.model_dump(mode="json"))},
        }

    def content_hash(self) -> str:
        """SHA-256 of the spec's canonical JSON (sorted keys): recorded in plan lineage."""
        d = self.to_dict()
        # Plans recorded before revisions existed carry hashes without these two keys; a spec that
        # leaves them at their defaults hashes as it did then.
        if self.revision == 1 and not self.retired_arms:
            del d["revision"], d["retired_arms"]
        if not self.repeat_visitors:
            del d["repeat_visitors"]
        payload = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(payload).hexdigest()


def _spec_error(error: ValidationError, source: str | None) -> SpecError:
    """The first error of a validation, as a :class:`SpecError` addressed by its YAML path."""
    detail = error.errors()[0]
    path = [str(part) for part in detail["loc"]]
    cause = detail.get("ctx", {}).get("error")
    if isinstance(cause, SpecError):
        # Raised by one of the validators above, relative to the block being validated.
        field = ".".join([*path, cause.field] if cause.field else path)
        return SpecError(field or "<root>", cause.value, cause.allowed, source)
    kind = detail["type"]
    if kind == "missing":
        return SpecError(".".join(path), None, "this field is required", source)
    if kind in ("tuple_type", "list_type"):
        allowed = "must be a list"
    elif kind in ("dict_type", "mapping_type"):
        allowed = "must be a mapping"
    elif kind == "string_pattern_mismatch":
        allowed = f"must match the pattern {detail['ctx']['pattern']}"
    else:
        allowed = detail["msg"].replace("Input should be", "must be", 1)
    return SpecError(".".join(path) or "<root>", detail["input"], allowed, source)


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
        Naming the field (its dotted YAML path), the value and what is allowed.

    Examples
    --------
    >>> spec = spec_from_dict({
    ...     "id": "checkout", "arms": ["control", "green"],
    ...     "covariates": {"device": "categorical"},
    ...     "metrics": {"primary": {"name": "converted", "family": "binary"}}})
    >>> spec.control, spec.optimized_weight
    ('control', 0.9)
    >>> spec_from_dict({
    ...     "id": "checkout", "arms": ["control", "green"], "posterior": {"draw": 50},
    ...     "metrics": {"primary": {"name": "converted", "family": "binary"}}})
    Traceback (most recent call last):
    ...
    tyche_lib.core._errors.SpecError: invalid spec field 'posterior.draw' = 50: unknown field; allowed fields are ['chains', 'draws', 'tune']
    """
    try:
        return ExperimentSpec.model_validate(d)
    except ValidationError as e:
        raise _spec_error(e, source) from None


def check_spec_revision(previous: ExperimentSpec, current: ExperimentSpec) -> None:
    """Refuse a new version of a spec that would change what the recorded rounds mean.

    Rules, checked in this order:

    - both are the same experiment (``id``) and the control arm (``arms.0``) never changes;
    - ``revision`` never goes down;
    - ``covariates`` and the primary metric never change, not even with a new revision: the
      model and the recorded rows depend on them, so such a change is a new experiment id;
    - arms are append-only: existing arms keep their order and names; new arms may be appended.
      To stop an arm, retire it (``retired_arms``) rather than removing or renaming it;
    - a retired arm is never un-retired;
    - a change to ``arms`` or ``retired_arms`` needs a higher ``revision`` than the previous one.

    Any other field (weights, epsilon, decision settings, schedule ...) may change freely.

    Parameters
    ----------
    previous : ExperimentSpec
        The spec in force.
    current : ExperimentSpec
        The spec that would replace it.

    Raises
    ------
    SpecError
        Naming the field that may not change this way and what to do instead.

    Examples
    --------
    >>> base = {"id": "demo", "arms": ["control", "a"], "metrics": {"primary": {"name": "y", "family": "binary"}}}
    >>> v1 = spec_from_dict(base)
    >>> check_spec_revision(v1, spec_from_dict({**base, "revision": 2, "arms": ["control", "a", "b"]}))
    >>> check_spec_revision(v1, spec_from_dict({**base, "arms": ["control", "a", "b"]}))
    Traceback (most recent call last):
    ...
    tyche_lib.core._errors.SpecError: invalid spec field 'arms' = ['control', 'a', 'b']: changed without a new revision; declare revision: 2 to change it
    """
    if current.id != previous.id:
        raise SpecError("id", current.id, f"a revision keeps the experiment id '{previous.id}'")
    if current.control != previous.control:
        raise SpecError(
            "arms.0",
            current.control,
            f"the control arm never changes (it is '{previous.control}'); start a new experiment id",
        )
    if current.revision < previous.revision:
        raise SpecError(
            "revision", current.revision, f"must not be lower than the previous revision {previous.revision}"
        )
    fixed = "never changes within an experiment, not even with a new revision: start a new experiment id"
    if current.covariates != previous.covariates:
        raise SpecError("covariates", list(current.covariate_names), f"{fixed} (was {list(previous.covariate_names)})")
    if current.primary != previous.primary:
        raise SpecError("metrics.primary", current.primary.model_dump(), fixed)
    for i, arm in enumerate(previous.arms):
        if i >= len(current.arms) or current.arms[i] != arm:
            raise SpecError(
                f"arms.{i}",
                current.arms[i] if i < len(current.arms) else None,
                f"arms are append-only: '{arm}' stays at position {i}; retire an arm (retired_arms) "
                "instead of removing, reordering or renaming it",
            )
    for arm in previous.retired_arms:
        if arm not in current.retired_arms:
            raise SpecError(
                "retired_arms", list(current.retired_arms), f"'{arm}' was retired; a retired arm is never un-retired"
            )
    if current.revision == previous.revision:
        for field in ("arms", "retired_arms"):
            if getattr(current, field) != getattr(previous, field):
                raise SpecError(
                    field,
                    list(getattr(current, field)),
                    f"changed without a new revision; declare revision: {previous.revision + 1} to change it",
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

    Examples
    --------
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "demo.yaml"
    >>> _ = path.write_text("id: demo\\narms: [control, a]\\nmetrics: {primary: {name: y, family: binary}}\\n")
    >>> load_spec(path).arms
    ('control', 'a')
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpecError("<yaml>", str(e).splitlines()[0], "the file must be valid YAML", str(path)) from None
    return spec_from_dict(data, source=str(path))
