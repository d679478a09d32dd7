"""Ingest: a round's rows from the experiment's source into storage, on landing or on a schedule."""

from collections.abc import Iterable

import dagster as dg

from tyche_lib import ExperimentSpec

from .assets import round_visitors
from .schedules import round_schedules
from .sensors import landing_sensor


def definitions(specs: Iterable[ExperimentSpec]) -> dg.Definitions:
    """The ingest asset, the landing sensor and a round schedule for each of ``specs`` that has one."""
    return dg.Definitions(assets=[round_visitors], sensors=[landing_sensor], schedules=round_schedules(specs))
