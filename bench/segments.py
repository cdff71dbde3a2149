"""Segment counts: Nudge's engine vs hand-written DuckDB SQL vs ClickHouse (chDB).

Six canonical segments run, in the same process on the same data, three ways:

- **nudge**: ``SegmentEngine.count`` on an ``AccountStore`` (definition → compiler → SQL over
  events sorted by (event, ts) and typed property columns), the path the API takes;
- **duckdb**: SQL written by hand for a plain events table in time (arrival) order with one
  typed column per property, and a profiles table;
- **chdb**: the same questions in ClickHouse SQL on MergeTree tables, events
  ``ORDER BY (event, ts)``, loaded from the same data.

All three must return the same count for every segment (checked before timing). Runs are
interleaved (each round runs every segment on every engine, in rotating order) and each
figure is the median over the rounds, so the machine's noise hits all engines alike. Then the
single-user membership test (``SegmentEngine.contains``) of segment (a) is timed.

Data: ``bench/datasets.py`` (demo-shaped, written straight into the store's layout)::

    python -m bench.segments                                   # 10M events, 200k users
    python -m bench.segments --events 100000000 --users 1000000 --reps 7
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from bench import datasets
from bench.common import header, loadavg, median, ratio, table
from nudge.query.segments.evaluate import SegmentEngine
from nudge.query.segments.model import Node, parse

DAY = 86_400.0
LAYOUTS = {"merged": "events_sorted as one run ordered by (event, ts)",
           "runs": "events_sorted as compaction runs of 1,000,000 arrivals (datasets.RUN_ROWS), "
                   "each ordered by (event, ts)",
           "store-merged": "the runs after the store's own background merge "
                           "(NUDGE_MERGE_* defaults)"}
CITY = "New York"
CITIES_E = ["London", "Paris", "Tokyo"]


# -- the segments, three ways ---------------------------------------------------------------
def definitions() -> dict[str, dict[str, Any]]:
    """Nudge segment definitions (the JSON the API takes)."""
    a = {"and": [
        {"did": {"event": "Charged", "where": [{"property": "Amount", "op": "gt", "value": 500}],
                 "count": {"op": ">=", "value": 3}, "window": {"last": {"days": 30}}}},
        {"profile": {"property": "City", "op": "eq", "value": CITY}},
        {"did_not": {"event": "App Uninstalled"}},
    ]}
    b = {"aggregate": {"event": "Charged", "property": "Amount", "fn": "sum", "op": ">=",
                       "value": 5000, "window": {"last": {"days": 90}}}}
    c = {"sequence": {"first": {"event": "Added To Cart"}, "then": {"event": "Charged"},
                      "window": {"last": {"hours": 24}}, "then_happened": False}}
    d = {"first_time": {"event": "Charged", "window": {"last": {"days": 7}}}}
    e = {"and": [
        {"profile": {"property": "City", "op": "in", "value": CITIES_E}},
        {"profile": {"property": "Age", "op": "gte", "value": 30}},
        {"profile": {"property": "MSG-email", "op": "eq", "value": True}},
    ]}
    launched = {"did": {"event": "App Launched", "window": {"last": {"days": 7}}}}
    rated = {"did": {"event": "Rated", "window": {"last": {"days": 30}}}}
    f = {"or": [
        {"and": [b, {"not": c}, launched]},
        {"and": [d, {"not": {"or": [e, rated]}}]},
        a,
    ]}
    return {"a": a, "b": b, "c": c, "d": d, "e": e, "f": f}


DESCRIPTIONS = {
    "a": "Charged ≥3× in 30 d with Amount > 500, City = X, never uninstalled",
    "b": "sum(Amount) of Charged in 90 d ≥ 5000",
    "c": "Added To Cart in 24 h, no Charged since",
    "d": "first Charged in the last 7 d",
    "e": "profile only: City in (3), Age ≥ 30, email opt-in",
    "f": "3-level AND/OR/NOT of the above",
}


def duckdb_sql(now: float) -> dict[str, str]:
    """Hand-written DuckDB over ``events`` (time order, typed columns) and ``profiles``."""
    t = {k: f"TIMESTAMP '{datasets.as_timestamp(now - s)}'" for k, s in
         (("30d", 30 * DAY), ("90d", 90 * DAY), ("24h", DAY), ("7d", 7 * DAY))}
    cities = ", ".join(f"'{c}'" for c in CITIES_E)
    sets = {
        "a": f"""SELECT c.user_id FROM (
                   SELECT user_id FROM events
                   WHERE event = 'Charged' AND ts >= {t['30d']} AND amount > 500
                   GROUP BY user_id HAVING count(*) >= 3) c
                 JOIN profiles p ON p.user_id = c.user_id
                 WHERE p.city = '{CITY}' AND c.user_id NOT IN (
                   SELECT user_id FROM events WHERE event = 'App Uninstalled')""",
        "b": f"""SELECT user_id FROM events WHERE event = 'Charged' AND ts >= {t['90d']}
                 GROUP BY user_id HAVING sum(amount) >= 5000""",
        "c": f"""SELECT c.user_id FROM (
                   SELECT user_id, max(ts) AS last_cart FROM events
                   WHERE event = 'Added To Cart' AND ts >= {t['24h']} GROUP BY user_id) c
                 LEFT JOIN (
                   SELECT user_id, max(ts) AS last_charge FROM events
                   WHERE event = 'Charged' AND ts >= {t['24h']} GROUP BY user_id) ch
                 ON ch.user_id = c.user_id
                 WHERE ch.last_charge IS NULL OR ch.last_charge < c.last_cart""",
        "d": f"""SELECT user_id FROM events WHERE event = 'Charged'
                 GROUP BY user_id HAVING min(ts) >= {t['7d']}""",
        "e": f"""SELECT user_id FROM profiles
                 WHERE city IN ({cities}) AND age >= 30 AND msg_email""",
        "launched": f"""SELECT DISTINCT user_id FROM events
                        WHERE event = 'App Launched' AND ts >= {t['7d']}""",
        "rated": f"""SELECT DISTINCT user_id FROM events
                     WHERE event = 'Rated' AND ts >= {t['30d']}""",
    }
    s = {k: f"({v})" for k, v in sets.items()}
    sets["f"] = (f"(({s['b']} INTERSECT {s['launched']}) EXCEPT {s['c']}) "
                 f"UNION ({s['d']} EXCEPT ({s['e']} UNION {s['rated']})) UNION {s['a']}")
    return {k: f"SELECT count(*) FROM ({sets[k]})" for k in "abcdef"}


def clickhouse_sql(now: float) -> dict[str, str]:
    """The same in ClickHouse SQL (MergeTree, events ORDER BY (event, ts))."""
    t = {k: f"toDateTime64('{datasets.as_timestamp(now - s)}', 6, 'UTC')" for k, s in
         (("30d", 30 * DAY), ("90d", 90 * DAY), ("24h", DAY), ("7d", 7 * DAY))}
    cities = ", ".join(f"'{c}'" for c in CITIES_E)
    sets = {
        "a": f"""SELECT user_id FROM events
                 WHERE event = 'Charged' AND ts >= {t['30d']} AND amount > 500
                 AND user_id IN (SELECT user_id FROM profiles WHERE city = '{CITY}')
                 AND user_id NOT IN (SELECT user_id FROM events
                                     WHERE event = 'App Uninstalled')
                 GROUP BY user_id HAVING count() >= 3""",
        "b": f"""SELECT user_id FROM events WHERE event = 'Charged' AND ts >= {t['90d']}
                 GROUP BY user_id HAVING sum(amount) >= 5000""",
        "c": f"""SELECT user_id FROM events
                 WHERE event IN ('Added To Cart', 'Charged') AND ts >= {t['24h']}
                 GROUP BY user_id
                 HAVING countIf(event = 'Added To Cart') > 0
                 AND maxIf(ts, event = 'Charged') < maxIf(ts, event = 'Added To Cart')""",
        "d": f"""SELECT user_id FROM events WHERE event = 'Charged'
                 GROUP BY user_id HAVING min(ts) >= {t['7d']}""",
        "e": f"""SELECT user_id FROM profiles
                 WHERE city IN ({cities}) AND age >= 30 AND msg_email""",
        "launched": f"""SELECT DISTINCT user_id FROM events
                        WHERE event = 'App Launched' AND ts >= {t['7d']}""",
        "rated": f"""SELECT DISTINCT user_id FROM events
                     WHERE event = 'Rated' AND ts >= {t['30d']}""",
    }
    s = {k: f"({v})" for k, v in sets.items()}
    sets["f"] = (f"SELECT user_id FROM (({s['b']} INTERSECT DISTINCT {s['launched']}) "
                 f"EXCEPT DISTINCT {s['c']}) "
                 f"UNION DISTINCT SELECT user_id FROM ({s['d']} EXCEPT DISTINCT "
                 f"(SELECT user_id FROM ({s['e']} UNION DISTINCT {s['rated']}))) "
                 f"UNION DISTINCT {s['a']}")
    return {k: f"SELECT count() FROM ({sets[k]})" for k in "abcdef"}


# -- chDB -----------------------------------------------------------------------------------
CH_EVENTS = """CREATE TABLE IF NOT EXISTS events (
    seq UInt64, user_id UInt64, event LowCardinality(String), ts DateTime64(6, 'UTC'),
    amount Float64, category LowCardinality(String), price Float64,
    product_id LowCardinality(String), quantity Float64, payment_method LowCardinality(String),
    platform LowCardinality(String), app_version LowCardinality(String),
    query LowCardinality(String), campaign_id LowCardinality(String), stars Float64
) ENGINE = MergeTree ORDER BY (event, ts)"""
CH_PROFILES = """CREATE TABLE IF NOT EXISTS profiles (
    user_id UInt64, city LowCardinality(String), country LowCardinality(String),
    gender LowCardinality(String), age Float64, signup_date DateTime64(6, 'UTC'),
    platform LowCardinality(String), customer_type LowCardinality(String),
    msg_email Bool, msg_push Bool
) ENGINE = MergeTree ORDER BY user_id"""


def open_chdb(directory: Path, log: Callable[[str], None]) -> Any:
    from chdb import session

    path = directory / "chdb"
    stamp = directory / "chdb.loaded"
    if not stamp.exists():
        shutil.rmtree(path, ignore_errors=True)
    s = session.Session(str(path))
    if stamp.exists():
        return s
    started = time.perf_counter()
    ref = duckdb.connect(str(directory / "reference.duckdb"), read_only=True)
    ref.execute("SET enable_progress_bar = false")
    ref.execute("SET TimeZone = 'UTC'")
    # Non-key property columns get ClickHouse's usual defaults instead of NULL (0, ''),
    # which gives ClickHouse its fastest layout and changes none of the six answers.
    num = {c for _, c, t in datasets.EVENT_PROPS if t == "number"}
    cols = ", ".join(f"coalesce({c}, {'0' if c in num else chr(39) * 2}) AS {c}"
                     for _, c, _ in datasets.EVENT_PROPS)
    ev_parquet, pr_parquet = directory / "events.parquet", directory / "profiles.parquet"
    ref.execute(f"COPY (SELECT seq, user_id, event, ts, {cols} FROM events) "
                f"TO '{ev_parquet}' (FORMAT parquet, ROW_GROUP_SIZE 1000000)")
    ref.execute("COPY (SELECT user_id, city, country, gender, age, signup_date, platform, "
                f"customer_type, msg_email, msg_push FROM profiles) TO '{pr_parquet}' "
                "(FORMAT parquet)")
    ref.close()
    s.query(CH_EVENTS)
    s.query(CH_PROFILES)
    s.query(f"INSERT INTO events SELECT * FROM file('{ev_parquet}', Parquet)")
    s.query(f"INSERT INTO profiles SELECT * FROM file('{pr_parquet}', Parquet)")
    # One part per table: ClickHouse at its best (no merges pending while we measure).
    s.query("OPTIMIZE TABLE events FINAL")
    s.query("OPTIMIZE TABLE profiles FINAL")
    ev_parquet.unlink()
    pr_parquet.unlink()
    stamp.touch()
    log(f"# chDB tables loaded in {time.perf_counter() - started:.0f} s")
    return s


def chdb_count(s: Any, sql: str) -> int:
    return int(str(s.query(sql, "CSV")).strip())


# -- running ----------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    header(f"Segments: {args.events:,} events, {args.users:,} users")
    directory = Path(args.dir or Path(tempfile.gettempdir()) /
                     f"nudge-bench-segments-{args.users}-{args.events}")
    info = datasets.build(directory, args.users, args.events, seed=args.seed)
    now = info.now
    store = datasets.open_store(directory, args.layout, tail=args.tail)
    engine = SegmentEngine(store)
    ref = duckdb.connect(str(directory / "reference.duckdb"), read_only=True)
    ref.execute("SET TimeZone = 'UTC'")
    ref.execute("SET enable_progress_bar = false")
    ch = None if args.no_chdb else open_chdb(directory, print)
    nodes: dict[str, Node] = {k: parse(v, now) for k, v in definitions().items()}
    dsql, csql = duckdb_sql(now), clickhouse_sql(now)
    print(f"# data: {directory} (built in {info.build_seconds:.0f} s); store layout: "
          f"{LAYOUTS[args.layout]}{tail_note(args.tail)}; load {loadavg()}")

    systems: dict[str, Callable[[str], int]] = {
        "nudge": lambda k: engine.count(nodes[k], now=now),
        "duckdb": lambda k: int(ref.execute(dsql[k]).fetchone()[0]),
    }
    if ch is not None:
        systems["chdb"] = lambda k: chdb_count(ch, csql[k])
    keys = [k for k in "abcdef" if k in args.segments]

    counts: dict[str, dict[str, int]] = {k: {} for k in keys}
    for k in keys:  # exactness first (this also warms every cache)
        for name, fn in systems.items():
            counts[k][name] = fn(k)
    exact = all(len(set(c.values())) == 1 for c in counts.values())

    # Wall time, and CPU time of the whole process (all engines run in it, on all threads):
    # on a shared machine CPU time shows the work done, wall time includes waiting for a core.
    wall: dict[str, dict[str, list[float]]] = {k: {n: [] for n in systems} for k in keys}
    cpu: dict[str, dict[str, list[float]]] = {k: {n: [] for n in systems} for k in keys}
    order = list(systems)
    for r in range(args.reps):
        for k in keys:
            for name in order[r % len(order):] + order[:r % len(order)]:
                t, c = time.perf_counter(), time.process_time()
                systems[name](k)
                cpu[k][name].append(time.process_time() - c)
                wall[k][name].append(time.perf_counter() - t)
    med = {k: {n: median(v) * 1000 for n, v in wall[k].items()} for k in keys}
    med_cpu = {k: {n: median(v) * 1000 for n, v in cpu[k].items()} for k in keys}

    heads = ["segment", "members", "nudge ms", "duckdb ms", "nudge/duckdb"]
    if ch is not None:
        heads += ["chdb ms", "nudge/chdb"]
    for title, m_of in (("wall", med), ("CPU", med_cpu)):
        rows = []
        for k in keys:
            m = m_of[k]
            row: list[Any] = [f"({k}) {DESCRIPTIONS[k]}", f"{counts[k]['nudge']:,}",
                              m["nudge"], m["duckdb"], ratio(m["nudge"], m["duckdb"])]
            if ch is not None:
                row += [m["chdb"], ratio(m["nudge"], m["chdb"])]
            row.append("yes" if len(set(counts[k].values())) == 1 else
                       "NO " + json.dumps(counts[k]))
            rows.append(row)
        print(f"\n# {title} time, medians of {args.reps} interleaved rounds; load {loadavg()}")
        print(table([*heads, "same count"], rows))

    contains = membership(engine, nodes["a"], now, args.reps) if "a" in keys else {}
    if contains:
        print(f"\n# contains(a), single user: members {contains['member_ms']:.2f} ms, "
              f"non-members {contains['non_member_ms']:.2f} ms (median of "
              f"{contains['calls']} calls); agrees with count: {contains['agrees']}")
    store.close()
    ref.close()
    result = {"users": args.users, "events": args.events, "reps": args.reps, "exact": exact,
              "layout": args.layout, "tail": args.tail,
              "counts": counts, "median_ms": med, "median_cpu_ms": med_cpu,
              "contains": contains}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if not args.keep and not args.dir:
        shutil.rmtree(directory, ignore_errors=True)
    return result


def compare_layouts(args: argparse.Namespace) -> dict[str, Any]:
    """Nudge alone on several layouts of the same events, rounds interleaved: what merging
    the compaction runs buys (``--compare-layouts runs,store-merged,merged``)."""
    layouts = args.compare_layouts.split(",")
    header(f"Segments by layout: {args.events:,} events, {args.users:,} users")
    base = {name: name.removesuffix("+tail") for name in layouts}
    directory = Path(args.dir or Path(tempfile.gettempdir()) /
                     f"nudge-bench-segments-{args.users}-{args.events}")
    info = datasets.build(directory, args.users, args.events, seed=args.seed)
    now = info.now
    if "store-merged" in base.values():
        datasets.store_merged(directory)  # built (and timed) before any store is open
    stores = {name: datasets.open_store(directory, base[name],
                                        tail=args.tail if name.endswith("+tail") else 0)
              for name in layouts}
    engines = {name: SegmentEngine(store) for name, store in stores.items()}
    for name, store in stores.items():
        sizes = [f"{r.rows:,}" for r in store.sorted_runs.runs]
        print(f"# {name}: {LAYOUTS[base[name]]}; {len(sizes)} recorded run(s) "
              f"({', '.join(sizes[:6])}{', ...' if len(sizes) > 6 else ''})"
              f"{tail_note(args.tail if name != base[name] else 0)}")
    nodes = {k: parse(v, now) for k, v in definitions().items() if k in args.segments}
    counts = {k: {n: e.count(nodes[k], now=now) for n, e in engines.items()} for k in nodes}
    cpu: dict[str, dict[str, list[float]]] = {k: {n: [] for n in layouts} for k in nodes}
    wall: dict[str, dict[str, list[float]]] = {k: {n: [] for n in layouts} for k in nodes}
    for r in range(args.reps):
        for k in nodes:
            for name in layouts[r % len(layouts):] + layouts[:r % len(layouts)]:
                t, c = time.perf_counter(), time.process_time()
                engines[name].count(nodes[k], now=now)
                cpu[k][name].append(time.process_time() - c)
                wall[k][name].append(time.perf_counter() - t)
    rows = []
    for k in nodes:
        row: list[Any] = [f"({k}) {DESCRIPTIONS[k]}"]
        for name in layouts:
            row += [median(wall[k][name]) * 1000, median(cpu[k][name]) * 1000]
        row.append("yes" if len(set(counts[k].values())) == 1 else "NO " + json.dumps(counts[k]))
        rows.append(row)
    heads = ["segment"] + [f"{n} {w}" for n in layouts for w in ("ms", "CPU ms")] + ["same"]
    print(f"\n# medians of {args.reps} interleaved rounds; load {loadavg()}")
    print(table(heads, rows))
    contains = {}
    if "a" in nodes:
        contains = {n: membership(e, nodes["a"], now, args.reps) for n, e in engines.items()}
        print("# contains(a) members / non-members ms: " + "; ".join(
            f"{n} {c['member_ms']:.2f} / {c['non_member_ms']:.2f}" for n, c in contains.items()))
    for store in stores.values():
        store.close()
    result = {"layouts": layouts, "counts": counts, "contains": contains,
              "median_ms": {k: {n: median(v) * 1000 for n, v in wall[k].items()} for k in nodes},
              "median_cpu_ms": {k: {n: median(v) * 1000 for n, v in cpu[k].items()}
                                for k in nodes}}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


def tail_note(rows: int) -> str:
    return f", the newest {rows:,} events still in events_recent (arrival order)" if rows else ""


def membership(engine: SegmentEngine, node: Node, now: float, reps: int) -> dict[str, Any]:
    """Time ``contains`` for members and non-members of ``node``."""
    members = sorted(engine.user_ids(node, now=now))
    rng = random.Random(1)
    with engine.store.cursor() as cur:
        total = int(cur.execute("SELECT max(user_id) FROM profiles").fetchone()[0])
    inside = rng.sample(members, min(10, len(members)))
    member_set = set(members)
    outside = [u for u in rng.sample(range(1, total + 1), 40) if u not in member_set][:10]
    agrees = True
    t_in: list[float] = []
    t_out: list[float] = []
    for _ in range(max(1, reps // 2)):
        for uid in inside + outside:
            t = time.perf_counter()
            got = engine.contains(node, uid, now=now)
            (t_in if uid in member_set else t_out).append(time.perf_counter() - t)
            agrees &= got == (uid in member_set)
    return {"member_ms": median(t_in) * 1000 if t_in else 0.0,
            "non_member_ms": median(t_out) * 1000, "calls": len(t_in) + len(t_out),
            "agrees": agrees}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--reps", type=int, default=7, help="rounds; medians are reported")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--segments", default="abcdef", help="which of a..f to run")
    p.add_argument("--layout", choices=list(LAYOUTS), default="merged",
                   help="the account store's events_sorted layout")
    p.add_argument("--tail", type=int, default=0, metavar="ROWS",
                   help="leave the newest ROWS events in events_recent (a live store between "
                        "compactions; with --compare-layouts, for layouts named L+tail)")
    p.add_argument("--dir", help="data directory (kept; reused when it matches)")
    p.add_argument("--keep", action="store_true", help="keep the temp data directory")
    p.add_argument("--no-chdb", action="store_true")
    p.add_argument("--compare-layouts", metavar="L1,L2,...",
                   help="instead: Nudge alone on these layouts (of " + ", ".join(LAYOUTS)
                        + "), interleaved")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    os.environ.setdefault("NUDGE_LOG_LEVEL", "warning")
    if args.compare_layouts:
        unknown = {n.removesuffix("+tail") for n in args.compare_layouts.split(",")} - set(LAYOUTS)
        if unknown:
            p.error(f"unknown layout(s): {', '.join(sorted(unknown))}")
        return compare_layouts(args)
    return run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
