"""Policy: segments, their Thompson allocation, and the plan published for the next round."""

import dagster as dg

from .assets import allocation, policy_tree, round_plan


def definitions() -> dg.Definitions:
    return dg.Definitions(assets=[policy_tree, allocation, round_plan])
