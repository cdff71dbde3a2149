"""The segment definition language: JSON in, small immutable typed nodes out.

``parse(definition)`` checks the JSON and raises ``DefinitionError`` with the JSON path of
the offending node (``$.and[1].did.where[0].op``) and why. The JSON Schema in
``schema.py`` describes the same language for tools; this module is the authority.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from nudge.errors import NudgeError
from nudge.predict.names import BUCKETS, RFM_SEGMENT_NAMES

MAX_DEPTH = 12
MAX_NODES = 200
COUNT_OPS = (">=", ">", "<=", "<", "=", "!=")
AGG_FNS = ("sum", "avg", "min", "max", "count_distinct")
CHANNELS = ("email", "sms", "whatsapp", "push", "webpush")
# Filter operators and the value each takes.
FILTER_OPS = {
    "eq": "scalar", "neq": "scalar", "in": "list", "not_in": "list",
    "contains": "string", "not_contains": "string", "starts_with": "string",
    "exists": "none", "not_exists": "none",
    "gt": "order", "gte": "order", "lt": "order", "lte": "order", "between": "range",
    # dates relative to now: value {"days": N}; "anniversary" = the day and month fall in the
    # next N days (birthdays, renewals), in the account's timezone.
    "before_days_ago": "days", "after_days_ago": "days", "within_next_days": "days",
    "anniversary_within_days": "days",
}
UNITS = {"minutes": 60, "hours": 3600, "days": 86400, "weeks": 7 * 86400}


class DefinitionError(NudgeError):
    status = 422
    code = "invalid_segment"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}", field=path)
        self.path = path


# -- nodes ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """When events count. ``last``: the last N seconds; ``between``: [start, end);
    ``first_days``: within N seconds after the person was first seen; ``all``: all history."""

    kind: str = "all"
    seconds: float = 0.0
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class Filter:
    property: str
    op: str
    value: Any = None


@dataclass(frozen=True)
class EventSpec:
    event: str
    where: tuple[Filter, ...] = ()


@dataclass(frozen=True)
class Did:
    spec: EventSpec
    op: str = ">="
    count: int = 1
    window: Window = Window()


@dataclass(frozen=True)
class DidNot:
    spec: EventSpec
    window: Window = Window()


@dataclass(frozen=True)
class Aggregate:
    spec: EventSpec
    property: str
    fn: str
    op: str
    value: float
    window: Window = Window()


@dataclass(frozen=True)
class FirstTime:
    spec: EventSpec
    window: Window


@dataclass(frozen=True)
class LastDid:
    spec: EventSpec
    more_than: bool  # True: last did it more than ``seconds`` ago (or never); False: less
    seconds: float


@dataclass(frozen=True)
class Sequence:
    """Did ``first`` then ``then`` within ``within`` seconds (``then_happened``), or did
    ``first`` and no ``then`` followed the last ``first`` within that time (abandonment)."""

    first: EventSpec
    then: EventSpec
    within: float | None  # None: any time after
    window: Window = Window()
    then_happened: bool = True


@dataclass(frozen=True)
class ProfileIs:
    filter: Filter


@dataclass(frozen=True)
class Reachable:
    channel: str


@dataclass(frozen=True)
class InSegment:
    segment_id: int
    member: bool = True


@dataclass(frozen=True)
class Rfm:
    """Their live RFM segment is one of ``segments``, or their R / F / M scores are among
    the given ones (nudge/predict/rfm.py; ``no_purchases``: no purchase in the lookback)."""

    segments: tuple[str, ...] = ()
    r: tuple[int, ...] = ()
    f: tuple[int, ...] = ()
    m: tuple[int, ...] = ()


@dataclass(frozen=True)
class Intent:
    """Their score for predictive goal ``goal`` is in ``buckets``, or compares true with
    ``value`` (nudge/predict/; people the goal's model did not score never match)."""

    goal: int
    buckets: tuple[str, ...] = ()
    op: str | None = None
    value: float | None = None


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    child: Node


Node = (Did | DidNot | Aggregate | FirstTime | LastDid | Sequence | ProfileIs | Reachable
        | InSegment | Rfm | Intent | And | Or | Not)


# -- parsing --------------------------------------------------------------------------------
class _Parser:
    def __init__(self, now: float) -> None:
        self.now = now
        self.nodes = 0

    def node(self, d: Any, path: str, depth: int = 0) -> Node:
        if depth > MAX_DEPTH:
            raise DefinitionError(path, f"nested deeper than {MAX_DEPTH}")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise DefinitionError(path, f"more than {MAX_NODES} conditions")
        obj = self.obj(d, path)
        if len(obj) != 1:
            raise DefinitionError(path, "a condition is an object with exactly one key, one of "
                                        + ", ".join(sorted(_KINDS)))
        (kind, body), = obj.items()
        if kind not in _KINDS:
            raise DefinitionError(f"{path}.{kind}", f"unknown condition {kind!r}; expected one "
                                  "of " + ", ".join(sorted(_KINDS)))
        return _KINDS[kind](self, body, f"{path}.{kind}", depth)  # type: ignore[no-any-return]

    # -- helpers ----------------------------------------------------------------------------
    def obj(self, d: Any, path: str, allowed: tuple[str, ...] | None = None,
            required: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(d, dict):
            raise DefinitionError(path, "must be an object")
        if allowed is not None:
            for k in d:
                if k not in allowed:
                    raise DefinitionError(f"{path}.{k}", f"unknown field; allowed: {list(allowed)}")
        for k in required:
            if k not in d:
                raise DefinitionError(f"{path}.{k}", "is required")
        return d

    def string(self, v: Any, path: str) -> str:
        if not isinstance(v, str) or not v or len(v) > 512:
            raise DefinitionError(path, "must be a non-empty string (at most 512 characters)")
        return v

    def number(self, v: Any, path: str) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise DefinitionError(path, "must be a finite number")
        return float(v)

    def count(self, v: Any, path: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise DefinitionError(path, "must be a whole number ≥ 0")
        return v

    def duration(self, d: Any, path: str) -> float:
        obj = self.obj(d, path, tuple(UNITS))
        if len(obj) != 1:
            raise DefinitionError(
                path, f"a duration is one of {list(UNITS)}, e.g. {{\"days\": 30}}")
        (unit, n), = obj.items()
        n = self.number(n, f"{path}.{unit}")
        if n <= 0:
            raise DefinitionError(f"{path}.{unit}", "must be positive")
        return n * UNITS[unit]

    def time(self, v: Any, path: str) -> float:
        if isinstance(v, int | float) and not isinstance(v, bool):
            return self.number(v, path)
        if isinstance(v, str):
            try:
                t = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
            except ValueError:
                raise DefinitionError(path, "must be an ISO 8601 date or epoch seconds") from None
            return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()
        raise DefinitionError(path, "must be an ISO 8601 date or epoch seconds")

    def window(self, d: Any, path: str) -> Window:
        if d is None:
            return Window()
        obj = self.obj(d, path, ("last", "between", "first_days_after_first_seen"))
        if len(obj) != 1:
            raise DefinitionError(path, "a window is one of last, between, "
                                        "first_days_after_first_seen")
        (kind, body), = obj.items()
        p = f"{path}.{kind}"
        if kind == "last":
            return Window("last", self.duration(body, p))
        if kind == "first_days_after_first_seen":
            days = self.number(body, p)
            if days <= 0:
                raise DefinitionError(p, "must be positive")
            return Window("first_days", days * 86400)
        if not isinstance(body, list) or len(body) != 2:
            raise DefinitionError(p, "must be [start, end]")
        start, end = self.time(body[0], f"{p}[0]"), self.time(body[1], f"{p}[1]")
        if end <= start:
            raise DefinitionError(p, "end must be after start")
        if start > self.now:
            raise DefinitionError(p, "window is in the future")
        return Window("between", start=start, end=end)

    def filters(self, d: Any, path: str) -> tuple[Filter, ...]:
        if d is None:
            return ()
        if not isinstance(d, list):
            raise DefinitionError(path, "must be a list of filters")
        return tuple(self.filter(f, f"{path}[{i}]") for i, f in enumerate(d))

    def filter(self, d: Any, path: str) -> Filter:
        obj = self.obj(d, path, ("property", "op", "value"), ("property", "op"))
        prop = self.string(obj["property"], f"{path}.property")
        op = obj["op"]
        if op not in FILTER_OPS:
            raise DefinitionError(f"{path}.op", f"unknown operator {op!r}; expected one of "
                                  + ", ".join(FILTER_OPS))
        return Filter(prop, op, self.filter_value(FILTER_OPS[op], obj.get("value"), obj,
                                                  f"{path}.value"))

    def filter_value(self, kind: str, v: Any, obj: dict[str, Any], path: str) -> Any:
        if kind == "none":
            if "value" in obj:
                raise DefinitionError(path, "this operator takes no value")
            return None
        if "value" not in obj:
            raise DefinitionError(path, "is required")
        if kind == "scalar":
            if not isinstance(v, str | int | float | bool) or (
                    isinstance(v, float) and not math.isfinite(v)):
                raise DefinitionError(path, "must be a string, number or boolean")
            return v
        if kind == "list":
            if not isinstance(v, list) or not v or len(v) > 1000 or not all(
                    isinstance(x, str | int | float | bool) for x in v):
                raise DefinitionError(path, "must be a non-empty list (≤1000) of scalars")
            return tuple(v)
        if kind == "string":
            return self.string(v, path)
        if kind == "order":
            if isinstance(v, str):
                self.time(v, path)  # a date, kept as given; the compiler checks the type
                return v
            return self.number(v, path)
        if kind == "range":
            if not isinstance(v, list) or len(v) != 2:
                raise DefinitionError(path, "must be [low, high]")
            lo, hi = (self.filter_value("order", x, {"value": x}, f"{path}[{i}]")
                      for i, x in enumerate(v))
            if type(lo) is not type(hi):
                raise DefinitionError(path, "low and high must both be numbers or both dates")
            if (self.time(hi, path) if isinstance(hi, str) else hi) < (
                    self.time(lo, path) if isinstance(lo, str) else lo):
                raise DefinitionError(path, "high must not be below low")
            return (lo, hi)
        # days
        n = self.number(v, path)
        if n < 0:
            raise DefinitionError(path, "must be ≥ 0")
        return n

    def spec(self, obj: dict[str, Any], path: str) -> EventSpec:
        return EventSpec(self.string(obj.get("event"), f"{path}.event"),
                         self.filters(obj.get("where"), f"{path}.where"))

    def children(self, d: Any, path: str, depth: int) -> tuple[Node, ...]:
        if not isinstance(d, list) or not d:
            raise DefinitionError(path, "must be a non-empty list of conditions")
        return tuple(self.node(c, f"{path}[{i}]", depth + 1) for i, c in enumerate(d))


def _did(p: _Parser, d: Any, path: str, depth: int) -> Node:
    obj = p.obj(d, path, ("event", "where", "count", "window"), ("event",))
    op, n = ">=", 1
    if "count" in obj:
        c = p.obj(obj["count"], f"{path}.count", ("op", "value"), ("op", "value"))
        op = c["op"]
        if op not in COUNT_OPS:
            raise DefinitionError(f"{path}.count.op", f"must be one of {list(COUNT_OPS)}")
        n = p.count(c["value"], f"{path}.count.value")
    return Did(p.spec(obj, path), op, n, p.window(obj.get("window"), f"{path}.window"))


def _did_not(p: _Parser, d: Any, path: str, depth: int) -> Node:
    obj = p.obj(d, path, ("event", "where", "window"), ("event",))
    return DidNot(p.spec(obj, path), p.window(obj.get("window"), f"{path}.window"))


def _aggregate(p: _Parser, d: Any, path: str, depth: int) -> Node:
    obj = p.obj(d, path, ("event", "where", "property", "fn", "op", "value", "window"),
                ("event", "property", "fn", "op", "value"))
    if obj["fn"] not in AGG_FNS:
        raise DefinitionError(f"{path}.fn", f"must be one of {list(AGG_FNS)}")
    if obj["op"] not in COUNT_OPS:
        raise DefinitionError(f"{path}.op", f"must be one of {list(COUNT_OPS)}")
    return Aggregate(p.spec(obj, path), p.string(obj["property"], f"{path}.property"),
                     obj["fn"], obj["op"], p.number(obj["value"], f"{path}.value"),
                     p.window(obj.get("window"), f"{path}.window"))


def _first_time(p: _Parser, d: Any, path: str, depth: int) -> Node:
    obj = p.obj(d, path, ("event", "where", "window"), ("event", "window"))
    return FirstTime(p.spec(obj, path), p.window(obj["window"], f"{path}.window"))


def _last_did(p: _Parser, d: Any, path: str, depth: int) -> Node:
    obj = p.obj(d, path, ("event", "where", "more_than", "less_than"), ("event",))
    keys = [k for k in ("more_than", "less_than") if k in obj]
    if len(keys) != 1:
        raise DefinitionError(path, "give exactly one of more_than, less_than (a duration)")
    return LastDid(p.spec(obj, path), keys[0] == "more_than",
                   p.duration(obj[keys[0]], f"{path}.{keys[0]}"))


def _sequence(p: _Parser, d: Any, path: str, depth: int) -> Node:
    obj = p.obj(d, path, ("first", "then", "within", "window", "then_happened"),
                ("first", "then"))
    first = p.obj(obj["first"], f"{path}.first", ("event", "where"), ("event",))
    then = p.obj(obj["then"], f"{path}.then", ("event", "where"), ("event",))
    happened = obj.get("then_happened", True)
    if not isinstance(happened, bool):
        raise DefinitionError(f"{path}.then_happened", "must be true or false")
    return Sequence(p.spec(first, f"{path}.first"), p.spec(then, f"{path}.then"),
                    p.duration(obj["within"], f"{path}.within") if "within" in obj else None,
                    p.window(obj.get("window"), f"{path}.window"), happened)


def _profile(p: _Parser, d: Any, path: str, depth: int) -> Node:
    return ProfileIs(p.filter(d, path))


def _reachable(p: _Parser, d: Any, path: str, depth: int) -> Node:
    obj = p.obj(d, path, ("channel",), ("channel",))
    if obj["channel"] not in CHANNELS:
        raise DefinitionError(f"{path}.channel", f"must be one of {list(CHANNELS)}")
    return Reachable(obj["channel"])


def _segment(p: _Parser, d: Any, path: str, depth: int) -> Node:
    obj = p.obj(d, path, ("id", "member"), ("id",))
    member = obj.get("member", True)
    if not isinstance(member, bool):
        raise DefinitionError(f"{path}.member", "must be true or false")
    return InSegment(p.count(obj["id"], f"{path}.id"), member)


def _names(p: _Parser, v: Any, path: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        raise DefinitionError(path, f"must be a non-empty list of names from {list(allowed)}")
    for i, x in enumerate(v):
        if x not in allowed:
            raise DefinitionError(f"{path}[{i}]", f"unknown name {x!r}; expected one of "
                                  + ", ".join(allowed))
    return tuple(v)


def _rfm_segment(p: _Parser, d: Any, path: str, depth: int) -> Node:
    obj = p.obj(d, path, ("in",), ("in",))
    return Rfm(segments=_names(p, obj["in"], f"{path}.in", RFM_SEGMENT_NAMES))


def _rfm_score(p: _Parser, d: Any, path: str, depth: int) -> Node:
    obj = p.obj(d, path, ("r", "f", "m"))
    if not obj:
        raise DefinitionError(path, "give at least one of r, f, m (a list of scores 1-5)")
    scores: dict[str, tuple[int, ...]] = {}
    for k, v in obj.items():
        if not isinstance(v, list) or not v or not all(
                isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 5 for x in v):
            raise DefinitionError(f"{path}.{k}", "must be a non-empty list of scores 1-5")
        scores[k] = tuple(sorted(set(v)))
    return Rfm(r=scores.get("r", ()), f=scores.get("f", ()), m=scores.get("m", ()))


def _goal_id(p: _Parser, obj: dict[str, Any], path: str) -> int:
    goal = obj["goal"]
    if isinstance(goal, bool) or not isinstance(goal, int) or goal < 1:
        raise DefinitionError(f"{path}.goal", "must be the id of a predictive goal")
    return goal


def _intent_bucket(p: _Parser, d: Any, path: str, depth: int) -> Node:
    obj = p.obj(d, path, ("goal", "in"), ("goal", "in"))
    return Intent(_goal_id(p, obj, path), buckets=_names(p, obj["in"], f"{path}.in", BUCKETS))


def _intent_score(p: _Parser, d: Any, path: str, depth: int) -> Node:
    obj = p.obj(d, path, ("goal", "op", "value"), ("goal", "op", "value"))
    if obj["op"] not in COUNT_OPS:
        raise DefinitionError(f"{path}.op", f"must be one of {list(COUNT_OPS)}")
    value = p.number(obj["value"], f"{path}.value")
    if not 0 <= value <= 1:
        raise DefinitionError(f"{path}.value", "a score is a probability between 0 and 1")
    return Intent(_goal_id(p, obj, path), op=obj["op"], value=value)


def _and(p: _Parser, d: Any, path: str, depth: int) -> Node:
    return And(p.children(d, path, depth))


def _or(p: _Parser, d: Any, path: str, depth: int) -> Node:
    return Or(p.children(d, path, depth))


def _not(p: _Parser, d: Any, path: str, depth: int) -> Node:
    return Not(p.node(d, path, depth + 1))


_KINDS = {"did": _did, "did_not": _did_not, "aggregate": _aggregate, "first_time": _first_time,
          "last_did": _last_did, "sequence": _sequence, "profile": _profile,
          "reachable": _reachable, "segment": _segment, "rfm_segment": _rfm_segment,
          "rfm_score": _rfm_score, "intent_bucket": _intent_bucket,
          "intent_score": _intent_score, "and": _and, "or": _or, "not": _not}


def parse(definition: Any, now: float) -> Node:
    """Check a JSON definition and build its node tree (raises DefinitionError)."""
    return _Parser(now).node(definition, "$")


def segment_refs(node: Node) -> set[int]:
    """Ids of saved segments this definition refers to (for cycle checks)."""
    if isinstance(node, InSegment):
        return {node.segment_id}
    if isinstance(node, And | Or):
        return set().union(*(segment_refs(c) for c in node.children))
    if isinstance(node, Not):
        return segment_refs(node.child)
    return set()
