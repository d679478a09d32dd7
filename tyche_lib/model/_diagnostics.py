"""Whether a fitted posterior can be trusted: sampler convergence and outcome means on the data's scale.

A plan is built from the posterior's draws; a chain that never mixed, or a sparse arm whose
expected outcome ran off to an astronomic value, would publish a confident and wrong plan. The
check below is what the pipeline's blocking ``posterior_convergence`` check runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core._profiles import covariate_profiles
from ._engine import BinaryPosterior, ContinuousPosterior, HurdlePosterior

__all__ = ["ConvergenceResult", "convergence_check"]

# Vehtari et al. (2021) ask for r-hat below 1.01 on final analyses; the pipeline's short default
# chains (1,000 draws) make 1.01 a coin flip for a healthy fit, while a stuck chain gives 1.1 or more.
MAX_R_HAT = 1.05
# Bulk ESS of at least 100 keeps the Monte Carlo error of a posterior mean near a tenth of its sd.
MIN_ESS_BULK = 100.0
# Divergent transitions after tuning, as a share of all draws: a few are noise, more mean the
# sampler could not explore part of the posterior.
MAX_DIVERGENT_SHARE = 0.01
# An expected outcome more than this many times the largest observed outcome (in absolute value)
# is not a plausible estimate of a per-visitor mean.
OUTCOME_SCALE = 10.0


@dataclass(frozen=True)
class ConvergenceResult:
    """Verdict of :func:`convergence_check`.

    Attributes
    ----------
    passed : bool
    message : str
        One line per failed criterion, naming the parameter (or arm and profile) and its value; or
        the closest margins when all passed.
    failures : DataFrame
        ``criterion, parameter, value, threshold`` for every failed criterion.
    max_r_hat, min_ess_bulk : float or None
        None with one chain (R-hat and ESS need several).
    divergences : int
    draws : int
        Draws after tuning, all chains.
    max_outcome_mean : float
        Largest posterior-mean ``|E[Y | x, arm]|`` over the observed profiles and arms.
    outcome_bound : float or None
        What ``max_outcome_mean`` had to stay within (None: no bound applied).
    """

    passed: bool
    message: str
    failures: pd.DataFrame
    max_r_hat: float | None
    min_ess_bulk: float | None
    divergences: int
    draws: int
    max_outcome_mean: float
    outcome_bound: float | None


def convergence_check(
    posterior: BinaryPosterior | ContinuousPosterior | HurdlePosterior,
    outcome: pd.Series | np.ndarray | None = None,
    *,
    max_r_hat: float = MAX_R_HAT,
    min_ess_bulk: float = MIN_ESS_BULK,
    max_divergent_share: float = MAX_DIVERGENT_SHARE,
    outcome_scale: float = OUTCOME_SCALE,
) -> ConvergenceResult:
    """Check that a posterior converged and that its outcome means are on the data's scale.

    Parameters
    ----------
    posterior : BinaryPosterior, ContinuousPosterior or HurdlePosterior
        As :func:`fit_posterior` returns it (or rebuilt from storage).
    outcome : Series or ndarray, optional
        The primary metric's observed values on the rows the posterior was fitted on. Without
        them a continuous or hurdle posterior is only checked for finite means; a binary one's
        means are probabilities, bounded by construction.
    max_r_hat : float
        Largest split R-hat allowed for any coefficient.
    min_ess_bulk : float
        Smallest bulk effective sample size allowed for any coefficient.
    max_divergent_share : float
        Largest share of divergent transitions among the draws.
    outcome_scale : float
        Every posterior-mean ``E[Y | x, arm]`` over the observed profiles must lie within
        ``outcome_scale × max |outcome|``.

    Returns
    -------
    ConvergenceResult

    Notes
    -----
    R-hat and bulk ESS are arviz's rank-normalised split versions (Vehtari et al. 2021), over
    every coefficient; they need at least two chains and are skipped (and said so) with one.

    References
    ----------
    .. [1] Vehtari, A., Gelman, A., Simpson, D., Carpenter, B. and Bürkner, P.-C. (2021).
       "Rank-normalization, folding, and localization: an improved R-hat for assessing
       convergence of MCMC." Bayesian Analysis 16(2).

    Examples
    --------
    >>> from tyche_lib import fit_posterior, initial_plan
    >>> from tyche_lib.simulate import segment_flip, simulate_round
    >>> scenario = segment_flip()
    >>> rows = simulate_round(scenario, initial_plan(scenario.spec()), n=4_000, round=1, rng=3)
    >>> posterior = fit_posterior(rows, scenario.spec(), draws=300, tune=500, chains=2, rng=3)
    >>> result = convergence_check(posterior, rows["converted"])
    >>> result.passed, result.divergences
    (True, 0)
    """
    summary = posterior.summary()
    coefficients = summary.coefficients
    failures: list[dict] = []
    notes: list[str] = []
    if summary.max_r_hat is not None:
        for name, value in coefficients["r_hat"].items():
            if not value <= max_r_hat:  # NaN fails too
                failures.append({"criterion": "r_hat", "parameter": str(name), "value": value, "threshold": max_r_hat})
        for name, value in coefficients["ess_bulk"].items():
            if not value >= min_ess_bulk:
                failures.append(
                    {"criterion": "ess_bulk", "parameter": str(name), "value": value, "threshold": min_ess_bulk}
                )
    else:
        notes.append("one chain: R-hat and ESS not checked")
    draws = summary.draws * summary.chains
    if summary.divergences > max_divergent_share * draws:
        failures.append(
            {
                "criterion": "divergences",
                "parameter": "sampler",
                "value": summary.divergences,
                "threshold": max_divergent_share * draws,
            }
        )

    profiles = covariate_profiles(posterior.observed, posterior.spec.covariate_names).frame
    bound = None
    if outcome is not None and posterior.spec.primary.family != "binary":
        values = np.abs(np.asarray(outcome, dtype=float))
        bound = outcome_scale * float(values.max()) if len(values) and np.isfinite(values).all() else None
    largest = 0.0
    for arm in posterior.arms:
        means = posterior.outcome_mean_draws(profiles, arm).mean(axis=0)
        worst = int(np.argmax(np.where(np.isfinite(means), np.abs(means), np.inf)))
        value = float(means[worst])
        largest = max(largest, abs(value)) if np.isfinite(value) else np.inf
        if not np.isfinite(value) or (bound is not None and abs(value) > bound):
            where = ", ".join(f"{k}={v}" for k, v in profiles.iloc[worst].items()) or "every visitor"
            failures.append(
                {
                    "criterion": "outcome_mean",
                    "parameter": f"E[{posterior.spec.primary.name} | {where}, arm={arm}]",
                    "value": value,
                    "threshold": bound if bound is not None else np.inf,
                }
            )
    table = pd.DataFrame(failures, columns=["criterion", "parameter", "value", "threshold"])
    if failures:
        lines = [
            f"{f['criterion']} of {f['parameter']} = {f['value']:.4g} (allowed {'<=' if f['criterion'] != 'ess_bulk' else '>='} "
            f"{f['threshold']:.4g})"
            for f in failures[:5]
        ]
        more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
        message = (
            "the posterior cannot be trusted, no plan is built from it: "
            + "; ".join(lines)
            + more
            + ". Fit it with more tuning steps or draws (the spec's posterior block), or look for an arm "
            "or segment with too little data"
        )
    else:
        parts = [f"{summary.divergences} divergence(s) in {draws} draws"]
        if summary.max_r_hat is not None:
            parts.append(f"max r_hat {summary.max_r_hat:.3f} (<= {max_r_hat:g})")
            parts.append(f"min bulk ESS {summary.min_ess_bulk:.0f} (>= {min_ess_bulk:g})")
        if bound is not None:
            parts.append(f"largest outcome mean {largest:.4g} (<= {bound:.4g})")
        message = "posterior converged: " + ", ".join(parts + notes)
    return ConvergenceResult(
        passed=not failures,
        message=message,
        failures=table,
        max_r_hat=summary.max_r_hat,
        min_ess_bulk=summary.min_ess_bulk,
        divergences=summary.divergences,
        draws=draws,
        max_outcome_mean=largest,
        outcome_bound=bound,
    )
