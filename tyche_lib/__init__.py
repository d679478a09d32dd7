"""Tyche's statistics: a plain library (no Dagster) for multi-round adaptive experiments.

The public surface is re-exported here; implementations live in private modules.
"""

from . import simulate

# Experiment specs and round rows
from ._spec import (
    Covariate,
    DecisionSettings,
    ExperimentSpec,
    Guardrail,
    load_spec,
    Metric,
    SourceConfig,
    spec_from_dict,
    SpecError,
)
from ._schema import model_frame, RowsError, validate_rows
from ._sources import LandingFolderSource, register_source, RoundSource, source_from_config, SqlSource
from ._seeds import derive_seed

# Plans and assignment
from ._rules import Condition, Rule
from ._plans import build_plan, initial_plan, Plan, PLAN_SCHEMA_VERSION, PlanError, PlanSegment
from ._assign import Assigner, Assignment, EXCLUDED_CELL
from ._registry import Conflict, find_conflicts, RegistryEntry
from ._sample_size import (
    AdaptiveSampleSizeResult,
    plan_adaptive_sample_size,
    plan_sample_size,
    SampleSizeResult,
)

# Simulation with ground truth
from .simulate import Scenario, simulate_round, true_contrasts

# Checks
from ._quality import quality_check, quality_suite, QualityFailure, QualityResult
from ._srm import sample_ratio_check, SampleRatioResult

# Posterior: model description, engine, results
from ._model import CovariateCoding, describe_model, ModelDescription
from ._posterior_base import Posterior, Profiles
from ._posterior import BinaryPosterior, ContinuousPosterior, fit_posterior, HurdlePosterior, PosteriorSummary

# Policy and allocation
from ._policy import DiscoveredSegment, fit_policy_tree, PolicyTree
from ._allocation import apply_floor, thompson_allocation
from ._segment_effects import segment_effects, SegmentEffects

# Measurement and decisions
from ._inference import (
    analyze_metrics,
    cuped,
    cuped_outcome_model,
    CupedResult,
    mad_confidence_path,
    mad_confidence_sequence,
    MetricsResult,
    msprt,
    MsprtResult,
    outcome_predictions,
)
from ._decisions import (
    Decision,
    decision_quantities,
    DecisionQuantities,
    expected_value_of_one_more_round,
    graduation,
    recommend,
    Recommendation,
    RoundValue,
)

# Plots
from ._viz import (
    arm_colors,
    experiment_evolution_gif,
    figure_to_png_bytes,
    plot_cells,
    plot_effects_over_rounds,
    plot_policy_tree,
    png_markdown,
)

__all__ = [
    "AdaptiveSampleSizeResult",
    "analyze_metrics",
    "apply_floor",
    "arm_colors",
    "Assigner",
    "Assignment",
    "BinaryPosterior",
    "build_plan",
    "Condition",
    "Conflict",
    "ContinuousPosterior",
    "Covariate",
    "CovariateCoding",
    "cuped",
    "cuped_outcome_model",
    "CupedResult",
    "Decision",
    "decision_quantities",
    "DecisionQuantities",
    "DecisionSettings",
    "derive_seed",
    "describe_model",
    "DiscoveredSegment",
    "EXCLUDED_CELL",
    "expected_value_of_one_more_round",
    "experiment_evolution_gif",
    "ExperimentSpec",
    "figure_to_png_bytes",
    "find_conflicts",
    "fit_policy_tree",
    "fit_posterior",
    "graduation",
    "Guardrail",
    "HurdlePosterior",
    "initial_plan",
    "LandingFolderSource",
    "load_spec",
    "mad_confidence_path",
    "mad_confidence_sequence",
    "Metric",
    "MetricsResult",
    "model_frame",
    "ModelDescription",
    "msprt",
    "MsprtResult",
    "outcome_predictions",
    "Plan",
    "plan_adaptive_sample_size",
    "plan_sample_size",
    "PLAN_SCHEMA_VERSION",
    "PlanError",
    "PlanSegment",
    "plot_cells",
    "plot_effects_over_rounds",
    "plot_policy_tree",
    "png_markdown",
    "PolicyTree",
    "Posterior",
    "PosteriorSummary",
    "Profiles",
    "quality_check",
    "quality_suite",
    "QualityFailure",
    "QualityResult",
    "recommend",
    "Recommendation",
    "register_source",
    "RegistryEntry",
    "RoundSource",
    "RoundValue",
    "RowsError",
    "Rule",
    "sample_ratio_check",
    "SampleRatioResult",
    "SampleSizeResult",
    "Scenario",
    "segment_effects",
    "SegmentEffects",
    "simulate",
    "simulate_round",
    "source_from_config",
    "SourceConfig",
    "spec_from_dict",
    "SpecError",
    "SqlSource",
    "thompson_allocation",
    "true_contrasts",
    "validate_rows",
]
