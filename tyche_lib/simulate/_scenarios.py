"""Scenarios with a known ground truth, and the router that simulates a round under a plan."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from ..core._errors import RowsError
from ..core._plans import CELLS, Plan
from ..core._rows import ROW_COLUMNS
from ..core._spec import COVARIATE_TYPES, METRIC_FAMILIES, ExperimentSpec, spec_from_dict

__all__ = [
    "CovariateDistribution",
    "MetricTruth",
    "GuardrailTruth",
    "Scenario",
    "simulate_round",
    "true_contrasts",
    "true_best_arm",
    "no_heterogeneity",
    "segment_flip",
    "hurdle_revenue",
    "continuous",
    "SCENARIOS",
]

# A function of (covariates frame, arm name) returning one value per row (or a scalar).
RowFunction = Callable[[pd.DataFrame, str], Any]
# First assigned_at of round 1 when the caller gives no start; round r starts (r - 1) days later.
DEFAULT_START = pd.Timestamp("2026-01-05T00:00:00Z")
# Contrasts within this of zero count as ties (which go to control) in true_best_arm.
_TIE_TOLERANCE = 1e-12


# -- describing the truth -------------------------------------------------------------------------


@dataclass(frozen=True)
class CovariateDistribution:
    """How one visitor covariate is distributed in the simulated population.

    Attributes
    ----------
    name : str
        Column name.
    type : {"categorical", "boolean", "numeric"}
    levels : tuple of str
        Categorical levels (listed in the spec, first is the model's reference level).
    weights : tuple of float, optional
        Categorical level probabilities (default uniform).
    p_true : float
        Boolean: probability of ``True``.
    mean, sd : float
        Numeric: a normal draw ...
    minimum, maximum : float, optional
        ... clipped to this range (also written to the spec as the allowed range).
    integer : bool
        Numeric: round to whole numbers (ages, counts).
    buckets : int, optional
        Numeric: quantile buckets the spec asks the model to use.
    """

    name: str
    type: str
    levels: tuple[str, ...] = ()
    weights: tuple[float, ...] | None = None
    p_true: float = 0.5
    mean: float = 0.0
    sd: float = 1.0
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = False
    buckets: int | None = None

    def __post_init__(self):
        if self.type not in COVARIATE_TYPES:
            raise ValueError(
                f"CovariateDistribution {self.name!r}: type = {self.type!r}, must be one of {COVARIATE_TYPES}"
            )
        if self.type == "categorical":
            if len(self.levels) < 2:
                raise ValueError(f"CovariateDistribution {self.name!r}: a categorical covariate needs >= 2 levels")
            if self.weights is not None and (
                len(self.weights) != len(self.levels) or min(self.weights) < 0 or abs(sum(self.weights) - 1) > 1e-9
            ):
                raise ValueError(
                    f"CovariateDistribution {self.name!r}: weights = {self.weights!r} must be one probability "
                    f"per level {self.levels}, summing to 1"
                )
        if not 0.0 <= self.p_true <= 1.0:
            raise ValueError(f"CovariateDistribution {self.name!r}: p_true = {self.p_true!r} must be in [0, 1]")

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` independent values of the covariate."""
        if self.type == "categorical":
            weights = self.weights or (1.0 / len(self.levels),) * len(self.levels)
            code = np.searchsorted(np.cumsum(weights)[:-1], rng.random(n), side="right")
            return np.asarray(self.levels, dtype=object)[code]
        if self.type == "boolean":
            return rng.random(n) < self.p_true
        values = rng.normal(self.mean, self.sd, n)
        if self.integer:
            values = np.round(values)
        lo = -np.inf if self.minimum is None else self.minimum
        hi = np.inf if self.maximum is None else self.maximum
        return np.clip(values, lo, hi)

    def spec_entry(self) -> dict:
        """This covariate as written in a spec's ``covariates`` mapping."""
        entry: dict[str, Any] = {"type": self.type}
        if self.type == "categorical":
            entry["levels"] = list(self.levels)
        if self.type == "numeric":
            for key in ("buckets", "minimum", "maximum"):
                if getattr(self, key) is not None:
                    entry[key] = getattr(self, key)
        return entry


@dataclass(frozen=True)
class MetricTruth:
    """The true outcome model of one metric, as functions of (covariates frame, arm).

    Attributes
    ----------
    name : str
        Metric column.
    family : {"binary", "continuous", "hurdle"}
    prob : callable, optional
        Binary: ``P(Y = 1 | x, arm)``. Hurdle: ``P(Y > 0 | x, arm)``.
    mean : callable, optional
        Continuous: ``E[Y | x, arm]``; ``Y`` is that plus normal noise of sd ``noise_sd``.
    noise_sd : float
        Continuous noise standard deviation.
    log_mu : callable, optional
        Hurdle: mean of ``log Y`` given ``Y > 0`` (the positive part is lognormal).
    log_sigma : float
        Hurdle: standard deviation of ``log Y`` given ``Y > 0``.
    minimum, maximum : float, optional
        Written to the spec as the metric's allowed range.

    Notes
    -----
    Outcomes are drawn by inversion from one standard-normal latent ``z`` per visitor, so a
    pre-period value drawn from a latent correlated with ``z`` is correlated with the outcome:
    binary ``Y = [z < Φ⁻¹(p)]``; continuous ``Y = mean + noise_sd·z``; hurdle ``Y > 0`` iff
    ``z < Φ⁻¹(p)`` and then ``Y = exp(log_mu + log_sigma·Φ⁻¹(Φ(z) / p))``, whose law given ``Y > 0``
    is exactly lognormal(``log_mu``, ``log_sigma``).
    """

    name: str
    family: str
    prob: RowFunction | None = None
    mean: RowFunction | None = None
    noise_sd: float = 1.0
    log_mu: RowFunction | None = None
    log_sigma: float = 1.0
    minimum: float | None = None
    maximum: float | None = None

    def __post_init__(self):
        if self.family not in METRIC_FAMILIES:
            raise ValueError(f"MetricTruth {self.name!r}: family = {self.family!r}, must be one of {METRIC_FAMILIES}")
        needs = {"binary": ("prob",), "continuous": ("mean",), "hurdle": ("prob", "log_mu")}[self.family]
        for attr in needs:
            if getattr(self, attr) is None:
                raise ValueError(f"MetricTruth {self.name!r}: a {self.family} metric needs the '{attr}' function")

    def _eval(self, fn: RowFunction | None, x: pd.DataFrame, arm: str) -> np.ndarray:
        # __post_init__ guarantees the family's functions are set.
        assert fn is not None, f"MetricTruth {self.name!r} lacks a function for family {self.family!r}"
        return np.broadcast_to(np.asarray(fn(x, arm), dtype=float), (len(x),))

    def expected(self, x: pd.DataFrame, arm: str) -> np.ndarray:
        """``E[Y | x, arm]`` for every row of ``x`` on the outcome scale."""
        if self.family == "binary":
            return self._eval(self.prob, x, arm).copy()
        if self.family == "continuous":
            return self._eval(self.mean, x, arm).copy()
        return self._eval(self.prob, x, arm) * np.exp(self._eval(self.log_mu, x, arm) + self.log_sigma**2 / 2)

    def draw(self, x: pd.DataFrame, arm: str, z: np.ndarray) -> np.ndarray:
        """Outcomes of the rows of ``x`` under ``arm`` from their standard-normal latents ``z``."""
        if self.family == "continuous":
            return self._eval(self.mean, x, arm) + self.noise_sd * z
        p = self._eval(self.prob, x, arm)
        if ((p < 0) | (p > 1)).any():
            bad = p[(p < 0) | (p > 1)][0]
            raise ValueError(f"MetricTruth {self.name!r}: prob for arm {arm!r} gave {bad!r}, outside [0, 1]")
        hit = z < special.ndtri(p)
        if self.family == "binary":
            return hit.astype(np.int64)
        out = np.zeros(len(x))
        # Φ(z)/p is uniform on (0, 1) given a hit; the floor keeps a z beyond -37 from giving exp(-inf) = 0.
        u = np.maximum(special.ndtr(z[hit]) / p[hit], np.finfo(float).tiny)
        mu = self._eval(self.log_mu, x, arm)[hit]
        out[hit] = np.exp(mu + self.log_sigma * special.ndtri(np.minimum(u, 1.0)))
        return out

    def spec_entry(self) -> dict:
        entry: dict[str, Any] = {"name": self.name, "family": self.family}
        for key in ("minimum", "maximum"):
            if getattr(self, key) is not None:
                entry[key] = getattr(self, key)
        return entry


@dataclass(frozen=True)
class GuardrailTruth(MetricTruth):
    """A guardrail metric's truth, with the direction and tolerance written to the spec."""

    direction: str = "increase_is_bad"
    tolerance: float = 0.0

    def spec_entry(self) -> dict:
        return {**super().spec_entry(), "direction": self.direction, "tolerance": self.tolerance}


@dataclass(frozen=True)
class Scenario:
    """A simulated experiment: population, arms and the true outcome model.

    Attributes
    ----------
    name : str
        Also the default experiment id of :meth:`spec`.
    arms : tuple of str
        Control first.
    covariates : tuple of CovariateDistribution
    outcome : MetricTruth
        The primary metric.
    guardrails : tuple of GuardrailTruth
    pre_period : str, optional
        Name of a pre-period column: the visitor's primary outcome under control in an earlier
        period, from a latent with correlation ``pre_period_correlation`` with the outcome's latent
        (a CUPED covariate).
    pre_period_correlation : float
    description : str
    """

    name: str
    arms: tuple[str, ...]
    covariates: tuple[CovariateDistribution, ...]
    outcome: MetricTruth
    guardrails: tuple[GuardrailTruth, ...] = ()
    pre_period: str | None = None
    pre_period_correlation: float = 0.0
    description: str = ""

    def __post_init__(self):
        if len(self.arms) < 2 or len(set(self.arms)) != len(self.arms):
            raise ValueError(f"Scenario {self.name!r}: arms = {self.arms!r}, need >= 2 distinct arms, control first")
        if not -1.0 <= self.pre_period_correlation <= 1.0:
            raise ValueError(
                f"Scenario {self.name!r}: pre_period_correlation = {self.pre_period_correlation!r} must be in [-1, 1]"
            )

    @property
    def family(self) -> str:
        """Family of the primary metric."""
        return self.outcome.family

    @property
    def metric(self) -> str:
        """Name of the primary metric column."""
        return self.outcome.name

    @property
    def control(self) -> str:
        return self.arms[0]

    @property
    def treatments(self) -> tuple[str, ...]:
        return self.arms[1:]

    def metric_truth(self, metric: str | None = None) -> MetricTruth:
        """The truth of ``metric`` (default: the primary metric)."""
        for truth in (self.outcome, *self.guardrails):
            if metric is None or truth.name == metric:
                return truth
        names = [self.outcome.name, *(g.name for g in self.guardrails)]
        raise KeyError(f"scenario {self.name!r} has no metric {metric!r}; its metrics are {names}")

    def spec(self, id: str | None = None, **overrides: Any) -> ExperimentSpec:
        """The experiment spec matching this scenario.

        Parameters
        ----------
        id : str, optional
            Experiment id (default: the scenario's name).
        **overrides
            Top-level spec fields as written in a spec YAML file, e.g.
            ``cells={"min_control_weight": 0.1}``, ``posterior={"draws": 200}``, ``epsilon=0.05``.

        Returns
        -------
        ExperimentSpec

        Raises
        ------
        SpecError
            When an override is invalid.

        Examples
        --------
        >>> spec = segment_flip().spec("flip_demo", epsilon=0.05)
        >>> spec.id, spec.arms[0], spec.primary.name, spec.epsilon
        ('flip_demo', 'control', 'converted', 0.05)
        """
        metrics: dict[str, Any] = {"primary": self.outcome.spec_entry()}
        if self.guardrails:
            metrics["guardrails"] = [g.spec_entry() for g in self.guardrails]
        d: dict[str, Any] = {
            "id": id or self.name,
            "arms": list(self.arms),
            "covariates": {c.name: c.spec_entry() for c in self.covariates},
            "metrics": metrics,
        }
        if self.pre_period:
            d["pre_period"] = self.pre_period
        d.update(overrides)
        return spec_from_dict(d)

    def draw_covariates(self, n: int, rng: np.random.Generator | int | None) -> pd.DataFrame:
        """``n`` visitors' covariates, one column per covariate."""
        rng = np.random.default_rng(rng)
        return pd.DataFrame({c.name: c.draw(n, rng) for c in self.covariates}, index=pd.RangeIndex(n))

    def true_means(self, rows: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
        """``E[Y | x, arm]`` of every row under every arm, on the outcome scale.

        Parameters
        ----------
        rows : DataFrame
            Must hold the scenario's covariates.
        metric : str, optional
            A guardrail's name; default the primary metric.

        Returns
        -------
        DataFrame
            Indexed like ``rows``, one column per arm (control first). Hurdle metrics:
            ``P(Y > 0) · E[Y | Y > 0]``.
        """
        truth = self.metric_truth(metric)
        x = _covariate_frame(self, rows)
        return pd.DataFrame({arm: truth.expected(x, arm) for arm in self.arms}, index=rows.index)


def _covariate_frame(scenario: Scenario, rows: pd.DataFrame) -> pd.DataFrame:
    missing = [c.name for c in scenario.covariates if c.name not in rows.columns]
    if missing:
        raise RowsError(missing[0], "<missing>", f"scenario {scenario.name!r} needs covariate column(s) {missing}")
    return rows[[c.name for c in scenario.covariates]]


# -- ground truth for tests -----------------------------------------------------------------------


def true_contrasts(scenario: Scenario, rows: pd.DataFrame, metric: str | None = None) -> np.ndarray:
    """True treatment-minus-control effects of every row on the outcome scale.

    Parameters
    ----------
    scenario : Scenario
    rows : DataFrame
        Must hold the scenario's covariates.
    metric : str, optional
        A guardrail's name; default the primary metric.

    Returns
    -------
    ndarray
        (rows × treatments), treatments in ``scenario.treatments`` order. Hurdle metrics compare
        ``E[Y] = P(Y > 0) · E[Y | Y > 0]``.

    Examples
    --------
    >>> import pandas as pd
    >>> rows = pd.DataFrame({"device": ["mobile", "desktop"], "returning": [False, False],
    ...                      "region": ["north", "north"], "age": [40.0, 40.0]})
    >>> true_contrasts(segment_flip(), rows)[:, 0].round(3).tolist()
    [0.05, -0.05]
    """
    means = scenario.true_means(rows, metric).to_numpy()
    return means[:, 1:] - means[:, [0]]


def true_best_arm(scenario: Scenario, rows: pd.DataFrame) -> np.ndarray:
    """Each row's best arm on the primary metric.

    The treatment with the largest positive contrast, or control when no treatment beats control
    by more than 1e-12 (the rule of a Thompson vote); ties between treatments go to the earlier one.

    Returns
    -------
    ndarray of str
    """
    contrasts = true_contrasts(scenario, rows)
    best = np.argmax(contrasts, axis=1)
    beats_control = contrasts[np.arange(len(rows)), best] > _TIE_TOLERANCE
    return np.where(beats_control, np.asarray(scenario.treatments, dtype=object)[best], scenario.control)


# -- routing visitors through a plan --------------------------------------------------------------


def simulate_round(
    scenario: Scenario,
    plan: Plan,
    n: int,
    round: int,
    rng: np.random.Generator | int | None,
    *,
    start: pd.Timestamp | str | None = None,
    duration: pd.Timedelta | str = "1D",
) -> pd.DataFrame:
    """Simulate one round's visitor rows under ``plan``.

    Each visitor's covariates are drawn from the scenario; the visitor then falls in a cell with
    the plan's cell weights: the control cell gives the control arm, the explore cell an arm uniform
    over the plan's active arms, the optimized cell an arm drawn from the allocation of the visitor's
    segment (``plan.segment_of``), so a retired arm gets no visitors. Outcomes are drawn from the
    scenario's truth under the arm received.

    Parameters
    ----------
    scenario : Scenario
    plan : Plan
        Its arms must be the scenario's arms, in the same order.
    n : int
        Visitors in the round.
    round : int
        The round number, written to the rows (the plan may be one still in force from an earlier
        round).
    rng : numpy.random.Generator or int
        Randomness source or seed.
    start : Timestamp or str, optional
        Start of the round (UTC); default 2026-01-05 plus ``round - 1`` durations.
    duration : Timedelta or str
        Length of the round; ``assigned_at`` is spread uniformly over it, in arrival order.

    Returns
    -------
    DataFrame
        Columns ``experiment_id, round, visitor_id, assigned_at, cell, segment_id, arm,
        assignment_prob``, the covariates, the primary metric, guardrail metrics and the pre-period
        column when the scenario has them. ``segment_id`` is recorded for every visitor (the
        segment the plan's rules put them in, whatever their cell); ``assignment_prob`` is
        ``plan.arm_probabilities`` of the arm received; ``visitor_id`` is ``r{round:03d}-{i:07d}``,
        unique across rounds.

    Raises
    ------
    ValueError
        When the plan's arms differ from the scenario's, or ``n`` / ``round`` is invalid.
    """
    if tuple(plan.arms) != tuple(scenario.arms):
        raise ValueError(
            f"plan.arms = {list(plan.arms)} differ from scenario {scenario.name!r} arms {list(scenario.arms)}: "
            f"build the plan from scenario.spec()"
        )
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n = {n!r}: the number of visitors must be an integer >= 0")
    if isinstance(round, bool) or not isinstance(round, (int, np.integer)) or round < 1:
        raise ValueError(f"round = {round!r}: must be an integer >= 1")
    rng = np.random.default_rng(rng)
    duration = pd.Timedelta(duration)
    begin = DEFAULT_START + (round - 1) * duration if start is None else pd.Timestamp(start)
    begin = begin.tz_localize("UTC") if begin.tzinfo is None else begin.tz_convert("UTC")

    x = scenario.draw_covariates(n, rng)
    seg_ids = plan.segment_of(x)
    seg_code = pd.Index(plan.segment_ids).get_indexer(seg_ids) if n else np.zeros(0, dtype=np.int64)
    active = pd.Index(plan.arms).get_indexer(plan.active_arms)
    cell_code = _draw_category(np.array([plan.weights[c] for c in CELLS]), rng.random(n))
    alloc = np.array([[s.allocation[a] for a in plan.arms] for s in plan.segments])
    arm_code = np.select(
        [cell_code == 0, cell_code == 1],
        [0, active[rng.integers(0, len(active), n)]],
        default=_draw_category(alloc[seg_code], rng.random(n)),
    )
    probs = plan.segment_arm_probabilities().to_numpy()[seg_code, arm_code]
    offsets = np.sort(rng.integers(0, max(duration.value, 1), n))

    rows = pd.DataFrame(
        {
            "experiment_id": plan.experiment_id,
            "round": np.full(n, round, dtype=np.int64),
            "visitor_id": [f"r{round:03d}-{i:07d}" for i in range(n)],
            "assigned_at": begin + pd.to_timedelta(offsets, unit="ns"),
            "cell": np.asarray(CELLS, dtype=object)[cell_code],
            "segment_id": seg_ids,
            "arm": np.asarray(plan.arms, dtype=object)[arm_code],
            "assignment_prob": probs,
        }
    ).astype(ROW_COLUMNS)
    for col in x.columns:
        rows[col] = x[col].to_numpy()

    z = rng.standard_normal(n)
    rows[scenario.metric] = _draw_metric(scenario.outcome, x, arm_code, plan.arms, z)
    for guardrail in scenario.guardrails:
        rows[guardrail.name] = _draw_metric(guardrail, x, arm_code, plan.arms, rng.standard_normal(n))
    if scenario.pre_period:
        rho = scenario.pre_period_correlation
        z_pre = rho * z + np.sqrt(1.0 - rho**2) * rng.standard_normal(n)
        rows[scenario.pre_period] = scenario.outcome.draw(x, scenario.control, z_pre).astype(float)
    return rows


def _draw_category(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Category index of each uniform in ``u``; ``weights`` is one probability row per draw or one shared row."""
    cum = np.cumsum(weights, axis=-1)
    # u falls in category j when cum[j-1] <= u < cum[j]. The clip absorbs cum[-1] rounding below 1,
    # onto the last category of positive weight: one of weight 0 (a retired arm) is never drawn.
    last = weights.shape[-1] - 1 - np.argmax(weights[..., ::-1] > 0, axis=-1)
    if cum.ndim == 1:
        code = np.searchsorted(cum[:-1], u, side="right")
    else:
        code = (cum[:, :-1] <= u[:, None]).sum(axis=1)
    return np.minimum(code, last)


def _draw_metric(
    truth: MetricTruth, x: pd.DataFrame, arm_code: np.ndarray, arms: tuple[str, ...], z: np.ndarray
) -> np.ndarray:
    out = np.zeros(len(x), dtype=np.int64 if truth.family == "binary" else float)
    for j, arm in enumerate(arms):
        idx = np.flatnonzero(arm_code == j)
        if len(idx):
            out[idx] = truth.draw(x.iloc[idx], arm, z[idx])
    return out


# -- built-in scenarios ---------------------------------------------------------------------------
# Truth functions are module-level and bound with functools.partial so scenarios pickle.


def _device_covariates() -> tuple[CovariateDistribution, ...]:
    return (
        CovariateDistribution(
            "device", "categorical", levels=("mobile", "desktop", "tablet"), weights=(0.55, 0.35, 0.10)
        ),
        CovariateDistribution("returning", "boolean", p_true=0.4),
        CovariateDistribution("region", "categorical", levels=("north", "south", "east", "west")),
        CovariateDistribution(
            "age", "numeric", mean=40.0, sd=12.0, minimum=18.0, maximum=80.0, integer=True, buckets=4
        ),
    )


def _base_conversion(x: pd.DataFrame) -> np.ndarray:
    """Control conversion: 10% (8% on mobile), +2pp for returning visitors, a slight age trend."""
    return (
        0.10
        - 0.02 * (x["device"].to_numpy() == "mobile")
        + 0.02 * x["returning"].to_numpy(dtype=bool)
        + 0.0005 * (x["age"].to_numpy(dtype=float) - 40.0)
    )


def _latency_mean(x: pd.DataFrame, arm: str, *, regression_ms: Mapping[str, float]) -> np.ndarray:
    device = x["device"].to_numpy()
    base = np.where(device == "mobile", 320.0, np.where(device == "desktop", 260.0, 290.0))
    return base + regression_ms.get(arm, 0.0)


def _latency_guardrail(regression_ms: Mapping[str, float] | None, arms: tuple[str, ...]) -> GuardrailTruth:
    regression_ms = dict(regression_ms or {})
    unknown = set(regression_ms) - set(arms)
    if unknown:
        raise ValueError(f"latency_regression_ms names unknown arm {sorted(unknown)[0]!r}; arms are {list(arms)}")
    return GuardrailTruth(
        name="latency_ms",
        family="continuous",
        mean=functools.partial(_latency_mean, regression_ms=regression_ms),
        noise_sd=30.0,
        direction="increase_is_bad",
        tolerance=10.0,
    )


def _no_heterogeneity_prob(x: pd.DataFrame, arm: str, *, lifts: Mapping[str, float]) -> np.ndarray:
    return _base_conversion(x) + lifts[arm]


def no_heterogeneity(
    *, small_lift: float = 0.01, large_lift: float = 0.03, pre_period_correlation: float | None = None
) -> Scenario:
    """Binary conversion; every treatment's effect is the same for everyone.

    Arms ``control, small_lift, large_lift, no_lift`` add ``small_lift``, ``large_lift`` and 0 to
    the conversion probability of every visitor (baseline ≈ 10%, varying with device, returning and
    age, which moves levels but not contrasts). The true best arm is ``large_lift`` everywhere.
    """
    arms = ("control", "small_lift", "large_lift", "no_lift")
    lifts = {"control": 0.0, "small_lift": small_lift, "large_lift": large_lift, "no_lift": 0.0}
    return Scenario(
        name="no_heterogeneity",
        arms=arms,
        covariates=_device_covariates(),
        outcome=MetricTruth("converted", "binary", prob=functools.partial(_no_heterogeneity_prob, lifts=lifts)),
        pre_period="pre_value" if pre_period_correlation is not None else None,
        pre_period_correlation=pre_period_correlation or 0.0,
        description="Binary conversion; every treatment's effect is the same for everyone.",
    )


def _segment_flip_prob(x: pd.DataFrame, arm: str, *, effect: float, mild_effect: float) -> np.ndarray:
    base = _base_conversion(x)
    if arm == "flip":
        return base + np.where(x["device"].to_numpy() == "mobile", effect, -effect)
    if arm == "mild":
        return base + mild_effect * x["returning"].to_numpy(dtype=bool)
    return base


def segment_flip(
    *,
    effect: float = 0.05,
    mild_effect: float = 0.02,
    latency_regression_ms: Mapping[str, float] | None = None,
    pre_period_correlation: float | None = None,
) -> Scenario:
    """Binary conversion where one treatment helps one segment and hurts another.

    Arms and true effects on the conversion probability (baseline ≈ 10%):

    - ``flip``: ``+effect`` on mobile, ``-effect`` on desktop and tablet;
    - ``flat``: no effect;
    - ``mild``: ``+mild_effect`` for returning visitors, none for new ones.

    So the true best arm is ``flip`` on mobile, ``mild`` for returning non-mobile visitors and
    ``control`` for new non-mobile visitors: a depth-2 tree (device, then returning) finds it. Region
    and age have no effect on any contrast.

    Parameters
    ----------
    effect, mild_effect : float
    latency_regression_ms : mapping, optional
        ``{arm: ms}`` added to the mean of the guardrail ``latency_ms`` (continuous, increase is
        bad, tolerance 10 ms). Default: no arm moves latency.
    pre_period_correlation : float, optional
        Add a ``pre_value`` column (pre-period conversion, latent correlation as given).
    """
    arms = ("control", "flip", "flat", "mild")
    return Scenario(
        name="segment_flip",
        arms=arms,
        covariates=_device_covariates(),
        outcome=MetricTruth(
            "converted",
            "binary",
            prob=functools.partial(_segment_flip_prob, effect=effect, mild_effect=mild_effect),
        ),
        guardrails=(_latency_guardrail(latency_regression_ms, arms),),
        pre_period="pre_value" if pre_period_correlation is not None else None,
        pre_period_correlation=pre_period_correlation or 0.0,
        description="Binary conversion where one treatment helps one segment and hurts another.",
    )


def _hurdle_prob(x: pd.DataFrame, arm: str) -> np.ndarray:
    mobile = x["device"].to_numpy() == "mobile"
    returning = x["returning"].to_numpy(dtype=bool)
    base = 0.05 + 0.02 * returning - 0.01 * mobile
    if arm == "discount":
        return base + np.where(returning, 0.005, 0.03)
    if arm == "free_shipping":
        return base + 0.015 * mobile
    return base


def _hurdle_log_mu(x: pd.DataFrame, arm: str) -> np.ndarray:
    desktop = x["device"].to_numpy() == "desktop"
    base = 3.6 + 0.2 * desktop
    if arm == "discount":
        return base - 0.25
    if arm == "bundle":
        return base + np.where(desktop, 0.3, -0.1)
    if arm == "free_shipping":
        return base - 0.05
    return base


def hurdle_revenue(*, pre_period_correlation: float | None = None) -> Scenario:
    """Mostly-zero revenue per visitor (≈ 5% buy; order values lognormal, mean ≈ $50).

    Effects differ on the two parts:

    - ``discount``: +3pp purchase probability for new visitors (+0.5pp returning), baskets −22%;
    - ``bundle``: baskets +35% on desktop, −10% elsewhere; purchase probability unchanged;
    - ``free_shipping``: +1.5pp purchase probability on mobile, baskets −5%.

    On ``E[revenue]`` the best arm is ``bundle`` on desktop, ``discount`` for new mobile and tablet
    visitors, ``free_shipping`` for returning mobile visitors and ``control`` for returning tablet
    visitors.
    """
    return Scenario(
        name="hurdle_revenue",
        arms=("control", "discount", "bundle", "free_shipping"),
        covariates=_device_covariates()[:3],
        outcome=MetricTruth("revenue", "hurdle", prob=_hurdle_prob, log_mu=_hurdle_log_mu, log_sigma=0.8, minimum=0.0),
        pre_period="pre_value" if pre_period_correlation is not None else None,
        pre_period_correlation=pre_period_correlation or 0.0,
        description="Mostly-zero revenue with heterogeneous effects on purchase and basket size.",
    )


def _continuous_mean(x: pd.DataFrame, arm: str) -> np.ndarray:
    age = x["age"].to_numpy(dtype=float)
    base = 20.0 + 3.0 * x["returning"].to_numpy(dtype=bool) + 0.1 * (age - 40.0)
    if arm == "tutorial":
        return base + np.where(age <= 40.0, 1.0, -0.5)
    if arm == "reminder":
        return base + 0.4
    return base


def continuous(*, pre_period_correlation: float | None = 0.7) -> Scenario:
    """A continuous outcome ``value`` (mean ≈ 20, noise sd 6) with a numeric-covariate split.

    ``tutorial`` adds +1.0 for visitors aged ≤ 40 and −0.5 above; ``reminder`` adds +0.4 for
    everyone. Best arm: ``tutorial`` up to 40, ``reminder`` above. By default a ``pre_value`` column
    (pre-period value, latent correlation 0.7) is added for CUPED.
    """
    age = CovariateDistribution(
        "age", "numeric", mean=40.0, sd=12.0, minimum=18.0, maximum=80.0, integer=True, buckets=4
    )
    return Scenario(
        name="continuous",
        arms=("control", "tutorial", "reminder"),
        covariates=(
            age,
            CovariateDistribution("returning", "boolean", p_true=0.4),
            CovariateDistribution("region", "categorical", levels=("north", "south", "east", "west")),
        ),
        outcome=MetricTruth("value", "continuous", mean=_continuous_mean, noise_sd=6.0),
        pre_period="pre_value" if pre_period_correlation is not None else None,
        pre_period_correlation=pre_period_correlation or 0.0,
        description="A continuous outcome with an effect that flips sign across an age threshold.",
    )


# Built-in scenario constructors by name (for demos and command lines).
SCENARIOS: dict[str, Callable[..., Scenario]] = {
    "no_heterogeneity": no_heterogeneity,
    "segment_flip": segment_flip,
    "hurdle_revenue": hurdle_revenue,
    "continuous": continuous,
}
