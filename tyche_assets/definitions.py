"""Assembles Tyche's code location from its domains; defines nothing itself."""

from __future__ import annotations

import logging

import dagster as dg

from .experiments.registry import experiment_registry, experiment_registry_conflicts
from .experiments.sensors import experiment_specs_sensor
from .ingest.assets import round_visitors
from .ingest.sensors import landing_sensor, round_schedules
from .jobs import round_job
from .model.assets import posterior
from .policy.assets import allocation, policy_tree, round_plan
from .quality.checks import round_visitors_probabilities, round_visitors_quality, round_visitors_sample_ratio
from .report.assets import round_report
from .resources import default_resources

log = logging.getLogger("tyche")


def build_definitions(root: str | None = None) -> dg.Definitions:
    """The code location for the project folder ``root`` (default: $TYCHE_ROOT or the working directory)."""
    resources = default_resources(root)
    _, spec_errors = resources["experiments"].load_all()
    for file, err in spec_errors.items():
        # Reported, not raised: one bad spec must not take down the other experiments.
        log.error("invalid experiment spec %s: %s", file, err)
    return dg.Definitions(
        assets=[round_visitors, posterior, policy_tree, allocation, round_plan, round_report, experiment_registry],
        asset_checks=[
            round_visitors_quality,
            round_visitors_sample_ratio,
            round_visitors_probabilities,
            experiment_registry_conflicts,
        ],
        jobs=[round_job],
        sensors=[landing_sensor, experiment_specs_sensor],
        schedules=round_schedules(resources["experiments"]),
        resources=resources,
    )


defs = build_definitions()
