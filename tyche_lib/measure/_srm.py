"""Sample-ratio check: did visitors land in cells and arms in the proportions the plan says?"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import signal, stats

from ..core._plans import CELLS, Plan, PlanError
from ..core._rows import RowsError

__all__ = ["SampleRatioResult", "sample_ratio_check"]

# How the family-wise alpha is split between the kinds of stochastic test (weighted Bonferroni).
# The arm totals over the round get most of it: losing or duplicating one arm's rows moves that
# arm's total by the whole amount lost (its deficit is the score statistic for "arm a lost a share
# of its rows"). The arm totals within the optimized cell are the same statistic for a loss confined
# to that cell, where an arm at the allocation floor has too few rows for the round's total to see
# it. The cells and per-segment tests mostly catch routing faults, which move counts so far that
# their share of alpha hardly matters. A kind with no test in a round gives its share to the others,
# in proportion.
ALPHA_SHARES = {"arm totals": 0.5, "optimized arm totals": 0.2, "cells": 0.1, "arms": 0.2}
# Levels whose tests are one per arm: with two arms each count is n minus the other, one test.
_PER_ARM_LEVELS = ("arm totals", "optimized arm totals")
# Pearson's chi-square approximation is trusted when every expected count is at least this.
MIN_EXPECTED = 5.0
# Largest number of possible outcomes an exact multinomial test enumerates (~0.1 s).
MAX_EXACT_OUTCOMES = 200_000
# The exact arm-total distribution is computed over each segment's mean ± (TAIL_SDS·sd + TAIL_PAD):
# by Bernstein's inequality the mass left outside is below 1e-25 per segment, for any size.
TAIL_SDS, TAIL_PAD = 12.0, 40.0
# Methods whose p-value is 0 or 1 by construction: they get no share of alpha and fail when p = 0.
DETERMINISTIC_METHODS = ("zero-probability category", "recorded vs plan rules", "single category")
_TEST_COLUMNS = [
    "level",
    "cell",
    "segment",
    "arm",
    "n",
    "statistic",
    "df",
    "pvalue",
    "threshold",
    "method",
    "observed",
    "expected",
    "failed",
    "note",
]


@dataclass(frozen=True)
class SampleRatioResult:
    """Outcome of :func:`sample_ratio_check`.

    The headline fields (``statistic`` … ``method``) describe the component test with the smallest
    adjusted p-value, the one that decides the verdict; ``tests`` lists every component.

    Attributes
    ----------
    statistic : float
        Test statistic of the deciding component: the signed z-score ``(O - E) / sd`` for an arm
        total, Pearson's :math:`X^2` for a chi-square, a count for a binomial (``inf`` for an
        impossible count).
    df : int
        Its degrees of freedom (categories tested minus one; 1 for an arm total).
    pvalue : float
        Its unadjusted p-value.
    observed, expected : dict
        Its counts per category (arm, or cell).
    method : str
        Its method: ``"exact Poisson-binomial"`` (arm totals), ``"chi-square"``,
        ``"chi-square, pooled"``, ``"exact binomial"``, ``"exact binomial, pooled"``,
        ``"exact multinomial"``, or a deterministic check (``"zero-probability category"``,
        ``"recorded vs plan rules"``).
    verdict : {"pass", "fail"}
    adjusted_pvalue : float
        Weighted-Bonferroni adjusted p-value of the check: the smallest over the components of
        ``pvalue · alpha / threshold`` (capped at 1; 0 when a deterministic check failed). The
        verdict is ``"fail"`` exactly when it is below ``alpha``, so it is also the smallest
        ``alpha`` at which these rows would fail.
    alpha : float
    n_tests : int
        Number of stochastic component tests (those sharing ``alpha``).
    tests : DataFrame
        One row per component: ``level`` (``"arm totals"``, ``"optimized arm totals"``,
        ``"cells"``, ``"arms"`` or ``"segments"``), ``cell``, ``segment``, ``arm`` (arm totals),
        ``n``, ``statistic``, ``df``,
        ``pvalue``, ``threshold`` (the component's share of ``alpha``; NaN for a deterministic
        check), ``method``, ``observed``, ``expected``, ``failed``, ``note`` (pooling done,
        impossible arms seen, how far an arm total is off).
    """

    statistic: float
    df: int
    pvalue: float
    observed: dict
    expected: dict
    method: str
    verdict: str
    adjusted_pvalue: float
    alpha: float
    n_tests: int
    tests: pd.DataFrame = field(repr=False)

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    @property
    def message(self) -> str:
        """What was tested and, on failure, which component failed and how."""
        if self.tests.empty:
            return "sample ratio check: no visitors, nothing to test"
        split = f"alpha = {self.alpha:.3g} split by weighted Bonferroni ({_split_text(self.tests)})"
        if self.passed:
            checks = len(self.tests) - self.n_tests
            head = self.tests.loc[_adjusted(self.tests, self.alpha).idxmin()]
            return (
                f"sample ratio check passed: {self.n_tests} test(s) and {checks} deterministic check(s) "
                f"against {split}; closest: {_where(head)}, p = {head.pvalue:.3g} against {head.threshold:.3g}"
            )
        lines = [f"sample ratio mismatch against {split}:"]
        # Most significant first: when one arm lost rows, its deficit leads and the others' excess follows.
        order = _adjusted(self.tests, self.alpha).sort_values(kind="stable").index
        ordered = self.tests.loc[order]
        for _, t in ordered[ordered["failed"]].iterrows():
            against = "" if np.isnan(t.threshold) else f" < {t.threshold:.3g}"
            detail = f"observed {t.observed} vs expected {_rounded(t.expected)}" + (f"; {t.note}" if t.note else "")
            lines.append(
                f"- {_where(t)}: {t.method}, statistic = {t.statistic:.4g}, df = {t.df}, "
                f"p = {t.pvalue:.3g}{against}; {detail}"
            )
        return "\n".join(lines)


def _where(t: pd.Series) -> str:
    if t.level == "arm totals":
        return f"arm {t.arm!r} over the whole round"
    if t.level == "optimized arm totals":
        return f"arm {t.arm!r} over the optimized cell"
    if t.level == "cells":
        return "visitors per cell"
    if t.level == "segments":
        return "recorded segment_id"
    seg = "all segments" if t.segment is None else f"segment {t.segment!r}"
    return f"arms in the {t.cell} cell, {seg}"


def _rounded(d: dict) -> dict:
    return {k: round(v, 1) for k, v in d.items()}


def _split_text(tests: pd.DataFrame) -> str:
    parts = []
    for level, what in (
        ("arm totals", "per arm total"),
        ("optimized arm totals", "per optimized-cell arm total"),
        ("cells", "cells"),
        ("arms", "per cell x segment"),
    ):
        thresholds = tests.loc[tests["level"] == level, "threshold"].dropna()
        if len(thresholds):
            parts.append(f"{thresholds.iloc[0]:.3g} {what}")
    return ", ".join(parts)


def _adjusted(tests: pd.DataFrame, alpha: float) -> pd.Series:
    """Each component's p-value on the family's scale: it fails when this is below ``alpha``.

    A stochastic test's ``p · alpha / threshold``; a deterministic check's 0 when it failed and
    ``inf`` when it passed (it can fail a round, never come close to failing it).
    """
    deterministic = np.where(tests["pvalue"] == 0.0, 0.0, np.inf)
    return (tests["pvalue"] * alpha / tests["threshold"]).fillna(pd.Series(deterministic, index=tests.index))


def sample_ratio_check(rows: pd.DataFrame, plan: Plan, alpha: float = 0.001) -> SampleRatioResult:
    """Test whether visitors reached cells and arms in the proportions the plan implies.

    Four kinds of stochastic component test, which share ``alpha`` (see Notes):

    - **arm totals**: for each arm, its count over the whole round against the count the plan
      implies for the visitors seen, :math:`E_a = \\sum_s n_s\\, p(a \\mid s)` over the recorded
      segments (segments follow from covariates, so their sizes :math:`n_s` are given; the plan fixes
      the arm split inside each). A round that lost, or duplicated, rows of one arm shows here, and
      the failing row names the arm;
    - **optimized arm totals**: the same within the optimized cell, against
      :math:`\\sum_s n^{opt}_s\\, \\mathrm{alloc}_s(a)`, for a loss confined to that cell;
    - **cells**: visitors per cell against the plan's cell weights;
    - **arms**, within each cell and recorded segment: the explore cell against a uniform split over
      the active arms, the optimized cell against the segment's allocation (routing faults local to
      one segment).

    Deterministic checks fail outright: an arm or cell with probability 0 under the plan that
    received visitors (e.g. any arm but control in the control cell, or a retired arm, which the
    failing row names) and, when the rows hold the covariates the plan's rules test, a recorded
    ``segment_id`` other than ``plan.segment_of(rows)``.

    Parameters
    ----------
    rows : DataFrame
        The round's visitors, with columns ``cell``, ``arm`` and ``segment_id`` (the segment the
        plan's rules put the visitor in, recorded whatever the cell).
    plan : Plan
        The plan the visitors were assigned under.
    alpha : float
        Family-wise false-alarm rate of the whole check (default 0.001: a false alarm stops a
        round).

    Returns
    -------
    SampleRatioResult
        The verdict, the deciding component and every component with its observed and expected
        counts and its share of ``alpha``.

    Raises
    ------
    RowsError
        A required column is missing or has nulls, or a value is not a cell, arm or segment of the
        plan.
    ValueError
        ``alpha`` outside (0, 1).

    Notes
    -----
    **Arm totals.** Given the segment sizes, arm :math:`a`'s count is a sum of independent binomials,
    :math:`O_a \\sim \\sum_s \\mathrm{Bin}(n_s, q_{sa})` with :math:`q_{sa} = p(a \\mid s)` from
    :meth:`Plan.segment_arm_probabilities`: a Poisson-binomial law, computed exactly by convolving the
    binomials (each over its mean :math:`\\pm (12\\,\\mathrm{sd} + 40)`, outside which less than
    :math:`10^{-25}` of its mass lies; an observed count outside the resulting support reports the
    normal tail). The p-value is two-sided, twice the smaller tail, and the statistic is the z-score
    :math:`(O_a - E_a) / \\sqrt{V_a}`, :math:`V_a = \\sum_s n_s q_{sa}(1 - q_{sa})`. If arm :math:`a`
    loses a fraction :math:`f` of its rows at random, :math:`E_a - O_a` is the score statistic for
    :math:`f` at 0, so no test on these counts is more powerful against a small loss of one arm.
    The optimized arm totals are the same test on the optimized cell's visitors per segment and the
    segments' allocations: the score statistic for a loss confined to that cell.

    **Other components.** Each tests observed counts :math:`O_j` against :math:`E_j = n p_j`. With
    every :math:`E_j \\ge 5`, Pearson's :math:`X^2 = \\sum_j (O_j - E_j)^2 / E_j` is referred to
    :math:`\\chi^2_{k-1}`. Otherwise the test is exact: a two-sided binomial test for two categories,
    or for more the exact multinomial test (the probability, under the plan, of all outcomes no
    more likely than the one observed) when at most 200,000 outcomes are possible; beyond that the
    categories with :math:`E_j < 5` are pooled (with the next smallest until the pool reaches 5) and
    the pooled counts get the chi-square test, or, if pooling leaves one category, an exact binomial
    test of the small categories against the rest. ``method`` and ``note`` say which was used.

    **Alpha split.** The verdict controls the family-wise false-alarm rate at ``alpha`` by weighted
    Bonferroni: component :math:`i` fails when :math:`p_i < \\alpha w_i` with :math:`\\sum_i w_i = 1`,
    so :math:`P(\\text{any fails}) \\le \\sum_i \\alpha w_i = \\alpha` whatever their dependence. The
    weights are ``ALPHA_SHARES``: 0.5 to the arm totals and 0.2 to the optimized arm totals (each
    split equally over the :math:`K` arms; with two arms the two totals are one test, which gets the
    whole share), 0.1 to the cells test and 0.2 split equally over the per-(cell, segment) tests; a
    kind with no test in the round hands its share to the others in proportion. Deterministic checks take no share. The result's
    ``adjusted_pvalue`` is :math:`\\min_i p_i / w_i`, the smallest ``alpha`` at which the rows fail.

    References
    ----------
    Fabijan, A. et al. (2019). Diagnosing Sample Ratio Mismatch in Online Controlled Experiments.
    KDD '19. https://doi.org/10.1145/3292500.3330722

    Examples
    --------
    Three arms, all traffic uniform; 20% of arm ``c``'s 2,000 rows were lost:

    >>> import pandas as pd
    >>> from tyche_lib import Plan, PlanSegment, Rule
    >>> plan = Plan("demo", 1, ("a", "b", "c"), {"control": 0.0, "explore": 0.0, "optimized": 1.0},
    ...             (PlanSegment("all", Rule(), {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}),))
    >>> rows = pd.DataFrame({"cell": "optimized", "arm": ["a"] * 2000 + ["b"] * 2000 + ["c"] * 1600,
    ...                      "segment_id": "all"})
    >>> result = sample_ratio_check(rows, plan)
    >>> result.verdict, result.method, result.observed, round(result.statistic, 1)
    ('fail', 'exact Poisson-binomial', {'c': 1600}, -7.6)
    >>> print(result.message.splitlines()[1])  # doctest: +ELLIPSIS
    - arm 'c' over the whole round: exact Poisson-binomial, statistic = -7.559, ... 14.3% fewer rows ...

    Arms ``a`` and ``b`` have more rows than the plan implies for 5,600 visitors, and fail too; the
    message lists them after ``c``, whose deficit is the largest departure.
    """
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"alpha = {alpha!r}: must be a number in (0, 1)")
    cell, arm, seg = _codes(rows, plan)
    n_arms, n_segs = len(plan.arms), len(plan.segments)
    components: list[dict] = []
    if len(rows):
        counts = np.bincount((cell * n_segs + seg) * n_arms + arm, minlength=3 * n_segs * n_arms)
        counts = counts.reshape(3, n_segs, n_arms)
        components.extend(_arm_totals("arm totals", counts.sum(axis=0), plan.segment_arm_probabilities(), plan))
        allocations = pd.DataFrame([s.allocation for s in plan.segments], columns=list(plan.arms))
        components.extend(_arm_totals("optimized arm totals", counts[2], allocations, plan))
        weights = np.array([plan.weights[c] for c in CELLS])
        components.append(_component("cells", None, None, CELLS, counts.sum(axis=(1, 2)), weights))
        only_control = np.eye(n_arms)[0]
        components.append(_component("arms", "control", None, plan.arms, counts[0].sum(axis=0), only_control))
        for j, segment in enumerate(plan.segments):
            if counts[1, j].sum():
                uniform = np.array(list(plan.explore_allocation.values()))  # 0 for a retired arm
                components.append(_component("arms", "explore", segment.id, plan.arms, counts[1, j], uniform))
            if counts[2, j].sum():
                alloc = np.array([segment.allocation[a] for a in plan.arms])
                components.append(_component("arms", "optimized", segment.id, plan.arms, counts[2, j], alloc))
        consistency = _segment_consistency(rows, plan)
        if consistency is not None:
            components.append(consistency)

    tests = pd.DataFrame(components, columns=_TEST_COLUMNS)
    if tests.empty:
        return SampleRatioResult(0.0, 0, 1.0, {}, {}, "no visitors", "pass", 1.0, float(alpha), 0, tests)
    tests["threshold"] = _thresholds(tests, alpha, n_arms)
    stochastic = tests["threshold"].notna()
    tests["failed"] = np.where(stochastic, tests["pvalue"] < tests["threshold"], tests["pvalue"] == 0.0).astype(bool)
    adjusted = _adjusted(tests, alpha)
    head = tests.loc[adjusted.idxmin()]
    return SampleRatioResult(
        statistic=float(head.statistic),
        df=int(head.df),
        pvalue=float(head.pvalue),
        observed=dict(head.observed),
        expected=dict(head.expected),
        method=str(head.method),
        verdict="fail" if tests["failed"].any() else "pass",
        adjusted_pvalue=float(min(1.0, adjusted.min())),
        alpha=float(alpha),
        n_tests=int(stochastic.sum()),
        tests=tests,
    )


def _thresholds(tests: pd.DataFrame, alpha: float, n_arms: int) -> np.ndarray:
    """Each stochastic component's share of ``alpha`` (weighted Bonferroni); NaN for deterministic checks."""
    stochastic = ~tests["method"].isin(DETERMINISTIC_METHODS)
    present = {level: w for level, w in ALPHA_SHARES.items() if (stochastic & (tests["level"] == level)).any()}
    out = np.full(len(tests), np.nan)
    for level, share in present.items():
        mask = (stochastic & (tests["level"] == level)).to_numpy()
        # With two arms each total is n minus the other: the two rows are one test, with one p-value.
        m = 1 if level in _PER_ARM_LEVELS and n_arms == 2 else int(mask.sum())
        out[mask] = alpha * share / sum(present.values()) / m
    return out


def _arm_totals(level: str, counts: np.ndarray, probs: pd.DataFrame, plan: Plan) -> list[dict[str, Any]]:
    """One exact test per arm of its total count, given the visitors per recorded segment.

    ``counts`` (segments × arms, in the plan's order) are the visitors of the round or of one cell;
    ``probs`` the probability of each arm for a visitor of that segment there.
    """
    q = np.clip(probs.to_numpy(dtype=float), 0.0, 1.0)
    n_seg = counts.sum(axis=1)
    observed = counts.sum(axis=0)
    expected = n_seg @ q
    variance = n_seg @ (q * (1.0 - q))
    n = int(n_seg.sum())
    components: list[dict[str, Any]] = []
    for j, arm in enumerate(plan.arms):
        # No randomness to test (the plan fixes the count); an impossible arm fails its per-cell check.
        if variance[j] <= 0:
            continue
        o, e = int(observed[j]), float(expected[j])
        z = (o - e) / math.sqrt(variance[j])
        # With two arms each total is n minus the other's: one test, so both rows carry the same p.
        p = (
            components[0]["pvalue"]
            if len(plan.arms) == 2 and components
            else _poisson_binomial_pvalue(o, n_seg, q[:, j], z)
        )
        components.append(
            {
                "level": level,
                "cell": "optimized" if level == "optimized arm totals" else None,
                "segment": None,
                "arm": arm,
                "n": n,
                "statistic": z,
                "df": 1,
                "pvalue": p,
                "method": "exact Poisson-binomial",
                "observed": {arm: o},
                "expected": {arm: e},
                "failed": False,
                "note": f"{abs(o / e - 1):.1%} {'fewer' if o < e else 'more'} rows than the plan implies "
                "for the segments seen",
            }
        )
    return components


def _poisson_binomial_pvalue(observed: int, n: np.ndarray, q: np.ndarray, z: float) -> float:
    """Two-sided p-value (twice the smaller tail) of ``observed`` under the sum of Binomial(n_s, q_s)."""
    offset, pmf = 0, np.ones(1)
    for n_s, q_s in zip(n.tolist(), q.tolist()):
        if n_s == 0 or q_s == 0.0:
            continue
        if q_s == 1.0:
            offset += n_s
            continue
        mean, sd = n_s * q_s, math.sqrt(n_s * q_s * (1.0 - q_s))
        lo = max(0, math.floor(mean - TAIL_SDS * sd - TAIL_PAD))
        hi = min(n_s, math.ceil(mean + TAIL_SDS * sd + TAIL_PAD))
        # scipy picks direct or FFT convolution by size; FFT round-off (~1e-16) is far below any alpha.
        pmf = signal.convolve(pmf, stats.binom.pmf(np.arange(lo, hi + 1), n_s, q_s))
        offset += lo
    i = observed - offset
    if not 0 <= i < len(pmf):
        return float(min(1.0, 2.0 * stats.norm.sf(abs(z))))
    pmf = np.clip(pmf, 0.0, None)
    return float(min(1.0, 2.0 * min(pmf[: i + 1].sum(), pmf[i:].sum())))


def _codes(rows: pd.DataFrame, plan: Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer codes of cell, arm and segment_id for every row; clear errors for anything unknown."""
    known = {"cell": CELLS, "arm": plan.arms, "segment_id": plan.segment_ids}
    fixes = {
        "cell": f"unknown cell; cells are {list(CELLS)}",
        "arm": f"not an arm of the plan {list(plan.arms)}",
        "segment_id": (
            f"not a segment of the plan for {plan.experiment_id} round {plan.round} "
            f"{list(plan.segment_ids)}; check the rows were assigned under this plan"
        ),
    }
    codes = []
    for col, values in known.items():
        if col not in rows.columns:
            raise RowsError(
                col, "<missing>", f"the rows must have a '{col}' column; found {sorted(map(str, rows.columns))}"
            )
        nulls = rows[col].isna().to_numpy()
        if nulls.any():
            raise RowsError(
                col,
                None,
                f"{int(nulls.sum())} null value(s), first at row {int(np.flatnonzero(nulls)[0])}; "
                f"every visitor needs a {col}",
            )
        code = pd.Categorical(rows[col].astype(str), categories=list(values)).codes.astype(np.int64)
        if (code < 0).any():
            raise RowsError(col, rows[col].to_numpy()[code < 0][0], fixes[col])
        codes.append(code)
    return codes[0], codes[1], codes[2]


def _component(level: str, cell: str | None, segment: str | None, labels, observed, probs) -> dict[str, Any]:
    """One multinomial goodness-of-fit test of ``observed`` counts against probabilities ``probs``."""
    labels = list(labels)
    observed = np.asarray(observed, dtype=np.int64)
    probs = np.asarray(probs, dtype=float)
    probs = probs / probs.sum()  # plans allow weights summing to 1 ± 1e-6
    n = int(observed.sum())
    row: dict[str, Any] = {
        "level": level,
        "cell": cell,
        "segment": segment,
        "arm": None,
        "n": n,
        "observed": {label: int(o) for label, o in zip(labels, observed)},
        "expected": {label: float(e) for label, e in zip(labels, n * probs)},
        "failed": False,
        "note": "",
    }
    impossible = (probs == 0) & (observed > 0)
    possible = probs > 0
    if impossible.any():
        seen = {label: int(o) for label, o, bad in zip(labels, observed, impossible) if bad}
        what = "cell" if level == "cells" else "arm"
        row.update(
            statistic=math.inf,
            df=int(possible.sum()) - 1,
            pvalue=0.0,
            method="zero-probability category",
            note=f"{what}(s) with probability 0 under the plan received visitors: {seen}",
        )
        return row
    obs, p = observed[possible], probs[possible]
    lab = [label for label, keep in zip(labels, possible) if keep]
    if len(obs) < 2:
        row.update(statistic=0.0, df=0, pvalue=1.0, method="single category")
        return row
    row.update(_goodness_of_fit(obs, p, lab))
    return row


def _goodness_of_fit(obs: np.ndarray, p: np.ndarray, labels: list[str]) -> dict[str, Any]:
    n, k = int(obs.sum()), len(obs)
    expected = n * p
    if expected.min() >= MIN_EXPECTED:
        res = stats.chisquare(obs, expected)
        return dict(statistic=float(res.statistic), df=k - 1, pvalue=float(res.pvalue), method="chi-square")
    if k == 2:
        res = stats.binomtest(int(obs[0]), n, float(p[0]))
        return dict(
            statistic=float(obs[0]),
            df=1,
            pvalue=float(res.pvalue),
            method="exact binomial",
            note=f"expected counts {np.round(expected, 2).tolist()} < {MIN_EXPECTED:g}; statistic = count of {labels[0]!r}",
        )
    if math.comb(n + k - 1, k - 1) <= MAX_EXACT_OUTCOMES:
        return dict(
            statistic=float(-stats.multinomial.logpmf(obs, n, p)),
            df=k - 1,
            pvalue=_exact_multinomial_pvalue(obs, p),
            method="exact multinomial",
            note=f"expected counts {np.round(expected, 2).tolist()} < {MIN_EXPECTED:g}; statistic = -log P(observed)",
        )
    return _pooled(obs, p, labels)


def _exact_multinomial_pvalue(obs: np.ndarray, p: np.ndarray) -> float:
    """P(outcome no more likely than ``obs``) under multinomial(n, p), by enumerating all outcomes."""
    n, k = int(obs.sum()), len(obs)
    # Stars and bars: each choice of k - 1 bar positions among n + k - 1 slots is one outcome.
    bars = np.array(list(itertools.combinations(range(n + k - 1), k - 1)), dtype=np.int64).reshape(-1, k - 1)
    edges = np.hstack([np.full((len(bars), 1), -1), bars, np.full((len(bars), 1), n + k - 1)])
    outcomes = np.diff(edges, axis=1) - 1
    logp = stats.multinomial.logpmf(outcomes, n, p)
    observed_logp = stats.multinomial.logpmf(obs, n, p)
    # Relative tolerance as in scipy.stats.binomtest, so outcomes tied with the observed one count.
    return float(min(1.0, np.exp(logp[logp <= observed_logp + 1e-7 * abs(observed_logp)]).sum()))


def _pooled(obs: np.ndarray, p: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Pool categories with expected counts below MIN_EXPECTED, then test the pooled counts."""
    n = int(obs.sum())
    expected = n * p
    order = np.argsort(expected, kind="stable")
    small = [i for i in order if expected[i] < MIN_EXPECTED]
    pool = list(small)
    rest = [i for i in order if i not in pool]
    while expected[pool].sum() < MIN_EXPECTED and len(rest) > 1:
        pool.append(rest.pop(0))
    pooled_names = [labels[i] for i in pool]
    if expected[pool].sum() >= MIN_EXPECTED:
        merged_obs = np.append(obs[rest], obs[pool].sum())
        merged_exp = np.append(expected[rest], expected[pool].sum())
        res = stats.chisquare(merged_obs, merged_exp)
        return dict(
            statistic=float(res.statistic),
            df=len(merged_obs) - 1,
            pvalue=float(res.pvalue),
            method="chi-square, pooled",
            note=f"pooled {pooled_names} (expected {expected[pool].sum():.2f}) so every expected count is >= {MIN_EXPECTED:g}",
        )
    small_names = [labels[i] for i in small]
    res = stats.binomtest(int(obs[small].sum()), n, float(p[small].sum()))
    return dict(
        statistic=float(obs[small].sum()),
        df=1,
        pvalue=float(res.pvalue),
        method="exact binomial, pooled",
        note=f"pooled {small_names} (expected {expected[small].sum():.2f}) against the rest; statistic = their count",
    )


def _segment_consistency(rows: pd.DataFrame, plan: Plan) -> dict[str, Any] | None:
    """Compare recorded segment_id with the plan's rules, when the rows hold the covariates they test."""
    features = {c.feature for s in plan.segments for c in s.rule.conditions}
    if not features <= set(rows.columns):
        return None
    row: dict[str, Any] = {
        "level": "segments",
        "cell": None,
        "segment": None,
        "arm": None,
        "n": len(rows),
        "df": 0,
        "method": "recorded vs plan rules",
        "failed": False,
    }
    try:
        derived = plan.segment_of(rows)
    except PlanError as err:
        return {**row, "statistic": math.inf, "pvalue": 0.0, "observed": {}, "expected": {}, "note": str(err)}
    recorded = rows["segment_id"].astype(str).to_numpy(dtype=object)
    mismatch = recorded != derived
    k = int(mismatch.sum())
    row.update(
        statistic=float(k),
        pvalue=0.0 if k else 1.0,
        observed={"mismatched": k},
        expected={"mismatched": 0.0},
        note=""
        if not k
        else (
            f"{k} visitor(s) recorded in another segment than the plan's rules give, e.g. row "
            f"{int(np.flatnonzero(mismatch)[0])}: recorded {recorded[mismatch][0]!r}, rules give {derived[mismatch][0]!r}"
        ),
    )
    return row
