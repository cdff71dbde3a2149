"""Segment node tree → SQL over one account store.

Every condition compiles to a set query (``SELECT user_id ...``) that is either the
condition's members or, when ``negated``, its complement; AND/OR/NOT combine them with
INTERSECT / UNION / EXCEPT, and only the root takes a complement against all profiles. This
keeps each leaf a tight scan that DuckDB prunes by (event, ts) zone maps.

SQL never contains user text: event names and values are bound parameters; columns are
``ep_<n>``/``pp_<n>`` names from the property catalog (or fixed system columns).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from nudge.store.catalog import Column, PropertyCatalog

from .model import (
    Aggregate,
    And,
    DefinitionError,
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
    Or,
    ProfileIs,
    Reachable,
    Rfm,
    Sequence,
    Window,
)

EVENT_SOURCES = ("events", "events_sorted")
UNIVERSE = "SELECT user_id FROM profiles"
NOBODY = "SELECT user_id FROM profiles WHERE false"
# Profile fields that are not properties; ``$`` keeps them apart from customer properties.
SYSTEM_PROFILE = {
    "$identity": Column("profile", "$identity", "identity", "string"),
    "$email": Column("profile", "$email", "email", "string"),
    "$phone": Column("profile", "$phone", "phone", "string"),
    "$first_seen": Column("profile", "$first_seen", "first_seen", "date"),
    "$last_seen": Column("profile", "$last_seen", "last_seen", "date"),
    "$total_events": Column("profile", "$total_events", "event_count", "number"),
}
SUBSCRIPTION = {"email": "MSG-email", "sms": "MSG-sms", "whatsapp": "MSG-whatsapp",
                "push": "MSG-push", "webpush": "MSG-push"}
_CMP = {">=": ">=", ">": ">", "<=": "<=", "<": "<", "=": "=", "!=": "<>"}
_ORDER = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_NEGATIVE_OPS = {"neq", "not_in", "not_contains", "not_exists"}
# Value types the store records per (event, property) (see AccountStore.event_props).
_EVENT_VALUE_TYPES = ("number", "string", "boolean", "date", "list", "object")


def to_ts(epoch: float) -> dt.datetime:
    """Epoch seconds → the naive UTC timestamp the store uses."""
    return dt.datetime(1970, 1, 1) + dt.timedelta(seconds=epoch)


def to_epoch(v: Any) -> float:
    if isinstance(v, str):
        t = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
        return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()
    return float(v)


@dataclass
class Sql:
    """A set query of user ids (or its complement when ``negated``) with its parameters."""

    text: str
    params: list[Any] = field(default_factory=list)
    negated: bool = False
    # Every member is among the people the enclosing ANDs' profile conditions select (the
    # rows were restricted to them), so intersecting with those is unnecessary.
    within: bool = False
    # False when an id may appear more than once (see ``_bag``). Set operations (INTERSECT,
    # UNION, EXCEPT) and EXISTS / IN treat it as a set anyway; only the root needs DISTINCT.
    distinct: bool = True


def _join(op: str, parts: list[Sql]) -> Sql:
    if len(parts) == 1:
        return Sql(parts[0].text, list(parts[0].params), distinct=parts[0].distinct)
    text = f" {op} ".join(f"({p.text})" for p in parts)
    return Sql(text, [x for p in parts for x in p.params])


def _bag(rows: Sql) -> Sql:
    """The complement of the people with these event rows, read as the rows' user ids
    without DISTINCT: a complement is only ever subtracted (EXCEPT), intersected or tested
    with EXISTS, which treat it as a set, so deduplicating it first is wasted work (at 100M
    events, segment (a)'s "never uninstalled": a 44k-row DISTINCT took 13 ms of CPU, more
    than the anti-join on the raw rows). Under NOT it becomes a positive set with repeats,
    which ``Compiler.members`` deduplicates if it is the root."""
    return Sql(f"SELECT user_id FROM ({rows.text})", rows.params, negated=True, distinct=False)


EVENT_CONDITIONS = (Did, DidNot, Aggregate, FirstTime, LastDid, Sequence)


def profile_only(node: Node) -> bool:
    """Whether a subtree reads nothing but the person's own profile row."""
    if isinstance(node, And | Or):
        return all(profile_only(c) for c in node.children)
    if isinstance(node, Not):
        return profile_only(node.child)
    return isinstance(node, ProfileIs | Reachable)


_KIND = {Did: "did", DidNot: "did_not", Aggregate: "aggregate", FirstTime: "first_time",
         LastDid: "last_did", Sequence: "sequence", ProfileIs: "profile", Reachable: "reachable",
         InSegment: "segment", And: "and", Or: "or", Not: "not"}
_KIND_PREDICT = {"segments": "rfm_segment", "scores": "rfm_score", "buckets": "intent_bucket",
                 "score": "intent_score"}


def _kind(node: Node) -> str:
    if isinstance(node, Rfm):
        return _KIND_PREDICT["segments" if node.segments else "scores"]
    if isinstance(node, Intent):
        return _KIND_PREDICT["buckets" if node.buckets else "score"]
    return _KIND[type(node)]


def node_paths(node: Node, at: str = "$") -> dict[int, str]:
    """The JSON path of every node and filter of a parsed definition, by ``id``, as the
    parser names them: a node's body (``$.and[1].did``), a filter object
    (``$.and[1].did.where[0]``, ``$.profile``). Compile errors report these."""
    path = f"{at}.{_kind(node)}"
    out = {id(node): path}
    if isinstance(node, And | Or):
        for i, c in enumerate(node.children):
            out.update(node_paths(c, f"{path}[{i}]"))
    elif isinstance(node, Not):
        out.update(node_paths(node.child, path))
    elif isinstance(node, ProfileIs):
        out[id(node.filter)] = path
    elif isinstance(node, Sequence):
        for part, spec in (("first", node.first), ("then", node.then)):
            out.update({id(f): f"{path}.{part}.where[{i}]" for i, f in enumerate(spec.where)})
    elif not isinstance(node, Reachable | InSegment | Rfm | Intent):
        out.update({id(f): f"{path}.where[{i}]" for i, f in enumerate(node.spec.where)})
    return out


class Compiler:
    """Compiles one definition for one account (catalog), at one moment (``now``)."""

    def __init__(self, catalog: PropertyCatalog, now: float, timezone: str = "UTC", *,
                 strict: bool = False, user_id: int | None = None,
                 segment_table: Callable[[int], str] | None = None,
                 events: str = "events",
                 event_properties: Container[tuple[str, str, str]] | None = None,
                 predict: Any = None) -> None:
        if events not in EVENT_SOURCES:
            raise ValueError(f"events must be one of {EVENT_SOURCES}")
        self.catalog = catalog
        # ``events_sorted`` when the caller knows events_recent is empty in its snapshot:
        # DuckDB keeps the table's statistics (user id range, ...) for a plain table scan
        # and not through the ``events`` UNION ALL view.
        self.events = events
        self.now = now
        self.tz = ZoneInfo(timezone)
        self.strict = strict
        self.user_id = user_id
        self.segment_table = segment_table
        self.path = "$"
        # Profile sets (SQL, params) that event rows are restricted to (see visit_And).
        self.restrict: list[tuple[str, list[Any]]] = []
        self.paths: dict[int, str] = {}  # id of a node or filter -> its JSON path
        # (event, property, value type) seen so far: strict mode checks properties per event.
        self.event_properties = event_properties
        # RFM settings and scored goals of the account (nudge.predict.conditions.
        # PredictSource), read only when a definition has an RFM or intent condition.
        self.predict = predict

    def locate(self, root: Node) -> None:
        """Remember the JSON paths under ``root`` so that errors name the offending node."""
        self.paths = node_paths(root)

    def _path(self, obj: object) -> str:
        return self.paths.get(id(obj), "$")

    # -- entry points -------------------------------------------------------------------
    def members(self, node: Node) -> Sql:
        """A query of the members' user ids."""
        self.locate(node)
        sql = self.visit(node)
        if sql.negated:
            universe = self.universe()
            return Sql(f"({universe.text}) EXCEPT ({sql.text})", universe.params + sql.params)
        if not sql.distinct:
            return Sql(f"SELECT DISTINCT user_id FROM ({sql.text})", sql.params,
                       within=sql.within)
        return sql

    def universe(self) -> Sql:
        if self.user_id is None:
            return Sql(UNIVERSE)
        return Sql("SELECT user_id FROM profiles WHERE user_id = ?", [self.user_id])

    def visit(self, node: Node) -> Sql:
        if profile_only(node):
            return self.profile_set(node)
        sql: Sql = getattr(self, f"visit_{type(node).__name__}")(node)
        if self.restrict and isinstance(node, EVENT_CONDITIONS) and not sql.negated:
            sql.within = True
        return sql

    # -- profile-only subtrees ---------------------------------------------------------------
    def profile_set(self, node: Node) -> Sql:
        """A subtree of profile conditions as one scan of ``profiles`` with one predicate
        (rather than one scan per condition and set operations between them)."""
        text, params = self.profile_predicate(node)
        if self.user_id is not None:
            text = f"p.user_id = ? AND {text}"
            params = [self.user_id, *params]
        return Sql(f"SELECT p.user_id FROM profiles p WHERE {text}", params)

    def profile_predicate(self, node: Node) -> tuple[str, list[Any]]:
        """A boolean expression over ``profiles p``: true exactly for the members.

        Leaves may evaluate to NULL (an absent value); in AND / OR that selects the same rows
        as false, and under NOT it is made false first, so NOT keeps the complement."""
        if isinstance(node, ProfileIs):
            return self.filter("profile", node.filter, "p")
        if isinstance(node, Reachable):
            where, params = self.reachable_predicate(node)
            return "(" + " AND ".join(where) + ")", params
        if isinstance(node, Not):
            text, params = self.profile_predicate(node.child)
            return f"(NOT coalesce({text}, false))", params
        assert isinstance(node, And | Or)
        parts = [self.profile_predicate(c) for c in node.children]
        op = " AND " if isinstance(node, And) else " OR "
        return "(" + op.join(t for t, _ in parts) + ")", [x for _, p in parts for x in p]

    # -- boolean structure ------------------------------------------------------------------
    def visit_And(self, node: And) -> Sql:
        profile = [c for c in node.children if profile_only(c)]
        others = [c for c in node.children if not profile_only(c)]
        if profile and others and self.user_id is None:
            # Restrict the event conditions' rows to the people the profile conditions
            # select (a semi-join before aggregating: "City = X" keeps 7% of the rows that
            # "did Charged ≥ 3 times" would otherwise group). Every condition's answer then
            # agrees with the unrestricted one on those people, which is all the AND needs;
            # the profile set is intersected only if no part is already inside it.
            pset = self.profile_set(profile[0] if len(profile) == 1 else And(tuple(profile)))
            parts = []
            for c in others:
                self.restrict.append((pset.text, pset.params))
                try:
                    sql = self.visit(c)
                finally:
                    self.restrict.pop()
                if sql.negated and isinstance(c, EVENT_CONDITIONS):
                    sql = self.visit(c)  # subtracted: restricting its rows saves nothing
                parts.append(sql)
            if not any(p.within and not p.negated for p in parts):
                parts.append(pset)
        else:
            parts = [self.visit(c) for c in node.children]
        pos = [p for p in parts if not p.negated]
        neg = [p for p in parts if p.negated]
        if not pos:
            out = _join("UNION", neg)
            out.negated = True
            return out
        out = _join("INTERSECT", pos)
        out.within = any(p.within for p in pos)
        if neg:
            rest = _join("UNION", neg)
            out = Sql(f"({out.text}) EXCEPT ({rest.text})", out.params + rest.params,
                      within=out.within)
        return out

    def visit_Or(self, node: Or) -> Sql:
        parts = [self.visit(c) for c in node.children]
        pos = [p for p in parts if not p.negated]
        neg = [p for p in parts if p.negated]
        if not neg:
            out = _join("UNION", pos)
            out.within = all(p.within for p in pos)
            return out
        # a ∪ ¬b ∪ ¬c = ¬((b ∩ c) \ a)
        out = _join("INTERSECT", neg)
        if pos:
            rest = _join("UNION", pos)
            out = Sql(f"({out.text}) EXCEPT ({rest.text})", out.params + rest.params)
        out.negated = True
        return out

    def visit_Not(self, node: Not) -> Sql:
        inner = self.visit(node.child)
        inner.negated = not inner.negated
        return inner

    # -- event conditions ------------------------------------------------------------------
    def _events(self, spec: EventSpec, window: Window, *, select: str = "e.user_id",
                since_only: bool = False) -> Sql:
        """``SELECT <select> FROM events e WHERE event = ? AND <window> AND <filters>``."""
        where = ["e.event = ?"]
        params: list[Any] = [spec.event]
        source = f"{self.events} e"
        if window.kind == "last":
            where.append("e.ts >= ?")
            params.append(to_ts(self.now - window.seconds))
        elif window.kind == "between":
            where.append("e.ts >= ?")
            params.append(to_ts(window.start or 0))
            if not since_only:
                where.append("e.ts < ?")
                params.append(to_ts(window.end or 0))
        elif window.kind == "first_days" and not since_only:
            source = f"{self.events} e JOIN profiles p ON p.user_id = e.user_id"
            where.append("e.ts < p.first_seen + to_seconds(?::DOUBLE)")
            params.append(window.seconds)
        if self.user_id is not None:
            where.append("e.user_id = ?")
            params.append(self.user_id)
        for people, people_params in self.restrict:
            where.append(f"e.user_id IN ({people})")
            params += people_params
        for f in spec.where:
            self._check_event_property(spec.event, f.property, f"{self._path(f)}.property")
            text, fparams = self.filter("event", f, "e")
            where.append(text)
            params += fparams
        return Sql(f"SELECT {select} FROM {source} WHERE {' AND '.join(where)}", params)

    def visit_Did(self, node: Did) -> Sql:
        base = self._events(node.spec, node.window)
        op, n = node.op, node.count
        if op == ">=" and n == 0:  # everyone, including people who never did it
            return Sql(NOBODY, negated=True)
        if (op == ">=" and n == 1) or (op == ">" and n == 0) or (op == "!=" and n == 0):
            return Sql(f"SELECT DISTINCT user_id FROM ({base.text})", base.params)
        if (op == "<" and n == 0):
            return Sql(NOBODY)
        if op == "=" and n == 0 or op == "<" and n == 1 or op == "<=" and n == 0:
            return _bag(base)
        # Complements for "at most" so that people who never did it are members.
        negated = op in ("<=", "<", "!=")
        having_op = {"<=": ">", "<": ">=", "!=": "="}.get(op, _CMP[op])
        return Sql(f"SELECT user_id FROM ({base.text}) GROUP BY user_id "
                   f"HAVING count(*) {having_op} ?", base.params + [n], negated)

    def visit_DidNot(self, node: DidNot) -> Sql:
        return _bag(self._events(node.spec, node.window))

    def _check_event_property(self, event: str, name: str, path: str) -> None:
        """Strict mode: the property must have been seen on this event (unknown events are
        valid, but have no properties)."""
        props = self.event_properties
        if not self.strict or props is None:
            return
        if not any((event, name, t) in props for t in _EVENT_VALUE_TYPES):
            raise DefinitionError(path, f"event property {name!r} is not in the catalog for "
                                        f"event {event!r}")

    def visit_Aggregate(self, node: Aggregate) -> Sql:
        self._check_event_property(node.spec.event, node.property,
                                   f"{self._path(node)}.property")
        col = self.column("event", node.property, f"{self._path(node)}.property")
        if col is None:  # a property nobody has: every sum / distinct count is 0
            self._events(node.spec, node.window)  # the event's filters must still be valid
            zero = node.fn in ("sum", "count_distinct") and _compare(0, node.op, node.value)
            return Sql(NOBODY, negated=zero)
        if node.fn != "count_distinct" and col.type != "number":
            raise DefinitionError(f"{self._path(node)}.property",
                                  f"{node.fn} needs a number property; "
                                  f"{node.property!r} is {col.type}")
        base = self._events(node.spec, node.window, select=f"e.user_id, e.{col.column} AS v")
        agg = "count(DISTINCT v)" if node.fn == "count_distinct" else f"{node.fn}(v)"
        holds_for_zero = node.fn in ("sum", "count_distinct") and _compare(0, node.op, node.value)
        inner = f"SELECT user_id FROM ({base.text}) WHERE v IS NOT NULL GROUP BY user_id"
        if holds_for_zero:
            # People without events count as 0 and are members: take the complement of
            # those whose total fails the comparison.
            return Sql(f"SELECT user_id FROM ({base.text}) GROUP BY user_id "
                       f"HAVING NOT (coalesce({agg}, 0) {_CMP[node.op]} ?)",
                       base.params + [node.value], negated=True)
        return Sql(f"{inner} HAVING {agg} {_CMP[node.op]} ?", base.params + [node.value])

    def visit_FirstTime(self, node: FirstTime) -> Sql:
        base = self._events(node.spec, Window(), select="e.user_id, e.ts")
        w = node.window
        if w.kind == "first_days":
            return Sql(f"SELECT b.user_id FROM ({base.text}) b JOIN profiles p USING (user_id) "
                       "GROUP BY b.user_id, p.first_seen "
                       "HAVING min(b.ts) < p.first_seen + to_seconds(?::DOUBLE)",
                       base.params + [w.seconds])
        lo, hi = self._bounds(w)
        having = ["min(ts) >= ?"]
        params = base.params + [to_ts(lo)]
        if hi is not None:
            having.append("min(ts) < ?")
            params.append(to_ts(hi))
        return Sql(f"SELECT user_id FROM ({base.text}) GROUP BY user_id "
                   f"HAVING {' AND '.join(having)}", params)

    def _bounds(self, w: Window) -> tuple[float, float | None]:
        if w.kind == "last":
            return self.now - w.seconds, None
        if w.kind == "between":
            return w.start or 0.0, w.end
        return 0.0, None

    def visit_LastDid(self, node: LastDid) -> Sql:
        # Less than T ago: did it in the last T. More than T ago (or never): did not.
        base = self._events(node.spec, Window("last", node.seconds))
        if node.more_than:
            return _bag(base)
        return Sql(f"SELECT DISTINCT user_id FROM ({base.text})", base.params)

    def visit_Sequence(self, node: Sequence) -> Sql:
        if node.within is None:
            return self._sequence_any_time(node)
        a = self._events(node.first, node.window, select="e.user_id, e.ts, e.seq")
        b = self._events(node.then, node.window, select="e.user_id, e.ts, e.seq",
                         since_only=True)
        after = ("(b.ts > a.ts OR (b.ts = a.ts AND b.seq > a.seq)) "
                 "AND b.ts <= a.ts + to_seconds(?::DOUBLE)")
        params: list[Any] = [node.within]
        if node.then_happened:
            return Sql(f"SELECT DISTINCT a.user_id FROM ({a.text}) a JOIN ({b.text}) b "
                       f"ON a.user_id = b.user_id AND {after}", a.params + b.params + params)
        # Abandonment: the last `first` was not followed by `then` (within the time).
        last = (f"SELECT user_id, ts, seq FROM ({a.text}) "
                "QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY ts DESC, seq DESC) = 1")
        return Sql(f"SELECT a.user_id FROM ({last}) a WHERE NOT EXISTS (SELECT 1 FROM ({b.text}) b "
                   f"WHERE b.user_id = a.user_id AND {after})", a.params + b.params + params)

    def _sequence_any_time(self, node: Sequence) -> Sql:
        """Without a time limit only each person's extreme events matter: some `then`
        follows some `first` ⇔ the last `then` is after the first `first`; no `then` follows
        the last `first` ⇔ the last `then` is not after it.

        Both sides' rows (user, ts, seq, and which side) are read once into one small
        materialized set; one aggregate over it gives each person's extreme `first` and last
        `then` time (rather than one aggregate per side and a join between them, or pairing
        every `first` with every `then` of the same person). "After" is (ts, seq) order: the
        aggregate takes ts alone (a cheap aggregate); people whose two extreme times are
        equal, which is rare, are decided by the seq of their rows at that time, from the
        same materialized set (no second scan of the events)."""
        a = self._events(node.first, node.window, select="e.user_id, e.ts, e.seq")
        b = self._events(node.then, node.window, select="e.user_id, e.ts, e.seq",
                         since_only=True)
        fa = "min" if node.then_happened else "max"
        head = ("WITH seq_rows AS MATERIALIZED ("
                f"SELECT user_id, ts, seq, true AS f FROM ({a.text}) UNION ALL "
                f"SELECT user_id, ts, seq, false AS f FROM ({b.text})), "
                f"seq_ends AS (SELECT user_id, {fa}(ts) FILTER (f) AS ta, "
                "max(ts) FILTER (NOT f) AS tb FROM seq_rows GROUP BY user_id) ")
        # Tied extremes: compare the last `then`'s seq with the `first`'s at that time.
        fs = "min" if node.then_happened else "max"
        cmp = ">" if node.then_happened else "<="
        tied = ("SELECT e.user_id FROM seq_ends e JOIN seq_rows r "
                "ON r.user_id = e.user_id AND r.ts = e.ta WHERE e.tb = e.ta "
                f"GROUP BY e.user_id HAVING max(r.seq) FILTER (NOT r.f) {cmp} "
                f"{fs}(r.seq) FILTER (r.f)")
        if node.then_happened:
            untied = "SELECT user_id FROM seq_ends WHERE tb > ta"
        else:
            untied = ("SELECT user_id FROM seq_ends WHERE ta IS NOT NULL "
                      "AND (tb IS NULL OR tb < ta)")
        return Sql(f"{head}{untied} UNION ALL {tied}", a.params + b.params)

    # -- profile conditions --------------------------------------------------------------
    def reachable_predicate(self, node: Reachable) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        if node.channel == "email":
            where.append("p.email IS NOT NULL")
        elif node.channel in ("sms", "whatsapp"):
            where.append("p.phone IS NOT NULL")
        else:
            kinds = ["fcm", "apns"] if node.channel == "push" else ["webpush"]
            where.append("p.user_id IN (SELECT user_id FROM identities WHERE kind IN (?, ?))")
            params += [kinds[0], kinds[-1]]
        sub = self.catalog.get("profile", SUBSCRIPTION[node.channel])
        if sub is not None and sub.type == "boolean":
            where.append(f"p.{sub.column} IS NOT false")
        return where, params

    def visit_InSegment(self, node: InSegment) -> Sql:
        if self.segment_table is None:
            raise DefinitionError(self._path(node), "segment references need saved segments")
        table = self.segment_table(node.segment_id)
        return Sql(f"SELECT user_id FROM {table}", [], negated=not node.member)

    def visit_Rfm(self, node: Rfm) -> Sql:
        from nudge.predict.conditions import rfm_members

        return rfm_members(self, node)

    def visit_Intent(self, node: Intent) -> Sql:
        from nudge.predict.conditions import intent_members

        return intent_members(self, node)

    # -- property filters ------------------------------------------------------------------
    def column(self, scope: str, name: str, path: str | None = None) -> Column | None:
        col = SYSTEM_PROFILE.get(name) if scope == "profile" else None
        col = col or self.catalog.get(scope, name)
        if col is None and self.strict:
            raise DefinitionError(path or self.path,
                                  f"{scope} property {name!r} is not in the catalog")
        return col

    def filter(self, scope: str, f: Filter, alias: str) -> tuple[str, list[Any]]:
        """A boolean SQL expression for one property filter, and its parameters.

        Absent values: ``neq``, ``not_in``, ``not_contains`` and ``not_exists`` match people
        without the property; every other operator does not.
        """
        known = self.paths.get(id(f))  # None: the caller set ``self.path`` (analytics)
        col = self.column(scope, f.property, None if known is None else f"{known}.property")
        if known is not None:
            self.path = f"{known}.value"  # where a type mismatch is reported
        if col is None:  # a property nobody has: only negative operators hold
            return ("true" if f.op in _NEGATIVE_OPS else "false"), []
        ref = f"{alias}.{col.column}"
        method = getattr(self, f"_filter_{col.type}")
        text, params = method(ref, f, col)
        if f.op in _NEGATIVE_OPS and f.op != "not_exists":
            text = f"({ref} IS NULL OR {text})"
        return text, params

    def _mismatch(self, f: Filter, col: Column) -> DefinitionError:
        return DefinitionError(self.path, f"operator {f.op!r} with value {f.value!r} does not "
                                          f"apply to {col.type} property {f.property!r}")

    def _exists(self, ref: str, f: Filter) -> tuple[str, list[Any]] | None:
        if f.op == "exists":
            return f"{ref} IS NOT NULL", []
        if f.op == "not_exists":
            return f"{ref} IS NULL", []
        return None

    def _filter_string(self, ref: str, f: Filter, col: Column) -> tuple[str, list[Any]]:
        if (hit := self._exists(ref, f)) is not None:
            return hit
        values = f.value if f.op in ("in", "not_in") else (f.value,)
        if not all(isinstance(v, str) for v in values):
            raise self._mismatch(f, col)
        if f.op == "eq":
            return f"{ref} = ?", [f.value]
        if f.op == "neq":
            return f"{ref} <> ?", [f.value]
        if f.op in ("in", "not_in"):
            # One list parameter: DuckDB evaluates ``col IN (?, ?, ?)`` on strings as an OR of
            # comparisons after the scan (plus a zone-map-only copy in it); list_contains
            # took 0.6x its CPU (profile (e) at 100M: 21.7 vs 36.2 ms). Numbers gain nothing.
            word = "" if f.op == "in" else "NOT "
            return f"{word}list_contains(?::VARCHAR[], {ref})", [list(values)]
        if f.op == "contains":
            return f"contains({ref}, ?)", [f.value]
        if f.op == "not_contains":
            return f"NOT contains({ref}, ?)", [f.value]
        if f.op == "starts_with":
            return f"starts_with({ref}, ?)", [f.value]
        raise self._mismatch(f, col)

    def _filter_number(self, ref: str, f: Filter, col: Column) -> tuple[str, list[Any]]:
        if (hit := self._exists(ref, f)) is not None:
            return hit
        values = (f.value if f.op in ("in", "not_in", "between") else (f.value,))
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise self._mismatch(f, col)
        if f.op in ("eq", "neq"):
            return f"{ref} {'=' if f.op == 'eq' else '<>'} ?", [float(f.value)]
        if f.op in ("in", "not_in"):
            word = "IN" if f.op == "in" else "NOT IN"
            return f"{ref} {word} ({', '.join('?' * len(values))})", [float(v) for v in values]
        if f.op in _ORDER:
            return f"{ref} {_ORDER[f.op]} ?", [float(f.value)]
        if f.op == "between":
            return f"{ref} BETWEEN ? AND ?", [float(values[0]), float(values[1])]
        raise self._mismatch(f, col)

    def _filter_boolean(self, ref: str, f: Filter, col: Column) -> tuple[str, list[Any]]:
        if (hit := self._exists(ref, f)) is not None:
            return hit
        if f.op not in ("eq", "neq") or not isinstance(f.value, bool):
            raise self._mismatch(f, col)
        return f"{ref} {'=' if f.op == 'eq' else '<>'} ?", [f.value]

    def _filter_date(self, ref: str, f: Filter, col: Column) -> tuple[str, list[Any]]:
        if (hit := self._exists(ref, f)) is not None:
            return hit
        day = 86400.0
        if f.op in _ORDER:
            return f"{ref} {_ORDER[f.op]} ?", [to_ts(self._date_value(f, col))]
        if f.op == "between":
            lo, hi = (self._date_value(Filter(f.property, f.op, v), col) for v in f.value)
            return f"{ref} BETWEEN ? AND ?", [to_ts(lo), to_ts(hi)]
        if f.op == "before_days_ago":
            return f"{ref} < ?", [to_ts(self.now - f.value * day)]
        if f.op == "after_days_ago":
            return f"{ref} >= ?", [to_ts(self.now - f.value * day)]
        if f.op == "within_next_days":
            return f"({ref} >= ? AND {ref} < ?)", [to_ts(self.now),
                                                   to_ts(self.now + f.value * day)]
        if f.op == "anniversary_within_days":
            return (f"(month({ref}) * 100 + day({ref})) IN (SELECT unnest(?::INTEGER[]))",
                    [self._month_days(int(f.value))])
        raise self._mismatch(f, col)

    def _date_value(self, f: Filter, col: Column) -> float:
        if isinstance(f.value, bool) or not isinstance(f.value, str | int | float):
            raise self._mismatch(f, col)
        return to_epoch(f.value)

    def _month_days(self, days: int) -> list[int]:
        """month*100+day codes of today and the next ``days`` days, in the account's zone."""
        today = dt.datetime.fromtimestamp(self.now, self.tz).date()
        return sorted({(d.month * 100 + d.day) for d in
                       (today + dt.timedelta(days=i) for i in range(min(days, 366) + 1))})

    def _filter_list(self, ref: str, f: Filter, col: Column) -> tuple[str, list[Any]]:
        if (hit := self._exists(ref, f)) is not None:
            return hit
        values = f.value if f.op in ("in", "not_in") else (f.value,)
        if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in values):
            raise self._mismatch(f, col)
        items = [_as_item(v) for v in values]
        if f.op in ("eq", "contains", "in"):  # any element equals (one of) the value(s)
            return f"list_has_any({ref}, ?::VARCHAR[])", [items]
        if f.op in ("neq", "not_contains", "not_in"):
            return f"NOT list_has_any({ref}, ?::VARCHAR[])", [items]
        raise self._mismatch(f, col)


def _as_item(v: Any) -> str:
    """Multi-value items are stored as strings; 5 and 5.0 both match "5"."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _compare(a: float, op: str, b: float) -> bool:
    return {">=": a >= b, ">": a > b, "<=": a <= b, "<": a < b, "=": a == b, "!=": a != b}[op]
