"""Decisions: what the posterior says about shipping, and the round's recommendation.

- :func:`decision_quantities` — P(best) and the expected loss of shipping each arm, overall and
  per segment, and P(worse than control) per segment, from the posterior's contrast draws;
- :func:`expected_value_of_one_more_round` — preposterior value of another round of visitors;
- :func:`graduation` — the Bayesian rule over rounds: SHIP / STOP / CONTINUE;
- :func:`recommend` — the round's decision, rules applied in order: sample-ratio mismatch → HALT;
  a failed guardrail → that arm is not shipped; a significant primary effect (after FDR) with
  the graduation rule agreeing → SHIP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from ..core._spec import DecisionSettings
from ..measure._inference import MetricsResult
from ..model._base import Posterior

__all__ = [
    "Decision",
    "DecisionQuantities",
    "Recommendation",
    "RoundValue",
    "decision_quantities",
    "expected_value_of_one_more_round",
    "graduation",
    "recommend",
]


class Decision(StrEnum):
    """What to do with the experiment after a round.

    HALT: the data cannot be trusted (sample-ratio mismatch); interpret nothing, investigate.
    SHIP: roll out ``Recommendation.arm``. STOP: drop ``Recommendation.stop_arms`` (harmful, or
    worse than control everywhere; all treatments: the experiment ends on control).
    CONTINUE: run another round.
    """

    HALT = "HALT"
    SHIP = "SHIP"
    STOP = "STOP"
    CONTINUE = "CONTINUE"


@dataclass(frozen=True)
class Recommendation:
    """A decision, the arm it concerns and why.

    Attributes
    ----------
    decision : Decision
    arm : str or None
        The arm to ship (SHIP), the first arm to stop (STOP), None otherwise.
    reasons : tuple of str
        Human-readable, in the order the rules were applied.
    stop_arms : tuple of str
        Every treatment to drop (STOP; may accompany SHIP or CONTINUE as information).
    """

    decision: Decision
    arm: str | None
    reasons: tuple[str, ...]
    stop_arms: tuple[str, ...] = ()


# -- decision quantities -----------------------------------------------------------------------

_FRAME_COLUMNS = ["round", "segment", "arm", "prob_best", "expected_loss", "prob_worse", "mean_effect", "size"]


@dataclass(frozen=True)
class DecisionQuantities:
    """Posterior decision quantities of one round, overall and per segment.

    Effects are contrasts with the control on the primary metric's outcome scale (higher is
    better); the control counts as an arm with contrast 0.

    Attributes
    ----------
    arms : tuple of str
        Control first.
    prob_best : Series
        P(arm is best), over all visitors; index ``arms``.
    expected_loss : Series
        ``E[max_a θ_a - θ_arm]``: what shipping the arm gives up per visitor, on average over
        the posterior; index ``arms``.
    prob_worse : Series
        P(contrast < 0) of each treatment, over all visitors.
    mean_effect : Series
        Posterior-mean contrast of each treatment, over all visitors.
    prob_best_by_segment, expected_loss_by_segment : DataFrame
        Segments × arms.
    prob_worse_by_segment, mean_effect_by_segment : DataFrame
        Segments × treatments.
    segment_sizes : Series
        Visitors per segment.
    round : int, optional
    contrast_draws : ndarray, optional
        Overall contrasts per draw (draws × treatments), for
        :func:`expected_value_of_one_more_round`; not kept by :meth:`to_frame`.
    """

    arms: tuple[str, ...]
    prob_best: pd.Series
    expected_loss: pd.Series
    prob_worse: pd.Series
    mean_effect: pd.Series
    prob_best_by_segment: pd.DataFrame
    expected_loss_by_segment: pd.DataFrame
    prob_worse_by_segment: pd.DataFrame
    mean_effect_by_segment: pd.DataFrame
    segment_sizes: pd.Series
    round: int | None = None
    contrast_draws: np.ndarray | None = None

    @property
    def treatments(self) -> tuple[str, ...]:
        return self.arms[1:]

    @property
    def leader(self) -> str:
        """The arm most likely best (ties: the lower expected loss, then arm order)."""
        order = pd.DataFrame({"p": self.prob_best, "loss": -self.expected_loss}).loc[list(self.arms)]
        return str(order.sort_values(["p", "loss"], ascending=False, kind="mergesort").index[0])

    def to_frame(self) -> pd.DataFrame:
        """Tidy table for storage: one row per (segment, arm); ``segment`` None is overall."""
        parts = [
            self._part(
                None,
                self.prob_best,
                self.expected_loss,
                self.prob_worse,
                self.mean_effect,
                int(self.segment_sizes.sum()),
            )
        ]
        for seg in self.segment_sizes.index:
            parts.append(
                self._part(
                    seg,
                    self.prob_best_by_segment.loc[seg],
                    self.expected_loss_by_segment.loc[seg],
                    self.prob_worse_by_segment.loc[seg],
                    self.mean_effect_by_segment.loc[seg],
                    int(self.segment_sizes[seg]),
                )
            )
        return pd.concat(parts, ignore_index=True)[_FRAME_COLUMNS]

    def _part(self, segment, prob_best, loss, worse, effect, size) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "round": self.round,
                "segment": segment,
                "arm": list(self.arms),
                "prob_best": prob_best.reindex(self.arms).to_numpy(),
                "expected_loss": loss.reindex(self.arms).to_numpy(),
                "prob_worse": worse.reindex(self.arms).to_numpy(),
                "mean_effect": np.r_[0.0, effect.reindex(self.treatments).to_numpy()],
                "size": size,
            }
        )

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> DecisionQuantities:
        """Rebuild from :meth:`to_frame`'s table (one round; without ``contrast_draws``)."""
        missing = [c for c in _FRAME_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"decision-quantities table lacks column '{missing[0]}'; expected {_FRAME_COLUMNS}")
        rounds = frame["round"].dropna().unique()
        if len(rounds) > 1:
            raise ValueError(f"decision-quantities table holds rounds {sorted(rounds)}: pass one round at a time")
        overall = frame[frame["segment"].isna()].set_index("arm")
        arms = tuple(overall.index)
        treatments = list(arms[1:])
        segs = frame[frame["segment"].notna()]

        def wide(col, columns):
            return (
                segs.pivot(index="segment", columns="arm", values=col).reindex(columns=columns)
                if len(segs)
                else (pd.DataFrame(columns=columns, dtype=float))
            )

        order = list(pd.unique(segs["segment"]))
        return cls(
            arms=arms,
            prob_best=overall["prob_best"].rename(None),
            expected_loss=overall["expected_loss"].rename(None),
            prob_worse=overall["prob_worse"].loc[treatments].rename(None),
            mean_effect=overall["mean_effect"].loc[treatments].rename(None),
            prob_best_by_segment=wide("prob_best", list(arms)).reindex(order),
            expected_loss_by_segment=wide("expected_loss", list(arms)).reindex(order),
            prob_worse_by_segment=wide("prob_worse", treatments).reindex(order),
            mean_effect_by_segment=wide("mean_effect", treatments).reindex(order),
            segment_sizes=segs.drop_duplicates("segment").set_index("segment")["size"].reindex(order).astype(np.int64)
            if len(segs)
            else pd.Series(dtype=np.int64),
            round=int(rounds[0]) if len(rounds) else None,
        )


def _quantities(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P(best) and expected loss per arm from draws × groups × arms effects (control = 0)."""
    best = theta.argmax(axis=-1)
    prob_best = (best[..., None] == np.arange(theta.shape[-1])).mean(axis=0)
    loss = (theta.max(axis=-1, keepdims=True) - theta).mean(axis=0)
    return prob_best, loss


def decision_quantities(
    posterior: Posterior,
    rows: pd.DataFrame | None = None,
    *,
    segments: Sequence[Any] | pd.Series | None = None,
    round: int | None = None,
) -> DecisionQuantities:
    """P(best), expected loss and P(worse than control), overall and per segment.

    Parameters
    ----------
    posterior : Posterior
    rows : DataFrame, optional
        The visitors to average effects over (default: the posterior's observed rows).
    segments : array-like, optional
        Segment label of every row (e.g. the policy tree's leaf); missing (None/NaN): counted
        overall only. Default: no segments.
    round : int, optional
        Stored with the result, for the history the graduation rule reads.

    Returns
    -------
    DecisionQuantities

    Raises
    ------
    ValueError
        ``segments`` not one label per row.

    Notes
    -----
    With ``θ_{d,g,a}`` the mean contrast of arm ``a`` (control: 0) over the members of group ``g``
    in posterior draw ``d``: ``P(best)_{g,a} = mean_d [a = argmax θ_{d,g,·}]``, expected loss
    ``E_{g,a} = mean_d (max_b θ_{d,g,b} - θ_{d,g,a})`` and ``P(worse)_{g,k} = mean_d [θ_{d,g,k} < 0]``.
    Overall effects are the size-weighted average of the groups, draw by draw.

    References
    ----------
    .. [1] Scott, S. L. (2015). "Multi-armed bandit experiments in the online service economy."
       Applied Stochastic Models in Business and Industry 31(1). (Value remaining / expected loss.)
    """
    rows = posterior.observed if rows is None else rows
    n = len(rows)
    if segments is None:
        codes, labels = np.zeros(n, dtype=np.int64), pd.Index([])
        n_groups = 1
    else:
        segments = pd.Series(np.asarray(segments, dtype=object))
        if len(segments) != n:
            raise ValueError(f"segments has {len(segments)} labels for {n} rows: give one label per row")
        codes, labels = pd.factorize(segments, sort=True)
        codes = np.where(codes < 0, len(labels), codes)  # unlabelled rows: an extra group
        n_groups = len(labels) + 1
    means, sizes = posterior.mean_contrast_draws(codes, n_groups, rows)
    weights = sizes / max(sizes.sum(), 1)
    overall = np.einsum("dgt,g->dt", np.nan_to_num(means), weights)
    arms, treatments = list(posterior.arms), list(posterior.treatments)

    def with_control(contrasts):
        return np.concatenate([np.zeros(contrasts.shape[:-1] + (1,)), contrasts], axis=-1)

    p_best, loss = _quantities(with_control(overall))
    seg_means = means[:, : len(labels), :]
    seg_best, seg_loss = _quantities(with_control(seg_means)) if len(labels) else (np.empty((0, len(arms))),) * 2
    index = pd.Index(labels, name="segment")
    return DecisionQuantities(
        arms=tuple(arms),
        prob_best=pd.Series(p_best, index=arms),
        expected_loss=pd.Series(loss, index=arms),
        prob_worse=pd.Series((overall < 0).mean(axis=0), index=treatments),
        mean_effect=pd.Series(overall.mean(axis=0), index=treatments),
        prob_best_by_segment=pd.DataFrame(seg_best, index=index, columns=arms),
        expected_loss_by_segment=pd.DataFrame(seg_loss, index=index, columns=arms),
        prob_worse_by_segment=pd.DataFrame((seg_means < 0).mean(axis=0), index=index, columns=treatments),
        mean_effect_by_segment=pd.DataFrame(seg_means.mean(axis=0), index=index, columns=treatments),
        segment_sizes=pd.Series(sizes[: len(labels)], index=index),
        round=round,
        contrast_draws=overall,
    )


# -- value of one more round -------------------------------------------------------------------


@dataclass(frozen=True)
class RoundValue:
    """Expected value of information of one more round.

    Attributes
    ----------
    value : float
        Expected gain per future visitor, on the outcome scale, from choosing the arm to ship
        after one more round instead of now (``≥ 0``).
    expected_loss_now : float
        Expected loss of shipping the posterior-mean best arm now (the value of perfect
        information: an upper bound on ``value``, which approaches it as the round grows).
    visitors : int
    n_sims : int
    """

    value: float
    expected_loss_now: float
    visitors: int
    n_sims: int


def _per_arm(values: Mapping[str, float] | Sequence[float] | np.ndarray, arms: Sequence[str], name: str) -> np.ndarray:
    if isinstance(values, Mapping):
        missing = [a for a in arms if a not in values]
        if missing:
            raise ValueError(f"{name} lacks arm {missing[0]!r}; give a value for every arm {list(arms)}")
        out = np.array([float(values[a]) for a in arms])
    else:
        out = np.asarray(values, dtype=float)
        if out.shape != (len(arms),):
            raise ValueError(f"{name} has shape {out.shape}: give one value per arm {list(arms)} (control first)")
    return out


def expected_value_of_one_more_round(
    quantities: DecisionQuantities,
    *,
    visitors: int,
    allocation: Mapping[str, float] | Sequence[float],
    outcome_variance: Mapping[str, float] | Sequence[float],
    rng: int | np.random.Generator | None,
    n_sims: int = 4000,
) -> RoundValue:
    """Preposterior value of running one more round of ``visitors`` before deciding what to ship.

    Parameters
    ----------
    quantities : DecisionQuantities
        This round's, with ``contrast_draws`` (as :func:`decision_quantities` returns it).
    visitors : int
        Visitors in the next round.
    allocation : mapping or sequence of float
        Expected share of the next round's visitors per arm (control first; all > 0, summing to 1),
        e.g. the plan's cell weights times its allocations averaged over segments.
    outcome_variance : mapping or sequence of float
        Variance of one visitor's outcome per arm (``p(1 - p)`` for a binary metric), e.g.
        the rows' sample variance per arm.
    rng : int, Generator or None
        For the Monte Carlo over future data.
    n_sims : int
        Simulated future posterior means (antithetic pairs).

    Returns
    -------
    RoundValue

    Raises
    ------
    ValueError
        Missing draws, ``visitors`` < 1, an allocation share ≤ 0 or not summing to 1, a
        negative variance.

    Notes
    -----
    A normal approximation of preposterior analysis. The treatment contrasts ``c`` have posterior
    mean ``μ`` and covariance ``Σ`` (from the draws). One more round estimates them with noise
    ``N = diag(σ_k² / n_k) + (σ_0² / n_0) 1 1ᵀ`` (``n_a`` visitors of arm ``a``; the control is
    shared by every contrast), so the next posterior mean is distributed as
    ``μ' ~ N(μ, Σ (Σ + N)⁻¹ Σ)``. The value is ``E[max(0, max_k μ'_k)] - max(0, max_k μ_k)``: the
    expected improvement of the ship decision (the control counts as contrast 0), estimated with
    ``n_sims`` antithetic draws, which keeps it non-negative. It ignores segments (the value of a
    global ship decision) and non-normal posterior shapes.

    References
    ----------
    .. [1] Raiffa, H. and Schlaifer, R. (1961). *Applied Statistical Decision Theory*. Harvard.
    .. [2] Frazier, P. I., Powell, W. B. and Dayanik, S. (2008). "A knowledge-gradient policy
       for sequential information collection." SIAM J. Control Optim.
    """
    if quantities.contrast_draws is None:
        raise ValueError("quantities has no contrast_draws: use the result of decision_quantities, not from_frame")
    if isinstance(visitors, bool) or int(visitors) != visitors or visitors < 1:
        raise ValueError(f"visitors = {visitors!r}: must be a positive integer")
    arms = quantities.arms
    share = _per_arm(allocation, arms, "allocation")
    if (share <= 0).any() or not np.isclose(share.sum(), 1.0):
        raise ValueError(f"allocation = {dict(zip(arms, share))}: every share must be > 0 and they must sum to 1")
    variance = _per_arm(outcome_variance, arms, "outcome_variance")
    if (variance < 0).any() or not np.isfinite(variance).all():
        raise ValueError(f"outcome_variance = {dict(zip(arms, variance))}: must be finite and >= 0")
    if n_sims < 2:
        raise ValueError(f"n_sims = {n_sims!r}: must be at least 2")
    rng = np.random.default_rng(rng)
    draws = np.asarray(quantities.contrast_draws, dtype=float)
    mu = draws.mean(axis=0)
    sigma = np.atleast_2d(np.cov(draws, rowvar=False))
    per_arm = variance / (visitors * share)
    noise = np.diag(per_arm[1:]) + per_arm[0]
    reduction = sigma @ np.linalg.solve(sigma + noise, sigma)
    # Symmetric square root: the reduction is PSD but may be singular (a draw-degenerate arm).
    eigval, eigvec = np.linalg.eigh((reduction + reduction.T) / 2)
    root = eigvec * np.sqrt(np.clip(eigval, 0, None))
    z = rng.standard_normal((n_sims // 2, len(mu)))
    future = np.concatenate([mu + z @ root.T, mu - z @ root.T])
    best_after = np.maximum(future.max(axis=1), 0.0).mean()
    best_now = max(float(mu.max()), 0.0)
    loss_now = float(np.maximum(draws.max(axis=1), 0.0).mean() - best_now)
    return RoundValue(
        value=float(best_after - best_now), expected_loss_now=loss_now, visitors=int(visitors), n_sims=len(future)
    )


# -- graduation and recommendation -------------------------------------------------------------


def graduation(
    history: Sequence[DecisionQuantities],
    *,
    settings: DecisionSettings | None = None,
    loss_threshold: float | None = None,
    prob_best: float | None = None,
    sustained_rounds: int | None = None,
    stop_prob: float | None = None,
) -> Recommendation:
    """The Bayesian graduation rule over rounds: SHIP, STOP or CONTINUE.

    Parameters
    ----------
    history : sequence of DecisionQuantities
        One per round, oldest first; the last is the current round.
    settings : DecisionSettings, optional
        The spec's ``decision`` block, passed whole (default: :class:`DecisionSettings` defaults).
        The four thresholds below, when given, override its fields.
    loss_threshold : float
        Largest expected loss (outcome scale, per visitor) one accepts when shipping.
    prob_best : float
        Smallest P(best) of the arm to ship.
    sustained_rounds : int
        Rounds in a row (ending now) the same arm must meet both criteria.
    stop_prob : float
        A treatment with P(worse than control) ≥ ``stop_prob`` overall and in every segment is
        stopped.

    Returns
    -------
    Recommendation
        SHIP the leading treatment when it met both criteria in each of the last
        ``sustained_rounds`` rounds; STOP every treatment when the control did (the experiment
        ends on control); otherwise STOP the treatments worse than control everywhere now;
        otherwise CONTINUE.

    Raises
    ------
    ValueError
        An empty history or a threshold out of range.

    Notes
    -----
    Rounds before the last change of arms (a spec revision that added an arm) do not count
    towards ``sustained_rounds``: the streak restarts with the new set of arms.
    """
    rules = settings if settings is not None else DecisionSettings()
    loss_threshold = rules.loss_threshold if loss_threshold is None else loss_threshold
    prob_best = rules.prob_best if prob_best is None else prob_best
    sustained_rounds = rules.sustained_rounds if sustained_rounds is None else sustained_rounds
    stop_prob = rules.stop_prob if stop_prob is None else stop_prob
    if not history:
        raise ValueError("history is empty: give the decision quantities of at least the current round")
    if not loss_threshold >= 0:
        raise ValueError(f"loss_threshold = {loss_threshold!r}: must be >= 0 (outcome scale, per visitor)")
    for name, level in (("prob_best", prob_best), ("stop_prob", stop_prob)):
        if not 0 < level <= 1:
            raise ValueError(f"{name} = {level!r}: must be in (0, 1]")
    if isinstance(sustained_rounds, bool) or int(sustained_rounds) != sustained_rounds or sustained_rounds < 1:
        raise ValueError(f"sustained_rounds = {sustained_rounds!r}: must be a positive integer")
    # A spec revision that adds an arm changes the arms: only the rounds since then count towards a streak.
    arms = history[-1].arms
    since = len(history)
    while since > 0 and history[since - 1].arms == arms:
        since -= 1
    history = history[since:]
    now = history[-1]
    leader = now.leader
    streak = 0
    for q in reversed(history):
        if q.leader == leader and q.prob_best[leader] >= prob_best and q.expected_loss[leader] < loss_threshold:
            streak += 1
        else:
            break
    status = (
        f"{leader} leads: P(best) = {now.prob_best[leader]:.3f} (need >= {prob_best:g}), expected loss "
        f"= {now.expected_loss[leader]:.4g} (need < {loss_threshold:g}), met {streak} of "
        f"{sustained_rounds} rounds in a row"
    )
    if streak >= sustained_rounds:
        if leader != arms[0]:
            return Recommendation(Decision.SHIP, leader, (status,))
        return Recommendation(
            Decision.STOP, arms[1], (status + ": the control is best, stop every treatment",), stop_arms=tuple(arms[1:])
        )
    # Stopping an arm takes the same discipline as shipping one: worse than control overall and in
    # every segment, in each of the last sustained_rounds rounds (one noisy round stops nothing).
    worse, pending = [], []
    for k in now.treatments:
        run = 0
        for q in reversed(history):
            if not _worse_everywhere(q, k, stop_prob):
                break
            run += 1
        if run >= sustained_rounds:
            worse.append(k)
        elif run:
            pending.append(f"{k} is worse than control everywhere now, {run} of {sustained_rounds} rounds in a row")
    if worse:
        reasons = tuple(
            f"{k} is worse than control everywhere: P(worse) = {now.prob_worse[k]:.3f} overall and >= "
            f"{stop_prob:g} in all {len(now.prob_worse_by_segment)} segment(s), {sustained_rounds} rounds in a row"
            for k in worse
        )
        return Recommendation(Decision.STOP, worse[0], reasons + (status,), stop_arms=tuple(worse))
    return Recommendation(Decision.CONTINUE, None, (status, *pending))


def _worse_everywhere(q: DecisionQuantities, arm: str, stop_prob: float) -> bool:
    by_seg = q.prob_worse_by_segment[arm] if arm in q.prob_worse_by_segment else pd.Series(dtype=float)
    return bool(q.prob_worse[arm] >= stop_prob and (by_seg.dropna() >= stop_prob).all())


def _control_wins(rec: Recommendation) -> bool:
    """Whether graduation stops every treatment because the control itself graduated."""
    return any("the control is best" in r for r in rec.reasons)


def _sample_ratio_passed(sample_ratio: Any) -> tuple[bool, str]:
    if sample_ratio is None:
        # Fails closed: a round whose check never ran (or whose result was lost) is not interpreted.
        return False, "no sample-ratio result for this round"
    if isinstance(sample_ratio, (bool, np.bool_)):
        ok = bool(sample_ratio)
        return ok, "sample ratio check " + ("passed" if ok else "failed")
    if hasattr(sample_ratio, "passed"):
        ok = bool(sample_ratio.passed)
        return ok, str(getattr(sample_ratio, "message", "sample ratio check " + ("passed" if ok else "failed")))
    raise TypeError(
        f"sample_ratio = {type(sample_ratio).__name__}: give a bool (True: the check passed) or a "
        "SampleRatioResult (anything with a boolean .passed)"
    )


def recommend(
    sample_ratio: bool | Any | None,
    metrics: MetricsResult,
    history: Sequence[DecisionQuantities],
    *,
    settings: DecisionSettings | None = None,
    loss_threshold: float | None = None,
    prob_best: float | None = None,
    sustained_rounds: int | None = None,
    stop_prob: float | None = None,
) -> Recommendation:
    """The round's recommendation, applying the decision rules in order.

    Parameters
    ----------
    sample_ratio : bool, SampleRatioResult or None
        The round's sample-ratio check (``True`` / ``.passed``: no mismatch). ``None`` (no result)
        fails closed: HALT.
    metrics : MetricsResult
        :func:`analyze_metrics` of all rows so far.
    history : sequence of DecisionQuantities
        Oldest first, the current round last (see :func:`graduation`).
    settings, loss_threshold, prob_best, sustained_rounds, stop_prob
        Of :func:`graduation`: pass the spec's ``decision`` block whole as ``settings``.

    Returns
    -------
    Recommendation

    Notes
    -----
    1. Sample-ratio mismatch (or no sample-ratio result) → HALT: no effect is interpreted.
    2. A guardrail that failed for a treatment (its anytime-valid interval lies beyond the
       tolerance on the wrong side) → that treatment is not shipped, and is stopped.
    3. A treatment whose primary effect is positive and a discovery after FDR control, with no
       failed guardrail, is a ship candidate; it is shipped when the graduation rule ships it too
       (P(best) and expected loss sustained over rounds).
    Otherwise: STOP the treatments that failed a guardrail, or that the graduation rule stops
    (worse than control everywhere for ``sustained_rounds`` rounds) and whose anytime-valid primary
    interval lies below zero; else CONTINUE. ``reasons`` follow the same order.
    """
    passed, message = _sample_ratio_passed(sample_ratio)
    if not passed:
        return Recommendation(
            Decision.HALT, None, (f"{message} — HALT: no effect is interpreted until it is explained",)
        )
    reasons = [message]
    failed = metrics.failed_guardrails()
    for arm in failed:
        detail = metrics.guardrails[(metrics.guardrails["arm"] == arm) & (metrics.guardrails["verdict"] == "fail")]
        for _, g in detail.iterrows():
            reasons.append(f"do not ship {arm}: guardrail {g['metric']} failed ({g['reason']})")
    primary = metrics.primary().set_index("arm")
    candidates = [
        a for a in primary.index if primary.at[a, "discovery"] and primary.at[a, "estimate"] > 0 and a not in failed
    ]
    for a in candidates:
        reasons.append(
            f"{a} is a ship candidate: primary effect {primary.at[a, 'estimate']:.4g} "
            f"[{primary.at[a, 'lower']:.4g}, {primary.at[a, 'upper']:.4g}], q = {primary.at[a, 'q_value']:.3g}, "
            "no guardrail failed"
        )
    grad = graduation(
        history,
        settings=settings,
        loss_threshold=loss_threshold,
        prob_best=prob_best,
        sustained_rounds=sustained_rounds,
        stop_prob=stop_prob,
    )
    reasons.extend(grad.reasons)
    arms = history[-1].arms
    # The posterior's verdict stops an arm only when the printed anytime-valid interval agrees
    # (its upper bound below zero, Bonferroni across treatments at this look).
    unproven = [
        a
        for a in grad.stop_arms
        if a not in failed and a in primary.index and not primary.at[a, "upper"] < 0 and not _control_wins(grad)
    ]
    for a in unproven:
        reasons.append(
            f"not stopping {a} yet: its primary effect interval [{primary.at[a, 'lower']:.4g}, "
            f"{primary.at[a, 'upper']:.4g}] still contains 0"
        )
    stop_arms = tuple(a for a in arms[1:] if a in failed or (a in grad.stop_arms and a not in unproven))
    if grad.decision == Decision.SHIP:
        if grad.arm in candidates:
            return Recommendation(Decision.SHIP, grad.arm, tuple(reasons), stop_arms=stop_arms)
        if grad.arm not in failed:
            q = primary.at[grad.arm, "q_value"] if grad.arm in primary.index else float("nan")
            reasons.append(
                f"not shipping {grad.arm} yet: its primary effect is not a positive discovery after FDR (q = {q:.3g})"
            )
    if stop_arms:
        return Recommendation(Decision.STOP, stop_arms[0], tuple(reasons), stop_arms=stop_arms)
    return Recommendation(Decision.CONTINUE, None, tuple(reasons))
