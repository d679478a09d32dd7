"""Report: a round's effects, guardrails, decision quantities and recommendation."""

import dagster as dg

from .assets import round_report


def definitions() -> dg.Definitions:
    return dg.Definitions(assets=[round_report])
