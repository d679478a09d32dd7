"""From a posterior to who gets what: the policy tree, per-segment Thompson allocation, and the
Assigner that serves a published plan."""

from ._allocation import apply_floor, thompson_allocation
from ._assign import EXCLUDED_CELL, Assigner, Assignment
from ._tree import DiscoveredSegment, PolicyTree, fit_policy_tree

__all__ = [
    "Assigner",
    "Assignment",
    "DiscoveredSegment",
    "EXCLUDED_CELL",
    "PolicyTree",
    "apply_floor",
    "fit_policy_tree",
    "thompson_allocation",
]
