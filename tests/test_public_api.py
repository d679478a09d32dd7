"""The public API of the last release (0.1.0) keeps working, and importing it stays light."""

import importlib
import subprocess
import sys

import pytest

import tyche_lib

# tyche_lib.__all__ as released in 0.1.0 (before the library was split into layers): every name
# must still be importable from the package.
RELEASED = [
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

# tyche_lib.simulate.__all__ as released in 0.1.0.
RELEASED_SIMULATE = [
    "CovariateDistribution",
    "MetricTruth",
    "GuardrailTruth",
    "Scenario",
    "simulate_round",
    "true_contrasts",
    "true_best_arm",
    "no_heterogeneity",
    "segment_flip",
    "hurdle_revenue",
    "continuous",
    "SCENARIOS",
]

SUBPACKAGES = ["core", "model", "policy", "measure", "decide", "simulate", "viz"]
HEAVY = ["pymc", "bambi", "sklearn", "matplotlib", "scipy.stats", "arviz"]


@pytest.mark.parametrize("name", RELEASED)
def test_every_released_name_is_still_exported(name):
    assert name in tyche_lib.__all__
    assert getattr(tyche_lib, name) is not None
    namespace: dict = {}
    exec(f"from tyche_lib import {name}", namespace)
    assert namespace[name] is getattr(tyche_lib, name)


def test_simulate_module_keeps_its_names():
    simulate = importlib.import_module("tyche_lib.simulate")
    assert tyche_lib.simulate is simulate
    for name in RELEASED_SIMULATE:
        assert hasattr(simulate, name), name


def test_every_public_name_lives_in_exactly_one_layer_and_is_the_same_object():
    homes = {}
    for package in SUBPACKAGES:
        module = importlib.import_module(f"tyche_lib.{package}")
        for name in module.__all__:
            assert name not in homes or getattr(module, name) is getattr(
                importlib.import_module(f"tyche_lib.{homes[name]}"), name
            ), f"{name} defined twice: {homes[name]} and {package}"
            homes.setdefault(name, package)
    for name in tyche_lib.__all__:
        if name == "simulate":
            continue
        assert name in homes, f"{name} is exported by tyche_lib but by no subpackage"
        assert getattr(tyche_lib, name) is getattr(importlib.import_module(f"tyche_lib.{homes[name]}"), name)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'fit_everything'"):
        tyche_lib.fit_everything  # noqa: B018


def test_import_loads_no_heavy_dependency_and_takes_well_under_a_second():
    # A fresh interpreter: this process has long imported everything.
    code = (
        "import sys, time; t = time.perf_counter(); import tyche_lib; dt = time.perf_counter() - t; "
        f"print(dt, [m for m in {HEAVY!r} if m in sys.modules])"
    )
    timings = []
    for _ in range(3):  # the fastest of three: the machine may be busy with other work
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        seconds, loaded = out.split(" ", 1)
        assert loaded.strip() == "[]", f"import tyche_lib loaded {loaded.strip()}"
        timings.append(float(seconds))
    assert min(timings) < 1.0, timings
