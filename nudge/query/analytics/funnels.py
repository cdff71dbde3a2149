"""Funnels: how many users went through 2–10 steps, within a conversion window.

A user enters with a first-step event inside [from, to); later steps may fall after ``to``
as long as they are within the window of the entering event. Each user counts once, with
the furthest step any of their attempts reached (like ClickHouse's ``windowFunnel``). Orders
(precise definitions in docs/analytics.md):

- ``ordered`` (default): steps in order, other events allowed between;
- ``strict``: each step is the user's very next event after the previous step;
- ``any``: steps 1…k all happened within the window, in any order.

SQL selects the step events (pruned by the (event, ts) layout: only the steps' events of
the range are read; ``strict`` also reads the other events of users who entered) and marks
each with the steps it matches; the ordered pass over each user's stream is done in numpy
(``funnel_match``, see ``streams`` for why). Breakdowns by an event property and the
conversion trend partition the streams by (user, group of the entering event). An
``ordered`` funnel without those reads each step's events in its own scan and matches per
step on sorted keys instead (``funnel_match.ordered_by_step``: 0.6x chDB's time at 100M
events, docs/benchmarks.md).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from nudge.query.segments.compiler import to_ts
from nudge.store.catalog import Column, from_column_value

from . import funnel_match
from .buckets import Buckets, iso_local
from .common import INTERVALS, Report, ReportError
from .funnel_match import NO_LIMIT, Match, Windows
from .rollup import (
    GROUPABLE,
    PROFILE_JOIN,
    EventFilter,
    event_rows,
    group_dim,
    property_column,
    top_values,
)
from .selection import Audience, EventSpec, duration, no_unknown
from .streams import Streams, distinct, quantile

ORDERS = ("ordered", "strict", "any")
MIN_STEPS, MAX_STEPS = 2, 10
DEFAULT_WINDOW_S = 30 * 86_400
MAX_GROUPS = 50
US = 1_000_000
# Time-to-convert histogram bin edges (seconds), cut at the conversion window.
HISTOGRAM_EDGES_S = (0, 10, 30, 60, 120, 300, 600, 1_800, 3_600, 7_200, 21_600, 43_200,
                     86_400, 172_800, 259_200, 604_800, 1_209_600, 2_592_000, 5_184_000,
                     7_776_000, 15_552_000)
FIELDS = ("steps", "order", "window", "from", "to", "breakdown", "interval", "segment",
          "profile_where")
USER_FIELDS = ("step", "status", "limit", "cursor", "format")
T = TypeVar("T")


@dataclass(frozen=True)
class Step:
    spec: EventSpec
    within_s: float | None  # from the previous step (not for the first)


@dataclass(frozen=True)
class Breakdown:
    scope: str
    name: str  # the property's
    column: Column
    limit: int

    @property
    def expr(self) -> str:
        return f"{'e' if self.scope == 'event' else 'p'}.{self.column.column}"


@dataclass
class Result:
    """Per stream (a user, or a user and group): keys and how far/fast it got."""

    users: np.ndarray
    groups: np.ndarray | None
    match: Match


class Funnel:
    """A parsed, checked funnel request for one account."""

    def __init__(self, report: Report, body: Any, extra: tuple[str, ...] = ()) -> None:
        if not isinstance(body, dict):
            raise ReportError("body", "must be an object")
        no_unknown(body, FIELDS + extra)
        self.report, self.body = report, body
        self.steps = self._steps(report.field(body, "steps", list))
        self.order = report.choice(body, "order", ORDERS, "ordered")
        self.window_s = float(duration(report, body, "window", DEFAULT_WINDOW_S) or 0)
        self.lo, self.hi = report.time_range(body)
        self.breakdown = self._breakdown(body.get("breakdown"))
        interval = body.get("interval")
        self.interval = None if interval is None else report.choice(body, "interval", INTERVALS)
        self.audience = Audience.parse(report, body)
        if self.order == "any" and any(s.within_s for s in self.steps):
            i = next(i for i, s in enumerate(self.steps) if s.within_s)
            raise ReportError(f"steps[{i}].within", "applies to ordered and strict funnels only")

    # -- parsing --------------------------------------------------------------------------
    def _steps(self, items: list[Any]) -> list[Step]:
        if not MIN_STEPS <= len(items) <= MAX_STEPS:
            raise ReportError("steps", f"must have {MIN_STEPS} to {MAX_STEPS} steps, "
                                       f"not {len(items)}")
        steps = []
        for i, item in enumerate(items):
            path = f"steps[{i}]"
            spec = EventSpec.parse(self.report, item, path)
            no_unknown(item, ("event", "where", "within"), f"{path}.")
            within = duration(self.report, item, "within", None, f"{path}.")
            if i == 0 and within is not None:
                raise ReportError(f"{path}.within", "the first step has no previous step")
            steps.append(Step(spec, within))
        return steps

    def _breakdown(self, spec: Any) -> Breakdown | None:
        if spec is None:
            return None
        r = self.report
        if not isinstance(spec, dict):
            raise ReportError("breakdown", "must be an object")
        scope = r.choice(spec, "scope", ("event", "profile"), "event", path="breakdown.")
        col = property_column(r, scope, spec.get("property"), "breakdown.property", GROUPABLE)
        limit = r.positive_int(spec, "limit", 10, MAX_GROUPS, path="breakdown.")
        return Breakdown(scope, spec["property"], col, limit)

    @property
    def windows(self) -> Windows:
        steps = tuple(NO_LIMIT if s.within_s is None else round(s.within_s * US)
                      for s in self.steps)
        return Windows(round(self.window_s * US), steps)

    # -- running ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        return self.in_snapshot(self._report)

    def in_snapshot(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """``fn(cursor)`` in one snapshot, with the segment filter registered."""
        with self.report.store.cursor() as cur:
            cur.execute("BEGIN TRANSACTION")  # one snapshot for every query of the report
            try:
                self.audience = self.audience.on(self.report, cur, self.body)
                return fn(cur)
            finally:
                cur.execute("ROLLBACK")

    def _report(self, cur: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        overall = self._match(cur)
        out = self._header()
        out.update(self._summary(overall.match))
        if self.breakdown is not None:
            out["breakdown"] = self._by_group(cur, overall)
        if self.interval is not None:
            out["trend"] = self._trend(cur)
        return out

    def _match(self, cur: duckdb.DuckDBPyConnection, group: tuple[str, list[Any]] | None = None
               ) -> Result:
        """Stream per user (or per user and ``group`` of the entering event) and match."""
        if group is None and self.order == "ordered":
            matched = funnel_match.ordered_by_step(self._step_rows(cur), self.windows)
            if matched is not None:
                return Result(matched[0], None, matched[1])
        sql, params = self._rows_sql(group)
        cols = {k: np.asarray(v) for k, v in cur.execute(sql, params).fetchnumpy().items()}
        by = ("u",) if group is None else ("u", "g")
        if self.order != "any":
            # Only an entering event (inside the range, of this stream's group) starts a chain.
            cols["m"] = np.where(cols["entry"], cols["m"], cols["m"] & ~1)
        cols, entered = _first_step_only(cols, by)
        s = Streams.build(cols, by)
        mask, entry = s.rows["m"], s.rows["entry"].astype(bool)
        if self.order == "any":
            match = funnel_match.any_order(s, mask, entry, self.windows.total, len(self.steps))
        else:
            matcher = funnel_match.ordered if self.order == "ordered" else funnel_match.strict
            match = matcher(s, mask, self.windows)
        return _combine(Result(s.keys["u"], s.keys.get("g"), match), entered, len(self.steps))

    # -- SQL ----------------------------------------------------------------------------------
    def _step_rows(self, cur: duckdb.DuckDBPyConnection) -> list[funnel_match.StepRows]:
        """Per step, its events (user, µs, seq): step 1's entering ones, the others' up to a
        window after the range. One query per step: three plain scans cost less than half
        of one scan computing a step mask per row (100M events, docs/benchmarks.md)."""
        where, params = self._audience_in_range()
        got: dict[tuple[str, str], funnel_match.StepRows] = {}  # a repeated step: once
        out = []
        for i, step in enumerate(self.steps):
            cond, p = step.spec.condition()
            if i == 0:
                cond, p = f"{cond} AND e.ts < ?", [*p, to_ts(self.hi)]
            key = (cond, repr(p))
            if key not in got:
                cols = cur.execute("SELECT e.user_id AS u, epoch_us(e.ts) AS t, e.seq AS seq "
                                   f"FROM events e WHERE {' AND '.join(where)} AND {cond}",
                                   [*params, *p]).fetchnumpy()
                got[key] = tuple(np.asarray(cols[c], dtype=np.int64) for c in ("u", "t", "seq"))
            out.append(got[key])
        return out

    def _rows_sql(self, group: tuple[str, list[Any]] | None) -> tuple[str, list[Any]]:
        """Rows (u, t µs, seq, m = bit mask of matched steps, entry = may enter), and with a
        ``group`` expression, each row once per group of the user it can take part in."""
        masks, params = [], []
        for i, step in enumerate(self.steps):
            cond, p = step.spec.condition()
            masks.append(f"(CASE WHEN {cond} THEN {1 << i} ELSE 0 END)")
            params += p
        cols = (f"e.user_id AS u, epoch_us(e.ts) AS t, e.seq AS seq, "
                f"({' + '.join(masks)})::INTEGER AS m, e.ts < ? AS entry")
        params.append(to_ts(self.hi))
        if group is not None:
            cols += f", CASE WHEN e.ts < ? THEN {group[0]} END AS g"
            params += [to_ts(self.hi), *group[1]]
        where, wparams = self._scan()
        rows = f"SELECT {cols} FROM events e WHERE {' AND '.join(where)}"
        params += wparams
        if self.order != "strict":
            rows = f"SELECT * FROM ({rows}) WHERE m <> 0"
        if group is None:
            return rows, params
        return self._per_group(rows), params + [self.windows.total]

    def _scan(self) -> tuple[list[str], list[Any]]:
        """Which events are read: the range, the steps' events (all events of the users who
        entered, for strict), the audience."""
        where, params = self._audience_in_range()
        if self.order == "strict":
            cond, p = self.steps[0].spec.condition()
            where.append(f"e.user_id IN (SELECT e.user_id FROM events e WHERE {cond} "
                         "AND e.ts >= ? AND e.ts < ?)")
            params += [*p, to_ts(self.lo), to_ts(self.hi)]
        else:
            names = sorted({s.spec.event for s in self.steps})
            where.append(f"e.event IN ({', '.join('?' * len(names))})")
            params += names
        return where, params

    def _audience_in_range(self) -> tuple[list[str], list[Any]]:
        """The audience's events from ``from`` to a window after ``to``."""
        a_where, a_params = self.audience.conditions()
        return (["e.ts >= ?", "e.ts < ?", *a_where],
                [to_ts(self.lo), to_ts(self.hi + self.window_s), *a_params])

    def _per_group(self, rows: str) -> str:
        """Each row joined to every group the user entered in, if it is close enough in time
        to take part (between the group's first entry and its last entry + window); a row
        enters only the group of its own entering event."""
        enters = "m <> 0" if self.order == "any" else "m & 1 <> 0"
        return (f"WITH r AS ({rows}), "
                f"k AS (SELECT u, g, min(t) AS lo, max(t) AS hi FROM r "
                f"WHERE entry AND {enters} GROUP BY u, g) "
                "SELECT r.u, k.g, r.t, r.seq, r.m, (r.entry AND r.g = k.g) AS entry "
                "FROM r JOIN k ON r.u = k.u AND r.t >= k.lo AND r.t <= k.hi + ?")

    # -- the response -------------------------------------------------------------------------
    def _header(self) -> dict[str, Any]:
        tz = self.report.tz
        return {"order": self.order, "window_s": self.window_s,
                "timezone": self.report.timezone,
                "from": iso_local(self.lo, tz), "to": iso_local(self.hi, tz)}

    def _summary(self, match: Match) -> dict[str, Any]:
        reached = _reached(match.level, len(self.steps))
        steps = []
        for k, step in enumerate(self.steps):
            prev = reached[k - 1] if k else reached[0]
            item: dict[str, Any] = {
                "step": k + 1, "event": step.spec.event, "users": reached[k],
                "conversion": _rate(reached[k], reached[0]),
                "from_previous": _rate(reached[k], prev),
                "dropped": prev - reached[k], "drop_off": _rate(prev - reached[k], prev),
            }
            if step.within_s is not None:
                item["within_s"] = step.within_s
            if k:
                item["time_from_start"] = _quantiles(match.first[k])
            steps.append(item)
        ttc = match.first[-1]
        return {"steps": steps, "entered": reached[0], "converted": reached[-1],
                "conversion": _rate(reached[-1], reached[0]),
                "time_to_convert": dict(_quantiles(ttc), histogram=self._histogram(ttc))}

    def _histogram(self, durations: np.ndarray) -> list[dict[str, Any]]:
        """Converted users per bin of time to convert (seconds; bins end at the window)."""
        window = self.window_s
        edges = [e for e in HISTOGRAM_EDGES_S if e < window] + [window]
        done = durations[durations >= 0] / US
        # Bins are [a, b); the last is [a, window] (a conversion may take the whole window).
        idx = np.minimum(np.searchsorted(np.array(edges), done, side="right") - 1,
                         len(edges) - 2)
        counts = np.bincount(idx, minlength=len(edges) - 1)
        return [{"from_s": edges[i], "to_s": edges[i + 1], "users": int(counts[i])}
                for i in range(len(edges) - 1)]

    def _groups(self, cur: duckdb.DuckDBPyConnection, b: Breakdown) -> tuple[list[Any], bool]:
        """The breakdown's top values on the entering events, by event count."""
        steps = self.steps if self.order == "any" else self.steps[:1]
        join = PROFILE_JOIN if b.scope == "profile" else ""
        sources = [event_rows(s.spec.event, self.lo, self.hi, self._filter(s.spec), join)
                   for s in steps]
        return top_values(cur, sources, b.expr, b.limit)

    def _filter(self, spec: EventSpec) -> EventFilter:
        return EventFilter((spec.where, list(spec.params)), self.audience.profiles,
                           self.audience.segment)

    def _by_group(self, cur: duckdb.DuckDBPyConnection, overall: Result) -> dict[str, Any]:
        b = self.breakdown
        assert b is not None
        values, other = self._groups(cur, b)
        dim = group_dim(b.expr, values, other)
        if b.scope == "event":
            result = self._match(cur, (dim.sql, dim.params))
            groups, levels = result.groups, result.match.level
        else:
            groups, levels = _profile_groups(cur, overall.users, dim), overall.match.level
        labels: list[dict[str, Any]] = [{"value": from_column_value(v, b.column.type)}
                                        for v in values]
        if other:
            labels.append({"other": True})
        n = len(self.steps)
        for i, label in enumerate(labels):
            reached = _reached(levels[groups == i], n) if groups is not None else [0] * n
            label.update(users=reached, conversion=_rate(reached[-1], reached[0]))
        return {"scope": b.scope, "property": b.name, "groups": labels}

    def _trend(self, cur: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        """Per interval of the entering event (account timezone): the funnel of the users who
        entered then, i.e. the funnel with from/to set to that interval."""
        assert self.interval is not None
        buckets = Buckets(self.interval, self.report.tz, self.lo, self.hi)
        key_sql, key_params = buckets.key_sql("e.ts")
        result = self._match(cur, (key_sql, key_params))
        n = len(self.steps)
        users = [_reached(result.match.level[result.groups == i], n)
                 for i in range(len(buckets))]
        return {"interval": self.interval, "buckets": buckets.labels(), "users": users,
                "conversion": [_rate(u[-1], u[0]) for u in users]}

    # -- who converted or dropped -----------------------------------------------------------
    def user_ids(self, cur: duckdb.DuckDBPyConnection, step: int, status: str) -> np.ndarray:
        """Users who reached ``step`` (converted) or reached the one before but not it
        (dropped), in id order."""
        result = self._match(cur)
        level = result.match.level
        hit = level >= step if status == "converted" else level == step - 1
        return np.sort(result.users[hit])


def _first_step_only(cols: dict[str, np.ndarray], by: tuple[str, ...]
                     ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Set aside the users whose rows match no step but the first: they reach step 1 if they
    entered and no further, so they need no sorting or matching (in a view → cart → buy
    funnel, a third of the rows belong to people who only viewed). Returns the other rows,
    and the keys of the streams set aside that entered."""
    u, m = cols["u"], cols["m"]
    later = np.zeros(int(u.max()) + 1 if len(u) else 0, dtype=bool)
    later[u[(m & ~1) != 0]] = True
    keep = later[u]
    entering = ~keep & ((m & 1) != 0) & cols["entry"].astype(bool)
    users = u[entering]
    if len(by) == 1:
        return {k: v[keep] for k, v in cols.items()}, {"u": distinct(users)}
    # (user, group) pairs as one number (np.unique over rows is ten times slower).
    g = cols["g"][entering].astype(np.int64)
    width = int(g.max()) + 1 if len(g) else 1
    pairs = distinct(users * width + g)
    return {k: v[keep] for k, v in cols.items()}, {"u": pairs // width, "g": pairs % width}



def _combine(result: Result, entered: dict[str, np.ndarray], n: int) -> Result:
    """``result`` with the streams that reached step 1 only."""
    count = len(entered["u"])
    if not count:
        return result
    match = Match(np.concatenate([result.match.level, np.ones(count, dtype=np.int64)]),
                  [np.concatenate([f, np.full(count, 0 if k == 0 else -1, dtype=np.int64)])
                   for k, f in enumerate(result.match.first)])
    groups = None if result.groups is None else np.concatenate([result.groups, entered["g"]])
    return Result(np.concatenate([result.users, entered["u"]]), groups, match)


def _reached(level: np.ndarray, n: int) -> list[int]:
    """Streams that reached each step (1…n), from the furthest step of each."""
    counts = np.bincount(level, minlength=n + 1)[1:]
    return [int(x) for x in np.cumsum(counts[::-1])[::-1]]


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _quantiles(durations: np.ndarray) -> dict[str, float | None]:
    done = durations[durations >= 0]
    med, p90 = quantile(done, 0.5), quantile(done, 0.9)
    return {"median_s": None if med is None else med / US,
            "p90_s": None if p90 is None else p90 / US}


def _profile_groups(cur: duckdb.DuckDBPyConnection, users: np.ndarray, dim: Any) -> np.ndarray:
    """The breakdown group of each of ``users`` (in that order), from their profile."""
    cur.register("_funnel_users", pa.table({"u": pa.array(users, pa.int64()),
                                            "i": pa.array(np.arange(len(users)))}))
    try:
        got = cur.execute(f"SELECT {dim.sql} AS g FROM _funnel_users f "
                          "LEFT JOIN profiles p ON p.user_id = f.u ORDER BY f.i",
                          dim.params).fetchnumpy()
    finally:
        cur.unregister("_funnel_users")
    return np.asarray(got["g"])


# -- entry points -------------------------------------------------------------------------------
def funnels(report: Report, body: Any) -> dict[str, Any]:
    """Run a funnel request (the body of ``POST /1/analytics/funnels``)."""
    return Funnel(report, body).run()


def funnel_users(report: Report, body: Any) -> tuple[str, Any]:
    """The users who converted at or dropped before a step (``POST
    /1/analytics/funnels/users``): a page of profiles (``("json", dict)``) or every one of
    them as CSV (``("csv", bytes)``)."""
    funnel = Funnel(report, body, USER_FIELDS)
    n = len(funnel.steps)
    step = report.positive_int(body, "step", None, n)
    status = report.choice(body, "status", ("converted", "dropped"), "converted")
    if status == "dropped" and step == 1:
        raise ReportError("step", "dropped users are counted from step 2 (step 1 is entering)")
    fmt = report.choice(body, "format", ("json", "csv"), "json")
    limit = report.positive_int(body, "limit", 100, 1000)
    after = report.field(body, "cursor", int, 0)

    def run(cur: duckdb.DuckDBPyConnection) -> tuple[str, Any]:
        ids = funnel.user_ids(cur, step, status)
        if fmt == "csv":
            return "csv", _csv(_profiles(cur, ids))
        page = ids[ids > after][:limit]
        rows = _profiles(cur, page).to_pylist()
        more = len(page) == limit and bool((ids > page[-1]).any())
        return "json", {"step": step, "status": status, "total": int(len(ids)),
                        "users": rows, "next_cursor": int(page[-1]) if more else None}

    return funnel.in_snapshot(run)


def _profiles(cur: duckdb.DuckDBPyConnection, ids: np.ndarray) -> pa.Table:
    """id, identity, email and phone of ``ids`` (sorted), in id order."""
    cur.register("_funnel_ids", pa.table({"id": pa.array(ids, pa.int64())}))
    try:
        table = cur.execute("SELECT f.id, p.identity, p.email, p.phone FROM _funnel_ids f "
                            "LEFT JOIN profiles p ON p.user_id = f.id ORDER BY f.id").arrow()
        # Read it all while the ids are registered: the reader is lazy.
        return table.read_all() if isinstance(table, pa.RecordBatchReader) else table
    finally:
        cur.unregister("_funnel_ids")


def _csv(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pacsv.write_csv(table, out)
    return out.getvalue()
