"""Trends: one or more series of an event's measure per time bucket, with formulas.

A request (see docs/analytics.md) names series (event, filters, measure), an interval, a
time range, optionally a breakdown by an event or profile property (top N values plus
"other"), a comparison with the previous period, formulas over the series ("A / B"), profile
filters and a segment. Each series is one aggregation over that event's rows (see
``rollup``); everything else is arithmetic on its cells here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

from nudge.store.catalog import Column, from_column_value

from . import hourly
from .buckets import Buckets, iso_local
from .common import INTERVALS, Report, ReportError
from .formula import Formula, FormulaError
from .rollup import (
    GROUPABLE,
    PROFILE_JOIN,
    Cell,
    Cube,
    Dim,
    EventFilter,
    aggregate,
    event_rows,
    group_dim,
    property_column,
    top_values,
    user_range,
    worth_slicing,
)

# measure -> the cell statistics it needs
MEASURES = {
    "total": {"count"}, "unique_users": {"users"}, "per_user_avg": {"count", "users"},
    "sum": {"sum"}, "avg": {"sum", "values"}, "min": {"min"}, "max": {"max"},
    "median": {"median"}, "p90": {"p90"},
}
PROPERTY_MEASURES = ("sum", "avg", "min", "max", "median", "p90")
LETTERS = "ABCDEFGHIJ"
MAX_FORMULAS = 10
MAX_GROUPS = 50


@dataclass(frozen=True)
class Series:
    key: str
    event: str
    measure: str
    prop: str | None
    column: Column | None
    where: tuple[str, list[Any]]  # compiled event property filters


@dataclass(frozen=True)
class Breakdown:
    scope: str
    prop: str
    column: Column
    limit: int

    @property
    def expr(self) -> str:
        return f"{'e' if self.scope == 'event' else 'p'}.{self.column.column}"


@dataclass(frozen=True)
class NamedFormula:
    key: str
    name: str | None
    formula: Formula


class Trends:
    """A parsed, checked trends request for one account."""

    def __init__(self, report: Report, body: Any) -> None:
        if not isinstance(body, dict):
            raise ReportError("body", "must be an object")
        self.report = report
        self.body = body
        self.interval = report.choice(body, "interval", INTERVALS, "day")
        self.lo, self.hi = report.time_range(body)
        self.compare = report.field(body, "compare", bool, False)
        self.profiles = report.profile_filters(body.get("profile_where"), "profile_where", "pf")
        self.series = self._series(report.field(body, "series", list))
        self.breakdown = self._breakdown(body.get("breakdown"))
        self.formulas = self._formulas(report.field(body, "formulas", list, []))
        self.buckets = Buckets(self.interval, report.tz, self.lo, self.hi)
        self.segment: str | None = None  # the segment filter's table, once registered

    # -- parsing --------------------------------------------------------------------------
    def _series(self, items: list[Any]) -> list[Series]:
        if not 1 <= len(items) <= len(LETTERS):
            raise ReportError("series", f"must have 1 to {len(LETTERS)} series")
        return [self._one_series(item, i) for i, item in enumerate(items)]

    def _one_series(self, item: Any, i: int) -> Series:
        r, path = self.report, f"series[{i}]"
        if not isinstance(item, dict):
            raise ReportError(path, "must be an object")
        event = r.field(item, "event", str, path=f"{path}.")
        if not event:
            raise ReportError(f"{path}.event", "must not be empty")
        measure = r.choice(item, "measure", tuple(MEASURES), "total", path=f"{path}.")
        prop, col = item.get("property"), None
        if measure in PROPERTY_MEASURES:
            col = property_column(r, "event", prop, f"{path}.property", ("number",))
        elif prop is not None:
            raise ReportError(f"{path}.property", f"measure {measure!r} takes no property")
        where = r.event_filters(item.get("where"), f"{path}.where")
        return Series(LETTERS[i], event, measure, prop, col, where)

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

    def _formulas(self, items: list[Any]) -> list[NamedFormula]:
        if len(items) > MAX_FORMULAS:
            raise ReportError("formulas", f"at most {MAX_FORMULAS} formulas")
        letters = {s.key for s in self.series}
        out = []
        for i, item in enumerate(items):
            path = f"formulas[{i}]"
            spec = {"expression": item} if isinstance(item, str) else item
            if not isinstance(spec, dict):
                raise ReportError(path, "must be an expression or an object")
            text = self.report.field(spec, "expression", str, path=f"{path}.")
            name = self.report.field(spec, "name", str, None, path=f"{path}.")
            try:
                out.append(NamedFormula(f"F{i + 1}", name, Formula.parse(text, letters)))
            except FormulaError as e:
                raise ReportError(f"{path}.expression", str(e)) from None
        return out

    # -- running ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        with self.report.store.cursor() as cur:
            # One snapshot for every query of the report (rankings, user-id range, series).
            cur.execute("BEGIN TRANSACTION")
            try:
                return self._run(cur)
            finally:
                cur.execute("ROLLBACK")

    def _run(self, cur: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        self.segment = self.report.segment_table(cur, self.body)
        users = user_range(cur)
        groups, other = self._groups(cur)
        current = [self._cube(cur, s, self.buckets, groups, other, users) for s in self.series]
        out = self._header(groups, other)
        out["series"] = [self._series_json(s, c, self.buckets, groups, other)
                         for s, c in zip(self.series, current, strict=True)]
        out["formulas"] = [self._formula_json(f, out["series"]) for f in self.formulas]
        if self.compare:
            self._add_previous(cur, out, groups, other, users)
        return out

    def _groups(self, cur: duckdb.DuckDBPyConnection) -> tuple[list[Any], bool]:
        """The breakdown's top values over all series' rows in the range (by event count)."""
        if self.breakdown is None:
            return [], False
        join = PROFILE_JOIN if self.breakdown.scope == "profile" else ""
        sources = [event_rows(s.event, self.lo, self.hi, self._filter(s), join)
                   for s in self.series]
        return top_values(cur, sources, self.breakdown.expr, self.breakdown.limit)

    def _filter(self, s: Series) -> EventFilter:
        return EventFilter(s.where, self.profiles, self.segment)

    def _cube(self, cur: duckdb.DuckDBPyConnection, s: Series, buckets: Buckets,
              groups: list[Any], other: bool, users: tuple[int, int] | None) -> Cube:
        if not len(buckets):
            return {}
        if (self.breakdown is None and s.where[0] == "true" and self.profiles[0] == "true"
                and self.segment is None):
            # Counts and unique users without filters: from the hourly user sets if they
            # can answer (hourly.py), else from the rows.
            got = hourly.cube(cur, s.event, buckets.slices(), MEASURES[s.measure], users)
            if got is not None:
                return got
        key_sql, key_params = buckets.key_sql("e.ts")
        sliced = worth_slicing(cur, s.event, buckets.lo, buckets.hi, len(buckets))
        dims = [Dim(key_sql, key_params, len(buckets), buckets.slices() if sliced else None)]
        join = ""
        if self.breakdown is not None:
            dims.append(group_dim(self.breakdown.expr, groups, other))
            join = PROFILE_JOIN if self.breakdown.scope == "profile" else ""
        rows = event_rows(s.event, buckets.lo, buckets.hi, self._filter(s), join)
        value = f"e.{s.column.column}" if s.column is not None else None
        return aggregate(cur, rows, dims, MEASURES[s.measure], value, users)

    # -- the response ---------------------------------------------------------------------------
    def _header(self, groups: list[Any], other: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "interval": self.interval, "timezone": self.report.timezone,
            "from": iso_local(self.lo, self.report.tz), "to": iso_local(self.hi, self.report.tz),
            "buckets": self.buckets.labels(), "breakdown": None,
        }
        if self.breakdown is not None:
            b = self.breakdown
            labels: list[dict[str, Any]] = [{"value": from_column_value(v, b.column.type)}
                                            for v in groups]
            if other:
                labels.append({"other": True})
            out["breakdown"] = {"scope": b.scope, "property": b.prop, "groups": labels}
        return out

    def _series_json(self, s: Series, cube: Cube, buckets: Buckets, groups: list[Any],
                     other: bool) -> dict[str, Any]:
        out = {"key": s.key, "event": s.event, "measure": s.measure, "property": s.prop}
        out.update(_values(cube, s.measure, len(buckets), len(groups) + other,
                           self.breakdown is not None))
        return out

    def _formula_json(self, f: NamedFormula, series: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"key": f.key, "name": f.name, "expression": f.formula.text}
        out.update(_apply(f.formula, {s["key"]: s for s in series}))
        return out

    def _add_previous(self, cur: duckdb.DuckDBPyConnection, out: dict[str, Any],
                      groups: list[Any], other: bool, users: tuple[int, int] | None) -> None:
        """The same series over the period before, shifted by as many intervals as the range
        has buckets on the local clock; ``previous.values[i]`` pairs with ``values[i]``."""
        n = len(self.buckets)
        lo, hi = self.buckets.shift(self.lo, n), self.buckets.shift(self.hi, n)
        before = Buckets(self.interval, self.report.tz, lo, hi)
        tz = self.report.tz
        out["previous"] = {"from": iso_local(lo, tz), "to": iso_local(hi, tz),
                           "buckets": _fit(before.labels(), n, None)}
        for s, js in zip(self.series, out["series"], strict=True):
            cube = self._cube(cur, s, before, groups, other, users)
            prev = _values(cube, s.measure, len(before), len(groups) + other,
                           self.breakdown is not None)
            js["previous"] = _fit_values(prev, n)
        for f, js in zip(self.formulas, out["formulas"], strict=True):
            js["previous"] = _apply(f.formula, {s["key"]: s["previous"] for s in out["series"]})


# -- measures from cells -----------------------------------------------------------------------
def measure_value(cell: Cell | None, measure: str) -> int | float | None:
    """A measure of one cell; None where it is undefined (an average of nothing)."""
    c = cell or Cell()
    if measure == "total":
        return c.count
    if measure == "unique_users":
        return c.users
    if measure == "per_user_avg":
        return c.count / c.users if c.users else None
    if measure == "sum":
        return c.sum if c.sum is not None else 0.0
    if measure == "avg":
        return c.sum / c.values if c.values and c.sum is not None else None
    return getattr(c, measure)  # type: ignore[no-any-return]


def _values(cube: Cube, measure: str, nbuckets: int, ngroups: int,
            broken_down: bool) -> dict[str, Any]:
    """``values`` per bucket and ``total``; with a breakdown also ``groups``."""
    def at(b: int | None, g: int | None = None) -> int | float | None:
        return measure_value(cube.get((b, g) if broken_down else (b,)), measure)

    out: dict[str, Any] = {"values": [at(i) for i in range(nbuckets)], "total": at(None)}
    if broken_down:
        out["groups"] = [{"values": [at(i, g) for i in range(nbuckets)], "total": at(None, g)}
                         for g in range(ngroups)]
    return out


def _apply(formula: Formula, series: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A formula evaluated bucket by bucket, on totals and per group."""
    def ev(pick: Any) -> float | None:
        return formula.evaluate({k: pick(s) for k, s in series.items()})

    first = next(iter(series.values()))
    out: dict[str, Any] = {
        "values": [ev(lambda s, i=i: s["values"][i]) for i in range(len(first["values"]))],
        "total": ev(lambda s: s["total"]),
    }
    if "groups" in first:
        out["groups"] = [
            {"values": [ev(lambda s, g=g, i=i: s["groups"][g]["values"][i])
                        for i in range(len(first["values"]))],
             "total": ev(lambda s, g=g: s["groups"][g]["total"])}
            for g in range(len(first["groups"]))]
    return out


def _fit(items: list[Any], n: int, fill: Any) -> list[Any]:
    """``items`` cut or padded to ``n`` (a previous month range can differ by a bucket)."""
    return items[:n] + [fill] * (n - len(items))


def _fit_values(v: dict[str, Any], n: int) -> dict[str, Any]:
    out = dict(v, values=_fit(v["values"], n, None))
    if "groups" in v:
        out["groups"] = [dict(g, values=_fit(g["values"], n, None)) for g in v["groups"]]
    return out


def trends(report: Report, body: Any) -> dict[str, Any]:
    """Run a trends request (the body of ``POST /1/analytics/trends``)."""
    return Trends(report, body).run()
