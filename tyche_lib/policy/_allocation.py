"""Per-segment Thompson allocation: an arm's share is the posterior probability that it is best."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..core._rules import rule_masks
from ..model._base import require_observed, require_posterior

__all__ = ["apply_floor", "thompson_allocation"]


def _check_epsilon(epsilon: Any) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0.0 <= epsilon <= 1.0:
        raise ValueError(
            f"epsilon = {epsilon!r}: must be a number in [0, 1] (the safety floor gives every arm at "
            f"least epsilon / K; 0 turns it off)"
        )
    return float(epsilon)


def apply_floor(weights: Mapping[str, float], epsilon: float) -> dict[str, float]:
    """Raise every arm below ``epsilon / K`` to exactly ``epsilon / K``, rescaling the others.

    Parameters
    ----------
    weights : mapping
        ``{arm: weight}``, non-negative, summing to 1.
    epsilon : float
        In [0, 1]. ``K`` is the number of arms.

    Returns
    -------
    dict
        Same arms in the same order, summing to 1, none below ``epsilon / K``.

    Raises
    ------
    ValueError
        When ``epsilon`` is outside [0, 1], a weight is negative, or the weights do not sum to 1.

    Notes
    -----
    Arms below the floor are set to it; the arms above it share the remaining mass in proportion to
    their weights. Rescaling down can push another arm under the floor, so this repeats until no
    arm is below it (at most ``K`` rounds: the largest arm always stays at or above ``1 / K``).
    With every arm at or above the floor, nothing changes; ``epsilon = 0`` returns the weights.

    Examples
    --------
    The floor here is 0.06 / 3 = 0.02: control is raised to it, which scales green down to
    0.0196, so green is raised in a second round.

    >>> apply_floor({"control": 0.0, "green": 0.02, "blue": 0.98}, 0.06)
    {'control': 0.02, 'green': 0.02, 'blue': 0.96}
    """
    epsilon = _check_epsilon(epsilon)
    arms = list(weights)
    values = np.array([float(weights[a]) for a in arms])
    if (values < 0).any() or not np.isfinite(values).all():
        bad = arms[int(np.flatnonzero(~(values >= 0))[0])]
        raise ValueError(f"weights[{bad!r}] = {weights[bad]!r}: weights must be finite and non-negative")
    if not math.isclose(values.sum(), 1.0, abs_tol=1e-9):
        raise ValueError(f"weights sum to {float(values.sum())!r}: they must sum to 1 (pass win frequencies)")
    floor = epsilon / len(arms)
    at_floor = np.zeros(len(arms), dtype=bool)
    while True:
        below = ~at_floor & (values < floor)
        if not below.any():
            break
        at_floor |= below
        values[at_floor] = floor
        free = ~at_floor
        values[free] *= (1.0 - floor * at_floor.sum()) / values[free].sum()
    return {a: float(v) for a, v in zip(arms, values)}


def _voting_arms(posterior) -> tuple[str, ...]:
    """The control, then every treatment of the spec that is not retired and has data in the posterior."""
    seen = posterior.arms_with_data()
    spec = posterior.spec
    return (spec.control, *(a for a in spec.treatments if a not in spec.retired_arms and a in seen))


def _check_arms(posterior, arms: Sequence[str]) -> tuple[str, ...]:
    if isinstance(arms, str):
        raise ValueError(f"arms = {arms!r}: pass a sequence of arm names, not one string")
    arms = [str(a) for a in arms]
    spec = posterior.spec
    for arm in arms:
        if arm not in spec.arms:
            raise ValueError(f"arms has {arm!r}, not an arm of the posterior {list(spec.arms)}")
        if arm in spec.retired_arms:
            raise ValueError(f"arms has {arm!r}, a retired arm (spec.retired_arms): it gets no allocation")
    if spec.control not in arms:
        raise ValueError(
            f"arms = {arms} lacks the control {spec.control!r}: a draw in which no treatment beats "
            "the control votes for it"
        )
    return tuple(a for a in spec.arms if a in arms)


def thompson_allocation(
    posterior,
    segments: Sequence[Any],
    epsilon: float = 0.02,
    *,
    arms: Sequence[str] | None = None,
) -> dict[str, dict[str, float]]:
    """Each segment's arm weights: the posterior probability that the arm is the segment's best.

    Parameters
    ----------
    posterior : BinaryPosterior, ContinuousPosterior or HurdlePosterior
    segments : sequence
        Objects with ``.id`` and ``.rule`` (:class:`DiscoveredSegment`, :class:`PlanSegment`). A
        segment's members are the posterior's observed rows its rule matches.
    epsilon : float
        Safety floor in [0, 1]: no voting arm below ``epsilon / K_vote`` (see :func:`apply_floor`),
        ``K_vote`` the number of voting arms.
    arms : sequence of str, optional
        The arms that vote: the control and any active treatments of the posterior's spec. Default: the control
        and every treatment that is active (not in ``spec.retired_arms``) and has at least one row
        in ``posterior.observed`` (which then needs an ``arm`` column, as every fitted posterior has).

    Returns
    -------
    dict
        ``{segment id: {arm: weight}}``, segments in the given order, every arm of the spec in the
        spec's order (control first), each inner dict summing to 1; an arm outside ``arms`` has
        weight 0.

    Raises
    ------
    TypeError
        When ``posterior`` is not one of the three posterior result types.
    ValueError
        When the posterior has no observed rows, ``epsilon`` is outside [0, 1], ``segments`` is
        empty or repeats an id, a segment's rule matches no observed row, ``arms`` names an arm not
        in the spec or a retired one, or lacks the control.
    KeyError
        When a rule tests a column the observed rows lack.

    Notes
    -----
    Each posterior draw casts one vote per segment. The draw's treatment-minus-control contrasts
    are averaged over the segment's members, ``c̄_t = (1/|S|) Σ_{i∈S} c_{i,t}``; the vote goes to
    ``argmax_t c̄_t`` over the voting treatments if that contrast is positive, and to the control
    otherwise (a contrast of exactly 0 is not positive). An exact tie between treatments goes to
    the first in arm order. An arm's weight is its share of the votes, then the floor is applied
    to the voting arms.

    **Which arms vote.** A retired arm never votes and gets no floor: it leaves the plan. An arm
    with no row in the data the posterior was fitted on (one the spec has just added) does not vote
    either: its contrasts are the prior alone, wide enough to win many draws on no evidence, and the
    floor would give it traffic the plan's explore cell already gives. Such an arm gets only the
    explore cell's ``w_explore / K_active`` until its first round of data is in the posterior; then
    it votes like any other.

    Averages come from :meth:`Posterior.mean_contrast_draws`, which works on unique covariate
    profiles in chunks: the cost grows with the number of profiles, not of rows. Segments that
    overlap (they do not in a plan) are averaged one at a time.

    Examples
    --------
    On a simulated round of ``segment_flip`` (flip wins only on mobile), the mobile segment's
    draws vote almost all for flip, and no arm falls below the floor ``epsilon / K``:

    >>> from tyche_lib import fit_policy_tree, fit_posterior, initial_plan
    >>> from tyche_lib.simulate import segment_flip, simulate_round
    >>> scenario = segment_flip()
    >>> rows = simulate_round(scenario, initial_plan(scenario.spec()), n=20_000, round=1, rng=1)
    >>> posterior = fit_posterior(rows, scenario.spec(), draws=300, tune=500, chains=2, rng=1)
    >>> tree = fit_policy_tree(posterior, rng=7)
    >>> allocation = thompson_allocation(posterior, tree.segments, epsilon=0.02)
    >>> mobile = tree.segments[1].id
    >>> str(tree.segments[1].rule), allocation[mobile]["flip"] > 0.9
    ('device in {mobile}', True)
    >>> min(w for shares in allocation.values() for w in shares.values()) >= 0.02 / 4
    True
    """
    require_posterior(posterior)
    epsilon = _check_epsilon(epsilon)
    require_observed(posterior, "thompson_allocation")
    voting = _voting_arms(posterior) if arms is None else _check_arms(posterior, arms)
    segments = list(segments)
    if not segments:
        raise ValueError("segments is empty: pass at least one segment (e.g. a policy tree's segments)")
    ids = [str(s.id) for s in segments]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"segment id {dup!r} appears more than once in segments: ids must be distinct")

    masks = rule_masks([s.rule for s in segments], posterior.observed)
    sizes = masks.sum(axis=1)
    if (sizes == 0).any():
        empty = segments[int(np.flatnonzero(sizes == 0)[0])]
        raise ValueError(
            f"segment {empty.id!r} (rule: {empty.rule}) matches no row of posterior.observed, so it has "
            f"no members to average over; drop the segment or refit the policy tree"
        )
    if (masks.sum(axis=0) <= 1).all():
        groups = np.where(masks.any(axis=0), masks.argmax(axis=0), -1)
        means, _ = posterior.mean_contrast_draws(groups, len(segments))
    else:
        means = np.concatenate([posterior.mean_contrast_draws(np.where(m, 0, -1), 1)[0] for m in masks], axis=1)

    # means: draws × segments × treatments. Votes: voting-arm index per draw and segment, 0 = control.
    treatments = [j for j, t in enumerate(posterior.treatments) if t in voting]
    if treatments:
        means = means[..., treatments]
        best = means.argmax(axis=2)
        best_contrast = np.take_along_axis(means, best[..., None], axis=2)[..., 0]
        votes = np.where(best_contrast > 0, best + 1, 0)
    else:
        votes = np.zeros(means.shape[:2], dtype=np.int64)
    wins = (votes[..., None] == np.arange(len(voting))).mean(axis=0)  # segments × voting arms
    allocation = {}
    for seg_id, row in zip(ids, wins):
        shares = apply_floor(dict(zip(voting, (float(w) for w in row))), epsilon)
        allocation[seg_id] = {a: shares.get(a, 0.0) for a in posterior.arms}
    return allocation
