"""One error hierarchy: every error Tyche raises on purpose is a :class:`TycheError`.

Each subclass names the thing that was wrong (a spec field, a row column, a plan field, a source)
together with the value found and the fix, so that a caller can catch ``TycheError`` once and show
the message to a person as it is. The subclasses also derive from :class:`ValueError`, which is
what they were before the hierarchy existed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TycheError", "SpecError", "RowsError", "PlanError", "SourceError"]


class TycheError(Exception):
    """Base class of every error Tyche raises about its inputs."""


class SpecError(TycheError, ValueError):
    """An experiment spec is invalid.

    The message names the field, the value found and what is allowed.

    Attributes
    ----------
    field : str
        Dotted path of the offending field, e.g. ``"metrics.primary.family"``.
    value : object
        The value found.
    allowed : str
        What would be accepted.
    source : str or None
        The file the spec came from, when known.
    """

    def __init__(self, field: str, value: Any, allowed: str, source: str | None = None):
        self.field = field
        self.value = value
        self.allowed = allowed
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}invalid spec field '{field}' = {value!r}: {allowed}")

    def with_source(self, source: str) -> SpecError:
        return SpecError(self.field, self.value, self.allowed, source)


class RowsError(TycheError, ValueError):
    """Round rows are unusable; the message names the column, an offending value and the fix.

    A missing column is always a ``RowsError`` whose ``value`` is ``"<missing>"``.

    Attributes
    ----------
    column : str
    value : object
    fix : str
    """

    def __init__(self, column: str, value: Any, fix: str):
        self.column, self.value, self.fix = column, value, fix
        super().__init__(f"column '{column}': {value!r} — {fix}")


class PlanError(TycheError, ValueError):
    """A plan is invalid (weights, arms or segments); the message names the field."""


class SourceError(TycheError, ValueError):
    """A round could not be read from its source; the message names the file or query and the fix.

    Attributes
    ----------
    location : str
        The file, folder or query that failed.
    fix : str
    """

    def __init__(self, location: str, problem: str, fix: str):
        self.location, self.problem, self.fix = location, problem, fix
        super().__init__(f"{location}: {problem} — {fix}")
