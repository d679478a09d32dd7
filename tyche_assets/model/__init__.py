"""Model: the posterior, refitted each round on every round that passed its checks, and the blocking
check that no plan is built from one that did not converge."""

import dagster as dg

from .assets import posterior
from .checks import posterior_convergence


def definitions() -> dg.Definitions:
    return dg.Definitions(assets=[posterior], asset_checks=[posterior_convergence])
