"""The fitting engine: bambi/PyMC models of the primary metric, one result type per family."""

from __future__ import annotations

from dataclasses import dataclass

from ._posterior_base import Posterior

__all__ = ["BinaryPosterior", "ContinuousPosterior", "HurdlePosterior"]


@dataclass(eq=False)
class BinaryPosterior(Posterior):
    family = "binary"


@dataclass(eq=False)
class ContinuousPosterior(Posterior):
    family = "continuous"


@dataclass(eq=False)
class HurdlePosterior(Posterior):
    family = "hurdle"
