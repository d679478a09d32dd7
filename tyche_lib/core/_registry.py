"""The experiment registry: which experiments compete for the same visitors.

Two live experiments conflict when they can reach the same visitor at the same time and cannot both
get the traffic they ask for: their date windows overlap, their audiences overlap, and their traffic
shares add up to more than all of it. Experiments in one mutual-exclusion layer split that layer's
traffic between them, so they never share a visitor; for them the question is whether the layer's
shares fit in 100%.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Conflict", "RegistryEntry", "LIVE_STATUSES", "find_conflicts"]

# Statuses that hold (or are about to hold) traffic. "stopped" and "shipped" hold none.
LIVE_STATUSES = ("draft", "running", "paused")
_SHARE_TOLERANCE = 1e-9  # 0.7 + 0.3 must not read as 1.0000000000000002 > 1


@dataclass(frozen=True)
class RegistryEntry:
    """One experiment as the registry sees it: who runs it, when, on whom and on how much traffic.

    Attributes
    ----------
    id : str
    status : str
        One of the spec statuses (``draft``, ``running``, ``paused``, ``stopped``, ``shipped``).
    owner : str or None
    start_date, end_date : datetime.date or None
        None is open-ended (from the beginning of time, until further notice).
    audience : mapping of str to tuple of str
        Covariate → allowed levels; a covariate not named is unrestricted, ``{}`` is everyone.
    traffic_share : float
        Share of the audience's visitors the experiment enrols, in [0, 1].
    layer : str or None
        Mutual-exclusion layer: experiments of one layer split its traffic between them.
    """

    id: str
    status: str = "running"
    owner: str | None = None
    start_date: _dt.date | None = None
    end_date: _dt.date | None = None
    audience: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    traffic_share: float = 1.0
    layer: str | None = None

    @classmethod
    def from_spec(cls, spec: Any) -> RegistryEntry:
        """The registry entry of an :class:`ExperimentSpec` (or anything with the same attributes)."""
        return cls(
            id=spec.id,
            status=spec.status,
            owner=spec.owner,
            start_date=spec.start_date,
            end_date=spec.end_date,
            audience=normalise_audience(spec.audience),
            traffic_share=float(spec.traffic_share),
            layer=spec.layer,
        )

    @property
    def live(self) -> bool:
        return self.status in LIVE_STATUSES


@dataclass(frozen=True)
class Conflict:
    """Experiments that cannot all get their traffic share.

    Attributes
    ----------
    experiments : tuple of str
        The experiments involved (two for a traffic conflict; the over-full set for a layer).
    kind : {"traffic", "layer"}
        ``traffic``: two experiments outside one layer overlap and their shares sum past 100%;
        ``layer``: experiments of one layer, live at the same time, ask for more than the layer.
    window : tuple of (datetime.date or None, datetime.date or None)
        The dates on which they overlap, inclusive; None is open-ended.
    audience : mapping of str to tuple of str
        The visitors they share: covariate → levels both allow (``{}``: everyone). For a layer
        conflict, ``{}`` (the layer splits its traffic regardless of audience).
    shares : mapping of str to float
        Each experiment's traffic share.
    layer : str or None
        The layer, for a layer conflict.
    """

    experiments: tuple[str, ...]
    kind: str
    window: tuple[_dt.date | None, _dt.date | None]
    audience: Mapping[str, tuple[str, ...]]
    shares: Mapping[str, float]
    layer: str | None = None

    @property
    def total_share(self) -> float:
        return sum(self.shares.values())

    def describe_window(self) -> str:
        start, end = self.window
        return f"{start.isoformat() if start else 'open start'} to {end.isoformat() if end else 'open end'}"

    def describe_audience(self) -> str:
        if not self.audience:
            return "all visitors"
        return ", ".join(f"{k} in {{{', '.join(v)}}}" for k, v in sorted(self.audience.items()))

    def __str__(self) -> str:
        shares = " + ".join(f"{self.shares[e]:.0%} ({e})" for e in self.experiments)
        if self.kind == "layer":
            return (
                f"layer '{self.layer}': {', '.join(self.experiments)} are live together from "
                f"{self.describe_window()} and their shares sum to {shares} = {self.total_share:.0%} > 100%"
            )
        return (
            f"{self.experiments[0]} and {self.experiments[1]} overlap from {self.describe_window()} on "
            f"{self.describe_audience()}, and their traffic shares sum to {shares} = {self.total_share:.0%} > 100%"
        )


def normalise_audience(audience: Mapping[str, Any] | None) -> dict[str, tuple[str, ...]]:
    """Covariate → sorted allowed levels as text; a single level may be given bare.

    YAML booleans become ``"true"``/``"false"`` so ``[true]`` and ``["true"]`` mean the same.
    """

    def text(level: Any) -> str:
        return str(level).lower() if isinstance(level, bool) else str(level)

    out: dict[str, tuple[str, ...]] = {}
    for covariate, levels in (audience or {}).items():
        if isinstance(levels, (list, tuple, set, frozenset)):
            out[str(covariate)] = tuple(sorted({text(v) for v in levels}))
        else:
            out[str(covariate)] = (text(levels),)
    return out


def _window_overlap(a: RegistryEntry, b: RegistryEntry) -> tuple[_dt.date | None, _dt.date | None] | None:
    """The dates both run on, inclusive; None when they never run together."""
    starts = [d for d in (a.start_date, b.start_date) if d is not None]
    ends = [d for d in (a.end_date, b.end_date) if d is not None]
    start, end = (max(starts) if starts else None), (min(ends) if ends else None)
    if start is not None and end is not None and end < start:
        return None
    return start, end


def _audience_overlap(a: RegistryEntry, b: RegistryEntry) -> dict[str, tuple[str, ...]] | None:
    """The visitors both may enrol; None when a covariate both restrict has disjoint levels."""
    shared: dict[str, tuple[str, ...]] = {}
    for covariate in sorted(set(a.audience) | set(b.audience)):
        if covariate in a.audience and covariate in b.audience:
            levels = tuple(sorted(set(a.audience[covariate]) & set(b.audience[covariate])))
            if not levels:
                return None
        else:
            levels = a.audience.get(covariate) or b.audience[covariate]
        shared[covariate] = levels
    return shared


def _layer_conflicts(layer: str, members: list[RegistryEntry]) -> list[Conflict]:
    """Sets of a layer's experiments live on a common date whose shares sum past 100%.

    Windows are intervals, so a set live together is live together at the latest of its starts:
    it suffices to look at each member's start date (and the open start).
    """

    def live_on(m: RegistryEntry, day: _dt.date | None) -> bool:
        if day is None:  # the open start: only experiments without a start date have begun
            return m.start_date is None
        return (m.start_date is None or m.start_date <= day) and (m.end_date is None or day <= m.end_date)

    conflicts: list[Conflict] = []
    seen: set[tuple[str, ...]] = set()
    probes = sorted({m.start_date for m in members}, key=lambda d: (d is not None, d))
    for day in probes:
        live = [m for m in members if live_on(m, day)]
        ids = tuple(sorted(m.id for m in live))
        if len(live) < 2 or ids in seen or sum(m.traffic_share for m in live) <= 1 + _SHARE_TOLERANCE:
            continue
        seen.add(ids)
        ends = [m.end_date for m in live if m.end_date is not None]
        conflicts.append(
            Conflict(
                experiments=ids,
                kind="layer",
                window=(day, min(ends) if ends else None),
                audience={},
                shares={m.id: m.traffic_share for m in sorted(live, key=lambda m: m.id)},
                layer=layer,
            )
        )
    return conflicts


def find_conflicts(specs: Iterable[Any]) -> list[Conflict]:
    """Live experiments that compete for more traffic than there is.

    Parameters
    ----------
    specs : iterable of ExperimentSpec or RegistryEntry
        Every experiment; only ``draft``, ``running`` and ``paused`` ones take part (a stopped or
        shipped experiment holds no traffic).

    Returns
    -------
    list of Conflict
        Layer conflicts first (by layer), then traffic conflicts (by experiment ids); empty when
        every experiment can get its share.

    Notes
    -----
    Two experiments outside a common layer conflict when all three hold:

    - their date windows overlap (a missing start or end date is open-ended, so it overlaps);
    - their audiences overlap: they do unless some covariate both restrict has no level both
      allow (an unrestricted audience overlaps every audience);
    - their traffic shares sum past 100%.

    Experiments with the same ``layer`` split the layer's traffic, so they never share a visitor;
    instead, the shares of the layer's experiments live on any one date must sum to at most 100%.

    Examples
    --------
    >>> import datetime as dt
    >>> a = RegistryEntry("checkout_color", audience={"country": ("DE", "FR")}, traffic_share=0.6)
    >>> b = RegistryEntry("checkout_copy", start_date=dt.date(2026, 3, 1), audience={"country": ("FR",)},
    ...                   traffic_share=0.5)
    >>> c = RegistryEntry("search_rank", audience={"country": ("US",)}, traffic_share=1.0)
    >>> [str(c) for c in find_conflicts([a, b, c])]  # doctest: +NORMALIZE_WHITESPACE
    ['checkout_color and checkout_copy overlap from 2026-03-01 to open end on country in {FR},
      and their traffic shares sum to 60% (checkout_color) + 50% (checkout_copy) = 110% > 100%']
    """
    entries = [s if isinstance(s, RegistryEntry) else RegistryEntry.from_spec(s) for s in specs]
    live = sorted((e for e in entries if e.live), key=lambda e: e.id)
    layers: dict[str, list[RegistryEntry]] = {}
    for e in live:
        if e.layer is not None:
            layers.setdefault(e.layer, []).append(e)
    conflicts = [c for layer in sorted(layers) for c in _layer_conflicts(layer, layers[layer])]
    for i, a in enumerate(live):
        for b in live[i + 1 :]:
            if a.layer is not None and a.layer == b.layer:
                continue  # exclusive by construction; checked as a layer above
            if a.traffic_share + b.traffic_share <= 1 + _SHARE_TOLERANCE:
                continue
            window = _window_overlap(a, b)
            audience = _audience_overlap(a, b)
            if window is None or audience is None:
                continue
            conflicts.append(
                Conflict(
                    experiments=(a.id, b.id),
                    kind="traffic",
                    window=window,
                    audience=audience,
                    shares={a.id: a.traffic_share, b.id: b.traffic_share},
                )
            )
    return conflicts
