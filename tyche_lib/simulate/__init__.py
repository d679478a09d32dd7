"""Simulated experiments with a known ground truth.

A :class:`Scenario` describes visitors (covariate distributions), arms and the true outcome model
of every metric. :func:`simulate_round` routes simulated visitors through a :class:`~tyche_lib.Plan`
exactly as production traffic is routed (cell, segment, arm, recorded assignment probability) and
draws their outcomes from the truth, so every statistical step can be checked against
:func:`true_contrasts` and :func:`true_best_arm`.

:func:`plan_adaptive_sample_size` sizes an adaptive experiment by running it here many times.

Built-in scenarios: :func:`no_heterogeneity`, :func:`segment_flip`, :func:`hurdle_revenue` and
:func:`continuous` (see :data:`SCENARIOS`).

Examples
--------
>>> from tyche_lib import initial_plan
>>> from tyche_lib.simulate import segment_flip, simulate_round
>>> scenario = segment_flip()
>>> plan = initial_plan(scenario.spec())
>>> rows = simulate_round(scenario, plan, n=1000, round=1, rng=7)
>>> rows[["cell", "segment_id", "arm", "assignment_prob", "converted"]].head(2).shape
(2, 5)
"""

from ._sample_size import AdaptiveSampleSizeResult, plan_adaptive_sample_size
from ._scenarios import (
    DEFAULT_START,
    SCENARIOS,
    CovariateDistribution,
    GuardrailTruth,
    MetricTruth,
    Scenario,
    continuous,
    hurdle_revenue,
    no_heterogeneity,
    segment_flip,
    simulate_round,
    true_best_arm,
    true_contrasts,
)

__all__ = [
    "AdaptiveSampleSizeResult",
    "CovariateDistribution",
    "DEFAULT_START",
    "GuardrailTruth",
    "MetricTruth",
    "SCENARIOS",
    "Scenario",
    "continuous",
    "hurdle_revenue",
    "no_heterogeneity",
    "plan_adaptive_sample_size",
    "segment_flip",
    "simulate_round",
    "true_best_arm",
    "true_contrasts",
]
