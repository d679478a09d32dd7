"""Measurement: anytime-valid effects of an adaptive experiment, read at every round.

Every estimate here stays valid however often it is looked at and however the allocation moved
between rounds, because it is built from the assignment probabilities recorded for each visitor:

- :func:`mad_confidence_sequence` / :func:`mad_confidence_path` — the Mixture Adaptive Design
  estimator of Liang & Bojinov with its asymptotic confidence sequence (IPW, or AIPW with an
  outcome model fitted on earlier data only);
- :func:`cuped` and :func:`cuped_outcome_model` — pre-period regression adjustment;
- :func:`msprt` — the mixture sequential probability ratio test of Johari et al. for a plain
  two-arm comparison;
- :func:`analyze_metrics` — all of the spec's metrics at once: Benjamini–Hochberg across primary
  and secondary metrics × treatments, and a non-inferiority verdict for each guardrail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from ..core._rows import RowsError
from ..core._spec import ExperimentSpec, Guardrail
from ..model._base import DEFAULT_CHUNK_PROFILES, Posterior

__all__ = [
    "CupedResult",
    "MetricsResult",
    "MsprtResult",
    "analyze_metrics",
    "cuped",
    "cuped_outcome_model",
    "mad_confidence_path",
    "mad_confidence_sequence",
    "msprt",
    "outcome_predictions",
]

CORRECTIONS = ("bonferroni", "none")
GUARDRAIL_VERDICTS = ("pass", "fail", "inconclusive")
_CS_COLUMNS = ["arm", "estimate", "lower", "upper", "radius", "p_value", "n", "n_treated", "n_control"]


# -- input checks ------------------------------------------------------------------------------


def _require_columns(rows: pd.DataFrame, columns: Sequence[str]) -> None:
    for col in columns:
        if col not in rows.columns:
            raise RowsError(
                col, "<missing>", f"the rows must have a '{col}' column; found {sorted(map(str, rows.columns))}"
            )


def _finite(rows: pd.DataFrame, col: str) -> np.ndarray:
    values = pd.to_numeric(rows[col], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise RowsError(col, rows[col].iloc[first], f"must be a finite number (row {first}); fill or drop it")
    return values


def _probabilities(rows: pd.DataFrame) -> np.ndarray:
    p = _finite(rows, "assignment_prob")
    bad = ~((p > 0) & (p <= 1))
    if bad.any():
        raise RowsError("assignment_prob", float(p[bad][0]), "a recorded assignment probability must be in (0, 1]")
    return p


def _arm_list(rows: pd.DataFrame, control: str, arms: Sequence[str] | None) -> list[str]:
    seen = pd.unique(rows["arm"].astype(str))
    if arms is None:
        return [control] + sorted(a for a in seen if a != control)
    arms = [str(a) for a in arms]
    if control not in arms:
        raise ValueError(f"arms = {arms}: must include the control arm {control!r}")
    unknown = sorted(set(seen) - set(arms))
    if unknown:
        raise RowsError("arm", unknown[0], f"not one of the experiment's arms {arms}")
    return [control] + [a for a in arms if a != control]


def _check_alpha(alpha: float, name: str = "alpha") -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"{name} = {alpha!r}: must be in (0, 1)")


def _outcome_model_array(outcome_model: pd.DataFrame, rows: pd.DataFrame, arms: list[str]) -> np.ndarray:
    missing = [a for a in arms if a not in outcome_model.columns]
    if missing:
        raise ValueError(
            f"outcome_model lacks a column for arm {missing[0]!r}: it needs one column of predicted "
            f"E[Y | x, arm] per arm {arms}"
        )
    if not outcome_model.index.equals(rows.index):
        raise ValueError(
            "outcome_model's index differs from the rows' index: build it for these rows "
            "(e.g. outcome_predictions(posterior, rows)) or reindex it with outcome_model.loc[rows.index]"
        )
    values = outcome_model[arms].to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(
            f"outcome_model[{arms[c]!r}] = {values[r, c]!r} at row {r}: predictions must be finite; "
            "use 0.0 for rows with no earlier model (the score is then the plain IPW one)"
        )
    return values


def _eta(alpha: float, t_star: float) -> float:
    """Mixture width tuned so the sequence is tightest near ``t_star`` (Liang & Bojinov, eq. 9)."""
    log_a = np.log(alpha)
    return float(np.sqrt((-2 * log_a + np.log(-2 * log_a + 1)) / t_star))


# -- the Mixture Adaptive Design confidence sequence ---------------------------------------------


def _mad_arrays(
    arm: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    arms: list[str],
    model: np.ndarray | None,
    alpha: float,
    t_star: float,
    correction: str,
    looks: np.ndarray,
) -> pd.DataFrame:
    """Running-sum MAD sequence of every treatment at the row counts ``looks`` (O(rows))."""
    n_treat = len(arms) - 1
    alpha_cs = alpha / n_treat if correction == "bonferroni" and n_treat > 0 else alpha
    eta_cs, eta_p = _eta(alpha_cs, t_star), _eta(alpha, t_star)
    t = np.arange(1, len(y) + 1, dtype=float)
    at = looks - 1
    is_control = arm == arms[0]
    n_control = np.cumsum(is_control)
    frames = []
    for j, treatment in enumerate(arms[1:], start=1):
        is_treated = arm == treatment
        if model is None:
            resid_t = resid_c = y
            base = 0.0
        else:
            resid_t, resid_c = y - model[:, j], y - model[:, 0]
            base = model[:, j] - model[:, 0]
        psi = base + np.where(is_treated, resid_t / p, 0.0) - np.where(is_control, resid_c / p, 0.0)
        s = np.where(is_treated, (resid_t / p) ** 2, 0.0) + np.where(is_control, (resid_c / p) ** 2, 0.0)
        n_treated = np.cumsum(is_treated)
        defined = (n_treated > 0) & (n_control > 0)
        estimate = np.cumsum(psi) / t
        big_s = np.cumsum(s)
        radius = np.sqrt(
            2 * (big_s * eta_cs**2 + 1) / (t**2 * eta_cs**2) * np.log(np.sqrt(big_s * eta_cs**2 + 1) / alpha_cs)
        )
        # Always-valid p-value: the smallest level whose sequence (η fixed at the level-alpha
        # tuning, so the family is nested in the level) excludes 0, kept as a running minimum.
        v = big_s * eta_p**2 + 1
        with np.errstate(over="ignore"):
            p_now = np.minimum(1.0, np.sqrt(v) * np.exp(-(t**2) * eta_p**2 * estimate**2 / (2 * v)))
        p_value = np.minimum.accumulate(np.where(defined, p_now, 1.0))
        estimate = np.where(defined, estimate, np.nan)
        radius = np.where(defined, radius, np.inf)
        lower = np.where(defined, estimate - radius, -np.inf)
        upper = np.where(defined, estimate + radius, np.inf)
        frames.append(
            pd.DataFrame(
                {
                    "arm": treatment,
                    "estimate": estimate[at],
                    "lower": lower[at],
                    "upper": upper[at],
                    "radius": radius[at],
                    "p_value": p_value[at],
                    "n": looks,
                    "n_treated": n_treated[at],
                    "n_control": n_control[at],
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=_CS_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def _mad_inputs(rows, outcome, control, alpha, t_star, correction, outcome_model, arms):
    _require_columns(rows, ["arm", "assignment_prob", outcome])
    _check_alpha(alpha)
    if correction not in CORRECTIONS:
        raise ValueError(f"correction = {correction!r}: must be one of {CORRECTIONS}")
    if isinstance(t_star, bool) or not isinstance(t_star, (int, float)) or not t_star > 0:
        raise ValueError(
            f"t_star = {t_star!r}: must be a positive number, fixed before the experiment starts "
            "(the expected total number of visitors)"
        )
    arm_names = _arm_list(rows, str(control), arms)
    y, p = _finite(rows, outcome), _probabilities(rows)
    model = None if outcome_model is None else _outcome_model_array(outcome_model, rows, arm_names)
    return rows["arm"].astype(str).to_numpy(), y, p, arm_names, model


def mad_confidence_path(
    rows: pd.DataFrame,
    *,
    outcome: str,
    control: str,
    t_star: float,
    alpha: float = 0.05,
    correction: Literal["bonferroni", "none"] = "bonferroni",
    outcome_model: pd.DataFrame | None = None,
    arms: Sequence[str] | None = None,
    looks: Sequence[int] | Literal["round"] | None = None,
) -> pd.DataFrame:
    """The MAD confidence sequence of every treatment, read at many looks.

    Parameters
    ----------
    rows : DataFrame
        One row per visitor **in arrival order**, with columns ``arm``, ``assignment_prob`` (the
        recorded probability that the visitor got its arm) and ``outcome``.
    outcome : str
        The outcome column.
    control : str
        The control arm.
    t_star : float
        Sample size at which the sequence is tightest. Set it before the experiment starts to the
        expected total number of visitors (planned rounds × expected visitors per round) and never
        change it between looks: any fixed value keeps validity, a value chosen after seeing the
        data does not. It is forgiving: off by a factor of 10, widths change by about 10 %.
    alpha : float
        Error rate of the sequence: it misses the true effect at *any* look with probability at
        most ``alpha``.
    correction : {"bonferroni", "none"}
        ``"bonferroni"`` (default) runs each treatment's sequence at ``alpha / (K - 1)``, so all
        K - 1 sequences cover simultaneously.
    outcome_model : DataFrame, optional
        Predicted ``E[Y | x, arm]`` for every row (index equal to ``rows.index``, one column per
        arm), fitted on earlier data only (e.g. :func:`outcome_predictions` of the posterior of
        earlier rounds, or :func:`cuped_outcome_model`). Gives the AIPW score; use 0.0 for rows
        with no earlier model. Without it, the IPW score.
    arms : sequence of str, optional
        All arms of the experiment (default: the control and the arms found in ``rows``, sorted).
        Sets K for the Bonferroni correction and lists arms not yet seen.
    looks : sequence of int or "round", optional
        Row counts (1 … len(rows)) at which to read the sequence; ``"round"`` reads it at the end
        of each round (needs a ``round`` column); default: after every row.

    Returns
    -------
    DataFrame
        One row per look × treatment: ``arm``, ``estimate``, ``lower``, ``upper``, ``radius``,
        ``p_value`` (always-valid, unadjusted), ``n`` (rows seen), ``n_treated``, ``n_control``,
        and ``round`` when ``looks="round"``. ``estimate`` is NaN and ``radius`` infinite until
        both the control and the treatment have been seen.

    Raises
    ------
    RowsError
        A missing column, a non-finite outcome or probability, a probability outside (0, 1], an
        arm outside ``arms``.
    ValueError
        ``alpha``, ``t_star``, ``correction``, ``looks`` or ``outcome_model`` invalid.

    See Also
    --------
    mad_confidence_sequence : the latest look only.

    Notes
    -----
    Visitor ``i`` arrives with arm ``A_i`` drawn with recorded probability ``p_i``. For treatment
    ``k`` the IPW score is ``ψ_i = Y_i / p_i`` if ``A_i = k``, ``-Y_i / p_i`` if ``A_i`` is the
    control, and 0 otherwise; with an outcome model ``m`` fitted on earlier data, the AIPW score is
    ``ψ_i = m_k(x_i) - m_0(x_i) + [A_i = k](Y_i - m_k)/p_i - [A_i = 0](Y_i - m_0)/p_i``. After
    ``t`` visitors

    .. math::

        \\hat\\tau_t = \\frac1t \\sum_{i \\le t} ψ_i, \\qquad
        S_t = \\sum_{i \\le t,\\, A_i \\in \\{0, k\\}} \\frac{(Y_i - m_{A_i}(x_i))^2}{p_i^2},

        r_t = \\sqrt{\\frac{2 (S_t η^2 + 1)}{t^2 η^2}
              \\ln\\frac{\\sqrt{S_t η^2 + 1}}{α'}}, \\qquad
        η = \\sqrt{\\frac{-2 \\ln α' + \\ln(-2 \\ln α' + 1)}{t^*}},

    with ``α' = α / (K - 1)`` under Bonferroni (``m = 0`` for IPW). ``[τ̂_t - r_t, τ̂_t + r_t]`` is an
    asymptotic confidence sequence: it covers the average treatment effect at all ``t`` at once
    with probability ``1 - α'``. The always-valid p-value is
    ``min_{s ≤ t} min(1, √(S_s η² + 1) exp(-s² η² τ̂_s² / (2(S_s η² + 1))))`` with η tuned at
    ``α``; it is at most ``α`` exactly when a level-``α`` sequence with that η has excluded 0.
    Running sums make the whole path O(rows); pyssed 0.2.0 gives the same numbers in O(rows²),
    except that it reports a treatment as soon as *any* non-control visitor arrived.

    The sequence is asymptotic. With plain IPW, small probabilities and a rare binary outcome,
    ``S_t`` stays short until the rare successes of a starved arm have been seen; in simulation
    (Thompson allocation with probabilities down to 1/60, a 10 % outcome, 300 visitors a round)
    joint coverage over 10 looks was about 92 %. Centring the score with the running mean
    (``outcome_model=cuped_outcome_model(rows, outcome=..., arms=...)``, what
    :func:`analyze_metrics` does) restored 96 %; so did rounds of 1,000 visitors.

    References
    ----------
    .. [1] Liang, B. and Bojinov, I. (2024). "An experimental design for anytime-valid causal
       inference on multi-armed bandits." arXiv:2311.05794.
    .. [2] Waudby-Smith, I., Arbour, D., Sinha, R., Kennedy, E. H. and Ramdas, A. (2024).
       "Time-uniform central limit theory and asymptotic confidence sequences." Annals of
       Statistics.
    .. [3] Molitor, D. and Gold, D. (2025). "Anytime-valid inference in adaptive experiments:
       covariate adjustment and balanced power." arXiv:2506.20523.

    Examples
    --------
    >>> rows = pd.DataFrame({"arm": ["a", "b", "a", "b"], "assignment_prob": 0.5,
    ...                      "y": [1.0, 0.0, 1.0, 1.0]})
    >>> path = mad_confidence_path(rows, outcome="y", control="a", t_star=1000)
    >>> path["estimate"].round(2).tolist()
    [nan, -1.0, -1.33, -0.5]
    """
    arm, y, p, arm_names, model = _mad_inputs(rows, outcome, control, alpha, t_star, correction, outcome_model, arms)
    n = len(rows)
    rounds = None
    if looks is None:
        look_at = np.arange(1, n + 1)
    elif isinstance(looks, str):
        if looks != "round":
            raise ValueError(f"looks = {looks!r}: give row counts or 'round'")
        _require_columns(rows, ["round"])
        round_values = rows["round"].to_numpy()
        ends = np.flatnonzero(np.r_[round_values[1:] != round_values[:-1], True]) if n else np.array([], dtype=int)
        if len(set(round_values[ends])) != len(ends):
            raise RowsError(
                "round", round_values[ends][0], "rows must be grouped by round, in round order (sort them by arrival)"
            )
        look_at, rounds = ends + 1, round_values[ends]
    else:
        look_at = np.asarray(looks, dtype=np.int64)
        if look_at.ndim != 1 or (look_at < 1).any() or (look_at > n).any():
            raise ValueError(f"looks = {list(np.atleast_1d(looks))[:5]}...: row counts must lie in [1, {n}]")
    out = _mad_arrays(arm, y, p, arm_names, model, alpha, float(t_star), correction, look_at)
    if rounds is not None:
        out.insert(0, "round", np.tile(rounds, len(arm_names) - 1))
    return out


def mad_confidence_sequence(
    rows: pd.DataFrame,
    *,
    outcome: str,
    control: str,
    t_star: float,
    alpha: float = 0.05,
    correction: Literal["bonferroni", "none"] = "bonferroni",
    outcome_model: pd.DataFrame | None = None,
    arms: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Anytime-valid effect of every treatment vs control, after all ``rows`` (MAD estimator).

    Parameters are those of :func:`mad_confidence_path` (``t_star``: the expected total number of
    visitors, fixed in advance).

    Returns
    -------
    DataFrame
        One row per treatment: ``arm``, ``estimate``, ``lower``, ``upper``, ``radius``,
        ``p_value`` (always-valid, unadjusted), ``n`` (rows), ``n_treated``, ``n_control``.
        NaN estimate and infinite radius while the control or the treatment is unseen.

    Raises
    ------
    RowsError, ValueError
        As :func:`mad_confidence_path`.

    Notes
    -----
    See :func:`mad_confidence_path` for the formula.

    References
    ----------
    .. [1] Liang, B. and Bojinov, I. (2024). "An experimental design for anytime-valid causal
       inference on multi-armed bandits." arXiv:2311.05794.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> rows = pd.DataFrame({"arm": rng.choice(["control", "new"], 4000), "assignment_prob": 0.5})
    >>> rows["y"] = rng.normal(1.0, 1.0, 4000) + 0.5 * (rows["arm"] == "new")
    >>> cs = mad_confidence_sequence(rows, outcome="y", control="control", t_star=4000)
    >>> bool(cs["lower"].iloc[0] < 0.5 < cs["upper"].iloc[0])
    True
    """
    arm, y, p, arm_names, model = _mad_inputs(rows, outcome, control, alpha, t_star, correction, outcome_model, arms)
    if len(rows) == 0:
        empty = pd.DataFrame(
            {
                "arm": arm_names[1:],
                "estimate": np.nan,
                "lower": -np.inf,
                "upper": np.inf,
                "radius": np.inf,
                "p_value": 1.0,
                "n": 0,
                "n_treated": 0,
                "n_control": 0,
            }
        )
        return empty
    return _mad_arrays(arm, y, p, arm_names, model, alpha, float(t_star), correction, np.array([len(rows)]))


# -- outcome models for the AIPW score -------------------------------------------------------------


def outcome_predictions(posterior: Posterior, rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """Posterior-mean ``E[Y | x, arm]`` of every row and arm: an outcome model for the AIPW score.

    Parameters
    ----------
    posterior : Posterior
        Fitted on **earlier rounds only** when the predictions feed :func:`mad_confidence_sequence`
        (the posterior of round r - 1 for the rows of round r); a posterior that has seen the rows
        it predicts breaks the sequence's validity.
    rows : DataFrame, optional
        Rows with the spec's covariate columns (default: the posterior's observed rows).

    Returns
    -------
    DataFrame
        Index ``rows.index``, one column per arm (control first).

    Examples
    --------
    Rows of rounds 1..R, each predicted by the posterior of the round before (zeros in round 1)::

        model = pd.concat([outcome_predictions(posteriors[r - 1], rows[rows["round"] == r])
                           if r > 1 else zeros_for_round_1 for r in rounds])
    """
    rows = posterior.observed if rows is None else rows
    prof = posterior.profiles(rows)
    columns = {}
    for arm in posterior.arms:
        per_profile = [
            posterior.outcome_mean_draws(prof.frame.iloc[s : s + DEFAULT_CHUNK_PROFILES], arm).mean(axis=0)
            for s in range(0, len(prof.frame), DEFAULT_CHUNK_PROFILES)
        ]
        values = np.concatenate(per_profile) if per_profile else np.empty(0)
        columns[arm] = values[prof.index] if len(rows) else np.empty(0)
    return pd.DataFrame(columns, index=rows.index)


def cuped_outcome_model(
    rows: pd.DataFrame,
    *,
    outcome: str,
    arms: Sequence[str],
    pre_period: str | None = None,
    warmup: int = 50,
) -> pd.DataFrame:
    """A predictable CUPED outcome model: each row predicted from the rows before it only.

    Row ``i`` gets ``m_i = ȳ_{<i} + θ_{<i} (x_i - x̄_{<i})``, the same for every arm, where the
    means and ``θ = cov(x, y) / var(x)`` are computed over rows ``0 … i-1``, pooled across arms
    (``m_0 = 0``; ``θ = 0`` for the first ``warmup`` rows and while ``x`` has shown no spread).
    Without ``pre_period`` it is the
    running mean alone, which centres the outcome. Passed as ``outcome_model`` to
    :func:`mad_confidence_sequence`, it keeps the sequence exactly valid: the model of row ``i``
    is fixed before row ``i`` is assigned, and since it is common to all arms the score reduces to
    the IPW score of the residual ``Y - m``.

    Parameters
    ----------
    rows : DataFrame
        In arrival order, with the ``outcome`` column (and ``pre_period`` when given).
    outcome : str
    arms : sequence of str
        Column names of the result (all arms of the experiment).
    pre_period : str, optional
        A numeric pre-period covariate (e.g. the same metric before the experiment).
    warmup : int
        Earlier rows needed before ``θ`` is used: fitted on a handful of rows it is erratic, and
        one wild prediction inflates the sequence's variance term for the rest of the experiment.

    Returns
    -------
    DataFrame
        Index ``rows.index``, one (identical) column per arm.

    Raises
    ------
    RowsError
        A missing column or a non-finite value.

    Notes
    -----
    Pooling across arms and using earlier rows only is the choice that keeps validity: a ``θ``
    fitted on all rows (including the current one) would make the score depend on its own
    assignment; a ``θ`` per arm would differ between arms by the treatment effect.

    References
    ----------
    .. [1] Deng, A., Xu, Y., Kohavi, R. and Walker, T. (2013). "Improving the sensitivity of
       online controlled experiments by utilizing pre-experiment data." WSDM.

    Examples
    --------
    >>> rows = pd.DataFrame({"y": [1.0, 3.0, 2.0, 5.0], "x": [0.0, 2.0, 1.0, 4.0]})
    >>> cuped_outcome_model(rows, outcome="y", arms=["a", "b"], pre_period="x", warmup=2)["a"].tolist()
    [0.0, 1.0, 2.0, 5.0]
    """
    _require_columns(rows, [outcome] + ([pre_period] if pre_period else []))
    if isinstance(warmup, bool) or int(warmup) != warmup or warmup < 0:
        raise ValueError(f"warmup = {warmup!r}: must be a non-negative number of rows")
    y = _finite(rows, outcome)
    n = len(y)
    prior_n = np.arange(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        # Sums over the rows before each row, shifted by the first value to limit cancellation.
        y0 = y[0] if n else 0.0
        sum_y = np.r_[0.0, np.cumsum(y - y0)[:-1]] if n else np.empty(0)
        mean_y = np.where(prior_n > 0, y0 + sum_y / prior_n, 0.0)
        prediction = mean_y
        if pre_period:
            x = _finite(rows, pre_period)
            x0 = x[0] if n else 0.0
            xc, yc = x - x0, y - y0
            sum_x = np.r_[0.0, np.cumsum(xc)[:-1]] if n else np.empty(0)
            sum_xx = np.r_[0.0, np.cumsum(xc * xc)[:-1]] if n else np.empty(0)
            sum_xy = np.r_[0.0, np.cumsum(xc * yc)[:-1]] if n else np.empty(0)
            mean_xc, mean_yc = sum_x / prior_n, sum_y / prior_n
            var_x = sum_xx / prior_n - mean_xc**2
            cov_xy = sum_xy / prior_n - mean_xc * mean_yc
            spread = (prior_n >= max(warmup, 2)) & (var_x > 1e-12 * np.maximum(1.0, sum_xx / np.maximum(prior_n, 1)))
            theta = np.where(spread, cov_xy / np.where(spread, var_x, 1.0), 0.0)
            prediction = np.where(prior_n > 0, mean_y + theta * (xc - mean_xc), 0.0)
    return pd.DataFrame({str(a): prediction for a in arms}, index=rows.index)


# -- CUPED -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CupedResult:
    """Outcome adjusted with a pre-period covariate.

    Attributes
    ----------
    theta : float
        Regression coefficient ``cov(x, y) / var(x)``.
    pre_period_mean : float
        ``x̄`` the adjustment is centred on.
    adjusted : Series
        ``y - θ (x - x̄)``, index of the rows.
    variance_reduction : float
        ``1 - var(adjusted) / var(y)``; about ``ρ²`` when ``θ`` is estimated on the same rows.
    correlation : float
        Pearson correlation ``ρ`` of ``x`` and ``y``.
    n : int
    """

    theta: float
    pre_period_mean: float
    adjusted: pd.Series
    variance_reduction: float
    correlation: float
    n: int


def cuped(
    rows: pd.DataFrame,
    *,
    outcome: str,
    pre_period: str,
    theta: float | None = None,
) -> CupedResult:
    """CUPED: regression adjustment of an outcome with a pre-period covariate.

    Parameters
    ----------
    rows : DataFrame
        With the ``outcome`` and ``pre_period`` columns; all arms together.
    outcome, pre_period : str
        Column names.
    theta : float, optional
        A coefficient fixed in advance (e.g. estimated on earlier rounds). Default: estimated on
        ``rows``, pooled across arms, so the adjustment subtracts the same function of the
        pre-period covariate from every arm and leaves the treatment effect unbiased.

    Returns
    -------
    CupedResult

    Raises
    ------
    RowsError
        A missing column or a non-finite value.
    ValueError
        Fewer than two rows, or a constant pre-period covariate with ``theta`` to estimate.

    See Also
    --------
    cuped_outcome_model : the predictable (running) version used by the anytime-valid sequence.

    Notes
    -----
    ``θ = cov(x, y) / var(x)`` and ``y_cuped = y - θ (x - x̄)``, so
    ``var(y_cuped) = var(y) (1 - ρ²)``: the variance reduction is ``ρ²``.

    References
    ----------
    .. [1] Deng, A., Xu, Y., Kohavi, R. and Walker, T. (2013). "Improving the sensitivity of
       online controlled experiments by utilizing pre-experiment data." WSDM.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> x = rng.normal(size=20_000)
    >>> rows = pd.DataFrame({"pre": x, "y": 0.8 * x + 0.6 * rng.normal(size=20_000)})
    >>> round(cuped(rows, outcome="y", pre_period="pre").variance_reduction, 2)
    0.64
    """
    _require_columns(rows, [outcome, pre_period])
    y, x = _finite(rows, outcome), _finite(rows, pre_period)
    if len(y) < 2:
        raise ValueError(f"cuped needs at least two rows; got {len(y)}")
    var_x, var_y = x.var(ddof=1), y.var(ddof=1)
    cov_xy = np.cov(x, y, ddof=1)[0, 1]
    if theta is None:
        if var_x <= 0:
            raise ValueError(f"pre-period column '{pre_period}' is constant ({x[0]!r}): it cannot adjust the outcome")
        theta = cov_xy / var_x
    x_mean = float(x.mean())
    adjusted = y - theta * (x - x_mean)
    correlation = cov_xy / np.sqrt(var_x * var_y) if var_x > 0 and var_y > 0 else float("nan")
    reduction = 1 - adjusted.var(ddof=1) / var_y if var_y > 0 else 0.0
    return CupedResult(
        theta=float(theta),
        pre_period_mean=x_mean,
        adjusted=pd.Series(adjusted, index=rows.index, name=outcome),
        variance_reduction=float(reduction),
        correlation=float(correlation),
        n=len(y),
    )


# -- mSPRT -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MsprtResult:
    """Always-valid p-values of a two-arm comparison (mixture SPRT).

    Attributes
    ----------
    path : DataFrame
        One row per look: ``n`` (rows seen), ``n_control``, ``n_treatment``, ``estimate``
        (treatment mean - control mean), ``tau2`` (mixing variance used), ``statistic`` (the
        mixture likelihood ratio Λ) and ``p_value`` (always-valid: a running minimum).
    p_value : float
        At the last look.
    alpha : float
    rejected : bool
        ``p_value <= alpha``: the null of no difference is rejected, whenever one stops.
    """

    path: pd.DataFrame
    p_value: float
    alpha: float
    rejected: bool


def msprt(
    rows: pd.DataFrame,
    *,
    outcome: str,
    control: str,
    treatment: str,
    family: Literal["binary", "continuous"] = "continuous",
    tau2: float | None = None,
    alpha: float = 0.05,
    looks: Sequence[int] | None = None,
) -> MsprtResult:
    """Mixture sequential probability ratio test of a treatment vs control (Johari et al. 2017).

    For a plain two-arm comparison whose split does not adapt to the data (e.g. the control cell
    vs the explore cell, or a classic A/B test): it compares the arms' sample means, which
    adaptive allocation biases. Under adaptive allocation use :func:`mad_confidence_sequence`.

    Parameters
    ----------
    rows : DataFrame
        In arrival order, with ``arm`` and ``outcome``; rows of other arms are skipped.
    outcome, control, treatment : str
    family : {"binary", "continuous"}
        Variance of a visitor's outcome: ``p̂(1 - p̂)`` (binary) or the sample variance, per arm.
    tau2 : float, optional
        Variance of the normal mixture over the effect, on the outcome scale: the test has most
        power for effects of size about ``√tau2``. Default: ``(0.1 σ̂)²`` with ``σ̂²`` the pooled
        per-visitor variance at each look — a standardised effect of 0.1, typical of web
        experiments, which also makes the test invariant to the outcome's units.
    alpha : float
        Level for ``rejected``.
    looks : sequence of int, optional
        Row counts at which to report the path (default: every row). The p-value is the running
        minimum over **every** row, which stays valid: the bound holds uniformly over time.

    Returns
    -------
    MsprtResult

    Raises
    ------
    RowsError
        A missing column, a non-finite outcome, a binary outcome outside {0, 1}.
    ValueError
        ``family``, ``tau2``, ``alpha`` or ``looks`` invalid.

    Notes
    -----
    With ``θ̂_n`` the difference of means and ``V_n = s_t²/n_t + s_c²/n_c`` its plug-in variance,

    .. math::

        Λ_n = \\sqrt{\\frac{V_n}{V_n + τ^2}}
              \\exp\\left(\\frac{τ^2 \\hat θ_n^2}{2 V_n (V_n + τ^2)}\\right),
        \\qquad p_n = \\min\\left(p_{n-1}, 1 / Λ_n\\right), \\quad p_0 = 1.

    Under the null ``Λ`` is (asymptotically) a martingale with mean 1, so by Ville's inequality
    ``P(∃n: p_n ≤ α) ≤ α``. ``p_n = 1`` until each arm has two visitors and ``V_n > 0``.

    References
    ----------
    .. [1] Johari, R., Koomen, P., Pekelis, L. and Walsh, D. (2017). "Peeking at A/B tests: why
       it matters, and what to do about it." KDD.

    Examples
    --------
    >>> rng = np.random.default_rng(2)
    >>> rows = pd.DataFrame({"arm": rng.choice(["a", "b"], 5000)})
    >>> rows["y"] = rng.binomial(1, np.where(rows["arm"] == "b", 0.3, 0.2))
    >>> msprt(rows, outcome="y", control="a", treatment="b", family="binary").rejected
    True
    """
    _require_columns(rows, ["arm", outcome])
    _check_alpha(alpha)
    if family not in ("binary", "continuous"):
        raise ValueError(f"family = {family!r}: must be 'binary' or 'continuous' (treat a hurdle metric as continuous)")
    if tau2 is not None and not (np.isfinite(tau2) and tau2 > 0):
        raise ValueError(f"tau2 = {tau2!r}: the mixing variance must be a positive number")
    y = _finite(rows, outcome)
    if family == "binary" and not np.isin(y, (0.0, 1.0)).all():
        raise RowsError(outcome, float(y[~np.isin(y, (0.0, 1.0))][0]), "a binary outcome takes 0 or 1")
    arm = rows["arm"].astype(str).to_numpy()
    n = len(y)
    look_at = np.arange(1, n + 1) if looks is None else np.asarray(looks, dtype=np.int64)
    if look_at.ndim != 1 or (look_at < 1).any() or (look_at > n).any():
        raise ValueError(f"looks: row counts must lie in [1, {n}]")
    shift = y[0] if n else 0.0  # sums of y - shift limit cancellation in the variances

    def running(mask):
        w = mask.astype(float)
        yc = (y - shift) * w
        return np.cumsum(w), np.cumsum(yc), np.cumsum(yc * yc)

    n_c, s_c, ss_c = running(arm == control)
    n_t, s_t, ss_t = running(arm == treatment)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        mean_c, mean_t = s_c / n_c, s_t / n_t
        if family == "binary":
            var_c = (mean_c + shift) * (1 - mean_c - shift)
            var_t = (mean_t + shift) * (1 - mean_t - shift)
        else:
            var_c = (ss_c - n_c * mean_c**2) / (n_c - 1)
            var_t = (ss_t - n_t * mean_t**2) / (n_t - 1)
        var_c, var_t = np.maximum(var_c, 0.0), np.maximum(var_t, 0.0)
        v = var_t / n_t + var_c / n_c
        estimate = mean_t - mean_c
        if tau2 is None:
            mix = 0.01 * (n_c * var_c + n_t * var_t) / (n_c + n_t)
        else:
            mix = np.full(n, float(tau2))
        defined = (n_c >= 2) & (n_t >= 2) & (v > 0) & (mix > 0)
        log_lr = 0.5 * np.log(v / (v + mix)) + mix * estimate**2 / (2 * v * (v + mix))
        statistic = np.where(defined, np.exp(log_lr), 1.0)
        p_value = np.minimum.accumulate(np.where(defined, np.minimum(1.0, np.exp(-log_lr)), 1.0))
    at = look_at - 1
    path = pd.DataFrame(
        {
            "n": look_at,
            "n_control": n_c[at].astype(np.int64),
            "n_treatment": n_t[at].astype(np.int64),
            "estimate": np.where(defined, estimate, np.nan)[at],
            "tau2": np.where(defined, mix, np.nan)[at],
            "statistic": statistic[at],
            "p_value": p_value[at],
        }
    )
    final = float(p_value[-1]) if n else 1.0
    return MsprtResult(path=path, p_value=final, alpha=alpha, rejected=bool(final <= alpha))


# -- many metrics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsResult:
    """Every metric of a spec, every treatment: anytime-valid effects, FDR and guardrail verdicts.

    Attributes
    ----------
    effects : DataFrame
        One row per metric × treatment: ``metric``, ``role`` (``primary``, ``guardrail``,
        ``secondary``), ``arm``, ``estimate``, ``lower``, ``upper``, ``radius``, ``n``,
        ``p_value`` (always-valid), ``q_value`` (Benjamini–Hochberg over the primary and
        secondary rows; NaN for guardrails), ``discovery`` (``q_value <= fdr``) and ``verdict``
        (guardrails: ``pass`` / ``fail`` / ``inconclusive``; None otherwise).
    guardrails : DataFrame
        One row per guardrail × treatment: ``metric``, ``arm``, ``direction``, ``tolerance``,
        ``estimate``, ``lower``, ``upper``, ``verdict``, ``reason``.
    alpha : float
        Level of the confidence sequences.
    fdr : float
        False discovery rate of the BH decisions.
    """

    effects: pd.DataFrame
    guardrails: pd.DataFrame
    alpha: float
    fdr: float

    def failed_guardrails(self) -> dict[str, tuple[str, ...]]:
        """Treatments with at least one failed guardrail → the names of those guardrails."""
        failed = self.guardrails[self.guardrails["verdict"] == "fail"]
        return {arm: tuple(g["metric"]) for arm, g in failed.groupby("arm", sort=False)}

    def primary(self) -> pd.DataFrame:
        """The primary metric's rows of ``effects``, one per treatment."""
        return self.effects[self.effects["role"] == "primary"].reset_index(drop=True)


def _guardrail_verdict(lower: float, upper: float, guardrail: Guardrail) -> tuple[str, str]:
    """Non-inferiority verdict of one guardrail from an anytime-valid interval ``[lower, upper]``."""
    tol = guardrail.tolerance
    if guardrail.direction == "decrease_is_bad":
        if upper < -tol:
            return "fail", f"interval [{lower:.4g}, {upper:.4g}] lies below -{tol:g}: a decrease beyond the tolerance"
        if lower > -tol:
            return "pass", f"interval [{lower:.4g}, {upper:.4g}] excludes a decrease larger than {tol:g}"
        return "inconclusive", f"interval [{lower:.4g}, {upper:.4g}] contains -{tol:g}"
    if lower > tol:
        return "fail", f"interval [{lower:.4g}, {upper:.4g}] lies above {tol:g}: an increase beyond the tolerance"
    if upper < tol:
        return "pass", f"interval [{lower:.4g}, {upper:.4g}] excludes an increase larger than {tol:g}"
    return "inconclusive", f"interval [{lower:.4g}, {upper:.4g}] contains {tol:g}"


def _arrival_order(rows: pd.DataFrame) -> pd.DataFrame:
    keys = [c for c in ("round", "assigned_at") if c in rows.columns]
    if not keys:
        return rows
    # Stored rows come back in arrival order already: checking is a linear pass, sorting is not.
    order = pd.MultiIndex.from_frame(rows[keys]) if len(keys) > 1 else pd.Index(rows[keys[0]])
    return rows if order.is_monotonic_increasing else rows.sort_values(keys, kind="mergesort")


def analyze_metrics(
    rows: pd.DataFrame,
    spec: ExperimentSpec,
    *,
    t_star: float | None = None,
    alpha: float | None = None,
    fdr: float | None = None,
    fdr_method: Literal["bh", "by"] = "bh",
    correction: Literal["bonferroni", "none"] = "bonferroni",
    adjust: bool = True,
    outcome_models: Mapping[str, pd.DataFrame] | None = None,
) -> MetricsResult:
    """Anytime-valid effects of every metric and treatment, FDR control and guardrail verdicts.

    Parameters
    ----------
    rows : DataFrame
        All rows of the experiment so far, with ``arm``, ``assignment_prob`` and every metric
        column (and the spec's ``pre_period`` column when it declares one). Sorted into arrival
        order by ``round`` then ``assigned_at`` when those columns exist (stable sort).
    spec : ExperimentSpec
    t_star : float, optional
        Expected total number of visitors, fixed in advance (see :func:`mad_confidence_path`);
        default: the spec's ``decision.planned_visitors``.
    alpha : float, optional
        Level of the confidence sequences (Bonferroni across treatments under ``correction``);
        default: the spec's ``decision.alpha``.
    fdr : float, optional
        False discovery rate of the discoveries among primary and secondary metrics × treatments;
        default: the spec's ``decision.fdr``.
    fdr_method : {"bh", "by"}
        Benjamini–Hochberg, or Benjamini–Yekutieli (valid under any dependence between metrics).
    correction : {"bonferroni", "none"}
        Of the intervals across treatments.
    adjust : bool
        Use :func:`cuped_outcome_model` (running mean, plus the spec's ``pre_period`` covariate
        when declared) as the outcome model of every metric without one in ``outcome_models``.
        It narrows the sequences and keeps them valid. ``False``: plain IPW.
    outcome_models : mapping of str to DataFrame, optional
        Outcome model per metric name (e.g. :func:`outcome_predictions` of earlier rounds'
        posterior for the primary metric).

    Returns
    -------
    MetricsResult

    Raises
    ------
    RowsError
        A missing or non-finite column, an unknown arm.
    ValueError
        An invalid level or method.

    Notes
    -----
    Primary and secondary metrics form one family: their always-valid p-values (see
    :func:`mad_confidence_path`) go through ``scipy.stats.false_discovery_control``; valid
    p-values at any stopping time make the procedure valid at any round. Guardrails are not in
    that family: each is a non-inferiority test on its anytime-valid interval ``[L, U]`` with
    tolerance ``δ`` — for ``decrease_is_bad`` it fails when ``U < -δ`` (harm beyond the
    tolerance), passes when ``L > -δ`` (harm larger than ``δ`` excluded), and is inconclusive
    otherwise (mirrored for ``increase_is_bad``). Guardrails are not corrected against each
    other: more guardrails make a false "fail" more likely, which errs on the safe side.

    References
    ----------
    .. [1] Benjamini, Y. and Hochberg, Y. (1995). "Controlling the false discovery rate."
       JRSS B 57(1).
    .. [2] Liang, B. and Bojinov, I. (2024). arXiv:2311.05794.
    """
    t_star = spec.decision.planned_visitors if t_star is None else t_star
    alpha = spec.decision.alpha if alpha is None else alpha
    fdr = spec.decision.fdr if fdr is None else fdr
    _check_alpha(alpha)
    _check_alpha(fdr, "fdr")
    if fdr_method not in ("bh", "by"):
        raise ValueError(f"fdr_method = {fdr_method!r}: must be 'bh' or 'by'")
    outcome_models = dict(outcome_models or {})
    unknown = sorted(set(outcome_models) - {m.name for m in spec.metrics})
    if unknown:
        raise ValueError(
            f"outcome_models has {unknown[0]!r}, which is not a metric of the spec {[m.name for m in spec.metrics]}"
        )
    if outcome_models and not rows.index.is_unique:
        raise ValueError(
            "rows' index has duplicate labels, so outcome_models cannot be aligned to it: reset it "
            "(rows.reset_index(drop=True)) and build the outcome models for those rows"
        )
    rows = _arrival_order(rows)
    roles = [("primary", spec.primary)] + [("guardrail", g) for g in spec.guardrails]
    roles += [("secondary", m) for m in spec.secondary]
    effects, verdicts = [], []
    for role, metric in roles:
        model = outcome_models.get(metric.name)
        if model is not None:
            if not rows.index.isin(model.index).all():
                raise ValueError(
                    f"outcome_models[{metric.name!r}] has no prediction for some rows: its index must "
                    "cover the rows' index (one row of predictions per visitor)"
                )
            model = model.loc[rows.index]
        elif adjust:
            model = cuped_outcome_model(rows, outcome=metric.name, arms=spec.arms, pre_period=spec.pre_period)
        cs = mad_confidence_sequence(
            rows,
            outcome=metric.name,
            control=spec.control,
            t_star=t_star,
            alpha=alpha,
            correction=correction,
            outcome_model=model,
            arms=spec.arms,
        )
        cs.insert(0, "role", role)
        cs.insert(0, "metric", metric.name)
        cs["verdict"] = None
        if isinstance(metric, Guardrail):
            for i, r in cs.iterrows():
                verdict, reason = _guardrail_verdict(r["lower"], r["upper"], metric)
                cs.at[i, "verdict"] = verdict
                verdicts.append(
                    {
                        "metric": metric.name,
                        "arm": r["arm"],
                        "direction": metric.direction,
                        "tolerance": metric.tolerance,
                        "estimate": r["estimate"],
                        "lower": r["lower"],
                        "upper": r["upper"],
                        "verdict": verdict,
                        "reason": reason,
                    }
                )
        effects.append(cs)
    table = pd.concat(effects, ignore_index=True)
    family = (table["role"] != "guardrail").to_numpy()
    q = np.full(len(table), np.nan)
    if family.any():
        q[family] = stats.false_discovery_control(table.loc[family, "p_value"].to_numpy(), method=fdr_method)
    table["q_value"] = q
    table["discovery"] = family & (q <= fdr)
    table = table[
        [
            "metric",
            "role",
            "arm",
            "estimate",
            "lower",
            "upper",
            "radius",
            "n",
            "n_treated",
            "n_control",
            "p_value",
            "q_value",
            "discovery",
            "verdict",
        ]
    ]
    guard_cols = ["metric", "arm", "direction", "tolerance", "estimate", "lower", "upper", "verdict", "reason"]
    return MetricsResult(effects=table, guardrails=pd.DataFrame(verdicts, columns=guard_cols), alpha=alpha, fdr=fdr)
