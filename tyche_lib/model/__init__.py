"""The posterior: the model description (formula, priors, coding), the base result type every
consumer reads, and the engine that fits it with NUTS (bambi/PyMC).

Consumers (policy, measure, decide) type against :class:`Posterior`, never an engine class.
"""

from ._base import Posterior, Profiles, require_observed, require_posterior
from ._description import CovariateCoding, ModelDescription, describe_model
from ._diagnostics import ConvergenceResult, convergence_check
from ._engine import BinaryPosterior, ContinuousPosterior, HurdlePosterior, PosteriorSummary, fit_posterior

__all__ = [
    "BinaryPosterior",
    "ContinuousPosterior",
    "ConvergenceResult",
    "CovariateCoding",
    "HurdlePosterior",
    "ModelDescription",
    "Posterior",
    "PosteriorSummary",
    "Profiles",
    "convergence_check",
    "describe_model",
    "fit_posterior",
    "require_observed",
    "require_posterior",
]
