"""What every posterior result offers its consumers (policy tree, allocation, decisions).

Consumers only see treatment-minus-control contrasts on the outcome scale. They are computed on
the unique covariate profiles of the rows (a categorical design has a few hundred profiles however
many visitors there are) and in chunks of profiles, so a million rows × a thousand draws never
needs the whole draws × rows × treatments cube in memory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..core._profiles import Profiles, covariate_profiles
from ..core._spec import ExperimentSpec

__all__ = ["Posterior", "Profiles", "covariate_profiles", "require_posterior", "require_observed"]

# Profiles per chunk: with 1,000 draws × 3 treatments this keeps a chunk near 100 MB.
DEFAULT_CHUNK_PROFILES = 4096


@dataclass(eq=False)
class Posterior(ABC):
    """Base of the posterior result types. Use :func:`fit_posterior` to get one.

    Consumers (policy tree, allocation, decisions, reports) read only what this class offers, so a
    new engine or family subclasses it and implements :meth:`outcome_mean_draws`.

    Attributes
    ----------
    spec : ExperimentSpec
    observed : DataFrame
        The visitor rows the posterior was fitted on, validated, in row order.
    idata : arviz.InferenceData
        The draws (saveable with ``idata.to_netcdf``).
    method : str
        ``"aggregated"`` (sufficient statistics) or ``"rows"`` (one likelihood term per visitor).
    fit_seconds : float
    """

    spec: ExperimentSpec
    observed: pd.DataFrame
    idata: Any
    method: str = "rows"
    fit_seconds: float = float("nan")
    model_info: dict = field(default_factory=dict)
    # (observed, its profiles): consumers ask for the observed profiles several times per call.
    _observed_profiles: tuple | None = field(default=None, init=False, repr=False)

    family: ClassVar[str] = "base"

    @property
    def arms(self) -> tuple[str, ...]:
        return self.spec.arms

    @property
    def treatments(self) -> tuple[str, ...]:
        return self.spec.treatments

    @property
    def n_draws(self) -> int:
        post = self.idata.posterior
        return int(post.sizes["chain"] * post.sizes["draw"])

    # -- to be provided by each family ---------------------------------------------------------

    def arms_with_data(self) -> frozenset[str]:
        """The arms with at least one visitor among the rows the posterior was fitted on.

        Read from ``observed['arm']``; an engine whose ``observed`` may lack the arm column (a
        posterior rebuilt from its stored model frame) overrides this.
        """
        if "arm" not in self.observed.columns:
            raise ValueError("posterior.observed has no 'arm' column, so the arms with data are unknown")
        return frozenset(self.observed["arm"].astype(str).unique())

    @abstractmethod
    def outcome_mean_draws(self, profiles: pd.DataFrame, arm: str) -> np.ndarray:
        """``E[Y | x, arm]`` per draw for each profile: array (draws × profiles)."""

    # -- shared machinery ----------------------------------------------------------------------

    def profile_contrast_draws(self, profiles: pd.DataFrame) -> np.ndarray:
        """Treatment-minus-control contrasts for each profile: (draws × profiles × treatments)."""
        base = self.outcome_mean_draws(profiles, self.spec.control)
        out = np.empty((base.shape[0], len(profiles), len(self.treatments)))
        for j, arm in enumerate(self.treatments):
            out[:, :, j] = self.outcome_mean_draws(profiles, arm) - base
        return out

    def profiles(self, rows: pd.DataFrame | None = None) -> Profiles:
        """Unique covariate profiles of ``rows`` (default: the observed rows, grouped once and kept)."""
        if rows is not None and rows is not self.observed:
            return covariate_profiles(rows, self.spec.covariate_names)
        # Kept with the frame they describe: assigning another frame to ``observed`` regroups.
        if self._observed_profiles is None or self._observed_profiles[0] is not self.observed:
            self._observed_profiles = (self.observed, covariate_profiles(self.observed, self.spec.covariate_names))
        return self._observed_profiles[1]

    def iter_contrast_draws(
        self, rows: pd.DataFrame | None = None, *, chunk_rows: int = 50_000
    ) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield ``(row_slice, draws × chunk × treatments)`` over ``rows`` in chunks of rows.

        Memory per chunk is ``draws × chunk_rows × treatments × 8`` bytes, whatever the row count.
        """
        rows = self.observed if rows is None else rows
        for start in range(0, len(rows), chunk_rows):
            part = rows.iloc[start : start + chunk_rows]
            prof = self.profiles(part)
            yield slice(start, start + len(part)), self.profile_contrast_draws(prof.frame)[:, prof.index, :]

    def contrast_draws(self, rows: pd.DataFrame | None = None, *, chunk_rows: int = 50_000) -> np.ndarray:
        """Treatment-minus-control effects on the outcome scale: (draws × rows × treatments).

        Parameters
        ----------
        rows : DataFrame, optional
            Covariate rows (default: the observed rows).
        chunk_rows : int
            Rows computed at a time; see :meth:`iter_contrast_draws` to avoid the full cube.
        """
        rows = self.observed if rows is None else rows
        out = np.empty((self.n_draws, len(rows), len(self.treatments)))
        for sl, block in self.iter_contrast_draws(rows, chunk_rows=chunk_rows):
            out[:, sl, :] = block
        return out

    def mean_contrast_draws(
        self,
        groups: np.ndarray,
        n_groups: int,
        rows: pd.DataFrame | None = None,
        *,
        chunk_profiles: int = DEFAULT_CHUNK_PROFILES,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Contrasts averaged over the members of each group, per draw.

        Parameters
        ----------
        groups : ndarray of int
            Group code of every row (``-1``: in no group).
        n_groups : int
        rows : DataFrame, optional
            Default: the observed rows.

        Returns
        -------
        means : ndarray
            (draws × groups × treatments); NaN for an empty group.
        sizes : ndarray of int
            Members per group.
        """
        rows = self.observed if rows is None else rows
        groups = np.asarray(groups, dtype=np.int64)
        prof = self.profiles(rows)
        inside = groups >= 0
        # weight[p, g] = rows of profile p in group g
        weight = np.zeros((len(prof.frame), n_groups))
        np.add.at(weight, (prof.index[inside], groups[inside]), 1.0)
        sizes = weight.sum(axis=0)
        total = np.zeros((self.n_draws, n_groups, len(self.treatments)))
        for start in range(0, len(prof.frame), chunk_profiles):
            stop = start + chunk_profiles
            block = self.profile_contrast_draws(prof.frame.iloc[start:stop])  # draws × P × T
            total += np.einsum("dpt,pg->dgt", block, weight[start:stop], optimize=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = total / sizes[None, :, None]
        return means, sizes.astype(np.int64)

    def mean_contrasts(self, rows: pd.DataFrame | None = None) -> np.ndarray:
        """Posterior-mean contrast of every row: (rows × treatments)."""
        rows = self.observed if rows is None else rows
        prof = self.profiles(rows)
        per_profile = (
            np.concatenate(
                [
                    self.profile_contrast_draws(prof.frame.iloc[s : s + DEFAULT_CHUNK_PROFILES]).mean(axis=0)
                    for s in range(0, len(prof.frame), DEFAULT_CHUNK_PROFILES)
                ]
            )
            if len(prof.frame)
            else np.empty((0, len(self.treatments)))
        )
        return per_profile[prof.index]


def require_posterior(posterior: Any) -> None:
    """Raise TypeError unless ``posterior`` is a :class:`Posterior` (any engine's result)."""
    if not isinstance(posterior, Posterior):
        raise TypeError(f"posterior is a {type(posterior).__name__}: pass a Posterior, as returned by fit_posterior")


def require_observed(posterior: Posterior, purpose: str) -> None:
    """Raise ValueError when the posterior was fitted on no rows."""
    if posterior.observed is None or len(posterior.observed) == 0:
        raise ValueError(
            f"posterior.observed has no rows: {purpose} needs a posterior fitted on at least one round of visitor data"
        )
