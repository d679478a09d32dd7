"""Sample-size planning: the classic fixed-horizon formulas and a simulation planner for adaptive rounds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ._allocation import apply_floor
from ._plans import Plan, PlanSegment
from ._rules import Rule
from ._spec import ExperimentSpec
from .simulate import Scenario, simulate_round

__all__ = [
    "SampleSizeResult",
    "plan_sample_size",
    "AdaptiveSampleSizeResult",
    "plan_adaptive_sample_size",
]

SAMPLE_SIZE_METRICS = ("binary", "continuous")
# Visitors drawn to compute each segment's true arm means in the adaptive planner.
_TRUTH_SAMPLE = 200_000
# True means closer than this are ties: either arm is a correct decision.
_TIE_TOLERANCE = 1e-12


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
        raise ValueError(f"metric = {metric!r}: must be one of {SAMPLE_SIZE_METRICS} (a hurdle metric: plan on its mean as continuous)")
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
        raise ValueError("baseline = 0 with relative=True: a relative effect needs a non-zero baseline; pass relative=False")
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
        n = (
            z_alpha * math.sqrt(2 * p_bar * (1 - p_bar)) + z_beta * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
        ) ** 2 / (p2 - p1) ** 2
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


@dataclass(frozen=True)
class AdaptiveSampleSizeResult:
    """Rounds and visitors per round an adaptive experiment needs, from simulation.

    Attributes
    ----------
    rounds, visitors_per_round, total_visitors : int or None
        The grid point with the fewest total visitors whose estimated probability of a correct
        decision reaches the target (fewer rounds on a tie); None when no grid point reaches it.
    probability_correct : float or None
        Its estimated probability.
    target_probability : float
    reached : bool
        Whether any grid point reached the target.
    grid : DataFrame
        Every grid point: ``rounds, visitors_per_round, total_visitors, probability_correct,
        standard_error`` (Monte Carlo, binomial).
    segments : tuple of str
        The segment rules the decision is made for.
    best_arms : dict
        ``{segment rule: arms}``: the arms whose true mean in the segment is within ``tolerance``
        of the best; shipping any of them is correct.
    n_sims : int
    seed : int
    """

    rounds: int | None
    visitors_per_round: int | None
    total_visitors: int | None
    probability_correct: float | None
    target_probability: float
    reached: bool
    grid: pd.DataFrame
    segments: tuple[str, ...]
    best_arms: dict[str, tuple[str, ...]]
    n_sims: int
    seed: int


def _sorted_grid(values: Sequence[int], name: str) -> list[int]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name} = {values!r}: pass a list of integers >= 1")
    grid = sorted({_positive_int(v, f"{name} entry") for v in values})
    if not grid:
        raise ValueError(f"{name} is empty: pass at least one integer >= 1")
    return grid


def _posterior_mean_draws(
    family: str, n: np.ndarray, total: np.ndarray, total_sq: np.ndarray, draws: int, rng: np.random.Generator
) -> np.ndarray:
    """Draws of each arm's mean in one segment (draws × arms) from conjugate approximations.

    Binary: Beta(1 + successes, 1 + failures). Otherwise a normal approximation N(ȳ, s²/n); an arm
    with fewer than two visitors borrows the segment's pooled mean and variance as a vague prior
    (the variance of a single visitor).
    """
    if family == "binary":
        return rng.beta(1.0 + total, 1.0 + n - total, size=(draws, len(n)))
    pooled_n = max(n.sum(), 1.0)
    pooled_mean = total.sum() / pooled_n
    pooled_var = max(total_sq.sum() / pooled_n - pooled_mean**2, 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n >= 2, total / n, pooled_mean)
        var = np.where(n >= 2, (total_sq - n * mean**2) / np.maximum(n - 1, 1) / n, pooled_var)
    return mean + np.sqrt(np.maximum(var, 1e-12)) * rng.standard_normal((draws, len(n)))


def _win_frequencies(mean_draws: np.ndarray) -> np.ndarray:
    """Share of draws in which each arm is best; control (column 0) wins ties, as in a Thompson vote."""
    winners = np.argmax(mean_draws, axis=1)
    return np.bincount(winners, minlength=mean_draws.shape[1]) / len(winners)


def plan_adaptive_sample_size(
    scenario: Scenario,
    *,
    rounds_grid: Sequence[int],
    visitors_grid: Sequence[int],
    seed: int,
    target_probability: float = 0.8,
    n_sims: int = 200,
    segments: Sequence[Rule] | None = None,
    tolerance: float = 0.0,
    spec: ExperimentSpec | None = None,
    draws: int = 1000,
) -> AdaptiveSampleSizeResult:
    """Rounds × visitors per round for a target probability of a correct ship decision.

    Each simulated experiment runs round after round through the real router
    (:func:`~tyche_lib.simulate.simulate_round`) with the spec's cells, a Thompson allocation per
    segment with the spec's safety floor, and at each round count of ``rounds_grid`` ships, in every
    segment, the arm most likely to be best. The decision is correct when every segment's shipped
    arm has a true mean within ``tolerance`` of the segment's best.

    Parameters
    ----------
    scenario : Scenario
        The assumed truth (see :mod:`tyche_lib.simulate`).
    rounds_grid, visitors_grid : sequence of int
        Round counts and visitors per round (all cells) to evaluate.
    seed : int
        Seeds every simulation; the same seed gives the same result.
    target_probability : float
        Required probability of a correct decision.
    n_sims : int
        Simulated experiments per visitors-per-round value (the round counts share them: an
        experiment of 4 rounds is the first 4 rounds of one of 8).
    segments : sequence of Rule, optional
        The segments the decision is made for, as rules partitioning the visitors (e.g. the
        segments a pilot's policy tree found). Default: one segment, all visitors.
    tolerance : float
        Absolute difference in true means within which an arm counts as best.
    spec : ExperimentSpec, optional
        Cell weights and ``epsilon``; default ``scenario.spec()``.
    draws : int
        Posterior draws per segment for the Thompson allocation and the decision.

    Returns
    -------
    AdaptiveSampleSizeResult

    Raises
    ------
    ValueError
        Naming the argument: an empty or non-positive grid, ``target_probability`` outside (0, 1),
        ``n_sims`` or ``draws`` < 1, a negative ``tolerance``, a spec whose arms are not the
        scenario's, segments that do not partition the visitors or a segment nobody falls in.

    Notes
    -----
    A fast approximation of the pipeline: instead of refitting the hierarchical model and the
    policy tree each round, each segment × arm has a conjugate posterior of its mean from the
    rows so far: Beta(1 + successes, 1 + failures) for a binary metric, a normal approximation
    N(ȳ, s²/n) otherwise. Within a segment the arm a visitor gets does not depend on the
    covariates, so each arm's rows are a random sample of the segment and the unweighted means
    are unbiased. The segments are fixed in advance rather than discovered, so the result is
    optimistic where the policy tree would need data to find them, and conservative where the
    model would pool information across segments.

    Examples
    --------
    >>> from tyche_lib.simulate import no_heterogeneity
    >>> result = plan_adaptive_sample_size(no_heterogeneity(large_lift=0.1), rounds_grid=[1, 2],
    ...                                    visitors_grid=[2000], n_sims=20, seed=1)
    >>> result.grid.columns.tolist()
    ['rounds', 'visitors_per_round', 'total_visitors', 'probability_correct', 'standard_error']
    """
    if not isinstance(scenario, Scenario):
        raise TypeError(f"scenario = {type(scenario).__name__}: pass a tyche_lib.simulate.Scenario")
    rounds = _sorted_grid(rounds_grid, "rounds_grid")
    visitors = _sorted_grid(visitors_grid, "visitors_grid")
    target_probability = _probability(target_probability, "target_probability")
    n_sims = _positive_int(n_sims, "n_sims")
    draws = _positive_int(draws, "draws")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < math.inf:
        raise ValueError(f"tolerance = {tolerance!r}: must be a number >= 0 (an absolute difference in means)")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed = {seed!r}: must be an integer")
    spec = spec if spec is not None else scenario.spec()
    if tuple(spec.arms) != tuple(scenario.arms):
        raise ValueError(f"spec.arms = {list(spec.arms)} differ from the scenario's arms {list(scenario.arms)}")
    rules = tuple(segments) if segments is not None else (Rule(),)
    if not rules or not all(isinstance(r, Rule) for r in rules):
        raise ValueError(f"segments = {segments!r}: pass a non-empty list of tyche_lib.Rule partitioning the visitors")
    seg_ids = ("all",) if len(rules) == 1 else tuple(f"s{i}" for i in range(1, len(rules) + 1))
    arms = tuple(spec.arms)
    k = len(arms)

    def make_plan(round_: int, allocations: np.ndarray) -> Plan:
        return Plan(
            experiment_id=spec.id,
            round=round_,
            arms=arms,
            weights={"control": spec.min_control_weight, "explore": spec.min_explore_weight,
                     "optimized": spec.optimized_weight},
            segments=tuple(
                PlanSegment(sid, rule, dict(zip(arms, map(float, alloc))))
                for sid, rule, alloc in zip(seg_ids, rules, allocations)
            ),
        )

    seeds = np.random.SeedSequence(int(seed))
    truth_seed, *sim_seeds = seeds.spawn(1 + len(visitors) * n_sims)
    uniform = np.full((len(rules), k), 1.0 / k)
    population = scenario.draw_covariates(_TRUTH_SAMPLE, np.random.default_rng(truth_seed))
    members = make_plan(1, uniform).segment_of(population)  # raises PlanError unless a partition
    true_means = scenario.true_means(population).groupby(members).mean().reindex(list(seg_ids))
    if true_means.isna().any().any():
        empty = true_means.index[true_means.isna().any(axis=1)][0]
        raise ValueError(f"segment {rules[seg_ids.index(empty)]} matches no visitor of the scenario: drop or widen it")
    means = true_means.to_numpy()
    acceptable = means >= means.max(axis=1, keepdims=True) - tolerance - _TIE_TOLERANCE

    family = scenario.family
    correct = np.zeros((len(visitors), len(rounds)))
    for vi, n_visitors in enumerate(visitors):
        for si in range(n_sims):
            rng = np.random.default_rng(sim_seeds[vi * n_sims + si])
            stats_n = np.zeros((len(rules), k))
            stats_sum = np.zeros((len(rules), k))
            stats_sq = np.zeros((len(rules), k))
            plan = make_plan(1, uniform)
            for r in range(1, rounds[-1] + 1):
                rows = simulate_round(scenario, plan, n=n_visitors, round=r, rng=rng)
                seg = pd.Index(seg_ids).get_indexer(rows["segment_id"])
                arm = pd.Index(arms).get_indexer(rows["arm"])
                y = rows[scenario.metric].to_numpy(dtype=float)
                np.add.at(stats_n, (seg, arm), 1.0)
                np.add.at(stats_sum, (seg, arm), y)
                np.add.at(stats_sq, (seg, arm), y * y)
                wins = np.array([
                    _win_frequencies(_posterior_mean_draws(family, stats_n[j], stats_sum[j], stats_sq[j], draws, rng))
                    for j in range(len(rules))
                ])
                if r in rounds:
                    shipped = wins.argmax(axis=1)
                    correct[vi, rounds.index(r)] += acceptable[np.arange(len(rules)), shipped].all()
                if r < rounds[-1]:
                    floored = [list(apply_floor(dict(zip(arms, w)), spec.epsilon).values()) for w in wins]
                    plan = make_plan(r + 1, np.array(floored))

    probability = correct / n_sims
    grid = pd.DataFrame(
        [
            {
                "rounds": r,
                "visitors_per_round": v,
                "total_visitors": r * v,
                "probability_correct": probability[vi, ri],
                "standard_error": math.sqrt(probability[vi, ri] * (1 - probability[vi, ri]) / n_sims),
            }
            for vi, v in enumerate(visitors)
            for ri, r in enumerate(rounds)
        ]
    )
    passing = grid[grid["probability_correct"] >= target_probability].sort_values(["total_visitors", "rounds"])
    best = passing.iloc[0] if len(passing) else None
    rule_texts = tuple(str(r) for r in rules)
    return AdaptiveSampleSizeResult(
        rounds=None if best is None else int(best["rounds"]),
        visitors_per_round=None if best is None else int(best["visitors_per_round"]),
        total_visitors=None if best is None else int(best["total_visitors"]),
        probability_correct=None if best is None else float(best["probability_correct"]),
        target_probability=target_probability,
        reached=best is not None,
        grid=grid,
        segments=rule_texts,
        best_arms={text: tuple(a for a, ok in zip(arms, row) if ok) for text, row in zip(rule_texts, acceptable)},
        n_sims=n_sims,
        seed=int(seed),
    )
