"""Round sources: where a round's rows come from.

A data engineer adds a source by subclassing :class:`RoundSource` and registering it under a
``kind`` that experiment specs name in their ``source:`` block::

    @register_source("s3_parquet")
    class S3ParquetSource(RoundSource):
        def __init__(self, bucket: str, root: str | Path = "."):
            self.bucket = bucket

        def load_round(self, experiment_id, round):
            return pd.read_parquet(f"s3://{self.bucket}/{experiment_id}/round={round}/")

A source that cannot read a round raises :class:`SourceError` naming the file or query, and never
prints a password: :func:`redact` hides the password of every URL in a text.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

import pandas as pd
import pyarrow as pa

from ._errors import SourceError
from ._spec import SourceConfig, SpecError

__all__ = [
    "RoundSource",
    "LandingFolderSource",
    "SqlSource",
    "register_source",
    "source_from_config",
    "redact",
    "SOURCE_KINDS",
]

SOURCE_KINDS: dict[str, type[RoundSource]] = {}

_T = TypeVar("_T")


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
        """The round's rows; an empty DataFrame when the round has no data (yet).

        Raises
        ------
        SourceError
            When the round's data exists but cannot be read.
        """

    def available_rounds(self, experiment_id: str) -> list[int]:
        """Rounds with data, ascending. Sources that cannot list rounds return ``[]``."""
        return []

    def fingerprint(self, experiment_id: str, round: int) -> str | None:
        """A cheap content fingerprint of the round's data (for run keys); ``None`` if unknown."""
        return None


# ${VAR}: a value taken from the environment when the source connects, never written in a spec.
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
# The password of a URL's user part (scheme://user:password@host) and of a password query
# parameter; a password that is exactly one ${VAR} placeholder names a variable and is no secret.
_URL_PASSWORD = re.compile(r"(?P<keep>://[^/:@\s]*:)(?!\$\{\w+\}@)(?P<secret>[^@\s]+)(?=@)")
_QUERY_PASSWORD = re.compile(r"(?P<keep>[?&](?:password|passwd|pwd)=)(?!\$\{\w+\}(?:[&\s]|$))(?P<secret>[^&\s]+)", re.I)
# Option names whose value is a secret whatever it looks like.
_SECRET_OPTION = re.compile(r"pas+w|pwd|secret|token|credential", re.I)


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``.

    Works on any text (an option, an error message), not just on one URL. ``${VAR}`` placeholders
    are kept: they name a variable, not its value.

    Examples
    --------
    >>> redact("connect to postgresql://tyche:hunter2@warehouse/db failed")
    'connect to postgresql://tyche:***@warehouse/db failed'
    >>> redact("postgresql://tyche:${WAREHOUSE_PASSWORD}@warehouse/db")
    'postgresql://tyche:${WAREHOUSE_PASSWORD}@warehouse/db'
    """
    for pattern in (_URL_PASSWORD, _QUERY_PASSWORD):
        text = pattern.sub(r"\g<keep>***", text)
    return text


def _shown_options(cls: type[RoundSource], options: Mapping[str, Any]) -> dict[str, Any]:
    """Source options as an error may show them: URL passwords hidden, and the whole value of any
    password-like option or of an option the source does not take (it may be a misspelt password)."""
    takes = inspect.signature(cls).parameters
    return {
        k: "***" if k not in takes or _SECRET_OPTION.search(k) else redact(v) if isinstance(v, str) else v
        for k, v in options.items()
    }


_ROUND_DIR = re.compile(r"^round=(\d+)$")
_DATA_SUFFIXES = (".csv", ".parquet")
# Spreadsheet exports often separate fields with these; a CSV header split on ',' into one column
# that holds one of them was written with that delimiter.
_FOREIGN_DELIMITERS = (";", "\t", "|")


@register_source("landing")
class LandingFolderSource(RoundSource):
    """Files dropped in ``<path>/<experiment>/round=<n>/*.parquet|*.csv``.

    Every file of a round is read, in name order, and the rows are stacked; all columns are kept.
    Entries whose name starts with ``.`` (``.DS_Store``, uploads in progress under a hidden name)
    are not part of the round. Anything else that cannot be read is a :class:`SourceError` naming
    the file: an empty or truncated file, a CSV that is not comma-separated, a file that is neither
    CSV nor parquet, files whose columns differ, a round folder without data files.

    Parameters
    ----------
    path : str
        The landing folder (default ``landing``), relative to ``root``.
    root : str or Path
    """

    def __init__(self, path: str = "landing", root: str | Path = "."):
        self.root = Path(root)
        self.path = self.root / path

    def round_dir(self, experiment_id: str, round: int) -> Path:
        return self.path / experiment_id / f"round={int(round)}"

    def files(self, experiment_id: str, round: int) -> list[Path]:
        """Everything landed in the round's folder except hidden entries, sorted by name."""
        folder = self.round_dir(experiment_id, round)
        if not folder.is_dir():
            return []
        return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)

    def load_round(self, experiment_id: str, round: int) -> pd.DataFrame:
        """The rows of every file of the round, stacked; an empty frame when the round folder does not exist.

        A header-only CSV reads as zero rows: whether a round without rows is acceptable is for
        the caller to decide.

        Raises
        ------
        SourceError
            When the round folder exists and any entry of it cannot be read (nothing is read then).
        """
        folder = self.round_dir(experiment_id, round)
        if not folder.is_dir():
            return pd.DataFrame()
        files = self.files(experiment_id, round)
        if not files:
            raise SourceError(
                self._where(folder),
                "the round folder holds no data files",
                "land the round's rows in it as .csv or .parquet files, or remove the folder",
            )
        for f in files:
            # Refused rather than skipped: a file left out would silently drop its rows.
            if not f.is_file() or f.suffix.lower() not in _DATA_SUFFIXES:
                raise SourceError(
                    self._where(f),
                    "was not read: a round folder may hold only .csv and .parquet files",
                    "convert it to CSV or parquet, or move it out of the round folder",
                )
        frames = [self._read(f) for f in files]
        self._check_same_columns(files, frames)
        # Zero-row frames add no rows, and leaving them out keeps the other files' column types.
        return pd.concat([df for df in frames if len(df)] or frames[:1], ignore_index=True)

    def available_rounds(self, experiment_id: str) -> list[int]:
        """Rounds whose folder holds anything, readable or not: a bad file should fail its round's run, loudly."""
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
        """SHA-256 over the names and contents of the round's entries, in name order."""
        files = self.files(experiment_id, round)
        if not files:
            return None
        h = hashlib.sha256()
        for f in files:
            h.update(f.name.encode() + b"\0")
            h.update(hashlib.sha256(f.read_bytes()).digest() if f.is_file() else b"<folder>")
        return h.hexdigest()

    def _where(self, path: Path) -> str:
        """``path`` as the user knows it: relative to the project root when the landing folder is inside it."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def _read(self, f: Path) -> pd.DataFrame:
        where = self._where(f)
        if f.stat().st_size == 0:
            raise SourceError(
                where, "is empty (0 bytes)", "land the file again: an empty file is usually an upload that failed"
            )
        if f.suffix.lower() == ".parquet":
            try:
                return pd.read_parquet(f)
            except (pa.ArrowException, OSError) as e:
                raise SourceError(
                    where,
                    f"is not a readable parquet file ({e})",
                    "land the file again: a truncated file is usually an upload that failed or has not finished",
                ) from e
        try:
            # Identifier-like columns are read as text so "007" stays "007".
            frame = pd.read_csv(f, dtype={"visitor_id": str})
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
            raise SourceError(
                where,
                f"is not readable CSV ({e})",
                "export it as UTF-8 text with one header line and ',' between fields",
            ) from e
        if len(frame.columns) == 1:
            only = str(frame.columns[0])
            for delimiter in _FOREIGN_DELIMITERS:
                if delimiter in only:
                    raise SourceError(
                        where,
                        f"every field landed in one column {only!r}: it looks {delimiter!r}-delimited; "
                        "Tyche reads comma-separated CSV",
                        "export the file again with ',' as the delimiter",
                    )
        return frame

    def _check_same_columns(self, files: list[Path], frames: list[pd.DataFrame]) -> None:
        """Every file of a round has the first file's columns (in any order)."""
        first, expected = files[0], {str(c) for c in frames[0].columns}
        for f, frame in zip(files[1:], frames[1:]):
            found = {str(c) for c in frame.columns}
            if found != expected:
                raise SourceError(
                    self._where(f),
                    f"its columns differ from those of {self._where(first)}: only in {f.name}: {sorted(found - expected)}, "
                    f"only in {first.name}: {sorted(expected - found)}",
                    "land every file of a round with the same columns, or the round as one file",
                )


@register_source("sql")
class SqlSource(RoundSource):
    """A parameterised SQL query through SQLAlchemy.

    Credentials never appear in a spec: write each secret as a ``${VAR}`` placeholder, set the
    variable in the environment of the Dagster daemon and run workers, and the source reads it
    from ``os.environ`` each time it connects (:meth:`load_round`, :meth:`available_rounds`). Any
    part of ``url``, ``query`` and ``rounds_query`` may be a placeholder, the whole URL too. The
    source keeps only the placeholders, so its ``repr``, its errors and the stored spec show the
    variable's name, never its value; a URL holding a literal password is refused. Errors from
    the database have the password removed before they are raised.

    Parameters
    ----------
    url : str
        SQLAlchemy URL, e.g. ``sqlite:///warehouse.db`` (relative SQLite paths resolve against ``root``)
        or ``postgresql://tyche:${WAREHOUSE_PASSWORD}@warehouse:5432/analytics``.
    query : str
        The round's rows. Must use the bound parameters ``:experiment_id`` and ``:round``.
    rounds_query : str, optional
        Lists the rounds that have data, one round number per row in the first column, with the
        bound parameter ``:experiment_id``. Without it :meth:`available_rounds` returns ``[]``, so
        the landing sensor and schedules never discover rounds of this source: runs are then
        launched by hand or by a backfill.
    root : str or Path

    Raises
    ------
    SpecError
        When the query does not bind both parameters, or the URL holds a literal password.

    Examples
    --------
    >>> src = SqlSource(
    ...     url="postgresql://tyche:${WAREHOUSE_PASSWORD}@warehouse:5432/analytics",
    ...     query="SELECT * FROM visitors WHERE experiment_id = :experiment_id AND round = :round",
    ...     rounds_query="SELECT DISTINCT round FROM visitors WHERE experiment_id = :experiment_id",
    ... )
    >>> src.url  # the placeholder, resolved only when the source connects
    'postgresql://tyche:${WAREHOUSE_PASSWORD}@warehouse:5432/analytics'

    A password written into the URL is refused, and not repeated in the error:

    >>> SqlSource(url="postgresql://tyche:hunter2@warehouse/analytics", query=src.query)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tyche_lib.core._errors.SpecError: invalid spec field 'source.url' = 'postgresql://tyche:***@warehouse/analytics': ...
    """

    def __init__(self, url: str, query: str, rounds_query: str | None = None, root: str | Path = "."):
        if ":round" not in query or ":experiment_id" not in query:
            raise SpecError("source.query", query, "must bind :experiment_id and :round")
        if redact(url) != url:
            raise SpecError(
                "source.url",
                redact(url),
                "holds a literal password: put it in an environment variable and write it as ${VAR}, "
                "e.g. postgresql://user:${WAREHOUSE_PASSWORD}@host/db",
            )
        self.url = url
        self.query = query
        self.rounds_query = rounds_query
        self.root = Path(root)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(url={redact(self.url)!r}, query={self.query!r}, rounds_query={self.rounds_query!r})"
        )

    def load_round(self, experiment_id: str, round: int) -> pd.DataFrame:
        """The query's rows for the round.

        Raises
        ------
        SourceError
            When a ``${VAR}`` is not set, or connecting or querying fails.
        """
        import sqlalchemy as sa

        query = sa.text(self._resolve(self.query, "query"))
        return self._with_connection(
            lambda conn: pd.read_sql_query(query, conn, params={"experiment_id": experiment_id, "round": int(round)})
        )

    def available_rounds(self, experiment_id: str) -> list[int]:
        """The rounds ``rounds_query`` lists, ascending; ``[]`` without one.

        Raises
        ------
        SourceError
            When a ``${VAR}`` is not set, or connecting or querying fails.
        """
        import sqlalchemy as sa

        if self.rounds_query is None:
            return []
        query = sa.text(self._resolve(self.rounds_query, "rounds_query"))
        rows = self._with_connection(lambda conn: conn.execute(query, {"experiment_id": experiment_id}).fetchall())
        return sorted(int(r[0]) for r in rows)

    def fingerprint(self, experiment_id: str, round: int) -> str | None:
        rows = self.load_round(experiment_id, round)
        if rows.empty:
            return None
        return hashlib.sha256(pd.util.hash_pandas_object(rows, index=False).to_numpy().tobytes()).hexdigest()

    def _where(self) -> str:
        return f"sql source {redact(self.url)}"

    def _resolve(self, text: str, option: str) -> str:
        """``text`` with each ``${VAR}`` replaced by the variable's value, read now."""

        def value(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in os.environ:
                raise SourceError(
                    self._where(),
                    f"environment variable {name} (in the source's {option}) is not set",
                    f"set {name} in the environment of the Dagster daemon and run workers",
                )
            return os.environ[name]

        return _PLACEHOLDER.sub(value, text)

    def _with_connection(self, work: Callable[[Any], _T]) -> _T:
        """``work(connection)`` on a fresh engine, its errors raised as a SourceError without the password."""
        import sqlalchemy as sa

        url = self._resolve(self.url, "url")
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            url = f"sqlite:///{(self.root / url[len('sqlite:///') :]).resolve()}"
        try:
            engine = sa.create_engine(url)
            try:
                with engine.connect() as conn:
                    return work(conn)
            finally:
                engine.dispose()
        except (sa.exc.SQLAlchemyError, ImportError) as e:  # ImportError: the URL's driver is not installed
            problem = _without_secrets(str(e), url)
        # Raised outside the handler so that the driver's exception, which may quote the
        # credentials, is not attached as its context.
        raise SourceError(
            self._where(),
            problem,
            "check that the database is reachable from here, that the credentials in the environment are right "
            "and that the query runs",
        )


def _without_secrets(text: str, url: str) -> str:
    """``text`` without the passwords of ``url`` (resolved), in whatever form a driver quotes them."""
    for pattern in (_URL_PASSWORD, _QUERY_PASSWORD):
        for m in pattern.finditer(url):
            for secret in {m["secret"], unquote(m["secret"])}:
                text = text.replace(secret, "***")
    return redact(text)


def source_from_config(config: SourceConfig, root: str | Path = ".") -> RoundSource:
    """Build the source a spec names.

    Raises
    ------
    SpecError
        When the kind is not registered or its options do not fit the source's constructor; the
        options shown have their passwords hidden.
    """
    cls = SOURCE_KINDS.get(config.kind)
    if cls is None:
        raise SpecError("source.kind", config.kind, f"must be one of the registered sources {sorted(SOURCE_KINDS)}")
    options: Mapping[str, Any] = dict(config.options)
    # Subclasses define their own constructors; RoundSource itself declares none.
    make: Callable[..., RoundSource] = cls
    try:
        return make(**options, root=root)
    except TypeError as e:
        raise SpecError(
            "source", _shown_options(cls, options), f"options do not fit source '{config.kind}': {redact(str(e))}"
        ) from None
