"""Honest segment effects: the plan's segments scored on the round they governed.

The policy tree picks its segments on data through round r; effects estimated on those same rows
inherit the selection (a split lands where noise pushed the contrasts apart, so the segment's
estimate is biased away from the truth, the winner's curse). The round the plan then governs is
new data the tree never saw, and within one segment every visitor had the same probability of
every arm (``p(arm | x)`` depends on ``x`` only through the segment), so each segment's arms are
a randomised comparison there: the estimates below are honest for the segments however they
were found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core._errors import RowsError
from ..core._seeds import seed_from_rng
from ..core._spec import ExperimentSpec

__all__ = ["SegmentEffects", "segment_effects"]

# Relative tolerance within which recorded assignment probabilities count as one value.
_PROB_TOLERANCE = 1e-9


@dataclass(frozen=True)
class SegmentEffects:
    """Per segment and treatment: the treatment-minus-control effect of one round's rows.

    Attributes
    ----------
    table : DataFrame
        One row per (segment_id, treatment): ``n_control``, ``n_treatment``, posterior ``mean``
        and ``sd`` of the effect, the central intervals ``lower_50``/``upper_50`` and
        ``lower_90``/``upper_90`` (the ``levels``), and ``prob_positive`` (posterior probability
        that the treatment beats control in the segment). NaN where an arm has no rows.
    metric : str
    model : str
        ``"beta-binomial"`` (binary metric) or ``"normal-mean"`` (others).
    levels : tuple of float
    draws : int
    seed : int
    """

    table: pd.DataFrame
    metric: str
    model: str
    levels: tuple[float, ...]
    draws: int
    seed: int

    def to_records(self) -> list[dict]:
        """JSON-friendly rows (NaN as None)."""
        return [
            {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
            for r in self.table.to_dict(orient="records")
        ]


def _arm_mean_draws(values: np.ndarray, binary: bool, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Posterior draws of one arm's mean outcome in one segment (NaN without rows)."""
    n = len(values)
    if n == 0:
        return np.full(draws, np.nan)
    if binary:
        # Jeffreys prior Beta(1/2, 1/2): good frequentist coverage even at a handful of rows.
        successes = float(values.sum())
        return rng.beta(0.5 + successes, 0.5 + n - successes, size=draws)
    if n < 2:
        return np.full(draws, np.nan)
    # Normal mean with unknown variance under the Jeffreys prior: mean + sd / sqrt(n) * t(n - 1).
    return values.mean() + values.std(ddof=1) / np.sqrt(n) * rng.standard_t(n - 1, size=draws)


def segment_effects(
    rows: pd.DataFrame,
    spec: ExperimentSpec,
    *,
    rng: int | np.random.Generator | None,
    levels: tuple[float, ...] = (0.5, 0.9),
    draws: int = 4000,
) -> SegmentEffects:
    """Each segment's treatment effects, estimated on the one round its plan governed.

    Parameters
    ----------
    rows : DataFrame
        One round's visitor rows, routed by one plan: ``segment_id``, ``arm``, the primary metric,
        and (checked when present) ``round`` and ``assignment_prob``.
    spec : ExperimentSpec
    rng : int, Generator or None
        Seed of the posterior draws (derive it from experiment and round); recorded as
        ``SegmentEffects.seed``.
    levels : tuple of float
        Central interval probabilities; columns ``lower_{100 p}`` / ``upper_{100 p}``.
    draws : int
        Monte Carlo draws per arm and segment (4,000: interval endpoints to about 1% of the sd).

    Returns
    -------
    SegmentEffects

    Raises
    ------
    RowsError
        A missing column, an unknown arm, or rows of more than one round.
    ValueError
        Assignment probabilities that vary within a segment and arm: the rows were not routed by
        one plan, so a segment's arms are not a randomised comparison.

    Notes
    -----
    Within a segment every visitor had the same probability of each arm, so the visitors of an
    arm are a random sample of the segment's visitors and the arm's outcome mean estimates the
    segment's mean under that arm. Binary metric: independent Beta–Bernoulli posteriors per arm
    (Jeffreys prior); other metrics: the posterior of a normal mean with unknown variance (exact
    for normal outcomes, by the central limit theorem otherwise). The effect's draws are the
    treatment's minus the control's. Because the segments were chosen on earlier rounds, these
    intervals keep their coverage where intervals on the selecting rows do not (``eval/``
    measures both).

    Examples
    --------
    >>> import pandas as pd
    >>> from tyche_lib import spec_from_dict
    >>> spec = spec_from_dict({"id": "demo", "arms": ["control", "green"],
    ...     "metrics": {"primary": {"name": "converted", "family": "binary"}}})
    >>> rows = pd.DataFrame({"segment_id": ["all"] * 400, "arm": ["control", "green"] * 200,
    ...     "converted": [0, 0, 0, 1] * 100})
    >>> effects = segment_effects(rows, spec, rng=7)
    >>> effects.table[["segment_id", "treatment", "n_control", "n_treatment"]].to_dict("records")
    [{'segment_id': 'all', 'treatment': 'green', 'n_control': 200, 'n_treatment': 200}]
    >>> bool(effects.table["lower_90"].iloc[0] < 0.5 < effects.table["upper_90"].iloc[0])
    True
    """
    metric = spec.primary.name
    for column in ("segment_id", "arm", metric):
        if column not in rows.columns:
            raise RowsError(column, "<missing>", f"segment effects need the column; found {sorted(rows.columns)}")
    if "round" in rows.columns and rows["round"].nunique() > 1:
        raise RowsError(
            "round",
            sorted(rows["round"].unique().tolist()),
            "segment effects are scored on the one round a plan governed; pass that round's rows only",
        )
    arms = rows["arm"].astype(str)
    unknown = ~arms.isin(spec.arms)
    if unknown.any():
        raise RowsError("arm", arms[unknown].iloc[0], f"unknown arm; the spec's arms are {list(spec.arms)}")
    if not all(0.0 < level < 1.0 for level in levels):
        raise ValueError(f"levels = {levels!r}: interval probabilities must be in (0, 1)")
    if "assignment_prob" in rows.columns:
        probs = rows.groupby([rows["segment_id"].astype(str), arms], observed=True)["assignment_prob"]
        spread = probs.max() - probs.min()
        varying = spread > _PROB_TOLERANCE * probs.max()
        if varying.any():
            segment, arm = varying[varying].index[0]
            raise ValueError(
                f"assignment_prob varies within segment {segment!r} and arm {arm!r} (from "
                f"{probs.min()[(segment, arm)]:.6g} to {probs.max()[(segment, arm)]:.6g}): the rows were "
                "not routed by one plan; pass one round's rows with the segment ids its plan recorded"
            )
    outcome = rows[metric].to_numpy(dtype=float)
    if np.isnan(outcome).any():
        raise RowsError(metric, None, "null outcome(s); segment effects need every row's primary metric")
    binary = spec.primary.family == "binary"
    seed = seed_from_rng(rng)
    rng = np.random.default_rng(seed)
    segment_ids = rows["segment_id"].astype(str).to_numpy()
    arm_values = arms.to_numpy()
    records = []
    for segment in sorted(set(segment_ids)):
        in_segment = segment_ids == segment
        by_arm = {a: outcome[in_segment & (arm_values == a)] for a in spec.arms}
        means = {a: _arm_mean_draws(by_arm[a], binary, draws, rng) for a in spec.arms}
        for treatment in spec.treatments:
            effect = means[treatment] - means[spec.control]
            record = {
                "segment_id": segment,
                "treatment": treatment,
                "n_control": len(by_arm[spec.control]),
                "n_treatment": len(by_arm[treatment]),
            }
            if np.isnan(effect).any():
                record.update({"mean": np.nan, "sd": np.nan, "prob_positive": np.nan})
                record.update({f"{side}_{level * 100:g}": np.nan for level in levels for side in ("lower", "upper")})
            else:
                record.update(
                    {
                        "mean": float(effect.mean()),
                        "sd": float(effect.std(ddof=1)),
                        "prob_positive": float((effect > 0).mean()),
                    }
                )
                for level in levels:
                    lower, upper = np.quantile(effect, [(1 - level) / 2, (1 + level) / 2])
                    record[f"lower_{level * 100:g}"], record[f"upper_{level * 100:g}"] = float(lower), float(upper)
            records.append(record)
    return SegmentEffects(
        table=pd.DataFrame.from_records(records),
        metric=metric,
        model="beta-binomial" if binary else "normal-mean",
        levels=tuple(levels),
        draws=draws,
        seed=seed,
    )
