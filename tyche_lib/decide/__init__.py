"""Decisions: P(best), expected loss, the value of one more round, graduation, ship / continue /
stop recommendations, and fixed-horizon sample sizes."""

from ._decisions import (
    Decision,
    DecisionQuantities,
    Recommendation,
    RoundValue,
    decision_quantities,
    expected_value_of_one_more_round,
    graduation,
    recommend,
)
from ._sample_size import SampleSizeResult, plan_sample_size

__all__ = [
    "Decision",
    "DecisionQuantities",
    "Recommendation",
    "RoundValue",
    "SampleSizeResult",
    "decision_quantities",
    "expected_value_of_one_more_round",
    "graduation",
    "plan_sample_size",
    "recommend",
]
