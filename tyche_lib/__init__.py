"""Tyche's statistics: a plain library (no Dagster) for multi-round adaptive experiments.

The library is layered; each subpackage only imports the ones below it (checked by import-linter)::

    cli, demo            command line and the notebook demo
    simulate | viz       scenarios with a known truth, adaptive sample size; plots
    decide               P(best), expected loss, recommendations, fixed-horizon sample size
    measure | policy     quality, sample ratio, anytime-valid effects | tree, allocation, assignment
    model                model description, the Posterior base type, the NUTS engine
    core                 spec, rows, rules, plans, sources, seeds, registry, errors

Every public name is importable from here. ``core`` loads with the package; the other
subpackages (PyMC, scikit-learn, scipy.stats, matplotlib) load on first use of one of their names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .core import (
    PLAN_SCHEMA_VERSION,
    Condition,
    Conflict,
    Covariate,
    DecisionSettings,
    ExperimentSpec,
    Guardrail,
    LandingFolderSource,
    Metric,
    Plan,
    PlanError,
    PlanSegment,
    Profiles,
    RegistryEntry,
    RoundSource,
    RowsError,
    Rule,
    SourceConfig,
    SourceError,
    SpecError,
    SqlSource,
    TycheError,
    build_plan,
    check_spec_revision,
    derive_seed,
    find_conflicts,
    initial_plan,
    load_spec,
    model_frame,
    register_source,
    source_from_config,
    spec_from_dict,
    validate_rows,
)

if TYPE_CHECKING:
    from . import simulate
    from .decide import (
        Decision,
        DecisionQuantities,
        Recommendation,
        RoundValue,
        SampleSizeResult,
        decision_quantities,
        expected_value_of_one_more_round,
        graduation,
        plan_sample_size,
        recommend,
    )
    from .measure import (
        CupedResult,
        MetricsResult,
        MsprtResult,
        QualityFailure,
        QualityResult,
        SampleRatioResult,
        SegmentEffects,
        analyze_metrics,
        cuped,
        cuped_outcome_model,
        mad_confidence_path,
        mad_confidence_sequence,
        msprt,
        outcome_predictions,
        quality_check,
        quality_suite,
        sample_ratio_check,
        segment_effects,
    )
    from .model import (
        BinaryPosterior,
        ContinuousPosterior,
        CovariateCoding,
        HurdlePosterior,
        ModelDescription,
        Posterior,
        PosteriorSummary,
        describe_model,
        fit_posterior,
    )
    from .policy import (
        EXCLUDED_CELL,
        Assigner,
        Assignment,
        DiscoveredSegment,
        PolicyTree,
        apply_floor,
        fit_policy_tree,
        thompson_allocation,
    )
    from .simulate import (
        AdaptiveSampleSizeResult,
        Scenario,
        plan_adaptive_sample_size,
        simulate_round,
        true_contrasts,
    )
    from .viz import (
        arm_colors,
        experiment_evolution_gif,
        figure_to_png_bytes,
        plot_cells,
        plot_effects_over_rounds,
        plot_policy_tree,
        png_markdown,
    )

# name -> subpackage that defines it, imported on first access
_LAZY = {
    "Decision": "decide",
    "decision_quantities": "decide",
    "DecisionQuantities": "decide",
    "expected_value_of_one_more_round": "decide",
    "graduation": "decide",
    "plan_sample_size": "decide",
    "recommend": "decide",
    "Recommendation": "decide",
    "RoundValue": "decide",
    "SampleSizeResult": "decide",
    "analyze_metrics": "measure",
    "cuped": "measure",
    "cuped_outcome_model": "measure",
    "CupedResult": "measure",
    "mad_confidence_path": "measure",
    "mad_confidence_sequence": "measure",
    "MetricsResult": "measure",
    "msprt": "measure",
    "MsprtResult": "measure",
    "outcome_predictions": "measure",
    "quality_check": "measure",
    "quality_suite": "measure",
    "QualityFailure": "measure",
    "QualityResult": "measure",
    "sample_ratio_check": "measure",
    "SampleRatioResult": "measure",
    "segment_effects": "measure",
    "SegmentEffects": "measure",
    "BinaryPosterior": "model",
    "ContinuousPosterior": "model",
    "CovariateCoding": "model",
    "describe_model": "model",
    "fit_posterior": "model",
    "HurdlePosterior": "model",
    "ModelDescription": "model",
    "Posterior": "model",
    "PosteriorSummary": "model",
    "apply_floor": "policy",
    "Assigner": "policy",
    "Assignment": "policy",
    "DiscoveredSegment": "policy",
    "EXCLUDED_CELL": "policy",
    "fit_policy_tree": "policy",
    "PolicyTree": "policy",
    "thompson_allocation": "policy",
    "AdaptiveSampleSizeResult": "simulate",
    "plan_adaptive_sample_size": "simulate",
    "Scenario": "simulate",
    "simulate_round": "simulate",
    "true_contrasts": "simulate",
    "arm_colors": "viz",
    "experiment_evolution_gif": "viz",
    "figure_to_png_bytes": "viz",
    "plot_cells": "viz",
    "plot_effects_over_rounds": "viz",
    "plot_policy_tree": "viz",
    "png_markdown": "viz",
}

__all__ = [
    "AdaptiveSampleSizeResult",
    "analyze_metrics",
    "apply_floor",
    "arm_colors",
    "Assigner",
    "Assignment",
    "BinaryPosterior",
    "build_plan",
    "check_spec_revision",
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
    "SourceError",
    "spec_from_dict",
    "SpecError",
    "SqlSource",
    "thompson_allocation",
    "true_contrasts",
    "TycheError",
    "validate_rows",
]


def __getattr__(name: str) -> Any:
    if name == "simulate":
        return importlib.import_module(".simulate", __name__)
    package = _LAZY.get(name)
    if package is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{package}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
