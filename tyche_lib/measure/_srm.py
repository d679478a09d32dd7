"""Sample-ratio check: did visitors land in cells and arms in the proportions the plan says?"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..core._plans import CELLS, Plan, PlanError
from ..core._rows import RowsError

__all__ = ["SampleRatioResult", "sample_ratio_check"]

# Pearson's chi-square approximation is trusted when every expected count is at least this.
MIN_EXPECTED = 5.0
# Largest number of possible outcomes an exact multinomial test enumerates (~0.1 s).
MAX_EXACT_OUTCOMES = 200_000
# Methods whose p-value is 0 or 1 by construction: not counted in the Bonferroni correction.
DETERMINISTIC_METHODS = ("zero-probability category", "recorded vs plan rules", "single category")
_TEST_COLUMNS = [
    "level",
    "cell",
    "segment",
    "n",
    "statistic",
    "df",
    "pvalue",
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
    p-value, the one that decides the verdict; ``tests`` lists every component.

    Attributes
    ----------
    statistic : float
        Test statistic of the deciding component (``inf`` for an impossible count).
    df : int
        Its degrees of freedom (categories tested minus one).
    pvalue : float
        Its unadjusted p-value.
    observed, expected : dict
        Its counts per category (cell or arm).
    method : str
        Its method: ``"chi-square"``, ``"chi-square, pooled"``, ``"exact binomial"``,
        ``"exact binomial, pooled"``, ``"exact multinomial"``, or a deterministic check
        (``"zero-probability category"``, ``"recorded vs plan rules"``).
    verdict : {"pass", "fail"}
    adjusted_pvalue : float
        Bonferroni-adjusted ``pvalue``: ``min(1, n_tests · pvalue)``; the verdict is ``"fail"``
        when it is below ``alpha`` or a deterministic check failed.
    alpha : float
    n_tests : int
        Number of stochastic component tests (the Bonferroni divisor).
    tests : DataFrame
        One row per component: ``level`` (``"cells"``, ``"arms"`` or ``"segments"``), ``cell``,
        ``segment``, ``n``, ``statistic``, ``df``, ``pvalue``, ``method``, ``observed``,
        ``expected``, ``failed``, ``note`` (pooling done, impossible arms seen).
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
        threshold = f"alpha/{self.n_tests} = {self.alpha / max(self.n_tests, 1):.3g} (Bonferroni)"
        if self.passed:
            head = self.tests.sort_values("pvalue", kind="stable").iloc[0]
            checks = len(self.tests) - self.n_tests
            return (
                f"sample ratio check passed: {self.n_tests} test(s) and {checks} deterministic check(s); "
                f"smallest p = {head.pvalue:.3g} ({_where(head)}), above {threshold}"
            )
        lines = [f"sample ratio mismatch against {threshold}:"]
        for _, t in self.tests[self.tests["failed"]].iterrows():
            detail = t.note or f"observed {t.observed} vs expected {_rounded(t.expected)}"
            lines.append(
                f"- {_where(t)}: {t.method}, statistic = {t.statistic:.4g}, df = {t.df}, p = {t.pvalue:.3g}; {detail}"
            )
        return "\n".join(lines)


def _where(t: pd.Series) -> str:
    if t.level == "cells":
        return "visitors per cell"
    if t.level == "segments":
        return "recorded segment_id"
    seg = "all segments" if t.segment is None else f"segment {t.segment!r}"
    return f"arms in the {t.cell} cell, {seg}"


def _rounded(d: dict) -> dict:
    return {k: round(v, 1) for k, v in d.items()}


def sample_ratio_check(rows: pd.DataFrame, plan: Plan, alpha: float = 0.001) -> SampleRatioResult:
    """Test whether visitors reached cells and arms in the proportions the plan implies.

    Two levels of component tests:

    - **cells**: visitors per cell against the plan's cell weights;
    - **arms**, within each cell and recorded segment: the control cell must hold only the control
      arm (any other arm is impossible: p = 0); the explore cell is tested against a uniform split;
      the optimized cell against the segment's allocation.

    When the rows hold the covariates the plan's rules test, the recorded ``segment_id`` is also
    compared with ``plan.segment_of(rows)`` (level ``"segments"``): a visitor recorded in another
    segment than the plan's rules give is a routing fault and fails the check.

    Parameters
    ----------
    rows : DataFrame
        The round's visitors, with columns ``cell``, ``arm`` and ``segment_id``.
    plan : Plan
        The plan the visitors were assigned under.
    alpha : float
        Family-wise error rate of the whole check (default 0.001: a false alarm stops a round).

    Returns
    -------
    SampleRatioResult

    Raises
    ------
    RowsError
        A required column is missing or has nulls, or a value is not a cell, arm or segment of the
        plan.
    ValueError
        ``alpha`` outside (0, 1).

    Notes
    -----
    Each component tests observed counts :math:`O_j` against :math:`E_j = n p_j`. With every
    :math:`E_j \\ge 5`, Pearson's statistic :math:`X^2 = \\sum_j (O_j - E_j)^2 / E_j` is referred to
    :math:`\\chi^2_{k-1}`. Otherwise the test is exact: a two-sided binomial test for two categories,
    or for more the exact multinomial test (the probability, under the plan, of all outcomes no
    more likely than the one observed) when at most 200,000 outcomes are possible; beyond that the
    categories with :math:`E_j < 5` are pooled (with the next smallest until the pool reaches 5) and
    the pooled counts get the chi-square test, or, if pooling leaves one category, an exact binomial
    test of the small categories against the rest. ``method`` and ``note`` say which was used.

    The overall verdict controls the family-wise error at ``alpha`` by Bonferroni: with :math:`m`
    stochastic component tests, a component fails when :math:`p < \\alpha / m` (so a lone cells test
    is held to ``alpha`` itself). The decision "any component fails" is the same under Holm's
    procedure. Deterministic checks (an arm with probability 0 observed, a segment mismatch) fail
    outright and do not count in :math:`m`.

    References
    ----------
    Fabijan, A. et al. (2019). Diagnosing Sample Ratio Mismatch in Online Controlled Experiments.
    KDD '19. https://doi.org/10.1145/3292500.3330722

    Examples
    --------
    >>> import pandas as pd
    >>> from tyche_lib import Plan, PlanSegment, Rule
    >>> plan = Plan("demo", 1, ("a", "b"), {"control": 0.5, "explore": 0.0, "optimized": 0.5},
    ...             (PlanSegment("all", Rule(), {"a": 0.0, "b": 1.0}),))
    >>> rows = pd.DataFrame({"cell": ["control"] * 4800 + ["optimized"] * 5200,
    ...                      "arm": ["a"] * 4800 + ["b"] * 5200, "segment_id": "all"})
    >>> result = sample_ratio_check(rows, plan)
    >>> result.verdict, result.method, round(result.statistic, 1), f"{result.pvalue:.1e}"
    ('fail', 'chi-square', 16.0, '6.3e-05')
    """
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"alpha = {alpha!r}: must be a number in (0, 1)")
    cell, arm, seg = _codes(rows, plan)
    n_arms, n_segs = len(plan.arms), len(plan.segments)
    components: list[dict] = []
    if len(rows):
        weights = np.array([plan.weights[c] for c in CELLS])
        components.append(_component("cells", None, None, CELLS, np.bincount(cell, minlength=3), weights))
        counts = np.bincount((cell * n_segs + seg) * n_arms + arm, minlength=3 * n_segs * n_arms)
        counts = counts.reshape(3, n_segs, n_arms)
        only_control = np.eye(n_arms)[0]
        components.append(_component("arms", "control", None, plan.arms, counts[0].sum(axis=0), only_control))
        for j, segment in enumerate(plan.segments):
            if counts[1, j].sum():
                uniform = np.full(n_arms, 1.0 / n_arms)
                components.append(_component("arms", "explore", segment.id, plan.arms, counts[1, j], uniform))
            if counts[2, j].sum():
                alloc = np.array([segment.allocation[a] for a in plan.arms])
                components.append(_component("arms", "optimized", segment.id, plan.arms, counts[2, j], alloc))
        consistency = _segment_consistency(rows, plan)
        if consistency is not None:
            components.append(consistency)

    tests = pd.DataFrame(components, columns=_TEST_COLUMNS)
    stochastic = ~tests["method"].isin(DETERMINISTIC_METHODS)
    m = int(stochastic.sum())
    tests["failed"] = np.where(stochastic, tests["pvalue"] < alpha / max(m, 1), tests["pvalue"] == 0.0)
    tests["failed"] = tests["failed"].astype(bool)
    if tests.empty:
        return SampleRatioResult(0.0, 0, 1.0, {}, {}, "no visitors", "pass", 1.0, float(alpha), 0, tests)
    head = tests.loc[tests["pvalue"].idxmin()]
    adjusted = min(1.0, head.pvalue * m) if head.method not in DETERMINISTIC_METHODS else head.pvalue
    return SampleRatioResult(
        statistic=float(head.statistic),
        df=int(head.df),
        pvalue=float(head.pvalue),
        observed=dict(head.observed),
        expected=dict(head.expected),
        method=str(head.method),
        verdict="fail" if tests["failed"].any() else "pass",
        adjusted_pvalue=float(adjusted),
        alpha=float(alpha),
        n_tests=m,
        tests=tests,
    )


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
