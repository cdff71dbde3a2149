"""A plain-Python reference evaluator of segment definitions (the oracle of the property tests).

It reads the definition JSON itself (not the engine's node tree) and decides membership person
by person over plain lists of people and events, following the semantics documented in
``nudge/query/segments/{model,compiler}.py`` and docs/architecture.md:

- windows are relative to ``now``: ``last`` = [now - d, now]; ``between`` = [start, end);
  ``first_days_after_first_seen`` = [first seen, first seen + N days), where "first seen" is
  the person's earliest event of any name;
- counts compare the number of matching events in the window, with 0 for people who never did
  it (so "at most N" includes them);
- aggregates: ``sum`` and ``count_distinct`` of no values are 0; ``avg``/``min``/``max`` need at
  least one value;
- ``first_time``: the person's first ever matching event (all history) falls in the window;
- ``last_did``: ``less_than`` = did it in the last T; ``more_than`` = last did it more than T
  ago, or never;
- ``sequence``: ``first`` events in the window, ``then`` events strictly after them in (ts, seq)
  order and (if ``within``) at most ``within`` later; abandonment looks at the LAST ``first``;
- property filters see a property's value only if its type is the property's catalog type
  (decided at first sight); absent values satisfy only neq / not_in / not_contains /
  not_exists; multi-value properties match when any element equals a value, as strings;
- reachability: email → has an email, sms/whatsapp → has a phone, push → has an fcm/apns
  token, webpush → has a webpush token; and the boolean ``MSG-<channel>`` profile property,
  if the catalog has it as boolean, is not false.

A filter whose operator/value does not fit the property's catalog type raises
``TypeMismatch`` (the engine answers such definitions with a DefinitionError).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

DAY = 86400
UNITS = {"minutes": 60, "hours": 3600, "days": DAY, "weeks": 7 * DAY}
NEGATIVE = {"neq", "not_in", "not_contains", "not_exists"}
_DATE = re.compile(r"^\$D_(-?\d{1,12})$")
# Profile fields that are not customer properties.
SYSTEM = {"$identity": "string", "$email": "string", "$phone": "string",
          "$first_seen": "date", "$last_seen": "date", "$total_events": "number"}
SUBSCRIPTION = {"email": "MSG-email", "sms": "MSG-sms", "whatsapp": "MSG-whatsapp",
                "push": "MSG-push", "webpush": "MSG-push"}


# The standard RFM map over the (R, F) grid, written out cell by cell from its definition.
RFM_GRID = {(r, f): name for name, rs, fs in [
    ("champions", (5,), (4, 5)), ("loyal", (3, 4), (4, 5)),
    ("potential_loyalists", (4, 5), (2, 3)), ("new_customers", (5,), (1,)),
    ("promising", (4,), (1,)), ("need_attention", (3,), (3,)),
    ("about_to_sleep", (3,), (1, 2)), ("at_risk", (1, 2), (3, 4)),
    ("cant_lose_them", (1, 2), (5,)), ("hibernating", (1, 2), (1, 2))]
    for r in rs for f in fs}


class TypeMismatch(Exception):
    """The definition applies an operator or value to a property of another type."""


@dataclass
class Event:
    user: str
    event: str
    ts: float
    seq: int  # arrival order: breaks ties between events with the same ts
    props: dict[str, Any] = field(default_factory=dict)  # wire values ("$D_<epoch>", lists)


@dataclass
class Person:
    key: str  # the identity
    props: dict[str, Any] = field(default_factory=dict)
    email: str | None = None
    phone: str | None = None
    tokens: frozenset[str] = frozenset()  # token kinds: fcm, apns, webpush


def wire_type(v: Any) -> str | None:
    """The catalog type of a wire value (docs/architecture.md, "Type rules")."""
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "date" if _DATE.match(v) else "string"
    if isinstance(v, list) and all(isinstance(x, str | int | float) and not isinstance(x, bool)
                                   for x in v):
        return "list"
    return None


def catalog_of(people: list[Person], events: list[Event],
               into: dict[tuple[str, str], str] | None = None) -> dict[tuple[str, str], str]:
    """Property types at first sight, per scope (event properties are shared by all events)."""
    cat = {} if into is None else into
    for e in sorted(events, key=lambda e: e.seq):
        for k, v in e.props.items():
            if wire_type(v) is not None:
                cat.setdefault(("event", k), wire_type(v))  # type: ignore[arg-type]
    for p in people:
        for k, v in p.props.items():
            if wire_type(v) is not None:
                cat.setdefault(("profile", k), wire_type(v))  # type: ignore[arg-type]
    return cat


def to_epoch(v: Any) -> float:
    if isinstance(v, str):
        t = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
        return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()
    return float(v)


def duration(d: dict[str, float]) -> float:
    (unit, n), = d.items()
    return n * UNITS[unit]


def _compare(a: float, op: str, b: float) -> bool:
    return {">=": a >= b, ">": a > b, "<=": a <= b, "<": a < b, "=": a == b, "!=": a != b}[op]


def _item(v: Any) -> str:
    """A multi-value item as a string: 5 and 5.0 are both "5"."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


class Reference:
    def __init__(self, people: list[Person], events: list[Event], now: float, *,
                 catalog: dict[tuple[str, str], str] | None = None,
                 saved: dict[int, Any] | None = None, timezone: str = "UTC") -> None:
        self.people = {p.key: p for p in people}
        for e in events:  # everyone with an event has a profile
            self.people.setdefault(e.user, Person(e.user))
        self.events: dict[str, list[Event]] = {k: [] for k in self.people}
        for e in sorted(events, key=lambda e: e.seq):
            self.events[e.user].append(e)
        self.now = now
        self.catalog = catalog_of(people, events) if catalog is None else catalog
        self.saved = saved or {}
        self.tz = ZoneInfo(timezone)

    # -- entry points ---------------------------------------------------------------------
    def members(self, d: Any) -> set[str]:
        self.check(d)
        return {k for k in self.people if self.holds(d, k)}

    def holds(self, d: Any, key: str) -> bool:
        (kind, body), = d.items()
        return bool(getattr(self, f"_{kind}")(body, key))

    # -- type checks (static: over the whole definition, whatever the data) -----------------
    def check(self, d: Any) -> None:
        (kind, body), = d.items()
        if kind in ("and", "or"):
            for c in body:
                self.check(c)
        elif kind == "not":
            self.check(body)
        elif kind == "segment":
            self.check(self.saved[body["id"]])
        elif kind == "profile":
            self._check_filter("profile", body)
        elif kind == "sequence":
            for f in body["first"].get("where", []) + body["then"].get("where", []):
                self._check_filter("event", f)
        elif kind in ("did", "did_not", "first_time", "last_did", "aggregate"):
            for f in body.get("where", []):
                self._check_filter("event", f)
            if kind == "aggregate" and body["fn"] != "count_distinct":
                typ = self.catalog.get(("event", body["property"]))
                if typ is not None and typ != "number":
                    raise TypeMismatch(f"{body['fn']} of {typ} property {body['property']!r}")

    def _type(self, scope: str, name: str) -> str | None:
        if scope == "profile" and name in SYSTEM:
            return SYSTEM[name]
        return self.catalog.get((scope, name))

    def _check_filter(self, scope: str, f: dict[str, Any]) -> None:
        typ = self._type(scope, f["property"])
        op, v = f["op"], f.get("value")
        if typ is None or op in ("exists", "not_exists"):
            return
        def number(x: Any) -> bool:
            return isinstance(x, int | float) and not isinstance(x, bool)

        ok = {
            "string": lambda: (op in ("eq", "neq", "contains", "not_contains", "starts_with")
                               and isinstance(v, str))
                               or (op in ("in", "not_in") and all(isinstance(x, str) for x in v)),
            "number": lambda: (op in ("eq", "neq", "gt", "gte", "lt", "lte") and number(v))
                               or (op in ("in", "not_in", "between") and all(map(number, v))),
            "boolean": lambda: op in ("eq", "neq") and isinstance(v, bool),
            "date": lambda: (op in ("gt", "gte", "lt", "lte", "between", "before_days_ago",
                                    "after_days_ago", "within_next_days",
                                    "anniversary_within_days")),
            "list": lambda: op in ("eq", "neq", "contains", "not_contains", "in", "not_in") and all(
                isinstance(x, str) or number(x) for x in (v if op in ("in", "not_in") else [v])),
        }[typ]()
        if not ok:
            raise TypeMismatch(f"{op} {v!r} on {typ} property {f['property']!r}")

    # -- property values ------------------------------------------------------------------
    def _value(self, scope: str, name: str, props: dict[str, Any], key: str) -> Any:
        """The value a filter sees (None = absent): dates as epoch, lists as strings."""
        if scope == "profile" and name in SYSTEM:
            p, evs = self.people[key], self.events[key]
            return {"$identity": p.key, "$email": p.email, "$phone": p.phone,
                    "$first_seen": min((e.ts for e in evs), default=None),
                    "$last_seen": max((e.ts for e in evs), default=None),
                    "$total_events": len(evs)}[name]
        typ = self.catalog.get((scope, name))
        v = props.get(name)
        if v is None or typ is None or wire_type(v) != typ:
            return None  # absent, or of another type (kept in the JSON overflow)
        if typ == "date":
            return float(_DATE.match(v).group(1))  # type: ignore[union-attr]
        if typ == "list":
            return [str(x) for x in v]
        return v

    def _filter(self, scope: str, f: dict[str, Any], props: dict[str, Any], key: str) -> bool:
        op, x = f["op"], f.get("value")
        v = self._value(scope, f["property"], props, key)
        if op == "exists":
            return v is not None
        if op == "not_exists":
            return v is None
        if v is None:
            return op in NEGATIVE
        typ = self._type(scope, f["property"])
        if typ == "list":
            items = {_item(i) for i in (x if op in ("in", "not_in") else [x])}
            hit = any(e in items for e in v)
            return hit if op in ("eq", "contains", "in") else not hit
        if typ == "date":
            now = self.now
            if op in ("gt", "gte", "lt", "lte"):
                return _compare(v, {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op],
                                to_epoch(x))
            if op == "between":
                return to_epoch(x[0]) <= v <= to_epoch(x[1])
            if op == "before_days_ago":
                return v < now - x * DAY
            if op == "after_days_ago":
                return v >= now - x * DAY
            if op == "within_next_days":
                return now <= v < now + x * DAY
            # anniversary_within_days: the date's day and month fall in the next N days
            today = dt.datetime.fromtimestamp(now, self.tz).date()
            days = {(d.month, d.day) for d in
                    (today + dt.timedelta(days=i) for i in range(min(int(x), 366) + 1))}
            when = dt.datetime.fromtimestamp(v, dt.UTC)
            return (when.month, when.day) in days
        if op == "eq":
            return v == x
        if op == "neq":
            return v != x
        if op == "in":
            return v in x
        if op == "not_in":
            return v not in x
        if op == "contains":
            return x in v
        if op == "not_contains":
            return x not in v
        if op == "starts_with":
            return v.startswith(x)
        if op == "between":
            return x[0] <= v <= x[1]
        return _compare(v, {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op], x)

    # -- events -----------------------------------------------------------------------------
    def _first_seen(self, key: str) -> float | None:
        return min((e.ts for e in self.events[key]), default=None)

    def _in_window(self, ts: float, w: dict[str, Any] | None, key: str) -> bool:
        if not w:
            return True
        (kind, body), = w.items()
        if kind == "last":
            return self.now - duration(body) <= ts <= self.now
        if kind == "between":
            return to_epoch(body[0]) <= ts < to_epoch(body[1])
        first = self._first_seen(key)
        return first is not None and first <= ts < first + body * DAY

    def _matching(self, spec: dict[str, Any], key: str) -> list[Event]:
        return [e for e in self.events[key] if e.event == spec["event"]
                and all(self._filter("event", f, e.props, key) for f in spec.get("where", []))]

    def _in(self, spec: dict[str, Any], w: dict[str, Any] | None, key: str) -> list[Event]:
        return [e for e in self._matching(spec, key) if self._in_window(e.ts, w, key)]

    # -- conditions -----------------------------------------------------------------------
    def _did(self, b: dict[str, Any], key: str) -> bool:
        c = b.get("count", {"op": ">=", "value": 1})
        return _compare(len(self._in(b, b.get("window"), key)), c["op"], c["value"])

    def _did_not(self, b: dict[str, Any], key: str) -> bool:
        return not self._in(b, b.get("window"), key)

    def _aggregate(self, b: dict[str, Any], key: str) -> bool:
        values = [v for e in self._in(b, b.get("window"), key)
                  if (v := self._value("event", b["property"], e.props, key)) is not None]
        fn = b["fn"]
        if fn == "sum":
            total: float = sum(values)
        elif fn == "count_distinct":
            total = len({tuple(v) if isinstance(v, list) else v for v in values})
        elif not values:
            return False  # avg / min / max of nothing: not a member
        else:
            total = {"avg": lambda: sum(values) / len(values), "min": lambda: min(values),
                     "max": lambda: max(values)}[fn]()
        return _compare(total, b["op"], b["value"])

    def _first_time(self, b: dict[str, Any], key: str) -> bool:
        evs = self._matching(b, key)
        return bool(evs) and self._in_window(min(e.ts for e in evs), b["window"], key)

    def _last_did(self, b: dict[str, Any], key: str) -> bool:
        last = max((e.ts for e in self._matching(b, key)), default=None)
        if "less_than" in b:
            return last is not None and last >= self.now - duration(b["less_than"])
        return last is None or last < self.now - duration(b["more_than"])

    def _sequence(self, b: dict[str, Any], key: str) -> bool:
        firsts = self._in(b["first"], b.get("window"), key)
        thens = self._matching(b["then"], key)
        within = duration(b["within"]) if "within" in b else None

        def follows(a: Event, t: Event) -> bool:
            return (t.ts, t.seq) > (a.ts, a.seq) and (within is None or t.ts <= a.ts + within)

        if b.get("then_happened", True):
            return any(follows(a, t) for a in firsts for t in thens)
        if not firsts:
            return False
        last = max(firsts, key=lambda e: (e.ts, e.seq))
        return not any(follows(last, t) for t in thens)

    # -- people -----------------------------------------------------------------------------
    def _profile(self, b: dict[str, Any], key: str) -> bool:
        return self._filter("profile", b, self.people[key].props, key)

    def _reachable(self, b: dict[str, Any], key: str) -> bool:
        p, ch = self.people[key], b["channel"]
        if ch == "email":
            ok = p.email is not None
        elif ch in ("sms", "whatsapp"):
            ok = p.phone is not None
        elif ch == "push":
            ok = bool(p.tokens & {"fcm", "apns"})
        else:
            ok = "webpush" in p.tokens
        if not ok or self.catalog.get(("profile", SUBSCRIPTION[ch])) != "boolean":
            return ok
        return self._value("profile", SUBSCRIPTION[ch], p.props, key) is not False

    def _segment(self, b: dict[str, Any], key: str) -> bool:
        return self.holds(self.saved[b["id"]], key) == b.get("member", True)

    # -- RFM (default settings: Charged / Amount / 365 days) and intent scores -----------
    def _rfm(self) -> dict[str, tuple[int, int, int, str]]:
        """Every buyer's (R, F, M, segment): quintile cut points by numpy's inverted-CDF
        quantiles, score = 1 + the number of cut points the value is above."""
        import numpy as np

        if getattr(self, "_rfm_cache", None) is None:
            rows = {}
            for k in self.people:
                evs = [e for e in self.events[k] if e.event == "Charged"
                       and self.now - 365 * DAY <= e.ts <= self.now]
                if evs:
                    money = sum(v for e in evs
                                if (v := self._value("event", "Amount", e.props, k)) is not None)
                    rows[k] = (max(e.ts for e in evs), len(evs), float(money))
            out = {}
            if rows:
                cuts = [np.quantile([r[i] for r in rows.values()], [0.2, 0.4, 0.6, 0.8],
                                    method="inverted_cdf") for i in range(3)]
                for k, r in rows.items():
                    r_, f_, m_ = (1 + int(sum(r[i] > c for c in cuts[i])) for i in range(3))
                    out[k] = (r_, f_, m_, RFM_GRID[(r_, f_)])
            self._rfm_cache = out
        return self._rfm_cache  # type: ignore[no-any-return]

    def _rfm_segment(self, b: dict[str, Any], key: str) -> bool:
        row = self._rfm().get(key)
        return (row[3] if row else "no_purchases") in b["in"]

    def _rfm_score(self, b: dict[str, Any], key: str) -> bool:
        row = self._rfm().get(key)
        return row is not None and all(row[i] in b[k] for i, k in enumerate("rfm") if k in b)

    def _intent_bucket(self, b: dict[str, Any], key: str) -> bool:
        return False  # no goal is trained in these data: nobody has a score

    def _intent_score(self, b: dict[str, Any], key: str) -> bool:
        return False

    def _and(self, b: list[Any], key: str) -> bool:
        return all(self.holds(c, key) for c in b)

    def _or(self, b: list[Any], key: str) -> bool:
        return any(self.holds(c, key) for c in b)

    def _not(self, b: Any, key: str) -> bool:
        return not self.holds(b, key)
