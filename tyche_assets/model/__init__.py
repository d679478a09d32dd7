"""Model: the posterior, refitted each round on every round that passed its checks."""

import dagster as dg

from .assets import posterior


def definitions() -> dg.Definitions:
    return dg.Definitions(assets=[posterior])
