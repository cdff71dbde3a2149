"""Encryption at rest: what DuckDB's encryption costs on ingest and on segment queries.

    python -m bench.encryption                      # 10M-event data set, 1M events ingested
    python -m bench.encryption --dir /tmp/segbench_10m --ingest-events 1000000 --reps 5

Both sides run in the same process, on the same data, interleaved round by round (so the
machine's load hits both alike); figures are medians.

1. Segment counts: the six canonical segments of ``bench/segments.py`` with
   ``SegmentEngine.count`` on two copies of the same account store (``bench/datasets.py``,
   events sorted by (event, ts)): one unencrypted, one encrypted with a data key the way
   servers open it (``nudge/privacy/storage.py``).
2. Ingest: ``AccountStore.write`` of the same pre-parsed demo-shaped event records in group
   commits of ``--batch`` records into a fresh store, unencrypted vs encrypted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

from bench import data, datasets
from bench.common import header, loadavg, median, ratio, table
from bench.ingest_http import stage_costs
from bench.load import encode_bodies
from bench.segments import DESCRIPTIONS, definitions
from nudge.config import load_settings
from nudge.privacy import storage
from nudge.query.segments.evaluate import SegmentEngine
from nudge.query.segments.model import parse
from nudge.store.account import AccountStore

KEY = "5ec1" * 16  # a fixed 64-hex-digit key: the benchmark measures cost, not secrecy


def stores(src: Path, work: Path) -> tuple[Path, Path]:
    """An unencrypted and an encrypted copy of the data set's account store (cached)."""
    plain, enc = work / "plain.duckdb", work / "encrypted.duckdb"
    if not plain.exists():
        shutil.copyfile(src, plain)
    if not enc.exists():
        tmp = work / "encrypting.duckdb"
        shutil.copyfile(src, tmp)
        con = duckdb.connect(":memory:")
        try:
            storage.load_crypto(con)
            t = time.perf_counter()
            storage.migrate_to_encrypted(con, tmp, KEY)
            print(f"# encrypted copy written in {time.perf_counter() - t:.1f} s")
        finally:
            con.close()
        tmp.rename(enc)
    print(f"# store files: plain {plain.stat().st_size / 1e6:.0f} MB, encrypted "
          f"{enc.stat().st_size / 1e6:.0f} MB")
    return plain, enc


def segments(plain: Path, enc: Path, now: float, reps: int) -> list[list[Any]]:
    settings = load_settings({}, merge_fanout=0)  # no background merge: layout stays
    sides = {"plain": AccountStore("bench", plain, settings),
             "encrypted": AccountStore("bench", enc, settings, KEY)}
    engines = {k: SegmentEngine(s) for k, s in sides.items()}
    nodes = {k: parse(v, now) for k, v in definitions().items()}
    counts = {k: {n: e.count(nodes[k], now=now) for n, e in engines.items()} for k in nodes}
    times: dict[str, dict[str, list[float]]] = {k: {n: [] for n in engines} for k in nodes}
    cpu: dict[str, dict[str, list[float]]] = {k: {n: [] for n in engines} for k in nodes}
    order = list(engines)
    for r in range(reps):
        for k in nodes:
            for name in order[r % 2:] + order[:r % 2]:
                t, c = time.perf_counter(), time.process_time()
                engines[name].count(nodes[k], now=now)
                times[k][name].append(time.perf_counter() - t)
                cpu[k][name].append(time.process_time() - c)
    for s in sides.values():
        s.close()
    rows = []
    for k in nodes:
        p, e = (median(times[k][n]) * 1000 for n in ("plain", "encrypted"))
        pc, ec = (median(cpu[k][n]) * 1000 for n in ("plain", "encrypted"))
        same = "yes" if counts[k]["plain"] == counts[k]["encrypted"] else "NO"
        rows.append([f"({k}) {DESCRIPTIONS[k]}", f"{counts[k]['plain']:,}", p, e,
                     ratio(e, p), pc, ec, ratio(ec, pc), same])
    return rows


def cold(plain: Path, enc: Path, now: float, reps: int) -> list[list[Any]]:
    """All six segments right after opening the store (DuckDB's buffer pool empty, so every
    block is read and, when encrypted, decrypted; the OS page cache is warm for both)."""
    settings = load_settings({}, merge_fanout=0)
    nodes = [parse(v, now) for v in definitions().values()]
    wall: dict[str, list[float]] = {"plain": [], "encrypted": []}
    cpu: dict[str, list[float]] = {"plain": [], "encrypted": []}
    for r in range(reps):
        for name in (("plain", "encrypted") if r % 2 == 0 else ("encrypted", "plain")):
            store = AccountStore("bench", plain if name == "plain" else enc, settings,
                                 None if name == "plain" else KEY)
            engine = SegmentEngine(store)
            t, c = time.perf_counter(), time.process_time()
            for node in nodes:
                engine.count(node, now=now)
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
            store.close()
    rows = []
    for what, m in (("wall", wall), ("CPU", cpu)):
        p, e = median(m["plain"]) * 1000, median(m["encrypted"]) * 1000
        rows.append([f"six segments, first run after open ({what})", p, e, ratio(e, p)])
    return rows


def ingest_once(records: list[Any], batch: int, key: str | None) -> tuple[float, float]:
    """(events/s, CPU seconds of the process) for one fresh store."""
    tmp = Path(tempfile.mkdtemp(prefix="nudge-bench-enc-"))
    try:
        store = AccountStore("bench", tmp / "events.duckdb", load_settings(data_dir=tmp), key)
        t, c = time.perf_counter(), time.process_time()
        for i in range(0, len(records), batch):
            store.write(records[i:i + batch])
        store.close()  # includes the final checkpoint: the data is in the file
        return len(records) / (time.perf_counter() - t), time.process_time() - c
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ingest(n: int, users: int, batch: int, reps: int) -> list[list[Any]]:
    _, records = stage_costs(encode_bodies(data.event_records(n, users), 100))
    rates: dict[str, list[float]] = {"plain": [], "encrypted": []}
    cpu: dict[str, list[float]] = {"plain": [], "encrypted": []}
    for r in range(reps):
        for name in (("plain", "encrypted") if r % 2 == 0 else ("encrypted", "plain")):
            rate, c = ingest_once(records, batch, KEY if name == "encrypted" else None)
            rates[name].append(rate)
            cpu[name].append(c)
    p, e = median(rates["plain"]), median(rates["encrypted"])
    pc, ec = median(cpu["plain"]), median(cpu["encrypted"])
    return [[f"{n:,} events, commits of {batch:,}", f"{p:,.0f}", f"{e:,.0f}", ratio(p, e),
             f"{pc:.2f}", f"{ec:.2f}", ratio(ec, pc)]]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--dir", help="data set directory (bench/datasets.py; built if missing)")
    p.add_argument("--ingest-events", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=20_000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--only", choices=("segments", "ingest"), help="run one half")
    args = p.parse_args(argv)
    header(f"Encryption at rest: {args.events:,}-event store, {args.ingest_events:,} ingested")
    directory = Path(args.dir or Path(tempfile.gettempdir()) /
                     f"nudge-bench-segments-{args.users}-{args.events}")
    info = datasets.build(directory, args.users, args.events)
    work = Path(tempfile.gettempdir()) / f"nudge-bench-encryption-{args.events}"
    work.mkdir(exist_ok=True)
    plain, enc = stores(directory / "nudge.duckdb", work)
    print(f"# load {loadavg()}; {os.cpu_count()} cores", flush=True)
    if args.only != "ingest":
        query_runs(plain, enc, info.now, args.reps)
    if args.only == "segments":
        return
    rows = ingest(args.ingest_events, min(args.users, 50_000), args.batch, args.reps)
    print(f"\n# ingest (AccountStore.write, in-process), medians of {args.reps} interleaved "
          f"runs; load {loadavg()}")
    print(table(["run", "plain events/s", "encrypted events/s", "plain/encrypted",
                 "plain CPU s", "encrypted CPU s", "CPU ratio"], rows))


def query_runs(plain: Path, enc: Path, now: float, reps: int) -> None:
    rows = segments(plain, enc, now, reps)
    print(f"\n# segment counts, hot, medians of {reps} interleaved rounds; "
          f"load {loadavg()}")
    print(table(["segment", "members", "plain ms", "encrypted ms", "encrypted/plain",
                 "plain CPU ms", "encrypted CPU ms", "CPU ratio", "same count"], rows))
    rows = cold(plain, enc, now, reps)
    print(f"\n# cold buffer pool, medians of {reps} interleaved opens; load {loadavg()}")
    print(table(["run", "plain ms", "encrypted ms", "encrypted/plain"], rows))


if __name__ == "__main__":
    main()
