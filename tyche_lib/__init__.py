"""Tyche's statistics: a plain library (no Dagster) for multi-round adaptive experiments.

The public surface is re-exported here; implementations live in private modules.
"""

from ._spec import (
    Covariate,
    ExperimentSpec,
    Guardrail,
    Metric,
    SourceConfig,
    SpecError,
    load_spec,
    spec_from_dict,
)
from ._rules import Condition, Rule
from ._plans import PLAN_SCHEMA_VERSION, Plan, PlanError, PlanSegment, build_plan, initial_plan
from ._seeds import derive_seed
from ._registry import Conflict, RegistryEntry, find_conflicts
from ._viz import plot_cells, plot_effects_over_rounds, plot_policy_tree
from ._sample_size import AdaptiveSampleSizeResult, SampleSizeResult, plan_adaptive_sample_size, plan_sample_size
from ._viz import arm_colors, experiment_evolution_gif, figure_to_png_bytes, png_markdown
from ._assign import EXCLUDED_CELL, Assigner, Assignment
from ._sources import LandingFolderSource, RoundSource, SqlSource, register_source, source_from_config
from ._schema import RowsError, model_frame, validate_rows
from ._posterior_base import Posterior, Profiles
from ._model import CovariateCoding, ModelDescription, describe_model
from ._posterior import BinaryPosterior, ContinuousPosterior, HurdlePosterior, PosteriorSummary, fit_posterior
from . import simulate
from .simulate import Scenario, simulate_round, true_contrasts
from ._quality import QualityFailure, QualityResult, quality_check, quality_suite
from ._srm import SampleRatioResult, sample_ratio_check
from ._policy import DiscoveredSegment, PolicyTree, fit_policy_tree
from ._allocation import apply_floor, thompson_allocation
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

__all__ = [
    "Conflict",
    "RegistryEntry",
    "find_conflicts",
    "AdaptiveSampleSizeResult",
    "SampleSizeResult",
    "plan_adaptive_sample_size",
    "plan_sample_size",
    "QualityFailure",
    "QualityResult",
    "quality_check",
    "quality_suite",
    "SampleRatioResult",
    "sample_ratio_check",
    "arm_colors",
    "experiment_evolution_gif",
    "figure_to_png_bytes",
    "png_markdown",
    "plot_cells",
    "plot_effects_over_rounds",
    "plot_policy_tree",
    "Scenario",
    "simulate",
    "simulate_round",
    "true_contrasts",
    "Assignment",
    "Assigner",
    "EXCLUDED_CELL",
    "DiscoveredSegment",
    "PolicyTree",
    "fit_policy_tree",
    "apply_floor",
    "thompson_allocation",
    "CupedResult",
    "MetricsResult",
    "MsprtResult",
    "analyze_metrics",
    "cuped",
    "cuped_outcome_model",
    "mad_confidence_path",
    "mad_confidence_sequence",
    "msprt",
    "outcome_predictions",
    "Decision",
    "DecisionQuantities",
    "Recommendation",
    "RoundValue",
    "decision_quantities",
    "expected_value_of_one_more_round",
    "graduation",
    "recommend",
    "LandingFolderSource",
    "RoundSource",
    "SqlSource",
    "register_source",
    "source_from_config",
    "BinaryPosterior",
    "ContinuousPosterior",
    "HurdlePosterior",
    "PosteriorSummary",
    "fit_posterior",
    "CovariateCoding",
    "ModelDescription",
    "describe_model",
    "Condition",
    "Covariate",
    "ExperimentSpec",
    "Guardrail",
    "Metric",
    "PLAN_SCHEMA_VERSION",
    "Plan",
    "PlanError",
    "PlanSegment",
    "Posterior",
    "Profiles",
    "Rule",
    "RowsError",
    "SourceConfig",
    "SpecError",
    "build_plan",
    "derive_seed",
    "initial_plan",
    "load_spec",
    "model_frame",
    "spec_from_dict",
    "validate_rows",
]
