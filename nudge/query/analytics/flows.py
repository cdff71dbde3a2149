"""Flows: the most common paths of events after (or before) a chosen event, as a Sankey graph.

Each user's events in [from, to) (less any ``exclude``-d event names) are split into sessions
at inactivity gaps longer than ``session_gap`` (30 minutes by default), and consecutive
repeats of an event within a session collapse into one step (``A A B`` is ``A → B``). In
every session that contains the anchor event (name and property filters; a collapsed run
counts if any of its events matches), the path is the anchor's *first* occurrence and the
next ``steps`` steps after it (or the ``steps`` steps before it) within the session.

The graph has a node per (step, event) for the ``top`` events of each step by number of
paths, and one "other" node per step for the rest; links are weighted by the paths going from
one node to the next, and each node counts the paths that end there. The most common whole
paths (by exact event names) come as ``sequences``.

SQL reads every event of the users who did the anchor in the range (with a code per event
name); sessions, collapsing and paths are vectorised numpy passes over the streams (see
``streams``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np

from nudge.query.segments.compiler import to_ts

from .buckets import iso_local
from .common import Report, ReportError
from .selection import Audience, EventSpec, duration, no_unknown
from .streams import Streams, distinct

DIRECTIONS = ("after", "before")
MAX_STEPS = 10
MAX_TOP = 50
MAX_SEQUENCES = 100
DEFAULT_GAP_S = 30 * 60
US = 1_000_000
FIELDS = ("event", "where", "direction", "steps", "session_gap", "top", "sequences",
          "exclude", "from", "to", "segment", "profile_where")


@dataclass
class Paths:
    """One row per path: event codes by column (-1 where the path has no step), the users."""

    codes: np.ndarray  # (paths, steps + 1); column ``anchor`` holds the anchor event
    users: np.ndarray
    anchor: int  # the anchor's column: 0 after, ``steps`` before


@dataclass
class Steps:
    """The steps of every session: consecutive repeats of an event collapsed into one."""

    code: np.ndarray  # event code of each step
    hit: np.ndarray  # some event of the step matches the anchor
    user: np.ndarray
    session: np.ndarray  # session number of each step
    first: np.ndarray  # first step of each session


def collapse(s: Streams, gap_us: int) -> Steps:
    """Sessions (a gap of more than ``gap_us`` starts one) and their steps.

    >>> s = Streams.build({"u": np.zeros(5, int), "t": np.array([0, 1, 2, 90, 91]),
    ...                    "seq": np.arange(5), "code": np.array([7, 7, 8, 8, 8]),
    ...                    "hit": np.zeros(5, bool)}, ("u",))
    >>> st = collapse(s, 60)
    >>> st.code.tolist(), st.session.tolist(), st.first.tolist()
    ([7, 8, 8], [0, 0, 1], [0, 2])
    """
    code, hit = s.rows["code"], s.rows["hit"].astype(bool)
    prev = s.previous_row()
    at = np.maximum(prev, 0)
    new_session = (prev < 0) | (s.t - s.t[at] > gap_us)
    runs = np.flatnonzero(new_session | (code != code[at]))
    if not len(runs):
        empty = np.zeros(0, dtype=np.int64)
        return Steps(empty, np.zeros(0, dtype=bool), empty, empty, empty)
    step_hit = np.maximum.reduceat(hit.astype(np.int8), runs).astype(bool)
    starts = new_session[runs]
    return Steps(code[runs], step_hit, s.rows["u"][runs], np.cumsum(starts) - 1,
                 np.flatnonzero(starts))


class Flows:
    """A parsed, checked flows request for one account."""

    def __init__(self, report: Report, body: Any) -> None:
        if not isinstance(body, dict):
            raise ReportError("body", "must be an object")
        no_unknown(body, FIELDS)
        self.report, self.body = report, body
        self.anchor = EventSpec.parse(report, body, "")
        self.direction = report.choice(body, "direction", DIRECTIONS, "after")
        self.steps = report.positive_int(body, "steps", 4, MAX_STEPS)
        self.gap_s = duration(report, body, "session_gap", DEFAULT_GAP_S) or DEFAULT_GAP_S
        self.top = report.positive_int(body, "top", 5, MAX_TOP)
        self.sequences = report.positive_int(body, "sequences", 10, MAX_SEQUENCES)
        self.exclude = self._exclude(report.field(body, "exclude", list, []))
        self.lo, self.hi = report.time_range(body)
        self.audience = Audience.parse(report, body)

    def _exclude(self, names: list[Any]) -> list[str]:
        for i, name in enumerate(names):
            if not isinstance(name, str) or not name:
                raise ReportError(f"exclude[{i}]", "must be an event name")
            if name == self.anchor.event:
                raise ReportError(f"exclude[{i}]", "cannot exclude the flow's own event")
        return sorted(set(names))

    # -- running ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        with self.report.store.cursor() as cur:
            cur.execute("BEGIN TRANSACTION")  # one snapshot for every query of the report
            try:
                self.audience = self.audience.on(self.report, cur, self.body)
                names, cols = self._rows(cur)
            finally:
                cur.execute("ROLLBACK")
        paths = self._paths(cols)
        return self._response(names, paths)

    def _rows(self, cur: duckdb.DuckDBPyConnection) -> tuple[list[str], dict[str, np.ndarray]]:
        """Event names by code (in name order, so codes compare like names), and the rows
        (u, t µs, seq, code, hit = matches the anchor) of the users who did the anchor, from
        their first anchor on (after) or up to their last (before): nothing else can be on a
        path."""
        names = [r[0] for r in cur.execute("SELECT event FROM event_catalog ORDER BY event")
                 .fetchall()]
        anchor, aparams = self.anchor.condition()
        a_where, a_params = self.audience.conditions()
        anchors = (f"SELECT e.user_id, min(e.ts) AS first, max(e.ts) AS last FROM events e "
                   f"WHERE {' AND '.join([anchor, 'e.ts >= ?', 'e.ts < ?', *a_where])} "
                   "GROUP BY e.user_id")
        near = "e.ts >= a.first" if self.direction == "after" else "e.ts <= a.last"
        where = ["e.ts >= ?", "e.ts < ?", near]
        params: list[Any] = [to_ts(self.lo), to_ts(self.hi)]
        if self.exclude:
            where.append(f"e.event NOT IN ({', '.join('?' * len(self.exclude))})")
            params += self.exclude
        # The event name's position in the catalog (a join with a few rows) is cheaper to
        # carry than the name itself.
        sql = (f"SELECT e.user_id AS u, epoch_us(e.ts) AS t, e.seq AS seq, c.code, "
               f"coalesce({anchor}, false) AS hit FROM events e "
               f"JOIN ({anchors}) a ON a.user_id = e.user_id "
               "JOIN (SELECT event, (row_number() OVER (ORDER BY event) - 1)::INTEGER AS code "
               "FROM event_catalog) c ON c.event = e.event "
               f"WHERE {' AND '.join(where)}")
        args = [*aparams, *aparams, to_ts(self.lo), to_ts(self.hi), *a_params, *params]
        cols = cur.execute(sql, args).fetchnumpy()
        return names, {k: np.asarray(v) for k, v in cols.items()}

    # -- paths ------------------------------------------------------------------------------
    def _paths(self, cols: dict[str, np.ndarray]) -> Paths:
        steps = collapse(Streams.build(cols, ("u",)), round(self.gap_s * US))
        # The anchor: each session's first step matching it; depth = steps from there.
        n = len(steps.code)
        first_hit = np.minimum.reduceat(np.where(steps.hit, np.arange(n), n), steps.first) \
            if n else np.zeros(0, dtype=np.int64)
        has = first_hit < n
        depth = np.arange(n) - first_hit[steps.session]
        ahead = self.direction == "after"
        near = (depth >= 0) & (depth <= self.steps) if ahead else \
            (depth <= 0) & (depth >= -self.steps)
        keep = has[steps.session] & near
        path_of = np.cumsum(has) - 1  # the path number of each session with the anchor
        codes = np.full((int(has.sum()), self.steps + 1), -1, dtype=np.int64)
        codes[path_of[steps.session[keep]], depth[keep] + (0 if ahead else self.steps)] = \
            steps.code[keep]
        return Paths(codes, steps.user[steps.first[has]], 0 if ahead else self.steps)

    # -- the response -------------------------------------------------------------------------
    def _response(self, names: list[str], paths: Paths) -> dict[str, Any]:
        tz = self.report.tz
        nodes, node_of = self._nodes(names, paths)
        return {
            "event": self.anchor.event, "direction": self.direction, "steps": self.steps,
            "session_gap_s": self.gap_s, "timezone": self.report.timezone,
            "from": iso_local(self.lo, tz), "to": iso_local(self.hi, tz),
            "paths": int(len(paths.codes)), "users": len(distinct(paths.users)),
            "nodes": nodes, "links": _links(paths, node_of),
            "sequences": self._sequences(names, paths),
        }

    def _nodes(self, names: list[str], paths: Paths) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Nodes (the top events of each column, then "other"), and each cell's node (-1:
        the path has no step there)."""
        node_of = np.full(paths.codes.shape, -1, dtype=np.int64)
        nodes: list[dict[str, Any]] = []
        for col in range(paths.codes.shape[1]):
            cells = paths.codes[:, col]
            present = cells >= 0
            counts = np.bincount(cells[present], minlength=len(names))
            ranked = [int(c) for c in np.lexsort((np.arange(len(counts)), -counts))
                      if counts[c]]  # by paths, then by name
            keep = ranked if col == paths.anchor else ranked[:self.top]
            node = np.full(len(names), len(nodes) + len(keep), dtype=np.int64)  # "other"
            for c in keep:
                node[c] = len(nodes)
                nodes.append({"id": len(nodes), "step": col - paths.anchor, "event": names[c],
                              "paths": int(counts[c]), "ends": 0})
            if len(ranked) > len(keep):
                rest = sum(int(counts[c]) for c in ranked[len(keep):])
                nodes.append({"id": len(nodes), "step": col - paths.anchor, "event": None,
                              "other": True, "events": len(ranked) - len(keep),
                              "paths": rest, "ends": 0})
            node_of[present, col] = node[cells[present]]
        if len(paths.codes):
            last = node_of[np.arange(len(paths.codes)), _end_column(paths)]
            for i, n in enumerate(np.bincount(last, minlength=len(nodes)).tolist()):
                nodes[i]["ends"] = n
        return nodes, node_of

    def _sequences(self, names: list[str], paths: Paths) -> list[dict[str, Any]]:
        """The most common whole paths; ties in the order of their event names (a path that
        is a prefix of another, after; a suffix, before — comes first)."""
        if not len(paths.codes):
            return []
        rows, counts = _distinct_rows(paths.codes)
        # Rows come in ascending order (codes follow names, -1 for "no step" first); a
        # stable sort by count keeps that order among equal counts.
        order = np.argsort(-counts, kind="stable")[:self.sequences]
        return [{"events": [names[c] for c in rows[i] if c >= 0], "paths": int(counts[i])}
                for i in order]


def _distinct_rows(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``m`` in ascending (lexicographic) order, and their counts.
    (``np.unique(axis=0)`` sorts rows as byte strings: ten times slower.)"""
    order = np.lexsort(m.T[::-1])
    rows = m[order]
    change = np.r_[True, (rows[1:] != rows[:-1]).any(axis=1)]
    starts = np.flatnonzero(change)
    return rows[starts], np.diff(np.r_[starts, len(rows)])


def _end_column(paths: Paths) -> np.ndarray:
    """Each path's last column in its direction (after: furthest right; before: left)."""
    present = paths.codes >= 0
    if paths.anchor == 0:
        return present.shape[1] - 1 - np.argmax(present[:, ::-1], axis=1)
    return np.argmax(present, axis=1)


def _links(paths: Paths, node_of: np.ndarray) -> list[dict[str, int]]:
    """Paths from each node to the next column's, as d3-sankey style links."""
    nodes = int(node_of.max()) + 1 if node_of.size else 0
    weight = np.zeros(nodes * nodes, dtype=np.int64)  # (source, target) → paths
    for col in range(node_of.shape[1] - 1):
        a, b = node_of[:, col], node_of[:, col + 1]
        both = (a >= 0) & (b >= 0)
        weight += np.bincount(a[both] * nodes + b[both], minlength=nodes * nodes)
    return [{"source": int(i // nodes), "target": int(i % nodes), "value": int(weight[i])}
            for i in np.flatnonzero(weight)]


def flows(report: Report, body: Any) -> dict[str, Any]:
    """Run a flows request (the body of ``POST /1/analytics/flows``)."""
    return Flows(report, body).run()
