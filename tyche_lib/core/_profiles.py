"""Unique covariate profiles: the unit every per-visitor computation groups by."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Profiles", "covariate_profiles"]


@dataclass(frozen=True)
class Profiles:
    """Unique covariate profiles of a set of rows.

    Attributes
    ----------
    frame : DataFrame
        One row per profile, the covariate columns only.
    index : ndarray of int
        For every input row, the position of its profile in ``frame``.
    counts : ndarray of int
        Rows per profile.
    """

    frame: pd.DataFrame
    index: np.ndarray
    counts: np.ndarray


def covariate_profiles(rows: pd.DataFrame, covariates: tuple[str, ...]) -> Profiles:
    """Group rows by their covariate values (order of first appearance is irrelevant: sorted)."""
    n = len(rows)
    if not covariates:
        return Profiles(pd.DataFrame(index=pd.RangeIndex(1)), np.zeros(n, dtype=np.int64), np.array([n]))
    codes = rows.groupby(list(covariates), sort=True, observed=True, dropna=False).ngroup().to_numpy()
    first = pd.Series(np.arange(n)).groupby(codes).first().to_numpy()
    frame = rows.iloc[first][list(covariates)].reset_index(drop=True)
    counts = np.bincount(codes, minlength=len(first))
    return Profiles(frame, codes.astype(np.int64), counts)
