"""Pivots and distributions: counts of an event (or of profiles) by one or two property
values, and histograms of a number property.

Both read either the rows of one event in a time range (``"source": "events"``) or the
profiles (``"source": "profiles"``), narrowed by the same filters as every report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import duckdb

from nudge.store.catalog import Column, from_column_value

from .common import Report, ReportError
from .rollup import (
    GROUPABLE,
    PROFILE_JOIN,
    EventFilter,
    Rows,
    aggregate,
    event_rows,
    group_dim,
    property_column,
    top_values,
    user_range,
)

SOURCES = ("events", "profiles")
PIVOT_MEASURES = ("total", "unique_users")
MAX_VALUES = 200
MAX_BINS = 200


@dataclass(frozen=True)
class Dimension:
    name: str  # "rows" or "columns"
    scope: str
    prop: str
    column: Column
    limit: int

    @property
    def expr(self) -> str:
        return f"{'e' if self.scope == 'event' else 'p'}.{self.column.column}"

    def describe(self, values: list[Any], other: bool) -> dict[str, Any]:
        groups: list[dict[str, Any]] = [{"value": from_column_value(v, self.column.type)}
                                        for v in values]
        if other:
            groups.append({"other": True})
        return {"scope": self.scope, "property": self.prop, "groups": groups}


class _Source:
    """The rows a pivot or histogram reads: one event's (in a time range) or profiles."""

    def __init__(self, report: Report, body: dict[str, Any]) -> None:
        self.report, self.body = report, body
        self.kind = report.choice(body, "source", SOURCES, "events")
        if self.kind == "events":
            self.event = report.field(body, "event", str)
            if not self.event:
                raise ReportError("event", "must not be empty")
            self.lo, self.hi = report.time_range(body)
            self.where = report.event_filters(body.get("where"), "where")
            self.profiles = report.profile_filters(body.get("profile_where"), "profile_where",
                                                   "pf")
        else:
            for name in ("event", "where", "from", "to"):
                if body.get(name) is not None:
                    raise ReportError(name, "applies to source 'events' only")
            self.profiles = report.profile_filters(body.get("profile_where"), "profile_where",
                                                   "p")
        self.segment: str | None = None

    @property
    def scopes(self) -> tuple[str, ...]:
        return ("event", "profile") if self.kind == "events" else ("profile",)

    def rows(self, join_profiles: bool) -> Rows:
        if self.kind == "events":
            f = EventFilter(self.where, self.profiles, self.segment)
            return event_rows(self.event, self.lo, self.hi, f,
                              PROFILE_JOIN if join_profiles else "")
        where, params = [self.profiles[0]], list(self.profiles[1])
        if self.segment is not None:
            where.append(f"p.user_id IN (SELECT user_id FROM {self.segment})")
        return Rows(f"FROM profiles p WHERE {' AND '.join(where)}", params, "p.user_id")

    def run(self, fn: Any) -> dict[str, Any]:
        """``fn(cur)`` in one read transaction, with the segment filter registered."""
        with self.report.store.cursor() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                self.segment = self.report.segment_table(cur, self.body)
                return fn(cur)  # type: ignore[no-any-return]
            finally:
                cur.execute("ROLLBACK")


# -- pivots -------------------------------------------------------------------------------------
class Pivot:
    def __init__(self, report: Report, body: Any) -> None:
        if not isinstance(body, dict):
            raise ReportError("body", "must be an object")
        self.source = _Source(report, body)
        self.measure = report.choice(body, "measure", PIVOT_MEASURES, "total")
        if self.source.kind == "profiles" and self.measure != "total":
            raise ReportError("measure", "profiles are counted once each; use 'total'")
        self.dims = [self._dimension(report, body, "rows")]
        if body.get("columns") is not None:
            self.dims.append(self._dimension(report, body, "columns"))

    def _dimension(self, report: Report, body: dict[str, Any], name: str) -> Dimension:
        spec = report.field(body, name, dict)
        default = "event" if self.source.kind == "events" else "profile"
        scope = report.choice(spec, "scope", self.source.scopes, default, path=f"{name}.")
        col = property_column(report, scope, spec.get("property"), f"{name}.property",
                              GROUPABLE)
        limit = report.positive_int(spec, "limit", 20, MAX_VALUES, path=f"{name}.")
        return Dimension(name, scope, spec["property"], col, limit)

    def run(self) -> dict[str, Any]:
        return self.source.run(self._run)

    def _run(self, cur: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        join = any(d.scope == "profile" for d in self.dims)
        rows = self.source.rows(join)
        tops = [top_values(cur, [rows], d.expr, d.limit) for d in self.dims]
        dims = [group_dim(d.expr, values, other) for d, (values, other) in zip(
            self.dims, tops, strict=True)]
        stats = {"count", "users"} if self.measure == "unique_users" else {"count"}
        cube = aggregate(cur, rows, dims, stats, None, user_range(cur))

        def at(*key: int | None) -> int:
            cell = cube.get(key)
            if cell is None:
                return 0
            return cell.users if self.measure == "unique_users" else cell.count

        sizes = [len(values) + other for values, other in tops]
        out: dict[str, Any] = {"source": self.source.kind, "measure": self.measure}
        out["rows"] = self.dims[0].describe(*tops[0])
        out["columns"] = self.dims[1].describe(*tops[1]) if len(dims) > 1 else None
        if len(dims) == 1:
            out["values"] = [at(r) for r in range(sizes[0])]
        else:
            out["values"] = [[at(r, c) for c in range(sizes[1])] for r in range(sizes[0])]
            out["row_totals"] = [at(r, None) for r in range(sizes[0])]
            out["column_totals"] = [at(None, c) for c in range(sizes[1])]
        out["total"] = at(*([None] * len(dims)))
        return out


# -- histograms ---------------------------------------------------------------------------------
class Histogram:
    def __init__(self, report: Report, body: Any) -> None:
        if not isinstance(body, dict):
            raise ReportError("body", "must be an object")
        self.source = _Source(report, body)
        scope = "event" if self.source.kind == "events" else "profile"
        self.property = body.get("property")
        self.column = property_column(report, scope, self.property, "property", ("number",))
        self.bins = report.positive_int(body, "bins", 10, MAX_BINS)
        self.min = _finite(report, body, "min")
        self.max = _finite(report, body, "max")
        if self.min is not None and self.max is not None and self.max < self.min:
            raise ReportError("min", "must not be above max")

    @property
    def value(self) -> str:
        return f"{'e' if self.source.kind == 'events' else 'p'}.{self.column.column}"

    def run(self) -> dict[str, Any]:
        return self.source.run(self._run)

    def _run(self, cur: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        rows = self.source.rows(False)
        count, missing, vmin, vmax = cur.execute(
            f"SELECT count({self.value}), count(*) - count({self.value}), min({self.value}), "
            f"max({self.value}) {rows.sql}", rows.params).fetchall()[0]
        lo = self.min if self.min is not None else vmin
        hi = self.max if self.max is not None else vmax
        out: dict[str, Any] = {"source": self.source.kind, "property": self.property,
                               "count": count, "missing": missing, "min": vmin, "max": vmax,
                               "bins": [], "below": 0, "above": 0}
        if lo is None or hi is None or hi < lo:
            return out  # no values, or none can fall between the bounds given
        width = (hi - lo) / self.bins if hi > lo else 1.0
        counts = dict(cur.execute(
            f"SELECT {bin_sql(self.value)} AS b, count(*) {rows.sql} AND {self.value} IS NOT NULL "
            "GROUP BY b", [lo, hi, self.bins, lo, width, self.bins - 1, *rows.params]).fetchall())
        out["bins"] = [{"from": lo + i * width, "to": hi if i == self.bins - 1 else
                        lo + (i + 1) * width, "count": counts.get(i, 0)}
                       for i in range(self.bins)]
        out["below"], out["above"] = counts.get(-1, 0), counts.get(self.bins, 0)
        return out


def bin_sql(value: str) -> str:
    """The bin of ``value``: -1 below ``lo``, ``bins`` above ``hi``, else
    min(floor((value - lo) / width), bins - 1) — ``hi`` itself falls in the last bin.
    Parameters: lo, hi, bins, lo, width, bins - 1."""
    return (f"(CASE WHEN {value} < ? THEN -1 WHEN {value} > ? THEN ? "
            f"ELSE least(floor(({value} - ?) / ?)::BIGINT, ?) END)")


def _finite(report: Report, body: dict[str, Any], name: str) -> float | None:
    v = report.field(body, name, (int, float), None)
    if v is not None and not math.isfinite(v):
        raise ReportError(name, "must be a finite number")
    return None if v is None else float(v)


def pivot(report: Report, body: Any) -> dict[str, Any]:
    """Run a pivot request (the body of ``POST /1/analytics/pivot``)."""
    return Pivot(report, body).run()


def histogram(report: Report, body: Any) -> dict[str, Any]:
    """Run a histogram request (the body of ``POST /1/analytics/histogram``)."""
    return Histogram(report, body).run()
