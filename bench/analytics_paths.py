"""Funnels, retention and flows: Nudge's reports vs hand-written DuckDB SQL vs ClickHouse (chDB).

Reports (account timezone America/New_York):

- **funnel**: Product Viewed → Added To Cart → Charged, in order, 1-day window, entering in
  the last 30 days; users per step;
- **retention**: App Launched weekly cohorts over the last 8 weeks, 8 periods, bracketed;
  by first-time and by any occurrence; the cohort table;
- **flows**: the 4 steps after Product Viewed in sessions (30-minute gap, repeats
  collapsed) over the last 30 days; the number of paths and the most common paths.

Each runs three ways, in the same process on the same data (``bench/datasets.py``):

- **nudge**: the report functions the API runs (``funnels`` / ``retention`` / ``flows`` on an
  ``AccountStore``: events sorted by (event, ts));
- **duckdb**: SQL written by hand on the plain events table in time (arrival) order: window
  functions for the per-user ordered passes (funnel, flows), joins of (user, week) rows for
  retention;
- **chdb**: ClickHouse SQL on MergeTree ``ORDER BY (event, ts)``: ``windowFunnel``,
  ``retention``, and window functions for flows.

Every engine must return the same numbers (checked before timing). Rounds are interleaved
and figures are medians, so the machine's noise hits all engines alike::

    python -m bench.analytics_paths                                  # 10M events, 200k users
    python -m bench.analytics_paths --events 100000000 --users 1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb

from bench import datasets
from bench.common import header, loadavg, median, ratio, table
from bench.segments import open_chdb
from nudge.query.analytics.common import Report
from nudge.query.analytics.flows import flows
from nudge.query.analytics.funnels import funnels
from nudge.query.analytics.retention import retention

TZ = "America/New_York"
DAY, WEEK = 86_400, 7 * 86_400
US = 1_000_000
STEPS = ("Product Viewed", "Added To Cart", "Charged")
LAUNCH = "App Launched"
ANCHOR, DEPTH, GAP_S, TOP_PATHS = "Product Viewed", 4, 30 * 60, 10
PERIODS = 8
Result = Any  # a report's numbers, normalised so that engines compare with ==


class Reports:
    """The benchmark's reports on one data set: ``run(report, engine) -> Result``."""

    def __init__(self, directory: Path, now: float, chdb: Any,
                 alternatives: bool = False) -> None:
        self.now, self.alternatives = now, alternatives
        self.store = datasets.open_store(directory)
        self.report = Report.for_store(self.store, TZ, now=now)
        self.ref = duckdb.connect(str(directory / "reference.duckdb"), read_only=True)
        self.ref.execute("SET TimeZone = 'UTC'")
        self.chdb = chdb
        self.t30 = datasets.as_timestamp(now - 30 * DAY)
        self.t8w = datasets.as_timestamp(now - PERIODS * WEEK)
        self.tnow = datasets.as_timestamp(now)
        self.tend = datasets.as_timestamp(now + DAY)
        # The 8 weeks hold no DST change: one UTC offset turns UTC into local time.
        self.offset_s = _offset(now - PERIODS * WEEK)
        assert self.offset_s == _offset(now), "a DST change inside the retention range"

    def names(self) -> list[str]:
        return ["funnel:ordered", "retention:first_time", "retention:any", "flows:after"]

    def engines(self, name: str) -> list[str]:
        extra = ["duckdb_reduce", "duckdb_asof"] if self.alternatives and \
            name.startswith("funnel") else []
        return ["nudge", "duckdb"] + extra + (["chdb"] if self.chdb else [])

    def run(self, name: str, engine: str) -> Result:
        kind, arg = name.split(":", 1)
        fn: Callable[[str], Result] = getattr(self, f"_{kind}_{engine}")
        return fn(arg)

    def close(self) -> None:
        self.store.close()
        self.ref.close()

    def _ch(self, sql: str) -> list[dict[str, Any]]:
        return json.loads(str(self.chdb.query(sql, "JSON")))["data"]  # type: ignore[no-any-return]

    # -- funnel -------------------------------------------------------------------------------
    def _funnel_nudge(self, order: str) -> Result:
        out = funnels(self.report, {"steps": [{"event": s} for s in STEPS], "order": order,
                                    "window": {"days": 1}, "from": self.now - 30 * DAY,
                                    "to": self.now})
        return [s["users"] for s in out["steps"]]

    def _funnel_duckdb(self, order: str) -> Result:
        """The windowFunnel greedy in SQL: per level, the latest start among earlier rows
        that reached the previous level (a running max over a window, one pass per step)."""
        w = DAY * US
        q = f"SELECT *, CASE WHEN m & 1 <> 0 THEN t END AS x1 FROM ({self._funnel_rows()})"
        frame = ("OVER (PARTITION BY user_id ORDER BY t, seq "
                 "ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)")
        for k in range(2, len(STEPS) + 1):
            q = (f"SELECT * EXCLUDE (p), CASE WHEN m & {1 << (k - 1)} <> 0 AND t <= p + {w} "
                 f"THEN p END AS x{k} FROM (SELECT *, max(x{k - 1}) {frame} AS p FROM ({q}))")
        levels = " + ".join(f"(max(x{k}) IS NOT NULL)::INT" for k in range(1, len(STEPS) + 1))
        rows = self.ref.execute(
            f"SELECT level, count(*) FROM (SELECT user_id, {levels} AS level FROM ({q}) "
            "GROUP BY user_id) GROUP BY level",
            {"lo": self.t30, "hi": self.tnow, "end": self.tend}).fetchall()
        return _reached(dict(rows), len(STEPS))

    def _funnel_rows(self) -> str:
        """The steps' rows with their step bits (the first only inside the range)."""
        masks = " + ".join(f"(CASE WHEN event = '{s}'{' AND ts < $hi' if i == 0 else ''} "
                           f"THEN {1 << i} ELSE 0 END)" for i, s in enumerate(STEPS))
        return (f"SELECT user_id, seq, epoch_us(ts) AS t, ({masks}) AS m FROM events "
                f"WHERE event IN ({', '.join(repr(s) for s in STEPS)}) "
                "AND ts >= $lo AND ts < $end")

    def _funnel_duckdb_reduce(self, order: str) -> Result:
        """Alternative: each user's rows as a list, the windowFunnel state machine as
        ``list_reduce`` (state: the latest start of a chain at each step)."""
        w = DAY * US
        init = "{" + ", ".join(f"'s{k}': NULL::BIGINT" for k in range(1, len(STEPS) + 1)) + "}"
        upd = ["s1: CASE WHEN x.m & 1 <> 0 THEN x.t ELSE acc.s1 END"] + [
            f"s{k}: CASE WHEN x.m & {1 << (k - 1)} <> 0 AND x.t <= acc.s{k - 1} + {w} "
            f"THEN acc.s{k - 1} ELSE acc.s{k} END" for k in range(2, len(STEPS) + 1)]
        levels = " + ".join(f"(st.s{k} IS NOT NULL)::INT" for k in range(1, len(STEPS) + 1))
        rows = self.ref.execute(f"""
            SELECT level, count(*) FROM (SELECT {levels} AS level FROM (
              SELECT list_reduce(list({{'t': t, 'm': m}} ORDER BY t, seq),
                                 lambda acc, x: {{{', '.join(upd)}}}, {init}) AS st
              FROM ({self._funnel_rows()}) GROUP BY user_id)) GROUP BY level""",
            {"lo": self.t30, "hi": self.tnow, "end": self.tend}).fetchall()
        return _reached(dict(rows), len(STEPS))

    def _funnel_duckdb_asof(self, order: str) -> Result:
        """Alternative: from every entering event, the earliest next step by ASOF joins (right
        for a window on the whole funnel only; per-step windows break it)."""
        w = DAY * US
        q = (f"WITH b AS (SELECT *, row_number() OVER (ORDER BY t, seq) AS pos "
             f"FROM ({self._funnel_rows()})), "
             "s1 AS (SELECT user_id, t AS t0, pos FROM b WHERE m & 1 <> 0)")
        for k in range(2, len(STEPS) + 1):
            q += (f", e{k} AS (SELECT user_id, t, pos FROM b WHERE m & {1 << (k - 1)} <> 0), "
                  f"s{k} AS (SELECT p.user_id, p.t0, e.pos FROM s{k - 1} p ASOF JOIN e{k} e "
                  f"ON p.user_id = e.user_id AND p.pos < e.pos WHERE e.t <= p.t0 + {w})")
        reached = " UNION ALL ".join(f"SELECT DISTINCT user_id, {k} AS level FROM s{k}"
                                     for k in range(1, len(STEPS) + 1))
        rows = self.ref.execute(
            f"{q} SELECT level, count(*) FROM (SELECT user_id, max(level) AS level "
            f"FROM ({reached}) GROUP BY user_id) GROUP BY level",
            {"lo": self.t30, "hi": self.tnow, "end": self.tend}).fetchall()
        return _reached(dict(rows), len(STEPS))

    def _funnel_chdb(self, order: str) -> Result:
        rows = self._ch(f"""
            SELECT level, count() AS users FROM (
              SELECT user_id, windowFunnel({DAY * US})(toUInt64(toUnixTimestamp64Micro(ts)),
                {', '.join(f"event = '{s}'" + (f" AND ts < {self._t(self.tnow)}" if i == 0
                                               else "") for i, s in enumerate(STEPS))}) AS level
              FROM events WHERE event IN ({', '.join(repr(s) for s in STEPS)})
                AND ts >= {self._t(self.t30)} AND ts < {self._t(self.tend)}
              GROUP BY user_id) GROUP BY level""")
        return _reached({int(r["level"]): int(r["users"]) for r in rows}, len(STEPS))

    @staticmethod
    def _t(ts: str) -> str:
        return f"toDateTime64('{ts}', 6, 'UTC')"

    # -- retention ------------------------------------------------------------------------------
    def _retention_nudge(self, cohort: str) -> Result:
        out = retention(self.report, {"start": {"event": LAUNCH}, "cohort": cohort,
                                      "interval": "week", "periods": PERIODS,
                                      "from": self.now - PERIODS * WEEK, "to": self.now})
        return {c["start"][:10]: [c["size"]] + [x or 0 for x in c["retained"]]
                for c in out["cohorts"] if c["size"]}

    def _retention_duckdb(self, cohort: str) -> Result:
        shift = f"to_seconds({self.offset_s})"
        local = f"(ts + {shift})"
        if cohort == "first_time":
            members = (f"SELECT user_id, date_trunc('week', first + {shift}) AS c "
                       "FROM (SELECT user_id, min(ts) AS first FROM events "
                       f"WHERE event = '{LAUNCH}' GROUP BY user_id) "
                       "WHERE first >= $lo AND first < $hi")
        else:
            members = (f"SELECT DISTINCT user_id, date_trunc('week', {local}) AS c FROM events "
                       f"WHERE event = '{LAUNCH}' AND ts >= $lo AND ts < $hi")
        rows = self.ref.execute(f"""
            WITH s AS ({members}),
            r AS (SELECT DISTINCT user_id, date_trunc('week', {local}) AS p FROM events
                  WHERE event = '{LAUNCH}' AND ts >= $lo::TIMESTAMP - INTERVAL 7 DAY
                    AND user_id IN (SELECT user_id FROM s))
            SELECT strftime(s.c, '%Y-%m-%d'), NULL, count(*) FROM s GROUP BY s.c
            UNION ALL
            SELECT strftime(s.c, '%Y-%m-%d'), date_diff('week', s.c, r.p), count(*)
            FROM s JOIN r ON r.user_id = s.user_id AND r.p >= s.c
              AND r.p <= s.c + INTERVAL {PERIODS} WEEK
            GROUP BY ALL""", {"lo": self.t8w, "hi": self.tnow}).fetchall()
        return _cohort_table(rows)

    def _retention_chdb(self, cohort: str) -> Result:
        week = f"toMonday(ts, '{TZ}')"
        conds = ", ".join(f"event = '{LAUNCH}' AND {week} = c + {7 * k}"
                          for k in range(PERIODS + 1))
        if cohort == "first_time":
            members = (f"SELECT user_id, toMonday(min(ts), '{TZ}') AS c FROM events "
                       f"WHERE event = '{LAUNCH}' GROUP BY user_id "
                       f"HAVING min(ts) >= {self._t(self.t8w)} AND min(ts) < {self._t(self.tnow)}")
        else:
            members = (f"SELECT DISTINCT user_id, {week} AS c FROM events "
                       f"WHERE event = '{LAUNCH}' AND ts >= {self._t(self.t8w)} "
                       f"AND ts < {self._t(self.tnow)}")
        rows = self._ch(f"""
            SELECT toString(c) AS c, sumForEach(r) AS cells FROM (
              SELECT user_id, c, retention({week} = c, {conds}) AS r
              FROM events INNER JOIN ({members}) m USING user_id
              WHERE event = '{LAUNCH}' AND ts >= {self._t(self.t8w)} - INTERVAL 7 DAY
              GROUP BY user_id, c)
            GROUP BY c""")
        return {r["c"]: [int(x) for x in r["cells"]] for r in rows}

    # -- flows --------------------------------------------------------------------------------
    def _flows_nudge(self, direction: str) -> Result:
        out = flows(self.report, {"event": ANCHOR, "direction": direction, "steps": DEPTH,
                                  "session_gap": {"minutes": GAP_S // 60},
                                  "sequences": TOP_PATHS, "from": self.now - 30 * DAY,
                                  "to": self.now})
        return out["paths"], [(tuple(s["events"]), s["paths"]) for s in out["sequences"]]

    def _flows_duckdb(self, direction: str) -> Result:
        rows = self.ref.execute(f"""
            WITH e AS (
              SELECT user_id, ts, seq, event FROM events WHERE ts >= $lo AND ts < $hi
                AND user_id IN (SELECT user_id FROM events
                                WHERE event = $anchor AND ts >= $lo AND ts < $hi)),
            s AS (SELECT *, lag(ts) OVER w AS pts, lag(event) OVER w AS pev FROM e
                  WINDOW w AS (PARTITION BY user_id ORDER BY ts, seq)),
            f AS (SELECT *, pts IS NULL OR ts - pts > INTERVAL {GAP_S} SECOND AS fresh FROM s),
            g AS (SELECT *, sum(fresh::INT) OVER (PARTITION BY user_id ORDER BY ts, seq) AS sess
                  FROM f WHERE fresh OR event <> pev),
            p AS (SELECT *, row_number() OVER (PARTITION BY user_id, sess ORDER BY ts, seq) AS pos
                  FROM g),
            a AS (SELECT user_id, sess, min(pos) AS apos FROM p WHERE event = $anchor
                  GROUP BY ALL),
            paths AS (SELECT list(event ORDER BY pos) AS path FROM p JOIN a USING (user_id, sess)
                      WHERE pos BETWEEN apos AND apos + {DEPTH} GROUP BY p.user_id, p.sess)
            SELECT path, count(*) AS n FROM paths GROUP BY path""",
            {"lo": self.t30, "hi": self.tnow, "anchor": ANCHOR}).fetchall()
        return _top_paths([(tuple(p), n) for p, n in rows])

    def _flows_chdb(self, direction: str) -> Result:
        rows = self._ch(f"""
            WITH e AS (
              SELECT user_id, ts, seq, event, toUnixTimestamp64Micro(ts) AS t,
                lagInFrame(toUnixTimestamp64Micro(ts)) OVER w AS pt,
                lagInFrame(event) OVER w AS pev,
                row_number() OVER w AS rn
              FROM events
              WHERE ts >= {self._t(self.t30)} AND ts < {self._t(self.tnow)}
                AND user_id IN (SELECT user_id FROM events WHERE event = '{ANCHOR}'
                  AND ts >= {self._t(self.t30)} AND ts < {self._t(self.tnow)})
              WINDOW w AS (PARTITION BY user_id ORDER BY ts, seq
                           ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)),
            g AS (SELECT *, sum(fresh) OVER (PARTITION BY user_id ORDER BY ts, seq
                                              ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
                            AS sess
                  FROM (SELECT *, toUInt8(rn = 1 OR t - pt > {GAP_S * US})
                                  AS fresh FROM e)
                  WHERE fresh = 1 OR event != pev),
            p AS (SELECT *, row_number() OVER (PARTITION BY user_id, sess ORDER BY ts, seq)
                            AS pos FROM g),
            a AS (SELECT user_id, sess, min(pos) AS apos FROM p WHERE event = '{ANCHOR}'
                  GROUP BY user_id, sess)
            SELECT path, count() AS n FROM (
              SELECT arrayMap(x -> x.2, arraySort(groupArray((pos, event)))) AS path
              FROM p INNER JOIN a USING (user_id, sess)
              WHERE pos >= apos AND pos <= apos + {DEPTH} GROUP BY user_id, sess)
            GROUP BY path""")
        return _top_paths([(tuple(r["path"]), int(r["n"])) for r in rows])


def _offset(t: float) -> int:
    off = dt.datetime.fromtimestamp(t, ZoneInfo(TZ)).utcoffset()
    return int(off.total_seconds()) if off else 0


def _reached(levels: dict[int, int], n: int) -> list[int]:
    return [sum(v for k, v in levels.items() if k >= step) for step in range(1, n + 1)]


def _cohort_table(rows: list[tuple[str, int | None, int]]) -> dict[str, list[int]]:
    """(cohort, None, size) and (cohort, k, users) rows → cohort: [size, k=0 … k=N]."""
    out: dict[str, list[int]] = {}
    for c, k, n in rows:
        cells = out.setdefault(c, [0] * (PERIODS + 2))
        cells[0 if k is None else k + 1] = n
    return out


def _top_paths(counts: list[tuple[tuple[str, ...], int]]) -> Result:
    """(number of paths, the most common ones), ties in Nudge's order (names, shorter
    first)."""
    ranked = sorted(counts, key=lambda pc: (-pc[1], pc[0] + ("",) * (DEPTH + 1 - len(pc[0]))))
    return sum(n for _, n in counts), ranked[:TOP_PATHS]


# -- running ------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    header(f"Funnels, retention, flows: {args.events:,} events, {args.users:,} users")
    directory = Path(args.dir or Path(tempfile.gettempdir()) /
                     f"nudge-bench-segments-{args.users}-{args.events}")
    info = datasets.build(directory, args.users, args.events, seed=args.seed)
    ch = None if args.no_chdb else open_chdb(directory, print)
    reports = Reports(directory, info.now, ch, args.alternatives)
    print(f"# data: {directory} (built in {info.build_seconds:.0f} s); account timezone {TZ}; "
          f"load {loadavg()}")
    names = [n for n in reports.names() if n.split(":")[0] in args.reports.split(",")]
    engines = {n: [e for e in reports.engines(n) if args.engines is None or e in args.engines]
               for n in names}

    times: dict[str, dict[str, list[float]]] = {n: {e: [] for e in engines[n]} for n in names}
    cpu: dict[str, dict[str, list[float]]] = {n: {e: [] for e in engines[n]} for n in names}
    results: dict[str, dict[str, Result]] = {n: {} for n in names}
    for n in names:  # the checked round; it warms up, and with --reps 0 it is the timed one
        for e in engines[n]:
            t, c = time.perf_counter(), time.process_time()
            results[n][e] = reports.run(n, e)
            if not args.reps:
                times[n][e].append(time.perf_counter() - t)
                cpu[n][e].append(time.process_time() - c)
    agree = {n: all(r == results[n]["nudge"] for r in results[n].values()) for n in names}
    for n in names:
        if not agree[n]:
            print(f"# DISAGREEMENT on {n}: " + json.dumps(
                {e: str(r)[:400] for e, r in results[n].items()}))
    for r in range(args.reps):
        for n in names:
            order = engines[n]
            for e in order[r % len(order):] + order[:r % len(order)]:
                t, c = time.perf_counter(), time.process_time()
                reports.run(n, e)
                times[n][e].append(time.perf_counter() - t)
                cpu[n][e].append(time.process_time() - c)
    reports.close()
    med = {n: {e: median(v) * 1000 for e, v in times[n].items()} for n in names}
    med_cpu = {n: {e: median(v) * 1000 for e, v in cpu[n].items()} for n in names}
    _print(names, med, agree, results, args.reps)
    # CPU time of this process (all threads: DuckDB's and chDB's too): on a loaded machine
    # it shows what each engine costs when it runs alone.
    print("\n# CPU ms (all threads of this process), medians")
    print(table(["report", *sorted({e for n in names for e in engines[n]})],
                [[_describe(n), *(med_cpu[n].get(e, "–") for e in
                                  sorted({e for m in engines.values() for e in m}))]
                 for n in names]))
    result = {"users": args.users, "events": args.events, "reps": args.reps,
              "median_ms": med, "median_cpu_ms": med_cpu, "agree": agree}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


def _print(names: list[str], med: dict[str, dict[str, float]], agree: dict[str, bool],
           results: dict[str, dict[str, Result]], reps: int) -> None:
    rows = []
    for n in names:
        m = med[n]
        refs = [m[e] for e in ("duckdb", "chdb") if e in m]
        row: list[Any] = [_describe(n), _summary(n, results[n]["nudge"]), m["nudge"]]
        row += [m["duckdb"], ratio(m["nudge"], m["duckdb"])] if "duckdb" in m else ["–", "–"]
        if "chdb" in m:
            row += [m["chdb"], ratio(m["nudge"], m["chdb"])]
        row += [ratio(m["nudge"], min(refs)) if refs else "–", "yes" if agree[n] else "NO"]
        rows.append(row)
    heads = ["report", "result", "nudge ms", "duckdb ms", "nudge/duckdb"]
    if any("chdb" in m for m in med.values()):
        heads += ["chdb ms", "nudge/chdb"]
    heads += ["nudge/faster ref", "same result"]
    rounds = f"medians of {reps} interleaved rounds" if reps else "one round (the checked one)"
    print(f"\n# {rounds}; load {loadavg()}")
    print(table(heads, rows))
    for n in names:
        for e in [e for e in med[n] if e.startswith("duckdb_")]:
            print(f"# {n}, alternative DuckDB SQL {e[7:]!r}: {med[n][e]:,.0f} ms "
                  f"({ratio(med[n][e], med[n]['nudge'])} of Nudge's time)")


def _describe(name: str) -> str:
    kind, arg = name.split(":", 1)
    return {"funnel": "3-step funnel, 1-day window, 30 d",
            "retention": f"weekly retention, 8 weeks, {arg.replace('_', '-')} cohorts",
            "flows": f"flows: {DEPTH} steps after {ANCHOR!r}, 30 d"}[kind]


def _summary(name: str, result: Result) -> str:
    kind = name.split(":", 1)[0]
    if kind == "funnel":
        return " → ".join(f"{x:,}" for x in result)
    if kind == "retention":
        return f"{sum(v[0] for v in result.values()):,} in {len(result)} cohorts"
    return f"{result[0]:,} paths"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--reps", type=int, default=7,
                   help="rounds after the checked one; medians are reported (0: time the "
                        "checked round, for runs too long to repeat)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--reports", default="funnel,retention,flows",
                   help="comma-separated subset of funnel, retention, flows")
    p.add_argument("--dir", help="data directory (shared with bench.segments; kept)")
    p.add_argument("--no-chdb", action="store_true")
    p.add_argument("--alternatives", action="store_true",
                   help="also time other SQL forms of the funnel's ordered pass "
                        "(list_reduce, ASOF joins)")
    p.add_argument("--engines", type=lambda v: v.split(","),
                   help="comma-separated subset of: nudge, duckdb, chdb (and the "
                        "--alternatives); nudge is always run")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    if args.engines is not None and "nudge" not in args.engines:
        args.engines.append("nudge")
    os.environ.setdefault("NUDGE_LOG_LEVEL", "warning")
    return run(args)


if __name__ == "__main__":
    main()
