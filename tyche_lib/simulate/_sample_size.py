"""Sizing an adaptive experiment by simulating it: rounds × visitors for a correct ship decision."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core._plans import Plan, PlanSegment
from ..core._rules import Rule
from ..core._seeds import seed_from_rng
from ..core._spec import ExperimentSpec
from ..decide._sample_size import _positive_int, _probability
from ..policy._allocation import apply_floor
from ._scenarios import Scenario, simulate_round

__all__ = ["AdaptiveSampleSizeResult", "plan_adaptive_sample_size"]

# Visitors drawn to compute each segment's true arm means.
_TRUTH_SAMPLE = 200_000
# True means closer than this are ties: either arm is a correct decision.
_TIE_TOLERANCE = 1e-12


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
    rng: int | np.random.Generator | None,
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
    rng : int, Generator or None
        Seeds every simulation; the same int gives the same result (recorded as ``seed``).
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
    ...                                    visitors_grid=[2000], n_sims=20, rng=1)
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
    seed = seed_from_rng(rng)
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
            weights={
                "control": spec.min_control_weight,
                "explore": spec.min_explore_weight,
                "optimized": spec.optimized_weight,
            },
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
                wins = np.array(
                    [
                        _win_frequencies(
                            _posterior_mean_draws(family, stats_n[j], stats_sum[j], stats_sq[j], draws, rng)
                        )
                        for j in range(len(rules))
                    ]
                )
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
