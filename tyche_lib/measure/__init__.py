"""What the rows say: data quality, sample ratio, anytime-valid effects (MAD confidence
sequences, mSPRT), CUPED, metrics across arms and held-out segment effects."""

from ._inference import (
    CupedResult,
    MetricsResult,
    MsprtResult,
    analyze_metrics,
    cuped,
    cuped_outcome_model,
    mad_confidence_path,
    mad_confidence_sequence,
    msprt,
    outcome_predictions,
)
from ._quality import QualityFailure, QualityResult, quality_check, quality_suite
from ._segment_effects import SegmentEffects, segment_effects
from ._srm import SampleRatioResult, sample_ratio_check

__all__ = [
    "CupedResult",
    "MetricsResult",
    "MsprtResult",
    "QualityFailure",
    "QualityResult",
    "SampleRatioResult",
    "SegmentEffects",
    "analyze_metrics",
    "cuped",
    "cuped_outcome_model",
    "mad_confidence_path",
    "mad_confidence_sequence",
    "msprt",
    "outcome_predictions",
    "quality_check",
    "quality_suite",
    "sample_ratio_check",
    "segment_effects",
]
