"""The policy tree: a shallow tree on posterior-mean contrasts, read back as readable segment rules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.tree import DecisionTreeRegressor

from ..core._rules import Condition, Rule, rule_masks
from ..core._seeds import seed_from_rng
from ..model._base import require_observed, require_posterior

__all__ = ["DiscoveredSegment", "PolicyTree", "fit_policy_tree"]


def leading_arm(contrasts: np.ndarray, arms: Sequence[str]) -> str:
    """The treatment with the largest contrast, or the control (``arms[0]``) when none is positive.

    An exact tie between treatments goes to the first in arm order (``np.argmax``).
    """
    best = int(np.argmax(contrasts))
    return arms[best + 1] if contrasts[best] > 0 else arms[0]


@dataclass(frozen=True)
class DiscoveredSegment:
    """One leaf of the policy tree.

    Attributes
    ----------
    id : str
        ``"s1"``, ``"s2"``, … in tree order (left, i.e. ``<=`` / ``not in`` / ``is False``, first);
        ``"all"`` when the tree has a single leaf.
    rule : Rule
        The conditions on the path from the root, merged per covariate.
    share : float
        Share of the posterior's observed visitors in the segment.
    n : int
        Observed visitors in the segment.
    leading_arm : str
        The arm with the largest posterior-mean average contrast, control when no contrast is
        positive.
    mean_contrasts : dict
        ``{treatment: posterior-mean treatment-minus-control effect averaged over the members}``.
    """

    id: str
    rule: Rule
    share: float
    n: int
    leading_arm: str
    mean_contrasts: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "rule": self.rule.to_dict(),
            "rule_text": str(self.rule),
            "share": float(self.share),
            "n": int(self.n),
            "leading_arm": self.leading_arm,
            "mean_contrasts": {a: float(v) for a, v in self.mean_contrasts.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DiscoveredSegment:
        return cls(
            id=str(d["id"]),
            rule=Rule.from_dict(d["rule"]),
            share=float(d["share"]),
            n=int(d["n"]),
            leading_arm=str(d["leading_arm"]),
            mean_contrasts={str(a): float(v) for a, v in d["mean_contrasts"].items()},
        )

    def __str__(self) -> str:
        effects = ", ".join(f"{a} {v:+.4g}" for a, v in self.mean_contrasts.items())
        return f"{self.id}: {self.rule} -> {self.leading_arm} (share {self.share:.1%}, n={self.n}; {effects})"


@dataclass(frozen=True)
class PolicyTree:
    """The segments a policy tree found; their rules partition all visitors.

    Attributes
    ----------
    segments : tuple of DiscoveredSegment
        In tree order.
    arms : tuple of str
        Control first.
    max_depth : int
    min_segment_share : float
    seed : int
        The settings the tree was fitted with.
    n_visitors : int
        Observed visitors the tree was fitted on.
    """

    segments: tuple[DiscoveredSegment, ...]
    arms: tuple[str, ...]
    max_depth: int
    min_segment_share: float
    seed: int
    n_visitors: int

    @property
    def segment_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.segments)

    def segment_of(self, rows: pd.DataFrame) -> np.ndarray:
        """Segment id of each row (object array, row order).

        Parameters
        ----------
        rows : DataFrame
            Must hold the covariates the rules test; levels never seen in fitting are fine.

        Raises
        ------
        KeyError
            When a column a rule tests is missing.
        ValueError
            When a row matches no segment (a null covariate value).
        """
        masks = rule_masks([s.rule for s in self.segments], rows)
        hits = masks.sum(axis=0)
        if (hits != 1).any():
            i = int(np.flatnonzero(hits != 1)[0])
            raise ValueError(
                f"row {i} matches {int(hits[i])} segments of the policy tree: a covariate the rules test is "
                f"probably null there ({rows.iloc[i].to_dict()}); fill or drop such rows"
            )
        return np.asarray(self.segment_ids, dtype=object)[masks.argmax(axis=0)]

    def to_dict(self) -> dict:
        return {
            "segments": [s.to_dict() for s in self.segments],
            "arms": list(self.arms),
            "max_depth": int(self.max_depth),
            "min_segment_share": float(self.min_segment_share),
            "seed": int(self.seed),
            "n_visitors": int(self.n_visitors),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PolicyTree:
        return cls(
            segments=tuple(DiscoveredSegment.from_dict(s) for s in d["segments"]),
            arms=tuple(d["arms"]),
            max_depth=int(d["max_depth"]),
            min_segment_share=float(d["min_segment_share"]),
            seed=int(d["seed"]),
            n_visitors=int(d["n_visitors"]),
        )

    def __str__(self) -> str:
        head = (
            f"policy tree: {len(self.segments)} segment(s) over {self.n_visitors} visitors "
            f"(max_depth={self.max_depth}, min_segment_share={self.min_segment_share:g})"
        )
        return "\n".join([head, *(f"  {s}" for s in self.segments)])


@dataclass(frozen=True)
class _Feature:
    """One column of the tree's design matrix and the covariate test it stands for."""

    covariate: str
    kind: str  # "categorical" (one-hot of ``level``), "boolean" or "numeric"
    level: str | None = None

    def split(self, threshold: float) -> tuple[Condition, Condition]:
        """The conditions for the left (``column <= threshold``) and right children."""
        if self.kind == "categorical":
            levels = (str(self.level),)
            return Condition(self.covariate, "not in", levels=levels), Condition(self.covariate, "in", levels=levels)
        if self.kind == "boolean":
            return Condition(self.covariate, "is", threshold=0.0), Condition(self.covariate, "is", threshold=1.0)
        return Condition(self.covariate, "<=", threshold=threshold), Condition(self.covariate, ">", threshold=threshold)


def _design(frame: pd.DataFrame, covariates) -> tuple[np.ndarray, list[_Feature]]:
    columns, features = [], []
    for cov in covariates:
        col = frame[cov.name]
        if cov.type == "categorical":
            text = col.astype(str)
            for level in sorted(text.unique()):
                columns.append((text == level).to_numpy(float))
                features.append(_Feature(cov.name, "categorical", level))
        elif cov.type == "boolean":
            columns.append(col.astype(bool).to_numpy(float))
            features.append(_Feature(cov.name, "boolean"))
        else:
            columns.append(col.astype(float).to_numpy())
            features.append(_Feature(cov.name, "numeric"))
    return np.column_stack(columns), features


def _simplify(conditions: Sequence[Condition]) -> Rule:
    """Merge the path's conditions per covariate, in order of first appearance.

    Thresholds keep the tightest bound; ``in`` sets intersect and drop the ``not in`` levels, which
    are implied once an ``in`` is present; ``not in`` sets unite. Logically equivalent to the path.
    """
    by_feature: dict[str, list[Condition]] = {}
    for c in conditions:
        by_feature.setdefault(c.feature, []).append(c)
    merged: list[Condition] = []
    for name, conds in by_feature.items():
        ops = {c.operator for c in conds}
        if ops & {"in", "not in"}:
            inside = [set(c.levels or ()) for c in conds if c.operator == "in"]
            outside: set[str] = set().union(*(c.levels or () for c in conds if c.operator == "not in"))
            if inside:
                merged.append(Condition(name, "in", levels=tuple(set.intersection(*inside) - outside)))
            else:
                merged.append(Condition(name, "not in", levels=tuple(outside)))
            continue
        if "is" in ops:
            merged.append(conds[-1])  # a boolean is split at most once on a path
            continue
        upper = [c.threshold for c in conds if c.operator == "<=" and c.threshold is not None]
        lower = [c.threshold for c in conds if c.operator == ">" and c.threshold is not None]
        if lower:
            merged.append(Condition(name, ">", threshold=max(lower)))
        if upper:
            merged.append(Condition(name, "<=", threshold=min(upper)))
    return Rule(tuple(merged))


def fit_policy_tree(
    posterior,
    max_depth: int = 2,
    min_segment_share: float = 0.05,
    rng: int | np.random.Generator | None = 0,
    split_confidence: float = 0.8,
) -> PolicyTree:
    """Find segments of visitors whose best arm differs, as a shallow tree with readable rules.

    Parameters
    ----------
    posterior : BinaryPosterior, ContinuousPosterior or HurdlePosterior
        Its observed rows are the visitors the tree is fitted on.
    max_depth : int
        Depth of the tree (at most ``2 ** max_depth`` segments).
    min_segment_share : float
        Smallest segment, as a share of the observed visitors, in (0, 0.5].
    rng : int, Generator or None
        Breaks ties between equally good splits (``random_state`` of the tree); recorded as
        ``PolicyTree.seed``.
    split_confidence : float
        In [0, 1): posterior probability a split needs to stand. Two sibling segments with
        different leading arms stay apart only if, in each, its leading arm beats the sibling's
        leading arm with at least this probability; ``0`` keeps every split that changes the
        leading arm.

    Returns
    -------
    PolicyTree
        Its segments' rules partition every visitor, including categorical levels never seen in
        fitting (they fall on the ``not in`` side of every categorical split).

    Raises
    ------
    TypeError
        When ``posterior`` is not one of the three posterior result types.
    ValueError
        When the posterior has no observed rows, or ``max_depth`` / ``min_segment_share`` /
        ``split_confidence`` is out of range.

    Notes
    -----
    The tree is scikit-learn's CART regressor, fitted on the unique covariate profiles of the
    observed rows weighted by their counts (so a million visitors cost a few hundred samples),
    with one-hot columns for categorical covariates, 0/1 for booleans and raw numeric values. The
    target is the vector of posterior-mean treatment-minus-control contrasts, so each split
    minimises the count-weighted squared deviation of the contrast vectors within the children,
    and ``min_weight_fraction_leaf = min_segment_share`` keeps every leaf at that share of visitors.

    The regression target keeps the size of the effects, which the cost-sensitive classification
    reduction (label = best arm per profile, weight = its regret gap) flattens; its drawback is that
    it also splits where only the size of an effect changes, not the best arm. So after fitting,
    two sibling leaves with the same leading arm are merged back into their parent, bottom up:
    a segment exists only where the policy changes. A posterior-mean difference can be noise,
    though, and every split halves the data behind each segment's Thompson allocation; so two
    sibling leaves with different leading arms ``a`` and ``b`` are merged too unless the
    posterior is confident the policy should change: ``P(effect of a > effect of b)`` in the first
    leaf and ``P(effect of b > effect of a)`` in the second (effects averaged over each leaf's
    members, per draw) must both reach ``split_confidence``. A tree with no split left has the
    single segment ``"all"`` with the empty rule.

    Every segment statistic (``n``, ``share``, ``mean_contrasts``) is computed by applying the
    segment's rule to the profiles, so it is exactly what the rule routes.

    References
    ----------
    Breiman, L., Friedman, J., Olshen, R. and Stone, C. (1984). *Classification and Regression Trees*.
    Athey, S. and Wager, S. (2021). Policy learning with observational data. *Econometrica* 89(1).

    Examples
    --------
    One simulated round of ``segment_flip`` (flip wins only on mobile), a small posterior, and
    the tree that finds the mobile segment:

    >>> from tyche_lib import fit_posterior, initial_plan
    >>> from tyche_lib.simulate import segment_flip, simulate_round
    >>> scenario = segment_flip()
    >>> rows = simulate_round(scenario, initial_plan(scenario.spec()), n=20_000, round=1, rng=1)
    >>> posterior = fit_posterior(rows, scenario.spec(), draws=300, tune=500, chains=2, rng=1)
    >>> tree = fit_policy_tree(posterior, max_depth=2, min_segment_share=0.05, rng=7)
    >>> [str(s.rule) for s in tree.segments]
    ['device not in {mobile}', 'device in {mobile}']
    >>> tree.segments[1].leading_arm
    'flip'
    """
    seed = seed_from_rng(rng)
    require_posterior(posterior)
    require_observed(posterior, "fit_policy_tree")
    if isinstance(max_depth, bool) or not isinstance(max_depth, (int, np.integer)) or max_depth < 1:
        raise ValueError(f"max_depth = {max_depth!r}: must be an integer >= 1 (the spec's tree.max_depth)")
    if not 0.0 < min_segment_share <= 0.5:
        raise ValueError(
            f"min_segment_share = {min_segment_share!r}: must be in (0, 0.5] (the smallest segment as a "
            f"share of visitors)"
        )
    if not 0.0 <= split_confidence < 1.0:
        raise ValueError(
            f"split_confidence = {split_confidence!r}: must be in [0, 1) (the spec's tree.split_confidence; "
            f"0 keeps every split that changes the leading arm)"
        )
    spec = posterior.spec
    profiles = posterior.profiles()
    counts = profiles.counts.astype(float)
    contrasts = posterior.mean_contrasts(profiles.frame)  # profiles × treatments
    n_total = int(counts.sum())

    def leaf(conditions: list[Condition], members: np.ndarray) -> tuple[list[Condition], np.ndarray, str]:
        mean = counts[members] @ contrasts[members] / counts[members].sum()
        return conditions, members, leading_arm(mean, spec.arms)

    root = np.ones(len(counts), dtype=bool)
    leaves = [leaf([], root)]
    if spec.covariates and len(counts) > 1:
        design, features = _design(profiles.frame, spec.covariates)
        cart = DecisionTreeRegressor(
            max_depth=int(max_depth),
            min_weight_fraction_leaf=float(min_segment_share),
            random_state=int(seed) % 2**32,  # scikit-learn takes 32-bit seeds; derive_seed gives 63 bits
        ).fit(design, contrasts, sample_weight=counts)
        nodes = cart.tree_

        def credible(first: tuple, second: tuple) -> bool:
            """Whether each sibling's leading arm beats the other's within it with enough probability."""
            codes = np.full(len(counts), -1)
            codes[first[1]], codes[second[1]] = 0, 1
            draws, _ = posterior.mean_contrast_draws(codes[profiles.index], 2)  # draws × 2 × treatments
            effects = np.concatenate([np.zeros((len(draws), 2, 1)), draws], axis=2)  # control's effect is 0
            a, b = spec.arms.index(first[2]), spec.arms.index(second[2])
            return (
                min((effects[:, 0, a] > effects[:, 0, b]).mean(), (effects[:, 1, b] > effects[:, 1, a]).mean())
                >= split_confidence
            )

        def grow(node: int, conditions: list[Condition], members: np.ndarray) -> list:
            left, right = nodes.children_left[node], nodes.children_right[node]
            if left == -1:
                return [leaf(conditions, members)]
            go_left, go_right = features[nodes.feature[node]].split(float(nodes.threshold[node]))
            in_left = members & go_left.matches(profiles.frame)
            in_right = members & go_right.matches(profiles.frame)
            # The tree compares float32 copies of the features; a split the exact rule leaves empty is no split.
            if not in_left.any() or not in_right.any():
                return [leaf(conditions, members)]
            below = grow(left, conditions + [go_left], in_left) + grow(right, conditions + [go_right], in_right)
            if len(below) == 2 and (below[0][2] == below[1][2] or not credible(*below)):
                return [leaf(conditions, members)]
            return below

        leaves = grow(0, [], root)

    segments = []
    for i, (conditions, members, arm) in enumerate(leaves, start=1):
        n = int(counts[members].sum())
        mean = counts[members] @ contrasts[members] / n
        segments.append(
            DiscoveredSegment(
                id="all" if len(leaves) == 1 else f"s{i}",
                rule=_simplify(conditions),
                share=n / n_total,
                n=n,
                leading_arm=arm,
                mean_contrasts={t: float(v) for t, v in zip(spec.treatments, mean)},
            )
        )
    return PolicyTree(
        segments=tuple(segments),
        arms=tuple(spec.arms),
        max_depth=int(max_depth),
        min_segment_share=float(min_segment_share),
        seed=int(seed),
        n_visitors=n_total,
    )
