"""Round sources: where a round's rows come from.

A data engineer adds a source by subclassing :class:`RoundSource` and registering it under a
``kind`` that experiment specs name in their ``source:`` block::

    @register_source("s3_parquet")
    class S3ParquetSource(RoundSource):
        def __init__(self, bucket: str, root: str | Path = "."):
            self.bucket = bucket

        def load_round(self, experiment_id, round):
            return pd.read_parquet(f"s3://{self.bucket}/{experiment_id}/round={round}/")
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ._spec import SourceConfig, SpecError

__all__ = [
    "RoundSource",
    "LandingFolderSource",
    "SqlSource",
    "register_source",
    "source_from_config",
    "SOURCE_KINDS",
]

SOURCE_KINDS: dict[str, type[RoundSource]] = {}


def register_source(kind: str) -> Callable[[type[RoundSource]], type[RoundSource]]:
    """Class decorator: make a :class:`RoundSource` available to specs as ``source: {kind: ...}``."""

    def decorate(cls: type[RoundSource]) -> type[RoundSource]:
        SOURCE_KINDS[kind] = cls
        return cls

    return decorate


class RoundSource(ABC):
    """Given an experiment and a round, return that round's rows.

    Subclasses take their settings (the spec's ``source:`` options) as constructor keyword
    arguments, plus ``root``: the project folder relative paths resolve against.
    """

    @abstractmethod
    def load_round(self, experiment_id: str, round: int) -> pd.DataFrame:
        """The round's rows; an empty DataFrame when the round has no data (yet)."""

    def available_rounds(self, experiment_id: str) -> list[int]:
        """Rounds with data, ascending. Sources that cannot list rounds return ``[]``."""
        return []

    def fingerprint(self, experiment_id: str, round: int) -> str | None:
        """A cheap content fingerprint of the round's data (for run keys); ``None`` if unknown."""
        return None


_ROUND_DIR = re.compile(r"^round=(\d+)$")


@register_source("landing")
class LandingFolderSource(RoundSource):
    """Files dropped in ``<path>/<experiment>/round=<n>/*.parquet|*.csv``.

    Parameters
    ----------
    path : str
        The landing folder (default ``landing``), relative to ``root``.
    root : str or Path
    """

    def __init__(self, path: str = "landing", root: str | Path = "."):
        self.path = Path(root) / path

    def round_dir(self, experiment_id: str, round: int) -> Path:
        return self.path / experiment_id / f"round={int(round)}"

    def files(self, experiment_id: str, round: int) -> list[Path]:
        folder = self.round_dir(experiment_id, round)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.suffix in (".parquet", ".csv") and p.is_file())

    def load_round(self, experiment_id: str, round: int) -> pd.DataFrame:
        frames = []
        for f in self.files(experiment_id, round):
            # Identifier-like columns are read as text so "007" stays "007".
            frames.append(pd.read_parquet(f) if f.suffix == ".parquet" else pd.read_csv(f, dtype={"visitor_id": str}))
        if not frames:
            return pd.DataFrame()
        return pd.concat(frames, ignore_index=True)

    def available_rounds(self, experiment_id: str) -> list[int]:
        folder = self.path / experiment_id
        if not folder.is_dir():
            return []
        rounds = []
        for p in folder.iterdir():
            m = _ROUND_DIR.match(p.name)
            if m and self.files(experiment_id, int(m.group(1))):
                rounds.append(int(m.group(1)))
        return sorted(rounds)

    def fingerprint(self, experiment_id: str, round: int) -> str | None:
        files = self.files(experiment_id, round)
        if not files:
            return None
        h = hashlib.sha256()
        for f in files:
            h.update(f.name.encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
        return h.hexdigest()


@register_source("sql")
class SqlSource(RoundSource):
    """A parameterised SQL query through SQLAlchemy.

    Parameters
    ----------
    url : str
        SQLAlchemy URL, e.g. ``sqlite:///warehouse.db`` (relative SQLite paths resolve against ``root``).
    query : str
        Must use the bound parameters ``:experiment_id`` and ``:round``.
    rounds_query : str, optional
        Lists the rounds with data (bound parameter ``:experiment_id``), one column.
    """

    def __init__(self, url: str, query: str, rounds_query: str | None = None, root: str | Path = "."):
        import sqlalchemy as sa

        if ":round" not in query or ":experiment_id" not in query:
            raise SpecError("source.query", query, "must bind :experiment_id and :round")
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            url = f"sqlite:///{(Path(root) / url[len('sqlite:///') :]).resolve()}"
        self.engine = sa.create_engine(url)
        self.query = sa.text(query)
        self.rounds_query = sa.text(rounds_query) if rounds_query else None

    def load_round(self, experiment_id: str, round: int) -> pd.DataFrame:
        with self.engine.connect() as conn:
            return pd.read_sql_query(self.query, conn, params={"experiment_id": experiment_id, "round": int(round)})

    def available_rounds(self, experiment_id: str) -> list[int]:
        if self.rounds_query is None:
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(self.rounds_query, {"experiment_id": experiment_id}).fetchall()
        return sorted(int(r[0]) for r in rows)

    def fingerprint(self, experiment_id: str, round: int) -> str | None:
        rows = self.load_round(experiment_id, round)
        if rows.empty:
            return None
        return hashlib.sha256(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes()).hexdigest()


def source_from_config(config: SourceConfig, root: str | Path = ".") -> RoundSource:
    """Build the source a spec names.

    Raises
    ------
    SpecError
        When the kind is not registered or its options do not fit the source's constructor.
    """
    cls = SOURCE_KINDS.get(config.kind)
    if cls is None:
        raise SpecError("source.kind", config.kind, f"must be one of the registered sources {sorted(SOURCE_KINDS)}")
    options: Mapping[str, Any] = dict(config.options)
    try:
        return cls(**options, root=root)
    except TypeError as e:
        raise SpecError("source", dict(options), f"options do not fit source '{config.kind}': {e}") from None
