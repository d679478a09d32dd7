"""Content hashes for lineage: data versions of frames and arrays, and the code version."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

import tyche_lib


def frame_version(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's column names and values (row order matters, index does not)."""
    h = hashlib.sha256()
    h.update("\x1f".join(map(str, frame.columns)).encode())
    if len(frame):
        h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()


def array_version(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def text_version(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@functools.cache
def code_version() -> str:
    """Hash of every Python source file of tyche_lib and tyche_assets: the code that made a plan."""
    h = hashlib.sha256()
    for package in (Path(tyche_lib.__file__).parent, Path(__file__).parent):
        for f in sorted(package.rglob("*.py")):
            h.update(f.relative_to(package.parent).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]
