"""The fitting engine: bambi/PyMC models of the primary metric, one result type per family.

What is modelled (formula, family, covariate coding, counts or rows) is decided in
:mod:`tyche_lib.model._description`; this module fits it with NUTS and reads the draws back. Outcome means
are computed from the stored formulae design and the stacked coefficient draws, on unique
model-scale profiles, never through bambi's per-row ``predict``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import pandas as pd
from scipy.special import expit
from threadpoolctl import threadpool_limits

from ..core._rows import RowsError, validate_rows
from ..core._seeds import seed_from_rng
from ..core._spec import ExperimentSpec
from ._base import Posterior
from ._description import ModelDescription, describe_model

__all__ = [
    "BinaryPosterior",
    "ContinuousPosterior",
    "HurdlePosterior",
    "PosteriorSummary",
    "fit_posterior",
]

# Attribute of ``idata.posterior`` holding the model description and fit facts as JSON.
MODEL_INFO_ATTR = "tyche_model_info"
# Wall-clock attributes and sampler statistics ArviZ/PyMC record; dropped so that a refit with the
# same seed on the same rows writes a byte-identical NetCDF file (its hash can version the draws).
_CLOCK_ATTRS = ("created_at", "sampling_time")
_CLOCK_STATS = ("perf_counter_start", "perf_counter_diff", "process_time_diff")
# PyMC's NUTS initialisation: jittered start, dense mass matrix adapted during tuning.
NUTS_INIT = "jitter+adapt_full"


@dataclass(frozen=True)
class PosteriorSummary:
    """What the pipeline stores as the model summary of a fit.

    Attributes
    ----------
    coefficients : DataFrame
        One row per coefficient (index: its name): posterior ``mean``, ``sd``, the 90% HDI
        (``hdi_5%``, ``hdi_95%``) and, with more than one chain, ``ess_bulk`` and ``r_hat``.
    divergences : int
        Divergent NUTS transitions after tuning (should be 0).
    max_r_hat : float or None
        Largest split R-hat over coefficients (None with one chain); above 1.01 deserves a look.
    min_ess_bulk : float or None
        Smallest bulk effective sample size (None with one chain).
    draws, chains : int
    method : str
        ``"aggregated"`` or ``"rows"``.
    formulas : tuple of str
    family : str
        The bambi family.
    fit_seconds : float
    """

    coefficients: pd.DataFrame
    divergences: int
    max_r_hat: float | None
    min_ess_bulk: float | None
    draws: int
    chains: int
    method: str
    formulas: tuple[str, ...]
    family: str
    fit_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (coefficients as a list of records with a ``term`` key)."""
        records = self.coefficients.reset_index(names="term").to_dict(orient="records")
        return {
            "divergences": self.divergences,
            "max_r_hat": self.max_r_hat,
            "min_ess_bulk": self.min_ess_bulk,
            "draws": self.draws,
            "chains": self.chains,
            "method": self.method,
            "formulas": list(self.formulas),
            "family": self.family,
            "fit_seconds": None if np.isnan(self.fit_seconds) else self.fit_seconds,
            "coefficients": [
                {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in records
            ],
        }


@dataclass(eq=False)
class _BambiPosterior(Posterior):
    """A posterior fitted by bambi: the shared reading of its draws.

    Attributes
    ----------
    (those of :class:`Posterior`, and)
    description : ModelDescription
        The model: formulas, family, covariate coding, counts or rows.
    model : bambi.Model
        The unfitted model; its formulae designs code new profiles exactly as the fitted data.
    model_data : DataFrame
        The frame bambi fitted (see :meth:`ModelDescription.model_data`): saved with the draws, it
        rebuilds the posterior without the rows (:meth:`from_model_data`).
    """

    description: ModelDescription | None = None
    model: Any = field(default=None, repr=False)
    model_data: pd.DataFrame | None = field(default=None, repr=False)
    _coefficient_cache: dict = field(default_factory=dict, init=False, repr=False)

    # bambi component of the linear predictor each family reads (the parent parameter).
    mean_component: ClassVar[str] = "mu"

    def arms_with_data(self) -> frozenset[str]:
        """The arms with data: from the frame bambi fitted, which every stored posterior keeps."""
        if self.model_data is not None and "arm" in self.model_data.columns:
            return frozenset(self.model_data["arm"].astype(str).unique())
        return super().arms_with_data()

    @property
    def described(self) -> ModelDescription:
        """The model description; every constructor in this module sets it (a default only for field order)."""
        if self.description is None:
            raise ValueError(f"{type(self).__name__} has no model description: build it with fit_posterior")
        return self.description

    def coefficient_draws(self, component: str | None = None) -> np.ndarray:
        """Stacked coefficient draws of one component, in design-column order: (draws × columns).

        Parameters
        ----------
        component : str, optional
            A bambi component (``"p"``, ``"mu"``, ``"psi"``); default: the family's mean component.
        """
        component = component or self.mean_component
        if component not in self._coefficient_cache:
            design = self.model.components[component].design.common
            # Non-parent components' variables carry the component's prefix, e.g. "psi_arm".
            prefix = "" if component == self.model.family.likelihood.parent else f"{component}_"
            post = self.idata.posterior
            blocks = []
            for term, columns in design.slices.items():
                values = post[prefix + term].values
                block = values.reshape(values.shape[0] * values.shape[1], -1)
                if block.shape[1] != columns.stop - columns.start:
                    raise ValueError(
                        f"posterior variable {prefix + term!r} has {block.shape[1]} column(s) but the model "
                        f"design has {columns.stop - columns.start}: the draws do not belong to this model"
                    )
                blocks.append(block)
            self._coefficient_cache[component] = np.ascontiguousarray(np.hstack(blocks))
        return self._coefficient_cache[component]

    def linear_predictor_draws(self, profiles: pd.DataFrame, arm: str, component: str | None = None) -> np.ndarray:
        """Linear predictor of a component for each profile with every visitor in ``arm``: (draws × profiles).

        Rows of ``profiles`` that code to the same model-scale profile (e.g. numeric values in one
        bucket) are computed once.
        """
        component = component or self.mean_component
        frame = self.described.design_frame(profiles, arm)
        names = list(self.described.covariate_names)
        if names and len(frame):
            codes = frame.groupby(names, observed=True, sort=False).ngroup().to_numpy()
            first = pd.Series(np.arange(len(frame))).groupby(codes).first().to_numpy()
        else:
            codes, first = np.zeros(len(frame), dtype=np.int64), np.zeros(min(len(frame), 1), dtype=np.int64)
        unique = frame.iloc[first].reset_index(drop=True)
        design = np.asarray(self.model.components[component].design.common.evaluate_new_data(unique))
        eta = self.coefficient_draws(component) @ design.T
        return eta[:, codes]

    def summary(self) -> PosteriorSummary:
        """Posterior mean, sd and 90% HDI of every coefficient, with sampler diagnostics."""
        import arviz as az

        post = self.idata.posterior
        chains = int(post.sizes["chain"])
        stats = ["mean", "sd", "hdi_5%", "hdi_95%"] + (["ess_bulk", "r_hat"] if chains > 1 else [])
        table = az.summary(self.idata, kind="all" if chains > 1 else "stats", hdi_prob=0.9)[stats]
        diverging = self.idata.sample_stats.get("diverging") if "sample_stats" in self.idata.groups() else None
        return PosteriorSummary(
            coefficients=table,
            divergences=int(diverging.sum()) if diverging is not None else 0,
            max_r_hat=float(table["r_hat"].max()) if chains > 1 else None,
            min_ess_bulk=float(table["ess_bulk"].min()) if chains > 1 else None,
            draws=int(post.sizes["draw"]),
            chains=chains,
            method=self.method,
            formulas=self.described.formulas,
            family=self.described.bambi_family,
            fit_seconds=self.fit_seconds,
        )

    def fitted_on(self, rows: pd.DataFrame) -> bool:
        """Whether ``rows`` are the rows this posterior was fitted on, as far as the model sees them.

        Compares the hash of their model frame (arm, covariates, primary metric; for a row-level
        fit, their order too) with the one stored with the draws. ``rows`` must be validated
        (e.g. read back from where validated rows were stored): they are not checked here.
        """
        return _model_data_sha256(self.described.model_data(rows)) == self.model_info["data_sha256"]

    def to_netcdf(self, path: str | Path) -> Path:
        """Save the draws (with the model description) to NetCDF; rebuild with :meth:`from_netcdf`."""
        self.idata.to_netcdf(str(path))
        return Path(path)

    @classmethod
    def from_netcdf(
        cls, path: str | Path, rows: pd.DataFrame, spec: ExperimentSpec
    ) -> BinaryPosterior | ContinuousPosterior | HurdlePosterior:
        """Rebuild a fitted posterior from its saved draws and the rows it was fitted on.

        Parameters
        ----------
        path : str or Path
            A file written by :meth:`to_netcdf` (or ``idata.to_netcdf``).
        rows : DataFrame
            The same rows that were passed to :func:`fit_posterior`.
        spec : ExperimentSpec

        Returns
        -------
        BinaryPosterior, ContinuousPosterior or HurdlePosterior
            With ``fit_seconds`` NaN: the file keeps no wall-clock facts, so refits are byte-identical.

        Raises
        ------
        ValueError
            The file has no Tyche model description, its family is not ``cls``'s, or ``rows``
            are not the rows it was fitted on.

        See Also
        --------
        from_model_data : the same without the rows, from the frame bambi fitted.
        """
        idata, info, description = _read_draws(path, cls)
        observed = _validated(rows, spec)
        data = description.model_data(observed)
        if _model_data_sha256(data) != info["data_sha256"]:
            raise ValueError(
                f"{path}: rows differ from the {info['n_rows']} rows the posterior was fitted on "
                f"(got {len(observed)}); pass exactly those rows"
            )
        return cast(
            BinaryPosterior | ContinuousPosterior | HurdlePosterior,
            _rebuilt(idata, info, description, spec, observed, data),
        )

    @classmethod
    def from_model_data(
        cls, path: str | Path, model_data: pd.DataFrame, spec: ExperimentSpec, observed: pd.DataFrame
    ) -> _BambiPosterior:
        """Rebuild a fitted posterior from its saved draws and the frame bambi fitted, without its rows.

        Parameters
        ----------
        path : str or Path
            A file written by :meth:`to_netcdf`.
        model_data : DataFrame
            The fitted posterior's :attr:`model_data` (for a binary metric, counts per profile × arm:
            a few hundred rows however many visitors).
        spec : ExperimentSpec
        observed : DataFrame
            Kept as :attr:`observed`, as given (not validated). The policy tree, the allocation and
            the decision quantities read only its covariate columns, and not its row order: the
            covariates of the fitted rows, in any order, give them the same results as the rows.

        Returns
        -------
        BinaryPosterior, ContinuousPosterior or HurdlePosterior

        Raises
        ------
        ValueError
            The file has no Tyche model description, its family is not ``cls``'s, or
            ``model_data`` is not the frame its draws were fitted on.
        """
        idata, info, description = _read_draws(path, cls)
        if _model_data_sha256(model_data) != info["data_sha256"]:
            raise ValueError(
                f"{path}: model_data is not the frame the posterior was fitted on "
                f"({len(model_data)} rows; the fit had {info['n_rows']} visitor rows)"
            )
        return _rebuilt(idata, info, description, spec, observed, model_data)


@dataclass(eq=False)
class BinaryPosterior(_BambiPosterior):
    """Posterior of a binary metric: logistic regression, ``P(Y = 1 | x, arm)``.

    Fitted on counts per (covariate profile × arm) with a binomial likelihood where that is exact,
    else on visitor rows with a Bernoulli likelihood; same formula and priors either way.
    """

    family = "binary"
    mean_component = "p"

    def outcome_mean_draws(self, profiles: pd.DataFrame, arm: str) -> np.ndarray:
        """Conversion probability per draw for each profile in ``arm``: (draws × profiles)."""
        return expit(self.linear_predictor_draws(profiles, arm))


@dataclass(eq=False)
class ContinuousPosterior(_BambiPosterior):
    """Posterior of a continuous metric: Gaussian linear model, ``E[Y | x, arm] = mu``."""

    family = "continuous"

    def outcome_mean_draws(self, profiles: pd.DataFrame, arm: str) -> np.ndarray:
        """Mean outcome per draw for each profile in ``arm``: (draws × profiles)."""
        return self.linear_predictor_draws(profiles, arm)


@dataclass(eq=False)
class HurdlePosterior(_BambiPosterior):
    """Posterior of a hurdle metric (zero, or a positive amount): hurdle log-normal.

    Notes
    -----
    ``Y = 0`` with probability ``1 - psi``; otherwise ``log Y ~ Normal(mu, sigma)``. Both
    ``logit(psi)`` and ``mu`` depend on arm × covariates; ``sigma`` is shared. The mean is

    .. math:: E[Y \\mid x, a] = \\psi(x, a) \\, \\exp\\left(\\mu(x, a) + \\sigma^2 / 2\\right)

    (PyMC's ``HurdleLogNormal``: ``psi`` is the probability of a non-zero draw; its positive part
    is truncated at machine epsilon, which moves the mean by a negligible amount).
    """

    family = "hurdle"

    def outcome_mean_draws(self, profiles: pd.DataFrame, arm: str) -> np.ndarray:
        """Mean outcome (zeros included) per draw for each profile in ``arm``: (draws × profiles)."""
        sigma = self.idata.posterior["sigma"].values.reshape(-1, 1)
        nonzero = expit(self.linear_predictor_draws(profiles, arm, "psi"))
        return nonzero * np.exp(self.linear_predictor_draws(profiles, arm, "mu") + 0.5 * sigma**2)


_RESULT_TYPES: dict[str, type[_BambiPosterior]] = {
    "binary": BinaryPosterior,
    "continuous": ContinuousPosterior,
    "hurdle": HurdlePosterior,
}


def _model_data_sha256(data: pd.DataFrame) -> str:
    """SHA-256 of the frame bambi fits (``ModelDescription.model_data``): ties stored draws to their data."""
    return hashlib.sha256(pd.util.hash_pandas_object(data, index=False).to_numpy().tobytes()).hexdigest()


def _read_draws(path: str | Path, cls: type) -> tuple[Any, dict, ModelDescription]:
    """The draws of a saved posterior, fully read, with its fit facts and model description."""
    import arviz as az

    idata = az.from_netcdf(str(path))
    # Read everything now: the file may be replaced by the next fit while this result lives.
    for group in idata.groups():
        idata[group].load()
    raw = idata.posterior.attrs.get(MODEL_INFO_ATTR)
    if raw is None:
        raise ValueError(f"{path}: no '{MODEL_INFO_ATTR}' attribute; not a posterior saved by Tyche")
    info = json.loads(raw)
    description = ModelDescription.from_dict(info["description"])
    result_type = _RESULT_TYPES[description.metric_family]
    if cls is not _BambiPosterior and result_type is not cls:
        raise ValueError(f"{path}: holds a {result_type.__name__}, not a {cls.__name__}")
    return idata, info, description


def _rebuilt(
    idata, info: dict, description: ModelDescription, spec: ExperimentSpec, observed: pd.DataFrame, data: pd.DataFrame
) -> _BambiPosterior:
    return _RESULT_TYPES[description.metric_family](
        spec=spec,
        observed=observed,
        idata=idata,
        method=info["method"],
        model_info=info,
        description=description,
        model=_bambi_model(description, data),
        model_data=data,
    )


def _validated(rows: pd.DataFrame, spec: ExperimentSpec) -> pd.DataFrame:
    """Validate the columns a fit needs: arm, covariates, the primary metric (guardrails may be absent)."""
    if not isinstance(rows, pd.DataFrame):
        raise TypeError(f"rows must be a pandas DataFrame, got {type(rows).__name__}")
    if len(rows) == 0:
        raise ValueError("rows: no rows to fit a posterior on; wait for a round with visitors")
    # Only the primary metric is modelled; the pipeline's multi-round rows may repeat visitor ids.
    primary_only = spec.model_copy(
        update={"metric_set": spec.metric_set.model_copy(update={"guardrails": (), "secondary": ()})}
    )
    out = validate_rows(rows, primary_only, assignment=False)
    if "arm" not in out.columns:
        raise RowsError("arm", "<missing>", f"the rows must have an 'arm' column; found {sorted(out.columns)}")
    if out["arm"].isna().any():
        raise RowsError("arm", None, "null arm(s); every visitor row needs the arm it was served")
    out["arm"] = out["arm"].astype(str)
    unknown = ~out["arm"].isin(spec.arms)
    if unknown.any():
        raise RowsError("arm", out["arm"][unknown].iloc[0], f"unknown arm; the spec's arms are {list(spec.arms)}")
    seen = sorted(out["arm"].unique())
    if len(seen) < 2:
        raise RowsError("arm", seen, "only one arm observed: contrasts need rows from at least two arms")
    return out


def _bambi_model(description: ModelDescription, data: pd.DataFrame):
    import bambi as bmb

    priors = {term: bmb.Prior(dist, **args) for term, (dist, args) in description.priors.items()}
    return bmb.Model(
        bmb.Formula(*description.formulas),
        data,
        family=description.bambi_family,
        priors=priors or None,
        center_predictors=description.center_predictors,
    )


def fit_posterior(
    rows: pd.DataFrame,
    spec: ExperimentSpec,
    *,
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    rng: int | np.random.Generator | None,
    aggregate: bool | None = None,
    cores: int = 1,
) -> _BambiPosterior:
    """Fit the posterior of the spec's primary metric with arm × covariate interactions (NUTS).

    Parameters
    ----------
    rows : DataFrame
        Visitor rows: ``arm``, the spec's covariates and the primary metric column; other columns
        (visitor_id, cell, assignment_prob, guardrails) are kept in ``observed`` untouched.
    spec : ExperimentSpec
    draws, tune, chains : int, optional
        NUTS settings; default: the spec's.
    rng : int, Generator or None
        Sampler seed (see :func:`~tyche_lib.core.seed_from_rng`): the same int on the same rows
        gives identical draws.
    aggregate : bool, optional
        Binary metric only: fit on counts per (covariate profile × arm) (default where exact, see
        :func:`describe_model`); ``False`` forces one likelihood term per visitor.
    cores : int
        Processes for the chains (1: sequential, usually as fast on a small machine).

    Returns
    -------
    BinaryPosterior, ContinuousPosterior or HurdlePosterior
        By the primary metric's family.

    Raises
    ------
    RowsError
        A missing or invalid column (arm, a covariate, the primary metric), or a single arm observed.
    ValueError
        No rows; ``aggregate=True`` where counts are not exact.

    Notes
    -----
    Models (``x``: covariates dummy-coded or standardised, see :func:`describe_model`):

    - binary: ``logit P(Y=1) = arm * (x)``, binomial on counts or Bernoulli on rows;
    - continuous: ``Y ~ Normal(arm * (x), sigma)``;
    - hurdle: ``P(Y>0) = logit^-1(arm * (x))``, ``log Y | Y>0 ~ Normal(arm * (x), sigma)``.
    """
    seed = seed_from_rng(rng)
    observed = _validated(rows, spec)
    description = describe_model(observed, spec, aggregate=aggregate)
    data = description.model_data(observed)
    model = _bambi_model(description, data)
    draws = spec.draws if draws is None else draws
    tune = spec.tune if tune is None else tune
    chains = spec.chains if chains is None else chains
    start = time.perf_counter()
    # One BLAS thread per chain: PyTensor's small matrix-vector products lose 3-10x to threading
    # overhead otherwise (measured on 2 cores). Chain processes are forked and inherit the limit.
    with threadpool_limits(limits=1, user_api="blas"):
        idata = model.fit(
            draws=draws,
            tune=tune,
            chains=chains,
            cores=cores,
            random_seed=seed,
            progressbar=False,
            compute_convergence_checks=False,
            # A dense mass matrix: the arm x covariate coefficients are strongly correlated, and a
            # diagonal one needs ~30-70 leapfrog steps per draw where the dense one needs ~7
            # (bench/round_bench.py measures the fit; ~4x the effective samples per CPU second).
            init=NUTS_INIT,
        )
    fit_seconds = time.perf_counter() - start
    method = "aggregated" if description.aggregated else "rows"
    model_info = {
        "description": description.to_dict(),
        "formulas": list(description.formulas),
        "family": description.bambi_family,
        "method": method,
        "n_rows": len(observed),
        "n_cells": len(data) if description.aggregated else None,
        "draws": draws,
        "tune": tune,
        "chains": chains,
        "seed": seed,
        "data_sha256": _model_data_sha256(data),
    }
    for group in idata.groups():
        for attr in _CLOCK_ATTRS:
            idata[group].attrs.pop(attr, None)
    idata.sample_stats = idata.sample_stats.drop_vars([v for v in _CLOCK_STATS if v in idata.sample_stats])
    idata.posterior.attrs[MODEL_INFO_ATTR] = json.dumps(model_info)
    result = _RESULT_TYPES[spec.primary.family](
        spec=spec,
        observed=observed,
        idata=idata,
        method=method,
        fit_seconds=fit_seconds,
        model_info={**model_info, "fit_seconds": fit_seconds},
        description=description,
        model=model,
        model_data=data,
    )
    return cast(BinaryPosterior | ContinuousPosterior | HurdlePosterior, result)
