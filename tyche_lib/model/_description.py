"""Model description: from an experiment spec and its rows to a formula, a family and a data plan.

Kept apart from the engine that fits it (:mod:`tyche_lib.model._engine`), as bambi keeps formulas
and families apart from its PyMC backend. A description is plain data: it serialises to a dict
(stored with the draws) and rebuilds the exact model frame for any rows, so new visitors are
bucketed, standardised and coded exactly as the rows the posterior was fitted on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..core._rows import RowsError
from ..core._spec import ExperimentSpec

__all__ = ["CovariateCoding", "ModelDescription", "describe_model"]

# bambi family of each metric family: (row-level, aggregated), None where no aggregation exists.
BAMBI_FAMILIES = {
    "binary": ("bernoulli", "binomial"),
    "continuous": ("gaussian", None),
    "hurdle": ("hurdle_lognormal", None),
}
# Explicit priors of the logit models, identical for Bernoulli rows and binomial counts so the
# two fits are the same model: the intercept is the control arm's log-odds at the reference
# profile (sd 2.5, as rstanarm); every other coefficient is a log-odds ratio of a dummy or of a
# standardised numeric covariate (sd 1: odds ratios within e^±2 a priori).
LOGIT_PRIORS = {"Intercept": ("Normal", {"mu": 0.0, "sigma": 2.5}), "common": ("Normal", {"mu": 0.0, "sigma": 1.0})}


def _priors(family: str, outcome: pd.Series) -> dict:
    """Explicit priors for every family: the logit models' fixed ones, the others scaled to the data.

    A continuous metric: intercept Normal(mean y, 2.5 sd y), every coefficient Normal(0, sd y), so
    an effect beyond a few outcome sds needs strong evidence. A hurdle metric's spend part is on the
    log scale of positive spend: intercept Normal(mean log y, 2.5 sd log y), coefficients
    Normal(0, sd log y) (a treatment multiplying spend by e^(2 sd) is already far out); its
    probability part keeps logit priors. bambi's own defaults scale each coefficient by its column's
    spread instead: a sparse arm got log-scale sds near 17 (spend × e^34) and a column without data
    an infinite one.
    """
    if family == "binary":
        return dict(LOGIT_PRIORS)
    y = pd.to_numeric(outcome, errors="coerce").to_numpy(dtype=float)
    if family == "hurdle":
        positive = y[y > 0]
        y = np.log(positive)
    center = float(np.mean(y)) if len(y) else 0.0
    scale = float(np.std(y)) if len(y) > 1 else 1.0
    scale = scale if np.isfinite(scale) and scale > 0 else 1.0
    priors = {
        "Intercept": ("Normal", {"mu": center, "sigma": 2.5 * scale}),
        "common": ("Normal", {"mu": 0.0, "sigma": scale}),
    }
    if family == "hurdle":
        priors["psi_Intercept"] = LOGIT_PRIORS["Intercept"]
    return priors


@dataclass(frozen=True)
class CovariateCoding:
    """How one covariate enters the model.

    Attributes
    ----------
    name : str
    type : {"categorical", "boolean", "numeric"}
    levels : tuple of str, optional
        Model levels, reference first: a categorical's levels, ``("false", "true")`` for a
        boolean, bucket labels for a bucketed numeric.
    edges : tuple of float, optional
        Interior quantile edges of a bucketed numeric: bucket ``i`` holds ``edges[i-1] < x <= edges[i]``.
    center, scale : float, optional
        Standardisation of an unbucketed numeric: it enters as ``(x - center) / scale``.
    """

    name: str
    type: str
    levels: tuple[str, ...] | None = None
    edges: tuple[float, ...] | None = None
    center: float | None = None
    scale: float | None = None

    @property
    def is_categorical(self) -> bool:
        """Whether the covariate enters as a factor (categorical, boolean or bucketed)."""
        return self.levels is not None

    def encode(self, values: pd.Series) -> pd.Series:
        """Model-scale values: an ordered Categorical (reference first) or a standardised float."""
        levels = list(self.levels or ())  # None only for an unbucketed numeric, handled before use
        if self.edges is not None:
            codes = np.searchsorted(np.asarray(self.edges, dtype=float), values.to_numpy(dtype=float), side="left")
            return pd.Series(pd.Categorical.from_codes(codes, categories=levels, ordered=True), index=values.index)
        if self.type == "numeric":
            return (values.astype(float) - self.center) / self.scale
        if self.type == "boolean":
            text = np.where(values.astype(bool), "true", "false")
        else:
            text = values.astype(str)
        encoded = pd.Series(pd.Categorical(text, categories=levels, ordered=True), index=values.index)
        unknown = encoded.isna()
        if unknown.any():
            raise RowsError(
                self.name,
                values[unknown].iloc[0],
                f"level not seen when the posterior was fitted; the model's levels are {levels}",
            )
        return encoded


@dataclass(frozen=True)
class ModelDescription:
    """A fully specified model of the primary metric: formula, family, covariate coding, data plan.

    Build one with :func:`describe_model`.

    Attributes
    ----------
    metric : str
        The primary metric column.
    metric_family : {"binary", "continuous", "hurdle"}
    bambi_family : str
        ``"bernoulli"``, ``"binomial"``, ``"gaussian"`` or ``"hurdle_lognormal"``.
    formulas : tuple of str
        The bambi formula(s): one per modelled parameter (two for the hurdle: amount and ``psi``).
    arms : tuple of str
        Arm levels, control first (the reference).
    covariates : tuple of CovariateCoding
    aggregated : bool
        Fit on counts per (covariate profile × arm) instead of visitor rows.
    priors : dict
        Explicit priors ``{term: (distribution, args)}``; empty means bambi's data-scaled defaults.
    center_predictors : bool
        Let bambi centre the design columns while sampling (the stored intercept is uncentred
        either way). Off for binary metrics, so the intercept prior means the same on counts and
        on rows; on for the row-level families, where it cuts NUTS tree sizes (measured ~1.5x for
        Gaussian and ~2.5x for the hurdle).
    """

    metric: str
    metric_family: str
    bambi_family: str
    formulas: tuple[str, ...]
    arms: tuple[str, ...]
    covariates: tuple[CovariateCoding, ...]
    aggregated: bool
    priors: dict = field(default_factory=dict)
    center_predictors: bool = True

    # Names of the count columns of an aggregated frame.
    SUCCESSES = "successes"
    TRIALS = "trials"

    @property
    def covariate_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.covariates)

    def design_frame(self, rows: pd.DataFrame, arm: str | None = None) -> pd.DataFrame:
        """Model-scale covariates and arm for ``rows`` (``arm`` given: every row set to that arm).

        Raises
        ------
        RowsError
            A categorical level the model has not seen, or an arm not in the model.
        """
        out = pd.DataFrame({c.name: c.encode(rows[c.name]) for c in self.covariates}, index=rows.index)
        if arm is not None:
            if arm not in self.arms:
                raise RowsError("arm", arm, f"not an arm of this posterior; its arms are {list(self.arms)}")
            arm_values = np.full(len(rows), arm, dtype=object)
        else:
            arm_values = rows["arm"].astype(str).to_numpy()
        out["arm"] = pd.Categorical(arm_values, categories=list(self.arms), ordered=True)
        return out

    def model_data(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The frame bambi fits: visitor rows with the outcome, or counts per profile × arm.

        Parameters
        ----------
        rows : DataFrame
            Validated rows with the arm, the covariates and the primary metric.
        """
        frame = self.design_frame(rows)
        outcome = rows[self.metric].astype(float).to_numpy()
        if not self.aggregated:
            frame[self.metric] = outcome
            return frame.reset_index(drop=True)
        keys = [*self.covariate_names, "arm"]
        frame[self.SUCCESSES] = outcome
        counts = (
            frame.groupby(keys, observed=True, sort=True)[self.SUCCESSES]
            .agg(["sum", "size"])
            .rename(columns={"sum": self.SUCCESSES, "size": self.TRIALS})
            .reset_index()
        )
        counts[self.SUCCESSES] = counts[self.SUCCESSES].astype(np.int64)
        counts[self.TRIALS] = counts[self.TRIALS].astype(np.int64)
        return counts

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, stored with the draws."""
        d = asdict(self)
        d["covariates"] = [asdict(c) for c in self.covariates]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelDescription:
        covariates = tuple(
            CovariateCoding(
                name=c["name"],
                type=c["type"],
                levels=tuple(c["levels"]) if c.get("levels") is not None else None,
                edges=tuple(float(e) for e in c["edges"]) if c.get("edges") is not None else None,
                center=c.get("center"),
                scale=c.get("scale"),
            )
            for c in d["covariates"]
        )
        priors = {k: (v[0], dict(v[1])) for k, v in d.get("priors", {}).items()}
        return cls(
            metric=d["metric"],
            metric_family=d["metric_family"],
            bambi_family=d["bambi_family"],
            formulas=tuple(d["formulas"]),
            arms=tuple(d["arms"]),
            covariates=covariates,
            aggregated=bool(d["aggregated"]),
            priors=priors,
            center_predictors=bool(d["center_predictors"]),
        )


def _code_covariate(cov, values: pd.Series) -> CovariateCoding:
    if cov.type == "boolean":
        return CovariateCoding(cov.name, cov.type, levels=("false", "true"))
    if cov.type == "categorical":
        levels = tuple(cov.levels) if cov.levels else tuple(sorted(values.astype(str).unique()))
        return CovariateCoding(cov.name, cov.type, levels=levels)
    x = values.to_numpy(dtype=float)
    if cov.buckets:
        quantiles = np.quantile(x, np.linspace(0.0, 1.0, cov.buckets + 1)[1:-1])
        # Ties can make quantiles coincide: keep distinct edges (fewer, never empty-by-construction buckets).
        edges = tuple(float(e) for e in np.unique(quantiles))
        levels = tuple(f"q{i + 1}" for i in range(len(edges) + 1))
        return CovariateCoding(cov.name, cov.type, levels=levels, edges=edges)
    scale = float(x.std())
    # A constant column has no spread to scale by; centring alone keeps it finite.
    return CovariateCoding(cov.name, cov.type, center=float(x.mean()), scale=scale if scale > 0 else 1.0)


def describe_model(rows: pd.DataFrame, spec: ExperimentSpec, *, aggregate: bool | None = None) -> ModelDescription:
    """Describe the model of the spec's primary metric for these rows.

    Every family models arm × covariate interactions: ``y ~ arm * (x1 + x2 + ...)`` (``y ~ arm``
    without covariates); the hurdle models both the amount and the probability of a non-zero
    outcome that way. Categorical and boolean covariates are dummy-coded against their first level;
    numeric ones are standardised on ``rows``, or cut into the spec's ``buckets`` quantile buckets
    (edges from ``rows``) and dummy-coded.

    Parameters
    ----------
    rows : DataFrame
        Validated rows (see :func:`validate_rows`): the arm, the covariates, the primary metric.
    spec : ExperimentSpec
    aggregate : bool, optional
        Fit a binary metric on counts per (covariate profile × arm). Default: whenever that is
        exact, i.e. the metric is binary and every covariate enters as a factor. ``False`` forces
        one likelihood term per visitor; ``True`` raises where aggregation is not exact.

    Returns
    -------
    ModelDescription

    Raises
    ------
    ValueError
        ``aggregate=True`` for a non-binary metric or an unbucketed numeric covariate.

    Examples
    --------
    >>> import pandas as pd
    >>> from tyche_lib import spec_from_dict
    >>> spec = spec_from_dict({"id": "demo", "arms": ["control", "green"],
    ...     "covariates": {"device": "categorical"},
    ...     "metrics": {"primary": {"name": "converted", "family": "binary"}}})
    >>> rows = pd.DataFrame({"arm": ["control", "green"], "device": ["app", "web"], "converted": [0.0, 1.0]})
    >>> d = describe_model(rows, spec)
    >>> d.formulas, d.bambi_family
    (('p(successes, trials) ~ arm * (device)',), 'binomial')
    """
    family = spec.primary.family
    covariates = tuple(_code_covariate(c, rows[c.name]) for c in spec.covariates)
    exact = family == "binary" and all(c.is_categorical for c in covariates)
    if aggregate is None:
        aggregate = exact
    elif aggregate and not exact:
        if family != "binary":
            raise ValueError(f"aggregate=True: a {family!r} metric has no exact count model; leave aggregate unset")
        unbucketed = [c.name for c in covariates if not c.is_categorical]
        raise ValueError(
            f"aggregate=True: numeric covariate(s) {unbucketed} have no buckets, so counts would lose "
            "information; set 'buckets' for them in the spec or leave aggregate unset"
        )
    clash = {ModelDescription.SUCCESSES, ModelDescription.TRIALS} & set(spec.covariate_names)
    if aggregate and clash:
        raise ValueError(
            f"covariate {min(clash)!r}: the name is taken by the count columns of the aggregated "
            "binary model; rename the covariate"
        )
    row_family, count_family = BAMBI_FAMILIES[family]
    rhs = f"arm * ({' + '.join(c.name for c in covariates)})" if covariates else "arm"
    if aggregate:
        formulas: tuple[str, ...] = (f"p({ModelDescription.SUCCESSES}, {ModelDescription.TRIALS}) ~ {rhs}",)
    else:
        formulas = (f"{spec.primary.name} ~ {rhs}",)
    if family == "hurdle":
        formulas += (f"psi ~ {rhs}",)
    return ModelDescription(
        metric=spec.primary.name,
        metric_family=family,
        bambi_family=str(count_family if aggregate else row_family),
        formulas=formulas,
        arms=tuple(spec.arms),
        covariates=covariates,
        aggregated=bool(aggregate),
        priors=_priors(family, rows[spec.primary.name]),
        center_predictors=family != "binary",
    )
