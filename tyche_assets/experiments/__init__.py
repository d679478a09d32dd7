"""Experiments: the specs as partitions and round-1 plans, and the registry of all of them."""

import dagster as dg

from .assets import experiment_registry
from .checks import experiment_registry_conflicts
from .sensors import experiment_specs_sensor


def definitions() -> dg.Definitions:
    return dg.Definitions(
        assets=[experiment_registry], asset_checks=[experiment_registry_conflicts], sensors=[experiment_specs_sensor]
    )
