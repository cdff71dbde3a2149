"""Trends and day-parting: Nudge's reports vs hand-written DuckDB SQL vs ClickHouse (chDB).

Reports, in the account timezone America/New_York (the 90 days include a DST change):

- **trend**: daily unique users of one event over the last 30 days;
- **daypart**: hour-of-day × day-of-week heatmap of one event over 90 days, as event counts
  and as unique users.

Each runs three ways, in the same process on the same data (``bench/datasets.py``):

- **nudge**: the report functions the API runs (``trends`` / ``dayparting`` on an
  ``AccountStore``: events sorted by (event, ts), UTC offsets precomputed per DST period,
  unique users as per-cell bitmaps);
- **duckdb**: SQL written by hand on the plain events table in time (arrival) order — as an
  analyst writes it (``timezone()`` and ``count(DISTINCT)``), and tuned: (day, user) pairs
  deduplicated first, and for the 30-day trend (no DST change inside) a fixed UTC offset
  instead of ``timezone()``. The faster DuckDB form is the reference;
- **chdb**: ClickHouse SQL on MergeTree ``ORDER BY (event, ts)`` (``toStartOfDay(ts, tz)``,
  ``uniqExact``), the other reference.

Every engine must return the same numbers (checked before timing). Rounds are interleaved
(each round runs every report on every engine, in rotating order) and figures are medians,
so the machine's noise hits all engines alike::

    python -m bench.analytics_trends                                  # 10M events, 200k users
    python -m bench.analytics_trends --events 100000000 --users 1000000
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb

from bench import datasets
from bench.common import header, loadavg, median, ratio, table
from bench.segments import open_chdb
from nudge.query.analytics import hourly
from nudge.query.analytics.common import Report
from nudge.query.analytics.dayparting import dayparting
from nudge.query.analytics.trends import trends
from nudge.store import user_sets

TZ = "America/New_York"
DAY = 86_400
TARGET_MS = 300.0
# A result, normalised so that engines compare: {(day or (weekday, hour)): number}.
Result = dict[Any, int]


# -- the reports, three ways -----------------------------------------------------------------
class Reports:
    """The benchmark's reports on one data set: ``run(report, engine) -> Result``."""

    def __init__(self, directory: Path, now: float, trend_events: list[str], daypart_event: str,
                 chdb: Any) -> None:
        self.now, self.trend_events, self.daypart_event = now, trend_events, daypart_event
        self.store = datasets.open_store(directory)
        self.report = Report.for_store(self.store, TZ, now=now)
        self.ref = duckdb.connect(str(directory / "reference.duckdb"), read_only=True)
        self.ref.execute("SET TimeZone = 'UTC'")
        self.chdb = chdb
        self.t30 = datasets.as_timestamp(now - 30 * DAY)
        self.t90 = datasets.as_timestamp(now - 90 * DAY)
        self.tnow = datasets.as_timestamp(now)

    def names(self) -> list[str]:
        return ([f"trend:{e}" for e in self.trend_events]
                + [f"daypart:{m}" for m in ("total", "unique_users")])

    def engines(self) -> list[str]:
        return (["nudge", "nudge rows", "duckdb", "duckdb tuned"]
                + (["chdb"] if self.chdb else []))

    def run(self, name: str, engine: str) -> Result:
        kind, arg = name.split(":", 1)
        if engine == "nudge rows":  # the same report with the hourly user sets ignored
            with _rows_only():
                return self.run(name, "nudge")
        fn: Callable[[str], Result] = getattr(self, f"_{kind}_{engine.replace(' ', '_')}")
        return fn(arg)

    def build_user_sets(self) -> None:
        """Build the store's hourly user sets if they are not current (a copy of the data
        set: this writes to the store), printing the time it took."""
        store = self.store
        with store.cursor() as cur:
            if user_sets.current(cur):
                print("# hourly user sets: current")
                return
        t, c = time.perf_counter(), time.process_time()
        n = store.run_on_writer(lambda: user_sets.rebuild(store.writer_cursor)).result()
        size = store.cursor().execute(
            "SELECT sum(octet_length(users)) FROM event_hour_users").fetchone()[0]
        print(f"# hourly user sets built: {n:,} (event, hour) sets, {size / 2**20:,.0f} MiB, "
              f"{time.perf_counter() - t:,.1f} s ({time.process_time() - c:,.1f} s CPU); "
              f"load {loadavg()}")

    def close(self) -> None:
        self.store.close()
        self.ref.close()

    # -- daily unique users over 30 days ---------------------------------------------------
    def _trend_nudge(self, event: str) -> Result:
        out = trends(self.report, {"series": [{"event": event, "measure": "unique_users"}],
                                   "interval": "day", "from": self.now - 30 * DAY,
                                   "to": self.now})
        return {b[:10]: v for b, v in zip(out["buckets"], out["series"][0]["values"],
                                          strict=True) if v}

    def _trend_duckdb(self, event: str) -> Result:
        return dict(self.ref.execute(f"""
            SELECT strftime(date_trunc('day', timezone('{TZ}', ts::TIMESTAMPTZ)), '%Y-%m-%d')
                   AS day, count(DISTINCT user_id)
            FROM events WHERE event = ? AND ts >= TIMESTAMP '{self.t30}'
              AND ts < TIMESTAMP '{self.tnow}'
            GROUP BY day""", [event]).fetchall())

    def _trend_duckdb_tuned(self, event: str) -> Result:
        # December has no DST change: the offset is fixed, and (day, user) pairs go first.
        offset_us = _offset(self.now - 30 * DAY) * 1_000_000
        rows = self.ref.execute(f"""
            SELECT day, count(*) FROM (
                SELECT DISTINCT (epoch_us(ts) + {offset_us}) // {DAY * 1_000_000} AS day, user_id
                FROM events WHERE event = ? AND ts >= TIMESTAMP '{self.t30}'
                  AND ts < TIMESTAMP '{self.tnow}')
            GROUP BY day""", [event]).fetchall()
        return {str(dt.date(1970, 1, 1) + dt.timedelta(days=d)): n for d, n in rows}

    def _trend_chdb(self, event: str) -> Result:
        out = json.loads(str(self.chdb.query(f"""
            SELECT toString(toDate(toStartOfDay(ts, '{TZ}'), '{TZ}')) AS day,
                   uniqExact(user_id) AS users
            FROM events WHERE event = '{event}'
              AND ts >= toDateTime64('{self.t30}', 6, 'UTC')
              AND ts < toDateTime64('{self.tnow}', 6, 'UTC')
            GROUP BY day""", "JSON")))
        return {r["day"]: int(r["users"]) for r in out["data"]}

    # -- day-parting over 90 days ------------------------------------------------------------
    def _daypart_nudge(self, measure: str) -> Result:
        out = dayparting(self.report, {"event": self.daypart_event, "measure": measure,
                                       "from": self.now - 90 * DAY, "to": self.now})
        return {(d, h): v for d, row in enumerate(out["values"]) for h, v in enumerate(row)
                if v}

    def _daypart_duckdb(self, measure: str) -> Result:
        agg = "count(*)" if measure == "total" else "count(DISTINCT user_id)"
        rows = self.ref.execute(f"""
            SELECT isodow(l) - 1 AS d, hour(l) AS h, {agg} FROM (
                SELECT timezone('{TZ}', ts::TIMESTAMPTZ) AS l, user_id FROM events
                WHERE event = ? AND ts >= TIMESTAMP '{self.t90}' AND ts < TIMESTAMP '{self.tnow}')
            GROUP BY d, h""", [self.daypart_event]).fetchall()
        return {(d, h): n for d, h, n in rows}

    def _daypart_duckdb_tuned(self, measure: str) -> Result:
        if measure == "total":
            return self._daypart_duckdb(measure)
        rows = self.ref.execute(f"""
            SELECT d, h, count(*) FROM (
                SELECT DISTINCT isodow(l) - 1 AS d, hour(l) AS h, user_id FROM (
                    SELECT timezone('{TZ}', ts::TIMESTAMPTZ) AS l, user_id FROM events
                    WHERE event = ? AND ts >= TIMESTAMP '{self.t90}'
                      AND ts < TIMESTAMP '{self.tnow}'))
            GROUP BY d, h""", [self.daypart_event]).fetchall()
        return {(d, h): n for d, h, n in rows}

    def _daypart_chdb(self, measure: str) -> Result:
        agg = "count()" if measure == "total" else "uniqExact(user_id)"
        out = json.loads(str(self.chdb.query(f"""
            SELECT toDayOfWeek(ts, 0, '{TZ}') - 1 AS d, toHour(ts, '{TZ}') AS h, {agg} AS n
            FROM events WHERE event = '{self.daypart_event}'
              AND ts >= toDateTime64('{self.t90}', 6, 'UTC')
              AND ts < toDateTime64('{self.tnow}', 6, 'UTC')
            GROUP BY d, h""", "JSON")))
        return {(int(r["d"]), int(r["h"])): int(r["n"]) for r in out["data"]}


def _offset(t: float) -> int:
    off = dt.datetime.fromtimestamp(t, ZoneInfo(TZ)).utcoffset()
    return int(off.total_seconds()) if off else 0


@contextlib.contextmanager
def _rows_only() -> Iterator[None]:
    """Reports read rows as if the hourly user sets could not answer (the previous form,
    for the side-by-side comparison)."""
    saved = hourly.cube, hourly.grid
    hourly.cube = hourly.grid = lambda *args, **kw: None  # type: ignore[assignment]
    try:
        yield
    finally:
        hourly.cube, hourly.grid = saved


# -- running ------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    header(f"Trends and day-parting: {args.events:,} events, {args.users:,} users")
    directory = Path(args.dir or Path(tempfile.gettempdir()) /
                     f"nudge-bench-segments-{args.users}-{args.events}")
    info = datasets.build(directory, args.users, args.events, seed=args.seed)
    ch = None if args.no_chdb else open_chdb(directory, print)
    reports = Reports(directory, info.now, args.trend_events.split(","), args.daypart_event, ch)
    if args.user_sets:
        reports.build_user_sets()
    print(f"# data: {directory} (built in {info.build_seconds:.0f} s); account timezone {TZ}; "
          f"load {loadavg()}")
    names = reports.names()
    engines = [e for e in reports.engines() if args.engines is None or e in args.engines]

    results = {n: {e: reports.run(n, e) for e in engines} for n in names}  # also warms up
    agree = {n: all(r == results[n]["nudge"] for r in results[n].values()) for n in names}
    print(f"# results compared (same everywhere: {all(agree.values())}); timing", flush=True)
    # Wall time, and CPU time of this process (DuckDB's and chDB's threads included): with
    # other work on the machine the CPU time shows what a query costs when it runs alone.
    times: dict[str, dict[str, list[float]]] = {n: {e: [] for e in engines} for n in names}
    cpu: dict[str, dict[str, list[float]]] = {n: {e: [] for e in engines} for n in names}
    for r in range(args.reps):
        for n in names:
            for e in engines[r % len(engines):] + engines[:r % len(engines)]:
                t, c = time.perf_counter(), time.process_time()
                reports.run(n, e)
                times[n][e].append(time.perf_counter() - t)
                cpu[n][e].append(time.process_time() - c)
        print(f"#   round {r + 1}/{args.reps} done", flush=True)
    anatomy_ms = anatomy(reports, args.reps) if args.anatomy else {}
    reports.close()
    med = {n: {e: median(v) * 1000 for e, v in times[n].items()} for n in names}
    med_cpu = {n: {e: median(v) * 1000 for e, v in cpu[n].items()} for n in names}
    _print(names, engines, med, agree, results, args.reps)
    print("\n# CPU ms (all threads of this process), medians")
    print(table(["report", *engines], [[_describe(n), *(med_cpu[n][e] for e in engines)]
                                       for n in names]))
    result = {"users": args.users, "events": args.events, "reps": args.reps,
              "median_ms": med, "median_cpu_ms": med_cpu, "agree": agree,
              "anatomy": anatomy_ms}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


def anatomy(reports: Reports, reps: int) -> dict[str, dict[str, list[float]]]:
    """Where the 30-day daily-unique trend's time goes: SQL forms from a bare scan up to the
    report's own, on the store's ``events_sorted`` (the same rows the report reads), with
    the report's day buckets (``Buckets``: UTC offsets per DST period, the same slices)."""
    from nudge.query.analytics.buckets import Buckets
    from nudge.query.segments.compiler import to_ts

    now = reports.now
    b = Buckets("day", ZoneInfo(TZ), now - 30 * DAY, now)
    key, key_params = b.key_sql("e.ts")
    slices = b.slices() or []
    cur = reports.store.cursor()
    umin, umax = cur.execute("SELECT min(user_id), max(user_id) FROM profiles").fetchone()
    out: dict[str, dict[str, list[float]]] = {}
    for event in reports.trend_events:
        where = "FROM events_sorted e WHERE e.event = ? AND e.ts >= ? AND e.ts < ?"
        rng = [event, to_ts(b.lo), to_ts(b.hi)]
        per_slice = " UNION ALL ".join(
            f"SELECT {i} AS d, count(*) AS n, bitstring_agg(e.user_id, ?, ?) AS u {where}"
            for i in range(len(slices)))
        forms = {
            "scan, count(*)": (f"SELECT count(*) {where}", rng),
            "scan, sum(user_id)": (f"SELECT sum(e.user_id) {where}", rng),
            "bucket key per row, count per bucket": (
                f"SELECT {key} AS d, count(*) {where} GROUP BY d", key_params + rng),
            "one bitmap, ungrouped": (
                f"SELECT bit_count(bitstring_agg(e.user_id, ?, ?)) {where}", [umin, umax, *rng]),
            "bitmap per bucket, grouped by bucket key (before)": (
                f"SELECT d, bit_count(bit_or(u)) FROM (SELECT {key} AS d, "
                f"bitstring_agg(e.user_id, ?, ?) AS u {where} GROUP BY d) GROUP BY CUBE (d)",
                key_params + [umin, umax, *rng]),
            "bitmap per bucket, one slice per bucket (now)": (
                f"WITH c AS MATERIALIZED ({per_slice}) SELECT d, bit_count(u) FROM c "
                "UNION ALL SELECT NULL, bit_count(bit_or(u)) FROM c",
                [p for a, z in slices for p in (umin, umax, event, to_ts(a), to_ts(z))]),
        }
        cpu: dict[str, list[float]] = {f: [] for f in forms}
        wall: dict[str, list[float]] = {f: [] for f in forms}
        for _ in range(reps + 1):  # the first round warms up and is dropped
            for f, (sql, params) in forms.items():
                t, c = time.perf_counter(), time.process_time()
                cur.execute(sql, params).fetchall()
                cpu[f].append(time.process_time() - c)
                wall[f].append(time.perf_counter() - t)
        rows = [[f, median(wall[f][1:]) * 1000, median(cpu[f][1:]) * 1000] for f in forms]
        print(f"\n# anatomy of the 30-day trend of {event!r} (events_sorted), medians of {reps}; "
              f"load {loadavg()}")
        print(table(["SQL form", "ms", "CPU ms"], rows))
        out[event] = {f: [median(wall[f][1:]) * 1000, median(cpu[f][1:]) * 1000] for f in forms}
    cur.close()
    return out


def _print(names: list[str], engines: list[str], med: dict[str, dict[str, float]],
           agree: dict[str, bool], results: dict[str, dict[str, Result]], reps: int) -> None:
    refs = [e for e in engines if e != "nudge"]
    rows = []
    for n in names:
        m = med[n]
        row: list[Any] = [_describe(n), sum(results[n]["nudge"].values()), m["nudge"]]
        for e in refs:
            row += [m[e], ratio(m["nudge"], m[e])]
        best = min((m[e] for e in refs if not e.startswith("nudge")), default=0.0)
        rows.append(row + [ratio(m["nudge"], best), "yes" if agree[n] else "NO"])
    heads = ["report", "sum of cells", "nudge ms"]
    for e in refs:
        heads += [f"{e} ms", f"nudge/{e}"]
    heads += ["nudge/fastest ref", "same result"]
    print(f"\n# medians of {reps} interleaved rounds; load {loadavg()}")
    print(table(heads, rows))
    trend = [med[n]["nudge"] for n in names if n.startswith("trend:")]
    print(f"# 30-day daily unique trend: {', '.join(f'{t:.0f} ms' for t in trend)} "
          f"(target ≤ {TARGET_MS:.0f} ms)")


def _describe(name: str) -> str:
    kind, arg = name.split(":", 1)
    if kind == "trend":
        return f"daily unique users, 30 d, {arg!r}"
    return f"day-parting 90 d, {'events' if arg == 'total' else 'unique users'}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--reps", type=int, default=7, help="rounds; medians are reported")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--trend-events", default="Product Viewed,App Launched,Charged",
                   help="comma-separated events of the 30-day trend")
    p.add_argument("--daypart-event", default="Product Viewed")
    p.add_argument("--dir", help="data directory (shared with bench.segments; kept)")
    p.add_argument("--no-chdb", action="store_true")
    p.add_argument("--engines", type=lambda v: v.split(","),
                   help="comma-separated subset of: nudge, nudge rows (the report with the "
                        "hourly user sets ignored), duckdb, duckdb tuned, chdb")
    p.add_argument("--anatomy", action="store_true",
                   help="also time SQL forms of the trend from a bare scan up (where the "
                        "time goes)")
    p.add_argument("--user-sets", action="store_true",
                   help="build the store's hourly user sets first if they are not current "
                        "(writes to the store in --dir: use a copy of a shared data set)")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    os.environ.setdefault("NUDGE_LOG_LEVEL", "warning")
    return run(args)


if __name__ == "__main__":
    main()
