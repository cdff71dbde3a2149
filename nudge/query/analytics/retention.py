"""Retention: of the users who did a start event in a period, how many came back (did a
return event) k periods later.

Cohorts are calendar periods (day, week starting Monday, month) of the account's timezone
within [from, to): by the period of a user's *first* start event ever (``first_time``, a user
is in at most one cohort) or of *every* period with a start event (``any``). A user of cohort
c is retained in period k when they did the return event in period c + k (``bracketed``) or
in period c + k or any later one (``unbounded``). Period 0 is the cohort's own period: any
return event in it counts (before or after the start event), as ClickHouse's ``retention``
counts it; with the same start and return event it is 100%.

Everything is hash joins and aggregations over per-(user, period) rows: bracketed joins each
cohort member to their distinct return periods; unbounded needs only each user's last return.
Periods are keyed with ``Buckets`` (integer offset arithmetic instead of a timezone
conversion per row), so a day with a DST change is one period of 23 or 25 hours.
"""

from __future__ import annotations

from typing import Any

import duckdb

from nudge.query.segments.compiler import to_ts

from .buckets import Buckets, iso_local
from .common import Report, ReportError
from .selection import Audience, EventSpec, no_unknown

INTERVALS = ("day", "week", "month")
COHORTS = ("first_time", "any")
MODES = ("bracketed", "unbounded")
MAX_PERIODS = 120
# The longest a period can be (a month of 31 days with a DST hour), to reach N periods ahead.
LONGEST_S = {"day": 25 * 3_600, "week": 7 * 86_400 + 3_600, "month": 31 * 86_400 + 3_600}
FIELDS = ("start", "return", "cohort", "interval", "periods", "mode", "from", "to",
          "segment", "profile_where")


class Retention:
    """A parsed, checked retention request for one account."""

    def __init__(self, report: Report, body: Any) -> None:
        if not isinstance(body, dict):
            raise ReportError("body", "must be an object")
        no_unknown(body, FIELDS)
        self.report, self.body = report, body
        self.start = EventSpec.parse(report, body.get("start"), "start")
        back = body.get("return")
        self.back = self.start if back is None else EventSpec.parse(report, back, "return")
        self.cohort = report.choice(body, "cohort", COHORTS, "first_time")
        self.interval = report.choice(body, "interval", INTERVALS, "day")
        self.periods = report.positive_int(body, "periods", 7, MAX_PERIODS)
        self.mode = report.choice(body, "mode", MODES, "bracketed")
        self.lo, self.hi = report.time_range(body)
        self.audience = Audience.parse(report, body)
        self.cohorts = Buckets(self.interval, report.tz, self.lo, self.hi)
        # Every period a cohort can return in: from the first cohort's start, N periods past
        # the last cohort.
        first = self.cohorts.items[0].start
        horizon = self.hi + (self.periods + 1) * LONGEST_S[self.interval]
        self.timeline = Buckets(self.interval, report.tz, first, horizon)
        self.span = len(self.cohorts) + self.periods  # periods a cohort cell can fall in
        self.end = self.timeline.items[self.span].start

    # -- running ----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        with self.report.store.cursor() as cur:
            cur.execute("BEGIN TRANSACTION")  # one snapshot for every query of the report
            try:
                self.audience = self.audience.on(self.report, cur, self.body)
                return self._run(cur)
            finally:
                cur.execute("ROLLBACK")

    def _run(self, cur: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        members, params = self._members()
        cur.execute(f"CREATE TEMP TABLE _cohorts AS {members}", params)
        try:
            sizes = dict(cur.execute("SELECT c, count(*) FROM _cohorts GROUP BY c").fetchall())
            sql, params = self._bracketed() if self.mode == "bracketed" else self._unbounded()
            cells = {(int(c), int(k)): int(n) for c, k, n in cur.execute(sql, params).fetchall()}
        finally:
            cur.execute("DROP TABLE IF EXISTS _cohorts")
        return self._response(sizes, cells)

    # -- SQL --------------------------------------------------------------------------------
    def _key(self, column: str) -> tuple[str, list[Any]]:
        """The period of ``column`` as an index of the timeline (0 = first cohort's)."""
        return self.timeline.key_sql(column)

    def _members(self) -> tuple[str, list[Any]]:
        """(user_id, c): each cohort member once per cohort."""
        cond, params = self.start.condition()
        a_where, a_params = self.audience.conditions()
        where = " AND ".join([cond, *a_where])
        if self.cohort == "any":
            key, kparams = self._key("e.ts")
            return (f"SELECT DISTINCT e.user_id, {key} AS c FROM events e "
                    f"WHERE {where} AND e.ts >= ? AND e.ts < ?",
                    kparams + params + a_params + [to_ts(self.lo), to_ts(self.hi)])
        # The first start event ever decides the cohort, so the whole history is read.
        key, kparams = self._key("f.first")
        return (f"SELECT f.user_id, {key} AS c FROM (SELECT e.user_id, min(e.ts) AS first "
                f"FROM events e WHERE {where} GROUP BY e.user_id) f "
                "WHERE f.first >= ? AND f.first < ?",
                kparams + params + a_params + [to_ts(self.lo), to_ts(self.hi)])

    def _returns(self, select: str, key_params: list[Any], tail: str = ""
                 ) -> tuple[str, list[Any]]:
        cond, params = self.back.condition()
        return (f"SELECT {select} FROM events e WHERE {cond} AND e.ts >= ? "
                "AND e.user_id IN (SELECT user_id FROM _cohorts)" + tail,
                key_params + params + [to_ts(self.timeline.items[0].start)])

    def _bracketed(self) -> tuple[str, list[Any]]:
        """Cells (c, k, users): members of cohort c with a return event in period c + k."""
        key, kparams = self._key("e.ts")
        returns, params = self._returns(f"DISTINCT e.user_id, {key} AS p", kparams,
                                        " AND e.ts < ?")
        return (f"SELECT s.c, r.p - s.c AS k, count(*) FROM _cohorts s JOIN ({returns}) r "
                "ON r.user_id = s.user_id AND r.p >= s.c AND r.p <= s.c + ? GROUP BY ALL",
                params + [to_ts(self.end), self.periods])

    def _unbounded(self) -> tuple[str, list[Any]]:
        """Cells (c, k, users): members of cohort c whose *last* return is in period c + k
        (k capped at N); retained at k is then the sum over k' ≥ k."""
        returns, params = self._returns("e.user_id, max(e.ts) AS last", [],
                                        " GROUP BY e.user_id")
        key, kparams = self._key("r.last")
        # A return past the timeline is later than every period asked for.
        period = f"CASE WHEN r.last >= ? THEN {self.span} ELSE {key} END"
        return (f"SELECT s.c, least(r.p - s.c, ?) AS k, count(*) FROM _cohorts s "
                f"JOIN (SELECT r.user_id, {period} AS p FROM ({returns}) r) r "
                "ON r.user_id = s.user_id AND r.p >= s.c GROUP BY ALL",
                [self.periods, to_ts(self.end), *kparams, *params])

    # -- the response -------------------------------------------------------------------------
    def _response(self, sizes: dict[int, int], cells: dict[tuple[int, int], int]
                  ) -> dict[str, Any]:
        tz, n = self.report.tz, self.periods
        rows, totals, total_sizes = [], [0] * (n + 1), [0] * (n + 1)
        for c, bucket in enumerate(self.cohorts.items):
            size = sizes.get(c, 0)
            counts = [cells.get((c, k), 0) for k in range(n + 1)]
            if self.mode == "unbounded":  # last return in period ≥ k
                counts = [sum(counts[k:]) for k in range(n + 1)]
            retained: list[int | None] = []
            for k in range(n + 1):
                if self.timeline.items[c + k].start > self.report.now:
                    retained.append(None)  # the period has not begun
                    continue
                retained.append(counts[k])
                totals[k] += counts[k]
                total_sizes[k] += size
            rows.append({"start": iso_local(bucket.start, tz), "size": size,
                         "retained": retained, "percent": [_pct(x, size) for x in retained]})
        return {
            "interval": self.interval, "periods": n, "cohort": self.cohort, "mode": self.mode,
            "timezone": self.report.timezone, "from": iso_local(self.lo, tz),
            "to": iso_local(self.hi, tz), "start": self.start.describe(),
            "return": self.back.describe(), "cohorts": rows,
            "total": {"size": sum(sizes.values()), "sizes": total_sizes, "retained": totals,
                      "percent": [_pct(x, s) for x, s in zip(totals, total_sizes, strict=True)]},
        }


def _pct(part: int | None, whole: int) -> float | None:
    return None if part is None or not whole else 100.0 * part / whole


def retention(report: Report, body: Any) -> dict[str, Any]:
    """Run a retention request (the body of ``POST /1/analytics/retention``)."""
    return Retention(report, body).run()
