"""Property storage and physical row order, on the same generated events (DuckDB directly).

    python -m bench.layout [--events 10000000] [--users 200000]

Events are generated in SQL (deterministic, hash-based): 8 event names, 8 properties, heavy
users, 90 days in arrival (time) order. Then, hot (after one warm-up run), median of ``--reps``:

(a) a selective property filter (a string and a numeric one) through a typed column vs
    ``->>`` on a JSON column vs a MAP(VARCHAR, VARCHAR) column, rows in time order;
(b) a segment-like query ("users with >= 3 Charged in the last 30 days with Amount > 500")
    and a daily trend (events + unique users per day of one event over 30 days) on rows in
    time order, rows ordered by (event, ts), and our store's own layout: an AccountStore whose
    events went through its compaction (runs of ``compact_threshold_rows`` sorted by
    (event, ts) in events_sorted, the newest rows still in events_recent, read via the
    ``events`` view, property columns allocated by the property catalog);
(c) the same two queries on chDB (ClickHouse) MergeTree ORDER BY (event, ts) -- the reference.

Unique users per day are computed two ways in DuckDB: ``count(DISTINCT user_id)`` per day, and
deduplicating (day, user) first and then counting. Every variant must return the same result.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from bench import common

NOW = dt.datetime(2026, 11, 1)
DAYS = 90
EVENTS = [("App Launched", 0.25), ("Product Viewed", 0.30), ("Searched", 0.12),
          ("Added To Cart", 0.10), ("Notification Clicked", 0.08), ("Charged", 0.06),
          ("Product Rated", 0.04), ("Wishlisted", 0.05)]
CITIES = ["Mumbai", "Delhi", "Bengaluru", "Hyderabad", "Chennai", "Kolkata", "Pune", "Ahmedabad",
          "Jaipur", "Lucknow", "Surat", "Kanpur", "Nagpur", "Indore", "Bhopal", "Patna",
          "Vadodara", "Ludhiana", "Agra", "Nashik"]
CATEGORIES = ["Electronics", "Fashion", "Home", "Beauty", "Books", "Sports", "Toys", "Grocery",
              "Furniture", "Jewellery", "Footwear", "Appliances"]
# property name in the app -> (column in the generated tables, type, events that carry it)
PROPS = {
    "Amount": ("amount", "DOUBLE", ["Charged"]),
    "Items": ("items", "DOUBLE", ["Charged"]),
    "Payment Mode": ("payment_mode", "VARCHAR", ["Charged"]),
    "Price": ("price", "DOUBLE", ["Product Viewed", "Added To Cart", "Wishlisted"]),
    "City": ("city", "VARCHAR", ["Product Viewed", "Added To Cart", "Charged"]),
    "Category": ("category", "VARCHAR", ["Product Viewed", "Searched", "Added To Cart", "Charged",
                                         "Product Rated", "Wishlisted"]),
    "Platform": ("platform", "VARCHAR", ["App Launched", "Notification Clicked"]),
    "Product ID": ("product_id", "VARCHAR", ["Product Viewed", "Added To Cart", "Product Rated",
                                             "Wishlisted"]),
}
SINCE = NOW - dt.timedelta(days=30)
TREND_EVENT = "Product Viewed"


def _sql_list(xs: list[str]) -> str:
    return "[" + ", ".join("'" + x.replace("'", "''") + "'" for x in xs) + "]"


def _has(prop: str) -> str:
    return f"event IN ({', '.join(repr(e) for e in PROPS[prop][2])})"


def generate(con: duckdb.DuckDBPyConnection, n: int, users: int) -> None:
    """The base table ``gen``: ``n`` events in arrival (time) order."""
    cum, case = 0.0, []
    for name, share in EVENTS[:-1]:
        cum += share
        case.append(f"WHEN u_event < {cum:.4f} THEN '{name}'")
    start = NOW - dt.timedelta(days=DAYS)
    span_us = DAYS * 86400 * 1_000_000
    normal = "sqrt(-2 * ln(u_a + 1e-12)) * cos(2 * pi() * u_b)"
    con.execute(f"""
        CREATE OR REPLACE TABLE gen AS
        WITH r AS (
            SELECT i, CAST(hash(i, 11) >> 1 AS BIGINT) AS h,
                (hash(i, 12) % 1000003) / 1000003.0 AS u_user,
                (hash(i, 13) % 1000003) / 1000003.0 AS u_event,
                (hash(i, 14) % 1000003) / 1000003.0 AS u_a,
                (hash(i, 15) % 1000003) / 1000003.0 AS u_b
            FROM range({n}) t(i)),
        e AS (
            SELECT *, CASE {' '.join(case)} ELSE '{EVENTS[-1][0]}' END AS event FROM r)
        SELECT
            i + 1 AS seq,
            CAST(floor({users} * u_user * u_user) AS BIGINT) + 1 AS user_id,
            event,
            TIMESTAMP '{start}' + to_microseconds(
                CAST(i * ({span_us} // {n}) + h % 60000000 AS BIGINT)) AS ts,
            CASE WHEN {_has('Amount')} THEN round(350 * exp({normal}), 2) END AS amount,
            CASE WHEN {_has('Items')} THEN CAST(1 + (h >> 24) % 6 AS DOUBLE) END AS items,
            CASE WHEN {_has('Payment Mode')} THEN
                ['UPI', 'Credit Card', 'Debit Card', 'Net Banking', 'COD', 'Wallet']
                [1 + (h >> 40) % 6] END AS payment_mode,
            CASE WHEN {_has('Price')} THEN round(799 * exp(0.9 * {normal}), 2) END AS price,
            CASE WHEN {_has('City')} THEN {_sql_list(CITIES)}[1 + h % 20] END AS city,
            CASE WHEN {_has('Category')} THEN {_sql_list(CATEGORIES)}[1 + (h >> 8) % 12]
                END AS category,
            CASE WHEN {_has('Platform')} THEN ['Android', 'iOS', 'Web'][1 + (h >> 16) % 3]
                END AS platform,
            CASE WHEN {_has('Product ID')} THEN 'P' || lpad(CAST((h >> 32) % 20000 AS VARCHAR),
                5, '0') END AS product_id
        FROM e ORDER BY seq""")


def json_and_map(con: duckdb.DuckDBPyConnection) -> None:
    """``t_json`` (properties as JSON) and ``t_map`` (MAP(VARCHAR, VARCHAR)): only the
    properties an event carries, as an SDK would send them; rows in time order."""
    json_case, map_case = [], []
    for event, _ in EVENTS:
        names = [p for p, (_, _, evs) in PROPS.items() if event in evs]
        pairs = ", ".join(f"'{p}', {PROPS[p][0]}" for p in names)
        json_case.append(f"WHEN '{event}' THEN json_object({pairs})")
        keys = _sql_list(names)
        vals = ", ".join(f"CAST({PROPS[p][0]} AS VARCHAR)" for p in names)
        map_case.append(f"WHEN '{event}' THEN MAP({keys}, [{vals}])")
    con.execute(f"CREATE OR REPLACE TABLE t_json AS SELECT seq, user_id, event, ts, "
                f"CASE event {' '.join(json_case)} END AS props FROM gen ORDER BY seq")
    con.execute(f"CREATE OR REPLACE TABLE t_map AS SELECT seq, user_id, event, ts, "
                f"CASE event {' '.join(map_case)} END AS props FROM gen ORDER BY seq")


def build_store(tmp: Path, parquet: Path, n: int, threshold: int) -> tuple[Any, dict[str, str]]:
    """An AccountStore holding the same events, written in arrival order and compacted every
    ``threshold`` rows as the writer does; the newest ``threshold // 2`` rows stay recent."""
    from nudge.config import load_settings
    from nudge.ingest.upload import parse_upload
    from nudge.store.account import AccountStore

    settings = load_settings(data_dir=tmp, compact_threshold_rows=10**12)
    store = AccountStore("layout", tmp / "store" / "events.duckdb", settings)
    # One real record per event name, so that the property catalog allocates the columns.
    sample = {"Amount": 1.5, "Items": 2.0, "Payment Mode": "UPI", "Price": 9.5, "City": "Pune",
              "Category": "Home", "Platform": "iOS", "Product ID": "P00001"}
    recs = [{"type": "event", "identity": "layout-seed", "ts": 1, "evtName": e,
             "evtData": {p: sample[p] for p, (_, _, evs) in PROPS.items() if e in evs}}
            for e, _ in EVENTS]
    records, errors = parse_upload({"d": recs}, settings.limits)
    assert not errors, errors
    store.write(records)
    columns = {PROPS[p][0]: store.catalog.get("event", p).column for p in PROPS}  # type: ignore[union-attr]
    select = ", ".join(f"{src} AS {dst}" for src, dst in columns.items())

    def load(lo: int, hi: int) -> Callable[[], None]:
        def run() -> None:
            store.writer_cursor.execute(
                f"INSERT INTO events_recent BY NAME SELECT seq, 'demo-' || seq AS message_id, "
                f"user_id, event, ts, ts AS ingested_at, {select} "
                f"FROM read_parquet('{parquet}') WHERE seq > {lo} AND seq <= {hi}")
        return run

    store.run_on_writer(lambda: store.writer_cursor.execute("DELETE FROM events_recent")).result()
    tail = min(n, threshold // 2)
    lo = 0
    while lo < n - tail:
        hi = min(n - tail, lo + threshold)
        store.run_on_writer(load(lo, hi)).result()
        store.compact_now()
        lo = hi
    store.run_on_writer(load(n - tail, n)).result()
    return store, columns


def queries(table: str, c: dict[str, str]) -> dict[str, str]:
    """The two queries over ``table`` with the property columns named ``c``."""
    return {
        "segment": f"""
            SELECT count(*) FROM (
                SELECT user_id FROM {table}
                WHERE event = 'Charged' AND ts >= TIMESTAMP '{SINCE}' AND {c['amount']} > 500
                GROUP BY user_id HAVING count(*) >= 3)""",
        "trend": f"""
            SELECT date_trunc('day', ts) AS day, count(*) AS events,
                   count(DISTINCT user_id) AS users
            FROM {table} WHERE event = '{TREND_EVENT}' AND ts >= TIMESTAMP '{SINCE}'
            GROUP BY day ORDER BY day""",
        "trend, dedup first": f"""
            WITH d AS (
                SELECT date_trunc('day', ts) AS day, user_id, count(*) AS n
                FROM {table} WHERE event = '{TREND_EVENT}' AND ts >= TIMESTAMP '{SINCE}'
                GROUP BY ALL)
            SELECT day, sum(n)::BIGINT AS events, count(*) AS users FROM d
            GROUP BY day ORDER BY day""",
    }


def chdb_queries() -> dict[str, str]:
    return {
        "segment": f"""
            SELECT count() FROM (
                SELECT user_id FROM b.events
                WHERE event = 'Charged' AND ts >= toDateTime64('{SINCE}', 6) AND amount > 500
                GROUP BY user_id HAVING count() >= 3)""",
        "trend": f"""
            SELECT toDate(ts) AS day, count() AS events, uniqExact(user_id) AS users
            FROM b.events WHERE event = '{TREND_EVENT}' AND ts >= toDateTime64('{SINCE}', 6)
            GROUP BY day ORDER BY day""",
    }


STORE = "our store (events_sorted + events_recent)"
STORE_RUNS = "  of which: events_sorted runs alone"
CHDB = "chDB MergeTree ORDER BY (event, ts)"


def load_chdb(path: Path, parquet: Path) -> Any:
    """A chDB session with the events in MergeTree ORDER BY (event, ts), one part."""
    from chdb import session

    s = session.Session(str(path))
    s.query("CREATE DATABASE IF NOT EXISTS b")
    s.query("CREATE TABLE b.events (seq Int64, user_id Int64, "
            "event LowCardinality(String), ts DateTime64(6), amount Nullable(Float64), "
            "items Nullable(Float64), payment_mode Nullable(String), "
            "price Nullable(Float64), city Nullable(String), category Nullable(String), "
            "platform Nullable(String), product_id Nullable(String)) "
            "ENGINE = MergeTree ORDER BY (event, ts)")
    s.query(f"INSERT INTO b.events SELECT * FROM file('{parquet}', Parquet)")
    s.query("OPTIMIZE TABLE b.events FINAL")
    return s


def _chdb_rows(s: Any, sql: str) -> list[tuple[str, ...]]:
    text = str(s.query(sql, "CSV")).strip()
    return [tuple(x.strip('"') for x in line.split(",")) for line in text.splitlines()]


def _norm(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Results comparable across engines: days as dates, numbers as ints."""
    def one(v: Any) -> Any:
        if isinstance(v, dt.datetime):
            return v.date()
        if isinstance(v, str) and "-" in v:
            return dt.date.fromisoformat(v)
        return int(v)

    return [tuple(one(v) for v in r) for r in rows]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=5_000_000)
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--compact-every", type=int, default=1_000_000,
                   help="rows per compaction run in the store (compact_threshold_rows)")
    p.add_argument("--no-chdb", action="store_true")
    args = p.parse_args(argv)
    common.header("layout: property storage and physical order")
    print(f"# data: {args.events:,} generated events, {args.users:,} users, {DAYS} days to "
          f"{NOW:%Y-%m-%d}; hot, median of {args.reps}; load average before: "
          f"{common.loadavg()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="nudge-bench-layout-"))
    result: dict[str, Any] = {}
    try:
        con = duckdb.connect(str(tmp / "layout.duckdb"))
        t = time.perf_counter()
        steps: list[str] = []
        last = [t]

        def step(name: str) -> None:
            now = time.perf_counter()
            steps.append(f"{name} {now - last[0]:.0f}s")
            last[0] = now

        generate(con, args.events, args.users)
        step("generate")
        json_and_map(con)
        step("json+map")
        con.execute("CREATE OR REPLACE TABLE t_event_ts AS SELECT * FROM gen ORDER BY event, ts")
        con.execute("CHECKPOINT")
        parquet = tmp / "gen.parquet"
        con.execute(f"COPY gen TO '{parquet}' (FORMAT PARQUET, ROW_GROUP_SIZE 122880)")
        step("sorted copy+parquet")
        store, cols = build_store(tmp, parquet, args.events, args.compact_every)
        step("store")
        print(f"  build: {', '.join(steps)}", flush=True)
        with store.cursor() as cur:
            recent, sorted_ = cur.execute("SELECT (SELECT count(*) FROM events_recent), "
                                          "(SELECT count(*) FROM events_sorted)").fetchone()
        print(f"  built in {time.perf_counter() - t:.0f}s; store: {sorted_:,} rows in "
              f"events_sorted ({-(-sorted_ // args.compact_every)} compaction runs), {recent:,} "
              f"in events_recent", flush=True)

        # (a) property filters, interleaved rounds as below
        same = {k: k for k in cols}
        filters = [
            ("City = 'Lucknow'", "city = 'Lucknow'", "props->>'City' = 'Lucknow'",
             "props['City'] = 'Lucknow'"),
            ("Amount > 500", "amount > 500", "(props->>'Amount')::DOUBLE > 500",
             "props['Amount']::DOUBLE > 500"),
        ]
        fsql = {(label, kind): f"SELECT count(*) FROM {table} WHERE {cond}"
                for label, typed, js, mp in filters
                for kind, table, cond in (("typed", "gen", typed), ("json", "t_json", js),
                                          ("map", "t_map", mp))}
        fout = {k: con.execute(q).fetchall() for k, q in fsql.items()}  # also the warm-up
        fms: dict[tuple[str, str], list[float]] = {k: [] for k in fsql}
        for _ in range(args.reps):
            for k, q in fsql.items():
                t0 = time.perf_counter()
                con.execute(q).fetchall()
                fms[k].append((time.perf_counter() - t0) * 1000)
        arows, checks = [], []
        for label, *_ in filters:
            ms = {kind: common.median(fms[(label, kind)]) for kind in ("typed", "json", "map")}
            checks.append(len({str(fout[(label, kind)]) for kind in ms}) == 1)
            arows.append([label, f"{fout[(label, 'typed')][0][0]:,}", ms["typed"], ms["json"],
                          f"{ms['json'] / ms['typed']:.1f}x", ms["map"],
                          f"{ms['map'] / ms['typed']:.1f}x"])
        print(f"\n(a) property filter, count(*) over {args.events:,} rows in time order "
              "(ms, median):")
        print(common.table(["filter", "matches", "typed column", "JSON ->>", "JSON ÷ typed",
                            "MAP", "MAP ÷ typed"], arows))
        result["filters"] = arows

        # (b) and (c): physical order. Rounds are interleaved (every query of every variant
        # once per round), so the machine's noise hits all variants alike.
        store_cur = store.cursor()
        runners: dict[str, dict[str, Callable[[], Any]]] = {}
        for name, table, c, cur in (
                ("time order", "gen", same, con), ("(event, ts) order", "t_event_ts", same, con),
                (STORE, "events", cols, store_cur),
                (STORE_RUNS, "events_sorted", cols, store_cur)):
            runners[name] = {q: (lambda sql=sql, cur=cur: cur.execute(sql).fetchall())
                             for q, sql in queries(table, c).items()}
        s = None
        if not args.no_chdb:
            s = load_chdb(tmp / "chdb", parquet)
            runners[CHDB] = {q: (lambda sql=sql: _chdb_rows(s, sql))
                             for q, sql in chdb_queries().items()}
        answers = {name: {q: _norm(run()) for q, run in qs.items()}  # also the warm-up
                   for name, qs in runners.items()}
        samples: dict[str, dict[str, list[float]]] = {
            name: {q: [] for q in qs} for name, qs in runners.items()}
        for _ in range(args.reps):
            for name, qs in runners.items():
                for q, run in qs.items():
                    t0 = time.perf_counter()
                    run()
                    samples[name][q].append((time.perf_counter() - t0) * 1000)
        timings = {name: {q: common.median(v) for q, v in qs.items()}
                   for name, qs in samples.items()}
        answers.pop(STORE_RUNS)  # holds only the compacted rows: not the same answer
        if s is not None:
            s.close()
        store_cur.close()

        ref = timings["time order"]
        ch = timings.get(CHDB)
        brows = []
        for name, t_ in timings.items():
            best_trend = min(v for k, v in t_.items() if k.startswith("trend"))
            row = [name, t_["segment"], f"{t_['segment'] / ref['segment']:.2f}x",
                   t_.get("trend", float("nan")), t_.get("trend, dedup first", "-"),
                   f"{best_trend / min(ref['trend'], ref['trend, dedup first']):.2f}x"]
            if ch:
                row += [f"{t_['segment'] / ch['segment']:.1f}x", f"{best_trend / ch['trend']:.1f}x"]
            brows.append(row)
        print(f"\n(b)/(c) segment (>= 3 Charged, Amount > 500, last 30 days) and daily trend of "
              f"'{TREND_EVENT}' (events + unique users/day, 30 days); ms, median:")
        head = ["layout", "segment", "÷ time order", "trend: count(DISTINCT)",
                "trend: dedup first", "best trend ÷ time order"]
        if ch:
            head += ["segment ÷ chDB", "best trend ÷ chDB"]
        print(common.table(head, brows))
        seg = {k: v["segment"] for k, v in answers.items()}
        trend = {k: v[q] for k, v in answers.items() for q in v if q.startswith("trend")}
        agree = (all(checks) and len({str(v) for v in seg.values()}) == 1
                 and len({str(v) for v in trend.values()}) == 1)
        print(f"# results agree across all variants and engines: {'yes' if agree else 'NO'} "
              f"(segment: {next(iter(seg.values()))[0][0]:,} users; trend: "
              f"{len(next(iter(trend.values())))} days)")
        print(f"# load average after: {common.loadavg()}")
        result.update({"timings": timings, "agree": agree})
        store.close()
        con.close()
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
