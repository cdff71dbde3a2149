"""Day-parting: an hour-of-day × day-of-week heatmap of an event's count or unique users.

Local time is the account's timezone, or each user's own (``"timezone": "user"``: the
profile property ``Timezone``, an IANA name; users without a valid one fall back to the
account's). As for trends, rows are converted with integer arithmetic on precomputed UTC
offsets rather than a per-row ``timezone()`` call: for the account's zone a CASE over its
offset periods, for users' zones a join with a small table of (zone, period, offset).
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import pyarrow as pa

from nudge.query.segments.compiler import to_ts

from . import hourly
from .buckets import US, iso_local, local_us_sql, offset_periods
from .common import Report, ReportError
from .rollup import Dim, EventFilter, Rows, aggregate, event_rows, user_range

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MEASURES = ("total", "unique_users")
TIMEZONES = ("account", "user")
TIMEZONE_PROPERTY = "Timezone"
# The users' zones, joined per event: each user's zone, and each zone's offset periods.
USER_ZONE_JOIN = (
    " LEFT JOIN (SELECT p.user_id, zn.zone FROM profiles p"
    " JOIN _daypart_zone_names zn ON zn.name = p.{column}) uz ON uz.user_id = e.user_id"
    " JOIN _daypart_zone_periods z ON z.zone = coalesce(uz.zone, 0)"
    " AND e.ts >= z.lo AND e.ts < z.hi")


class Dayparting:
    def __init__(self, report: Report, body: Any) -> None:
        if not isinstance(body, dict):
            raise ReportError("body", "must be an object")
        self.report, self.body = report, body
        self.event = report.field(body, "event", str)
        if not self.event:
            raise ReportError("event", "must not be empty")
        self.lo, self.hi = report.time_range(body)
        self.measure = report.choice(body, "measure", MEASURES, "total")
        self.zone_mode = report.choice(body, "timezone", TIMEZONES, "account")
        self.where = report.event_filters(body.get("where"), "where")
        self.profiles = report.profile_filters(body.get("profile_where"), "profile_where", "pf")

    def run(self) -> dict[str, Any]:
        with self.report.store.cursor() as cur:
            cur.execute("BEGIN TRANSACTION")
            try:
                return self._run(cur)
            finally:
                cur.execute("ROLLBACK")

    def _run(self, cur: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        f = EventFilter(self.where, self.profiles, self.report.segment_table(cur, self.body))
        column = self.report.store.catalog.get("profile", TIMEZONE_PROPERTY)
        if self.zone_mode == "user" and column is not None and column.type == "string":
            join = USER_ZONE_JOIN.format(column=column.column)
            self._register_zones(cur, column.column)
            local = "(epoch_us(e.ts) + z.off)"
            local_params: list[Any] = []
        else:
            join = ""
            if f == EventFilter():  # no filter: from the hourly user sets if they can answer
                got = hourly.grid(cur, self.event, self.lo, self.hi, self.report.tz,
                                  user_range(cur))
                if got is not None:
                    return self._response(got)
            local, local_params = local_us_sql(offset_periods(self.report.tz, self.lo, self.hi))
        rows = event_rows(self.event, self.lo, self.hi, f, join)
        # The local hour number once per row; weekday and hour of day derive from it.
        rows = Rows(f"FROM (SELECT e.user_id, {local} // {3600 * US} AS lh {rows.sql}) e",
                    [*local_params, *rows.params])
        dims = [Dim("(e.lh // 24 + 3) % 7", [], 7),  # 1970-01-01 was a Thursday; Monday = 0
                Dim("e.lh % 24", [], 24)]
        stats = {"count", "users"} if self.measure == "unique_users" else {"count"}
        cube = aggregate(cur, rows, dims, stats, None, user_range(cur))
        return self._response(cube)

    def _register_zones(self, cur: duckdb.DuckDBPyConnection, column: str) -> None:
        """Number the valid zone names users have (0 is the account's) and register their
        offset periods over the range."""
        names = [r[0] for r in cur.execute(
            f"SELECT DISTINCT {column} FROM profiles WHERE {column} IS NOT NULL").fetchall()]
        zones = {"": self.report.tz}
        for name in names:
            try:
                zones[name] = ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                pass  # not a zone name: these users get the account's zone
        index = {name: i for i, name in enumerate(zones)}
        cur.register("_daypart_zone_names", pa.table({
            "name": [n for n in zones if n], "zone": [index[n] for n in zones if n]}))
        periods: dict[str, list[Any]] = {"zone": [], "lo": [], "hi": [], "off": []}
        for name, tz in zones.items():
            found = offset_periods(tz, self.lo, self.hi)
            ends = [p.start for p in found[1:]] + [self.hi]
            for p, end in zip(found, ends, strict=True):
                periods["zone"].append(index[name])
                periods["lo"].append(to_ts(p.start))
                periods["hi"].append(to_ts(end))
                periods["off"].append(p.offset * US)
        cur.register("_daypart_zone_periods", pa.table({
            "zone": pa.array(periods["zone"], pa.int64()),
            "lo": pa.array(periods["lo"], pa.timestamp("us")),
            "hi": pa.array(periods["hi"], pa.timestamp("us")),
            "off": pa.array(periods["off"], pa.int64())}))

    def _response(self, cube: dict[tuple[int | None, ...], Any]) -> dict[str, Any]:
        def at(day: int | None, hour: int | None) -> int:
            cell = cube.get((day, hour))
            if cell is None:
                return 0
            return int(cell.users if self.measure == "unique_users" else cell.count)

        return {
            "event": self.event, "measure": self.measure, "timezone": self.zone_mode,
            "account_timezone": self.report.timezone,
            "from": iso_local(self.lo, self.report.tz), "to": iso_local(self.hi, self.report.tz),
            "days": list(DAYS), "hours": list(range(24)),
            "values": [[at(d, h) for h in range(24)] for d in range(7)],
            "day_totals": [at(d, None) for d in range(7)],
            "hour_totals": [at(None, h) for h in range(24)],
            "total": at(None, None),
        }


def dayparting(report: Report, body: Any) -> dict[str, Any]:
    """Run a day-parting request (the body of ``POST /1/analytics/dayparting``)."""
    return Dayparting(report, body).run()
