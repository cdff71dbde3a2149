"""What funnels, retention and flows select: events (a name and property filters) and the
audience (profile filters and the segment filter), parsed from a request with 422s naming the
field, compiled to SQL conditions with bound parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

from nudge.query.segments.model import DefinitionError, _Parser

from .common import Report, ReportError

MAX_WINDOW_S = 366 * 86_400


@dataclass(frozen=True)
class EventSpec:
    """An event name with property filters, compiled for ``events e``."""

    event: str
    where: str  # SQL over alias ``e`` ("true" without filters)
    params: tuple[Any, ...]

    @classmethod
    def parse(cls, report: Report, body: Any, path: str) -> EventSpec:
        if not isinstance(body, dict):
            raise ReportError(path or "body", "must be an object with an event")
        prefix = f"{path}." if path else ""
        event = report.field(body, "event", str, path=prefix)
        if not event:
            raise ReportError(f"{prefix}event", "must not be empty")
        where, params = report.event_filters(body.get("where"), f"{prefix}where")
        return cls(event, where, tuple(params))

    def condition(self) -> tuple[str, list[Any]]:
        """``e.event = ? AND <filters>``."""
        if self.where == "true":
            return "e.event = ?", [self.event]
        return f"(e.event = ? AND {self.where})", [self.event, *self.params]

    def describe(self) -> dict[str, Any]:
        return {"event": self.event}


@dataclass(frozen=True)
class Audience:
    """Whose events count: profile filters (alias ``pf``) and the segment filter's table."""

    profiles: tuple[str, list[Any]]
    segment: str | None

    @classmethod
    def parse(cls, report: Report, body: dict[str, Any]) -> Audience:
        """Check the profile filters now; the segment is registered later, on the cursor."""
        return cls(report.profile_filters(body.get("profile_where"), "profile_where", "pf"),
                   None)

    def on(self, report: Report, cur: duckdb.DuckDBPyConnection,
           body: dict[str, Any]) -> Audience:
        """This audience with the segment filter registered on ``cur``."""
        return Audience(self.profiles, report.segment_table(cur, body))

    def conditions(self, column: str = "e.user_id") -> tuple[list[str], list[Any]]:
        """Semi-joins (cheaper than joining every event's profile) restricting ``column``."""
        where: list[str] = []
        params: list[Any] = []
        if self.profiles[0] != "true":
            where.append(f"{column} IN (SELECT pf.user_id FROM profiles pf "
                         f"WHERE {self.profiles[0]})")
            params += self.profiles[1]
        if self.segment is not None:
            where.append(f"{column} IN (SELECT user_id FROM {self.segment})")
        return where, params


def duration(report: Report, body: dict[str, Any], name: str, default: float | None,
             path: str = "") -> float | None:
    """``body[name]`` as a duration (``{"days": 1}``; minutes/hours/days/weeks) in seconds,
    positive and at most 366 days, or a 422 naming the field."""
    full = f"{path}{name}"
    if body.get(name) is None:
        return default
    try:
        seconds = _Parser(report.now).duration(body[name], full)
    except DefinitionError as e:
        raise ReportError(e.path, e.message.split(": ", 1)[-1]) from None
    if seconds > MAX_WINDOW_S:
        raise ReportError(full, "must be at most 366 days")
    return seconds


def no_unknown(body: dict[str, Any], allowed: tuple[str, ...], path: str = "") -> None:
    """A 422 for a field this request does not know (a typo would otherwise go unnoticed)."""
    for key in body:
        if key not in allowed:
            raise ReportError(f"{path}{key}", f"unknown field; allowed: {list(allowed)}")
