"""Bytes per event on disk and the server's resident memory, for the demo-shaped data.

    python -m bench.storage [--users 50000] [--events 1000000]

1. Loads ``nudge.demo.generate(users, events)`` (profiles, tokens, events) through the real
   ingest pipeline (``nudge.bulk.ingest_chunks`` -> ``AccountStore``) with compaction held
   back, and measures the account file after CHECKPOINT; then compacts and measures again.
2. The events alone, copied into fresh DuckDB files: arrival order vs (event, ts) order, with
   and without the message_id column.
3. References on the same rows: the upload JSON, Parquet (zstd) and ClickHouse (chDB)
   MergeTree ORDER BY (event, ts) (default LZ4 compression).
4. Resident memory (VmRSS) of ``nudge serve`` on the loaded data dir: after startup, after
   profile/timeline reads, after more events over HTTP; beside a bare DuckDB process that
   opens the same file and runs the same reads.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import msgspec

from bench import common, data
from bench.load import Load, encode_bodies

_ENC = msgspec.json.Encoder()
MiB = 2**20


def account_key(path: Path) -> str:
    """The DuckDB key of the account file at <data dir>/accounts/<id>/events.duckdb (account
    files are encrypted: nudge/privacy/storage.py)."""
    from nudge.config import load_settings
    from nudge.privacy.keys import keyring_for

    keyring = keyring_for(load_settings(data_dir=path.parents[2]))
    try:
        return keyring.duckdb_key(path.parent.name)
    finally:
        keyring.engine.dispose()


def attach(con: duckdb.DuckDBPyConnection, path: Path, alias: str) -> None:
    from nudge.privacy import storage

    storage.attach(con, path, account_key(path), alias, read_only=True)


def load_store(srv: common.Server, users: int, events: int) -> dict[str, Any]:
    """Fill the account through the real ingest pipeline, compaction held back."""
    from nudge.bulk import ingest_chunks
    from nudge.config import load_settings
    from nudge.store.registry import StoreRegistry

    settings = load_settings(data_dir=srv.data_dir, compact_threshold_rows=10**12)
    json_bytes = 0
    n_events = 0

    def chunks() -> Iterator[list[dict[str, Any]]]:
        nonlocal json_bytes, n_events
        for chunk in data.generate(users, events):
            for r in chunk:
                if r.get("type") == "event":
                    json_bytes += len(_ENC.encode(r))
                    n_events += 1
            yield chunk

    registry = StoreRegistry(settings)
    store = registry.get(srv.account_id)
    t = time.perf_counter()
    stored, errors = ingest_chunks(store, chunks(), settings.limits, total=users + events,
                                   quiet=True)
    seconds = time.perf_counter() - t
    registry.close()
    return {"stored": stored, "errors": len(errors), "seconds": seconds,
            "json_bytes": json_bytes, "events": n_events}


def compact(srv: common.Server) -> None:
    from nudge.config import load_settings
    from nudge.store.registry import StoreRegistry

    registry = StoreRegistry(load_settings(data_dir=srv.data_dir))
    try:
        registry.get(srv.account_id).compact_now()
    finally:
        registry.close()


def file_stats(path: Path) -> dict[str, int]:
    """Size on disk, and the bytes in used blocks (the rest are free blocks for reuse)."""
    con = duckdb.connect()
    attach(con, path, "s")
    row = con.execute("SELECT block_size, used_blocks, free_blocks FROM pragma_database_size() "
                      "WHERE database_name = 's'").fetchone()
    counts = con.execute("SELECT (SELECT count(*) FROM s.events_recent), "
                         "(SELECT count(*) FROM s.events_sorted)").fetchone()
    con.close()
    return {"file": path.stat().st_size, "used": row[0] * row[1], "free": row[0] * row[2],
            "recent": counts[0], "sorted": counts[1]}


def events_only(src: Path, tmp: Path, order: str, exclude: str | None) -> int:
    """Bytes of a fresh DuckDB file holding just the events, in ``order``."""
    dst = tmp / f"events-{len(list(tmp.iterdir()))}.duckdb"
    con = duckdb.connect(str(dst))
    attach(con, src, "s")
    cols = f"* EXCLUDE ({exclude})" if exclude else "*"
    con.execute(f"CREATE TABLE events AS SELECT {cols} FROM s.events ORDER BY {order}")
    con.execute("DETACH s")
    con.execute("CHECKPOINT")
    con.close()
    size = dst.stat().st_size
    dst.unlink()
    return size


def references(src: Path, tmp: Path) -> dict[str, int]:
    """Parquet (zstd) and ClickHouse MergeTree bytes of the same event rows, (event, ts) order."""
    parquet = tmp / "events.parquet"
    con = duckdb.connect()
    attach(con, src, "s")
    con.execute(f"COPY (SELECT * FROM s.events ORDER BY event, ts) TO '{parquet}' "
                "(FORMAT PARQUET, COMPRESSION ZSTD)")
    con.close()
    out = {"parquet": parquet.stat().st_size}
    try:
        from chdb import session
    except ImportError:
        return out
    s = session.Session(str(tmp / "chdb"))
    s.query("CREATE DATABASE IF NOT EXISTS b")
    s.query(f"CREATE TABLE b.events ENGINE = MergeTree ORDER BY (event, ts) "
            f"SETTINGS allow_nullable_key = 1 AS SELECT * FROM file('{parquet}', Parquet)")
    s.query("OPTIMIZE TABLE b.events FINAL")
    res = s.query("SELECT sum(data_compressed_bytes) FROM system.parts "
                  "WHERE database = 'b' AND table = 'events' AND active", "CSV")
    out["clickhouse"] = int(str(res).strip().strip('"'))
    s.close()
    return out


_BARE_DUCKDB = r"""
import json, sys, duckdb
from pathlib import Path
from nudge.privacy import storage
path, uids, key = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
con = duckdb.connect()
storage.attach(con, Path(path), key, "acct", read_only=True)
con.execute("USE acct")
for uid in uids:
    for sql in ("SELECT event, count(*) FROM events WHERE user_id = ? GROUP BY event",
                "SELECT * FROM events WHERE user_id = ? ORDER BY ts DESC, seq DESC LIMIT 100",
                "SELECT * FROM profiles WHERE user_id = ?"):
        con.execute(sql, [uid]).fetchall()
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        print(int(line.split()[1]) * 1024)
"""


_STORE_MEMORY = r"""
import json, sys
from pathlib import Path

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

from nudge.config import load_settings
from nudge.store.account import AccountStore
before = rss()
store = AccountStore("m", Path(sys.argv[1]), load_settings(data_dir=Path(sys.argv[1]).parent),
                     sys.argv[2])
after = rss()
ids = store.dedup
dedup = sys.getsizeof(ids) + sum(sys.getsizeof(x) for x in ids)
print(json.dumps({"imports": before, "opened": after, "dedup_ids": len(ids),
                  "dedup_bytes": dedup}))
store.close()
"""


def store_memory(db: Path) -> dict[str, int]:
    """What opening the account store costs: RSS before/after, and the dedup set's size."""
    out = subprocess.run([sys.executable, "-c", _STORE_MEMORY, str(db), account_key(db)],
                         check=True,
                         capture_output=True, text=True, cwd=common.ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def memory(srv: common.Server, users: list[str], http_events: int, db: Path,
           ) -> dict[str, Any]:
    """RSS of the server: idle, after reads, after more events over HTTP; bare DuckDB."""
    out: dict[str, Any] = {}
    with duckdb.connect() as con:
        attach(con, db, "acct")
        con.execute("USE acct")
        uids = [r[0] for r in con.execute(
            "SELECT user_id FROM identities WHERE kind = 'identity' AND value IN "
            "(SELECT unnest(?::VARCHAR[]))", [users]).fetchall()]
    out["bare_duckdb"] = int(subprocess.run(
        [sys.executable, "-c", _BARE_DUCKDB, str(db), json.dumps(uids), account_key(db)],
        check=True, capture_output=True, text=True).stdout)
    srv.start()
    try:
        time.sleep(1)
        out["startup"] = common.rss_bytes(srv.pid)
        with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=60) as client:
            for who in users:  # a few users of the demo may never have been seen (404)
                client.get("/1/profile", params={"identity": who})
                client.get("/1/profile/events", params={"identity": who, "limit": 100})
            client.get("/1/events/catalog").raise_for_status()
        out["reads"] = common.rss_bytes(srv.pid)
        if http_events:
            bodies = encode_bodies(data.event_records(http_events, 50_000, seed=11))
            res = Load(srv.port, srv.headers, bodies, processes=1, connections=8).run()
            out["http_events"] = res.events
            out["after_http"] = common.rss_bytes(srv.pid)
    finally:
        srv.stop()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--users", type=int, default=50_000)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--http-events", type=int, default=50_000,
                   help="events sent over HTTP before the last memory reading")
    p.add_argument("--reads", type=int, default=200, help="profiles read before measuring")
    args = p.parse_args(argv)
    common.header("storage: bytes per event on disk, server memory")
    print(f"# data: nudge.demo.generate({args.users:,} users, ~{args.events:,} events) "
          f"({data.source()}); load average before: {common.loadavg()}", flush=True)
    srv = common.Server()
    tmp = Path(tempfile.mkdtemp(prefix="nudge-bench-storage-"))
    try:
        loaded = load_store(srv, args.users, args.events)
        n = loaded["events"]
        print(f"  loaded {loaded['stored']:,} records ({n:,} events, {loaded['errors']} rejected)"
              f" in {loaded['seconds']:.0f}s through the ingest pipeline "
              f"({loaded['stored'] / loaded['seconds']:,.0f} records/s)", flush=True)
        before = file_stats(srv.db_path)
        compact(srv)
        after = file_stats(srv.db_path)
        arrival = events_only(srv.db_path, tmp, "seq", None)
        arrival_no_id = events_only(srv.db_path, tmp, "seq", "message_id")
        sorted_ = events_only(srv.db_path, tmp, "event, ts", None)
        sorted_no_id = events_only(srv.db_path, tmp, "event, ts", "message_id")
        refs = references(srv.db_path, tmp)

        def b(x: int) -> float:
            return x / n

        rows = [
            ["account file, before compaction (all events recent, arrival order)",
             before["file"] / MiB, b(before["file"]), b(before["used"]), ""],
            ["account file, after compaction (events sorted by event, ts)",
             after["file"] / MiB, b(after["file"]), b(after["used"]), ""],
            ["events only, arrival order", arrival / MiB, b(arrival), "", ""],
            ["events only, arrival order, no message_id", arrival_no_id / MiB,
             b(arrival_no_id), "", ""],
            ["events only, (event, ts) order", sorted_ / MiB, b(sorted_), "",
             f"{sorted_ / refs['parquet']:.2f}x Parquet"],
            ["events only, (event, ts) order, no message_id", sorted_no_id / MiB,
             b(sorted_no_id), "", ""],
            ["reference: upload JSON of the events", loaded["json_bytes"] / MiB,
             b(loaded["json_bytes"]), "", ""],
            ["reference: Parquet zstd, (event, ts) order", refs["parquet"] / MiB,
             b(refs["parquet"]), "", ""],
        ]
        if "clickhouse" in refs:
            rows.append(["reference: ClickHouse MergeTree ORDER BY (event, ts), LZ4",
                         refs["clickhouse"] / MiB, b(refs["clickhouse"]), "", ""])
            rows[4][4] += f", {sorted_ / refs['clickhouse']:.2f}x ClickHouse"
        print()
        print(common.table(["what", "MiB", "bytes/event", "bytes/event in used blocks",
                            "ours ÷ reference"], rows))

        rng = random.Random(3)
        users = [f"u{rng.randrange(args.users)}" for _ in range(args.reads)]
        opened = store_memory(srv.db_path)
        mem = memory(srv, users, args.http_events, srv.db_path)
        print()
        mrows = [["nudge serve, after startup", mem["startup"] / MiB],
                 [f"nudge serve, after {args.reads} profile + timeline reads", mem["reads"] / MiB]]
        if "after_http" in mem:
            mrows.append([f"nudge serve, after {mem['http_events']:,} more events over HTTP",
                          mem["after_http"] / MiB])
        mrows.append(["reference: bare DuckDB process, same file, same reads",
                      mem["bare_duckdb"] / MiB])
        print(common.table(["process", "VmRSS MiB"], mrows))
        print(f"# server ÷ bare DuckDB: {mem['reads'] / mem['bare_duckdb']:.1f}x after the reads")
        print(f"# opening the store alone (in a fresh process) adds "
              f"{(opened['opened'] - opened['imports']) / MiB:.0f} MiB of RSS; of that the "
              f"dedup window holds {opened['dedup_ids']:,} message ids in a Python set: "
              f"{opened['dedup_bytes'] / MiB:.0f} MiB "
              f"({opened['dedup_bytes'] / max(opened['dedup_ids'], 1):.0f} bytes/id)")
        print(f"# load average after: {common.loadavg()}")
        return {"events": n, "before": before, "after": after, "arrival": arrival,
                "arrival_no_id": arrival_no_id, "sorted": sorted_, "sorted_no_id": sorted_no_id,
                "refs": refs, "json": loaded["json_bytes"], "memory": mem, "load": loaded,
                "opened": opened}
    finally:
        srv.cleanup()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("NUDGE_LOG_LEVEL", "warning")
    main()
