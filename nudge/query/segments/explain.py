"""Definitions in words a marketer can read."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from .model import (
    UNITS,
    Aggregate,
    And,
    Did,
    DidNot,
    EventSpec,
    Filter,
    FirstTime,
    InSegment,
    Intent,
    LastDid,
    Node,
    Not,
    ProfileIs,
    Reachable,
    Rfm,
    Sequence,
    Window,
)

_OPS = {"eq": "is", "neq": "is not", "in": "is one of", "not_in": "is none of",
        "contains": "contains", "not_contains": "does not contain",
        "starts_with": "starts with", "gt": ">", "gte": "≥", "lt": "<", "lte": "≤",
        "between": "is between"}
_COUNT = {">=": "at least", ">": "more than", "<=": "at most", "<": "fewer than",
          "=": "exactly", "!=": "not exactly"}
_COMPARE = {">=": "at least", ">": "more than", "<=": "at most", "<": "less than",
            "=": "exactly", "!=": "other than"}
_AGG = {"sum": "total", "avg": "average", "min": "smallest", "max": "largest",
        "count_distinct": "number of distinct"}


def duration(seconds: float) -> str:
    for unit in ("weeks", "days", "hours", "minutes"):
        n = seconds / UNITS[unit]
        if n >= 1 and n == int(n):
            word = unit if n != 1 else unit[:-1]
            return f"{int(n)} {word}"
    return f"{seconds:g} seconds"


def _date(epoch: float | None) -> str:
    return dt.datetime.fromtimestamp(epoch or 0, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def window(w: Window) -> str:
    if w.kind == "last":
        return f" in the last {duration(w.seconds)}"
    if w.kind == "between":
        return f" between {_date(w.start)} and {_date(w.end)}"
    if w.kind == "first_days":
        return f" within {duration(w.seconds)} of first being seen"
    return ""


def value(v: object) -> str:
    if isinstance(v, tuple | list):
        return ", ".join(value(x) for x in v)
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    return repr(v) if isinstance(v, str) else str(v)


def filter_words(f: Filter) -> str:
    if f.op == "exists":
        return f"{f.property} is set"
    if f.op == "not_exists":
        return f"{f.property} is not set"
    if f.op == "before_days_ago":
        return f"{f.property} is more than {value(f.value)} days ago"
    if f.op == "after_days_ago":
        return f"{f.property} is within the last {value(f.value)} days"
    if f.op == "within_next_days":
        return f"{f.property} is in the next {value(f.value)} days"
    if f.op == "anniversary_within_days":
        return f"the anniversary of {f.property} is in the next {value(f.value)} days"
    if f.op == "between":
        return f"{f.property} is between {value(f.value[0])} and {value(f.value[1])}"
    return f"{f.property} {_OPS[f.op]} {value(f.value)}"


def spec(s: EventSpec) -> str:
    where = " and ".join(filter_words(f) for f in s.where)
    return s.event + (f" where {where}" if where else "")


def explain(node: Node, segment_name: Callable[[int], str] | None = None) -> str:
    """``People who did Charged at least 3 times in the last 30 days where Amount > 500``."""
    return "People who " + _words(node, segment_name or (lambda i: f"#{i}"))


def _words(node: Node, name: Callable[[int], str]) -> str:
    if isinstance(node, Did):
        times = "" if (node.op, node.count) == (">=", 1) else \
            f" {_COUNT[node.op]} {node.count} time{'s' if node.count != 1 else ''}"
        return f"did {spec(node.spec)}{times}{window(node.window)}"
    if isinstance(node, DidNot):
        return f"did not do {spec(node.spec)}{window(node.window)}"
    if isinstance(node, Aggregate):
        return (f"did {spec(node.spec)} with {_AGG[node.fn]} {node.property} "
                f"{_COMPARE[node.op]} {node.value:g}{window(node.window)}")
    if isinstance(node, FirstTime):
        return f"did {spec(node.spec)} for the first time{window(node.window)}"
    if isinstance(node, LastDid):
        rel = "more" if node.more_than else "less"
        return f"last did {spec(node.spec)} {rel} than {duration(node.seconds)} ago"
    if isinstance(node, Sequence):
        within = f" within {duration(node.within)}" if node.within else ""
        if node.then_happened:
            return f"did {spec(node.first)} then {spec(node.then)}{within}{window(node.window)}"
        return (f"did {spec(node.first)}{window(node.window)} and did not do "
                f"{spec(node.then)}{within} after it")
    if isinstance(node, ProfileIs):
        return f"whose {filter_words(node.filter)}"
    if isinstance(node, Reachable):
        return f"are reachable by {node.channel}"
    if isinstance(node, InSegment):
        return f"are {'' if node.member else 'not '}in segment {name(node.segment_id)}"
    if isinstance(node, Rfm):
        if node.segments:
            return "are in RFM segment " + " or ".join(node.segments)
        return "have RFM scores " + ", ".join(
            f"{k.upper()} in {'/'.join(map(str, getattr(node, k)))}" for k in ("r", "f", "m")
            if getattr(node, k))
    if isinstance(node, Intent):
        if node.buckets:
            return f"are {' or '.join(node.buckets)} for goal #{node.goal}"
        return f"have a score {_COMPARE[node.op or '>=']} {node.value:g} for goal #{node.goal}"
    if isinstance(node, Not):
        return f"not ({_words(node.child, name)})"
    joiner = ", and " if isinstance(node, And) else ", or "
    parts = [_words(c, name) for c in node.children]  # type: ignore[union-attr]
    return parts[0] if len(parts) == 1 else "(" + joiner.join(parts) + ")"
