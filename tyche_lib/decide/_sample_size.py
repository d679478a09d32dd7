"""Sample-size planning with the classic fixed-horizon formulas.

The simulation planner for adaptive rounds lives with the simulator (:mod:`tyche_lib.simulate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "SampleSizeResult",
    "plan_sample_size",
]

SAMPLE_SIZE_METRICS = ("binary", "continuous")


def _probability(value, name: str) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 < value < 1.0
    if not ok:
        raise ValueError(f"{name} = {value!r}: must be a number strictly between 0 and 1")
    return float(value)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} = {value!r}: must be an integer >= 1")
    return int(value)


@dataclass(frozen=True)
class SampleSizeResult:
    """Visitors a fixed-horizon test needs.

    Attributes
    ----------
    n_per_arm : int
        Visitors per arm (control and each treatment), rounded up.
    n_arms : int
        ``n_treatments + 1``.
    n_total : int
        ``n_per_arm * n_arms``.
    metric : {"binary", "continuous"}
    baseline : float
        Control conversion rate or mean.
    treatment_value : float
        The treatment's rate or mean the test is powered to detect.
    absolute_effect : float
        ``treatment_value - baseline``.
    alpha : float
        Family-wise significance level across the treatments.
    alpha_per_comparison : float
        ``alpha / n_treatments`` (Bonferroni).
    power : float
    two_sided : bool
    """

    n_per_arm: int
    n_arms: int
    n_total: int
    metric: str
    baseline: float
    treatment_value: float
    absolute_effect: float
    alpha: float
    alpha_per_comparison: float
    power: float
    two_sided: bool


def plan_sample_size(
    baseline: float,
    mde: float,
    *,
    metric: str = "binary",
    relative: bool = True,
    alpha: float = 0.05,
    power: float = 0.8,
    n_treatments: int = 1,
    sd: float | None = None,
    two_sided: bool = True,
) -> SampleSizeResult:
    """Visitors per arm for a fixed-horizon test of each treatment against control.

    Parameters
    ----------
    baseline : float
        Control conversion rate in (0, 1) (binary) or control mean (continuous).
    mde : float
        Minimum detectable effect, non-zero: a fraction of ``baseline`` when ``relative`` (0.1 is
        a 10% lift), else an absolute difference.
    metric : {"binary", "continuous"}
    relative : bool
    alpha : float
        Family-wise significance level; each of the ``n_treatments`` comparisons is tested at
        ``alpha / n_treatments`` (Bonferroni).
    power : float
        Probability of detecting an effect of size ``mde`` in each comparison.
    n_treatments : int
        Treatment arms, each compared with control.
    sd : float, optional
        Outcome standard deviation per visitor; required for a continuous metric.
    two_sided : bool

    Returns
    -------
    SampleSizeResult

    Raises
    ------
    ValueError
        Naming the argument: ``baseline`` outside (0, 1) for a binary metric, a treatment rate
        outside (0, 1), ``mde`` zero, ``sd`` missing or not positive for a continuous metric,
        ``alpha`` or ``power`` outside (0, 1), ``n_treatments`` < 1, an unknown ``metric``.

    Notes
    -----
    With ``z_α = Φ⁻¹(1 − α')`` for ``α' = α / n_treatments`` (halved when two-sided) and
    ``z_β = Φ⁻¹(power)``:

    - binary, rates ``p₁`` (control) and ``p₂``, ``p̄ = (p₁ + p₂) / 2`` (pooled variance under the
      null, unpooled under the alternative) [1]_::

          n = (z_α·√(2·p̄(1 − p̄)) + z_β·√(p₁(1 − p₁) + p₂(1 − p₂)))² / (p₂ − p₁)²

    - continuous, difference ``δ`` and per-visitor standard deviation ``σ``::

          n = 2·(z_α + z_β)²·σ² / δ²

    ``n`` is rounded up. Baseline 10%, relative MDE 10%, α = 0.05 two-sided, power 0.8 gives
    14,751 visitors per arm.

    References
    ----------
    .. [1] J. L. Fleiss, B. Levin and M. C. Paik, *Statistical Methods for Rates and Proportions*,
       3rd ed., Wiley, 2003, section 4.2 (without continuity correction).

    Examples
    --------
    >>> plan_sample_size(0.10, 0.10).n_per_arm
    14751
    >>> plan_sample_size(20.0, 0.5, metric="continuous", relative=False, sd=6.0).n_per_arm
    2261
    """
    if metric not in SAMPLE_SIZE_METRICS:
        raise ValueError(
            f"metric = {metric!r}: must be one of {SAMPLE_SIZE_METRICS} (a hurdle metric: plan on its mean as continuous)"
        )
    alpha = _probability(alpha, "alpha")
    power = _probability(power, "power")
    n_treatments = _positive_int(n_treatments, "n_treatments")
    for name, value in (("baseline", baseline), ("mde", mde)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} = {value!r}: must be a finite number")
    if mde == 0:
        raise ValueError("mde = 0: a zero effect cannot be detected; give the smallest effect worth finding")
    if metric == "binary":
        _probability(baseline, "baseline")
    elif relative and baseline == 0:
        raise ValueError(
            "baseline = 0 with relative=True: a relative effect needs a non-zero baseline; pass relative=False"
        )
    effect = baseline * mde if relative else float(mde)
    treatment = baseline + effect

    per_comparison = alpha / n_treatments
    z_alpha = stats.norm.ppf(1 - per_comparison / 2 if two_sided else 1 - per_comparison)
    z_beta = stats.norm.ppf(power)
    if metric == "binary":
        if not 0.0 < treatment < 1.0:
            raise ValueError(
                f"mde = {mde!r}: the treatment rate {treatment!r} must be in (0, 1) (baseline {baseline!r}, "
                f"relative={relative})"
            )
        p1, p2 = float(baseline), float(treatment)
        p_bar = (p1 + p2) / 2
        n = (z_alpha * math.sqrt(2 * p_bar * (1 - p_bar)) + z_beta * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (
            p2 - p1
        ) ** 2
    else:
        if sd is None or isinstance(sd, bool) or not isinstance(sd, (int, float)) or not (0 < sd < math.inf):
            raise ValueError(f"sd = {sd!r}: a continuous metric needs the outcome's standard deviation, a number > 0")
        n = 2 * (z_alpha + z_beta) ** 2 * sd**2 / effect**2
    # The tolerance keeps an exact integer (up to rounding error) from being pushed up by one.
    n_per_arm = math.ceil(n - 1e-9)
    return SampleSizeResult(
        n_per_arm=n_per_arm,
        n_arms=n_treatments + 1,
        n_total=n_per_arm * (n_treatments + 1),
        metric=metric,
        baseline=float(baseline),
        treatment_value=float(treatment),
        absolute_effect=float(effect),
        alpha=alpha,
        alpha_per_comparison=per_comparison,
        power=power,
        two_sided=bool(two_sided),
    )
