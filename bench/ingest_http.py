"""End-to-end ingest over HTTP, beside the store's own append rate and DuckDB's.

    python -m bench.ingest_http [--events 200000] [--reps 3] [--profile]

1. HTTP: a real ``nudge serve`` on a temp data dir; load generator processes send batches of
   100 demo-shaped event records (unique msgIds) to ``POST /1/upload`` over keep-alive
   connections. Each answer comes after the group commit that made its records durable.
2. The ceiling: ``AccountStore.write()`` in-process on the same records, pre-parsed, in big
   batches (no HTTP, no JSON, no validation) -- and at the HTTP run's mean group-commit size.
3. The floor: DuckDB ``INSERT INTO ... SELECT * FROM arrow`` of the very rows the store wrote
   (same typed columns), committed in the same batch size.
4. Per-stage CPU cost on one thread (body decode, validation), and with ``--profile`` a py-spy
   sample of the server under load, grouped by what the time is spent on.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx

from bench import common, data, pyspy
from bench.load import Load, encode_bodies


def commit_stats(srv: common.Server) -> tuple[float, float]:
    """(group commits, records committed) so far, from the server's /metrics."""
    text = httpx.get(srv.url + "/metrics").text

    def metric(name: str) -> float:
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    return metric("nudge_commit_records_count"), metric("nudge_commit_records_sum")


def http_run(bodies: list[bytes], args: argparse.Namespace, *, profile_dir: Path | None = None,
             ) -> dict[str, Any]:
    """One run on a fresh server; with ``profile_dir``, py-spy samples the server meanwhile."""
    env = dict(kv.split("=", 1) for kv in args.server_env)
    with common.Server(root=args.server_root, env=env) as srv:
        cpu0 = common.cpu_seconds(srv.pid)
        load = Load(srv.port, srv.headers, bodies, processes=args.processes,
                    connections=args.connections)
        load.start()
        prof: dict[str, Any] = {}
        if profile_dir is not None:
            time.sleep(2)  # past the first commits (new columns, first profiles)
            secs = args.profile_seconds
            raw = pyspy.record(srv.pid, secs, profile_dir / "ingest_server.txt",
                               svg=profile_dir / "ingest_server.svg")
            gil = pyspy.record(srv.pid, secs / 2, profile_dir / "ingest_server_gil.txt",
                               gil=True)
            prof = {"all": pyspy.analyse(raw, secs, 100),
                    "gil": pyspy.analyse(gil, int(secs / 2), 100)}
        res = load.join()
        cpu = common.cpu_seconds(srv.pid) - cpu0
        commits, committed = commit_stats(srv)
    lat = res.latencies
    return {"events_per_s": res.events_per_s, "events": res.events, "rejected": res.rejected,
            "retries": res.retries, "seconds": res.seconds, "server_cpu_s": cpu,
            "client_cpu_s": res.cpu_s, "p50_ms": common.percentile(lat, 50) * 1000,
            "p99_ms": common.percentile(lat, 99) * 1000,
            "commit_size": committed / commits if commits else 0.0, **prof}


def store_run(records: list[Any], batch: int) -> tuple[float, float]:
    """(events/s, CPU seconds of the whole process) for AccountStore.write in ``batch``es."""
    from nudge.config import load_settings
    from nudge.store.account import AccountStore

    tmp = Path(tempfile.mkdtemp(prefix="nudge-bench-store-"))
    try:
        store = AccountStore("bench", tmp / "events.duckdb", load_settings(data_dir=tmp))
        c0, t0 = time.process_time(), time.perf_counter()
        for i in range(0, len(records), batch):
            store.write(records[i:i + batch])
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        store.close()
        return len(records) / wall, cpu
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _TimedCursor:
    """The writer's cursor, timing every statement (keyed by its first words)."""

    def __init__(self, cur: Any) -> None:
        self._cur = cur
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def _time(self, method: str, sql: str, *args: Any) -> Any:
        key = " ".join(sql.split())[:58]
        t = time.perf_counter()
        try:
            return getattr(self._cur, method)(sql, *args)
        finally:
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t
            self.calls[key] = self.calls.get(key, 0) + 1

    def execute(self, sql: str, *args: Any) -> Any:
        return self._time("execute", sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        return self._time("executemany", sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


def statement_costs(records: list[Any], batch: int) -> tuple[float, float, _TimedCursor]:
    """AccountStore.write in ``batch``es with every SQL statement of the commit timed:
    (seconds in total, seconds in SQL, the timings)."""
    from nudge.config import load_settings
    from nudge.store.account import AccountStore

    tmp = Path(tempfile.mkdtemp(prefix="nudge-bench-store-"))
    try:
        store = AccountStore("bench", tmp / "events.duckdb", load_settings(data_dir=tmp))
        timed = store.writer_cursor = _TimedCursor(store.writer_cursor)  # type: ignore[assignment]
        t0 = time.perf_counter()
        for i in range(0, len(records), batch):
            store.write(records[i:i + batch])
        total = time.perf_counter() - t0
        store.close()
        return total, sum(timed.seconds.values()), timed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def stored_rows(records: list[Any]) -> Any:
    """The rows the store writes for these records, as one Arrow table (all typed columns)."""
    from nudge.config import load_settings
    from nudge.store.account import AccountStore

    tmp = Path(tempfile.mkdtemp(prefix="nudge-bench-store-"))
    try:
        store = AccountStore("bench", tmp / "events.duckdb", load_settings(data_dir=tmp))
        for i in range(0, len(records), 20_000):
            store.write(records[i:i + 20_000])
        with store.cursor() as cur:
            table = cur.execute("SELECT * FROM events ORDER BY seq").to_arrow_table()
        store.close()
        return table
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def duckdb_run(table: Any, batch: int) -> tuple[float, float]:
    """(events/s, CPU s): INSERT ... SELECT FROM arrow, one transaction per ``batch`` rows."""
    tmp = Path(tempfile.mkdtemp(prefix="nudge-bench-duckdb-"))
    try:
        con = duckdb.connect(str(tmp / "floor.duckdb"))
        con.register("_all", table)
        con.execute("CREATE TABLE events AS SELECT * FROM _all LIMIT 0")
        chunks = [table.slice(i, batch) for i in range(0, table.num_rows, batch)]
        c0, t0 = time.process_time(), time.perf_counter()
        for chunk in chunks:
            con.register("_chunk", chunk)
            con.execute("BEGIN TRANSACTION")
            con.execute("INSERT INTO events SELECT * FROM _chunk")
            con.execute("COMMIT")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        con.close()
        return table.num_rows / wall, cpu
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def stage_costs(bodies: list[bytes]) -> tuple[dict[str, float], list[Any]]:
    """CPU seconds per event of each request-side stage on one thread; the parsed records."""
    import msgspec

    from nudge.config import load_settings
    from nudge.ingest.body import decode_body
    from nudge.ingest.upload import parse_upload

    limits = load_settings().limits
    dec = msgspec.json.Decoder()
    t = time.thread_time()
    for b in bodies:
        dec.decode(b)
    msgspec_s = time.thread_time() - t
    t = time.thread_time()
    decoded = [decode_body(b, None, limits) for b in bodies]
    decode_s = time.thread_time() - t
    t = time.thread_time()
    parsed = [parse_upload(d, limits) for d in decoded]
    parse_s = time.thread_time() - t
    records = [r for recs, _ in parsed for r in recs]
    n = len(records)
    costs = {"msgspec": msgspec_s / n, "decode_body": decode_s / n, "parse_upload": parse_s / n}
    return costs, records


def compare(bodies: list[bytes], args: argparse.Namespace) -> dict[str, Any]:
    """HTTP runs alternating between two checkouts (or, with ``--compare-env``, between the
    server's default settings and the given ones), so that both see the same machine load."""
    before_root, after_root = args.compare_root, args.server_root
    base_env = list(args.server_env)
    if args.compare_env:
        before_root = after_root
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for i in range(args.reps):
        for label, root in (("before", before_root), ("after", after_root)):
            args.server_root = root
            args.server_env = base_env + (args.compare_env if label == "before" else [])
            r = http_run(bodies, args)
            runs[label].append(r)
            print(f"  {label} run {i + 1}: {r['events_per_s']:,.0f} events/s, server CPU "
                  f"{1e6 * r['server_cpu_s'] / max(r['events'], 1):.0f} µs/event, p50 "
                  f"{r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms, mean group commit "
                  f"{r['commit_size']:.0f} records", flush=True)
    args.server_root, args.server_env = after_root, base_env
    rows = []
    for label, rs in runs.items():
        name = (" ".join(args.compare_env) if args.compare_env else before_root) \
            if label == "before" else "default" if args.compare_env else after_root
        rows.append([f"{label} ({name or '.'})",
                     common.median([r["events_per_s"] for r in rs]),
                     common.median([1e6 * r["server_cpu_s"] / max(r["events"], 1) for r in rs]),
                     common.median([r["p99_ms"] for r in rs])])
    print()
    print(common.table(["server", "events/s (median)", "server CPU µs/event", "p99 ms"], rows))
    print(f"# after ÷ before: {rows[1][1] / rows[0][1]:.2f}x events/s, "
          f"{rows[1][2] / rows[0][2]:.2f}x CPU per event")
    return {"before": runs["before"], "after": runs["after"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--users", type=int, default=50_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--processes", type=int, default=2, help="load generator processes")
    p.add_argument("--connections", type=int, default=8, help="connections per process")
    p.add_argument("--batch", type=int, default=100, help="records per request")
    p.add_argument("--store-batch", type=int, default=10_000, help="records per write() call")
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                   help="py-spy the server in one more run (default: if py-spy is installed)")
    p.add_argument("--profile-seconds", type=int, default=12)
    p.add_argument("--profile-dir", type=Path, default=Path(tempfile.gettempdir()) / "nudge-bench")
    p.add_argument("--server-root", type=Path, default=None,
                   help="run the server from this checkout (a before/after comparison)")
    p.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment of the server, e.g. NUDGE_DUCKDB_THREADS=1 (repeatable)")
    p.add_argument("--http-only", action="store_true",
                   help="only the HTTP runs (configuration experiments)")
    p.add_argument("--compare-root", type=Path, default=None,
                   help="only the HTTP runs, alternating between a server from this checkout "
                        "(before) and from the current one (after)")
    p.add_argument("--compare-env", action="append", default=[], metavar="NAME=VALUE",
                   help="only the HTTP runs, alternating between the server with these "
                        "settings (before) and without (after), e.g. NUDGE_INGEST_LOG=0")
    args = p.parse_args(argv)
    common.header("ingest over HTTP vs the store's append rate vs DuckDB")
    print(f"# data: {args.events:,} event records, {args.users:,} users ({data.source()}); "
          f"{args.processes} load processes x {args.connections} connections, "
          f"{args.batch} records/request; load average before: {common.loadavg()}", flush=True)

    records_json = data.event_records(args.events, args.users)
    bodies = encode_bodies(records_json, args.batch)
    props = sum(len(r.get("evtData") or {}) for r in records_json) / max(len(records_json), 1)
    print(f"# records: {props:.1f} properties per event on average, "
          f"{sum(map(len, bodies)) / max(len(records_json), 1):.0f} bytes of JSON per event",
          flush=True)
    del records_json
    if args.compare_root is not None or args.compare_env:
        return compare(bodies, args)
    costs, records = stage_costs(bodies)

    runs = []
    for i in range(args.reps):
        r = http_run(bodies, args)
        runs.append(r)
        print(f"  http run {i + 1}: {r['events_per_s']:,.0f} events/s, {r['events']:,} stored, "
              f"{r['rejected']} rejected, {r['retries']} x 429, server CPU {r['server_cpu_s']:.1f}s"
              f", client CPU {r['client_cpu_s']:.1f}s, p50 {r['p50_ms']:.0f} ms, p99 "
              f"{r['p99_ms']:.0f} ms, mean group commit {r['commit_size']:.0f} records",
              flush=True)
    http = common.median([r["events_per_s"] for r in runs])
    http_cpu = common.median([r["server_cpu_s"] / r["events"] for r in runs if r["events"]])
    commit_size = max(args.batch, int(common.median([r["commit_size"] for r in runs])))
    if args.http_only:
        print(f"\nHTTP: {http:,.0f} events/s (median of {len(runs)}), server CPU "
              f"{http_cpu * 1e6:.0f} µs/event, mean group commit {commit_size:,} records")
        return {"http": http, "http_cpu_us": http_cpu * 1e6, "runs": runs}

    group = [store_run(records, commit_size) for _ in range(args.reps)]
    big = [store_run(records, args.store_batch) for _ in range(args.reps)]
    table = stored_rows(records)
    floor = [duckdb_run(table, args.store_batch) for _ in range(args.reps)]
    n = len(records)

    def row(name: str, rate: float, cpu_per_event: float) -> list[Any]:
        return [name, rate, cpu_per_event * 1e6, f"{http / rate:.3f}"]

    rows = [
        row(f"HTTP end-to-end ({args.batch}/request, durable ack)", http, http_cpu),
        row(f"AccountStore.write, {commit_size:,}/call (HTTP's mean group commit)",
            common.median([g[0] for g in group]), common.median([g[1] for g in group]) / n),
        row(f"AccountStore.write, {args.store_batch:,}/call (ceiling)",
            common.median([b[0] for b in big]), common.median([b[1] for b in big]) / n),
        row(f"DuckDB INSERT from Arrow, {args.store_batch:,}/txn (floor)",
            common.median([f[0] for f in floor]), common.median([f[1] for f in floor]) / n),
    ]
    print()
    print(common.table(["path", "events/s (median)", "CPU µs/event", "HTTP ÷ this"], rows))
    print()
    print(common.table(["request-side stage (one thread, in-process)", "CPU µs/event",
                        "events/s on one core"], [
        ["msgspec JSON decode only", costs["msgspec"] * 1e6, 1 / costs["msgspec"]],
        ["decode_body (msgspec + duplicate-key check)", costs["decode_body"] * 1e6,
         1 / costs["decode_body"]],
        ["parse_upload (validation -> Record)", costs["parse_upload"] * 1e6,
         1 / costs["parse_upload"]],
    ]))
    sample = records[:min(len(records), 100_000)]
    total, in_sql, timed = statement_costs(sample, commit_size)
    commits = -(-len(sample) // commit_size)
    print(f"\nSQL statements of a group commit of {commit_size:,} records (in-process, first "
          f"{len(sample):,} records): {in_sql / total:.0%} of the writer's time is in DuckDB")
    print(common.table(["statement", "per commit", "ms each (mean)", "share of write time"],
                       [[k, f"{timed.calls[k] / commits:.2f}", 1000 * v / timed.calls[k],
                         f"{v / total:.1%}"]
                        for k, v in sorted(timed.seconds.items(), key=lambda kv: -kv[1])[:12]]))
    result: dict[str, Any] = {"http": http, "http_cpu_us": http_cpu * 1e6, "runs": runs,
                              "ceiling": rows[2][1], "group": rows[1][1], "floor": rows[3][1],
                              "stages": costs}

    profile = args.profile if args.profile is not None else pyspy.available() is not None
    if profile:
        args.profile_dir.mkdir(parents=True, exist_ok=True)
        r = http_run(bodies, args, profile_dir=args.profile_dir)
        prof, gil = r["all"], r["gil"]
        print(f"\npy-spy, server under load ({r['events_per_s']:,.0f} events/s while sampled "
              f"at 100 Hz for {args.profile_seconds}s; flame graph "
              f"{args.profile_dir / 'ingest_server.svg'}):")
        print(common.table(["thread", "busy (cores)"],
                           [[t, prof.cores(n)] for t, n in prof.by_thread.items()]
                           + [["GIL held (any thread)", gil.cores(gil.samples)]]))
        print()
        print(common.table(
            ["where the server's time goes", "share of samples", "GIL-held share"],
            [[c, f"{prof.share(k):.1%}", f"{gil.share(gil.by_category.get(c, 0)):.1%}"]
             for c, k in prof.by_category.items()]))
        result["profile"] = {"cores": {t: prof.cores(n) for t, n in prof.by_thread.items()},
                             "gil": gil.cores(gil.samples),
                             "categories": {c: prof.share(k) for c, k in prof.by_category.items()}}
    print(f"# load average after: {common.loadavg()}")
    return result


if __name__ == "__main__":
    main()
