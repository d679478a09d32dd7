"""The ground floor: experiment specs, round rows, segment rules, plans, sources, seeds, the registry
and the error hierarchy. Nothing here imports any other part of Tyche."""

from ._errors import PlanError, RowsError, SourceError, SpecError, TycheError
from ._plans import PLAN_SCHEMA_VERSION, Plan, PlanSegment, build_plan, initial_plan
from ._profiles import Profiles, covariate_profiles
from ._registry import Conflict, RegistryEntry, find_conflicts
from ._rows import ROW_COLUMNS, ColumnRule, RowSchema, model_frame, row_schema, unknown_columns, validate_rows
from ._rules import Condition, Rule, rule_masks
from ._seeds import derive_seed, seed_from_rng
from ._sources import LandingFolderSource, RoundSource, SqlSource, register_source, source_from_config
from ._spec import (
    Covariate,
    DecisionSettings,
    ExperimentSpec,
    Guardrail,
    Metric,
    SourceConfig,
    check_spec_revision,
    load_spec,
    spec_from_dict,
)

__all__ = [
    "Condition",
    "ColumnRule",
    "Conflict",
    "Covariate",
    "DecisionSettings",
    "ExperimentSpec",
    "Guardrail",
    "LandingFolderSource",
    "Metric",
    "PLAN_SCHEMA_VERSION",
    "Plan",
    "PlanError",
    "PlanSegment",
    "Profiles",
    "ROW_COLUMNS",
    "RegistryEntry",
    "RoundSource",
    "RowSchema",
    "RowsError",
    "Rule",
    "SourceConfig",
    "SourceError",
    "SpecError",
    "SqlSource",
    "TycheError",
    "build_plan",
    "check_spec_revision",
    "covariate_profiles",
    "derive_seed",
    "find_conflicts",
    "initial_plan",
    "load_spec",
    "model_frame",
    "register_source",
    "row_schema",
    "rule_masks",
    "seed_from_rng",
    "source_from_config",
    "spec_from_dict",
    "unknown_columns",
    "validate_rows",
]
