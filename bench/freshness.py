"""Ingest-to-queryable freshness under background load.

    python -m bench.freshness [--probes 200] [--rates 1000,0]

A real ``nudge serve``; load generator processes send demo-shaped batches in the background
(paced at each ``--rates`` value in events/s; 0 = as fast as the server takes them). Meanwhile
probes, a few at a time, each send one event for a new identity and, from the moment the
request is sent, poll two reads until they see it:

- the timeline, ``GET /1/profile/events?identity=...`` (the event with its msgId), and
- a direct DuckDB count, ``GET /1/profile?identity=...`` (``total_events`` is
  ``count(*) FROM events WHERE user_id = ?``).

Reported: p50/p99 of send -> durable ack, send -> visible in the timeline, send -> counted.
The reference is the ack itself: a record can be visible no earlier than its group commit.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import msgspec

from bench import common, data
from bench.load import Load, encode_bodies, read_response

_DEC = msgspec.json.Decoder()


async def _get(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], port: int,
               headers: dict[str, str], path: str) -> tuple[int, bytes]:
    reader, writer = conn
    head = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    return await read_response(reader)


async def _probe(port: int, headers: dict[str, str], i: int, run: str,
                 poll_gap: float) -> dict[str, float]:
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    who = f"probe-{run}-{i}"
    msg = f"probe-{run}-{i}"
    body = msgspec.json.encode({"d": [{"type": "event", "identity": who, "evtName": "Probe",
                                       "evtData": {"n": i}, "msgId": msg}]})
    req = (f"POST /1/upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
           "Content-Type: application/json\r\n"
           + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
           + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    out: dict[str, float] = {}
    t0 = time.monotonic()

    async def send() -> None:
        reader, writer = conns[0]
        writer.write(req)
        status, _ = await read_response(reader)
        assert status == 200, status
        out["ack"] = time.monotonic() - t0

    async def poll(conn: Any, path: str, key: str, seen: Any) -> None:
        while True:
            status, answer = await _get(conn, port, headers, path)
            if status == 200 and seen(_DEC.decode(answer)):
                out[key] = time.monotonic() - t0
                return
            await asyncio.sleep(poll_gap)

    await asyncio.gather(
        send(),
        poll(conns[1], f"/1/profile/events?identity={who}&limit=1", "timeline",
             lambda a: any(e["msgId"] == msg for e in a["events"])),
        poll(conns[2], f"/1/profile?identity={who}", "count",
             lambda a: a["profile"]["total_events"] >= 1))
    for _, w in conns:
        w.close()
    return out


async def _probes(port: int, headers: dict[str, str], n: int, parallel: int, gap: float,
                  poll_gap: float) -> list[dict[str, float]]:
    run = uuid.uuid4().hex[:6]
    results: list[dict[str, float]] = []
    queue = list(range(n))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            results.append(await _probe(port, headers, i, run, poll_gap))
            await asyncio.sleep(gap)

    await asyncio.gather(*(worker() for _ in range(parallel)))
    return results


def scenario(srv: common.Server, bodies: list[bytes], rate: float | None,
             args: argparse.Namespace) -> dict[str, Any]:
    """Probes while a background load runs at ``rate`` events/s (0: unpaced; None: no load)."""
    load = None
    if rate is not None:
        load = Load(srv.port, srv.headers, bodies, processes=args.processes,
                    connections=args.connections, rate=(rate / args.batch) if rate else None,
                    duration=3600)
        load.start()
        time.sleep(2)  # let the background load settle
    t = time.monotonic()
    probes = asyncio.run(_probes(srv.port, srv.headers, args.probes, args.parallel, args.gap,
                                 args.poll_gap))
    probe_s = time.monotonic() - t
    background = 0.0
    if load is not None:
        load.stop()
        background = load.join().events_per_s
    out: dict[str, Any] = {"rate": rate, "background": background, "probe_s": probe_s}
    for key in ("ack", "timeline", "count"):
        xs = [p[key] for p in probes]
        out[key] = (common.percentile(xs, 50) * 1000, common.percentile(xs, 99) * 1000,
                    max(xs) * 1000)
    out["before_ack"] = sum(min(p["timeline"], p["count"]) < p["ack"] for p in probes)
    out["n"] = len(probes)
    return out


def _label(r: dict[str, Any]) -> str:
    if r["rate"] is None:
        return "none"
    return f"{r['background']:,.0f} ev/s" + (" (unpaced)" if not r["rate"] else "")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--probes", type=int, default=200)
    p.add_argument("--parallel", type=int, default=2, help="probes in flight at once")
    p.add_argument("--gap", type=float, default=0.02, help="pause after each probe (s)")
    p.add_argument("--poll-gap", type=float, default=0.02, help="pause between polls (s)")
    p.add_argument("--rates", default="none,1000,0",
                   help="background load in events/s, comma-separated; 0 = unpaced, "
                        "none = no background load")
    p.add_argument("--events", type=int, default=100_000,
                   help="distinct background events (repeated with fresh msgIds)")
    p.add_argument("--users", type=int, default=50_000)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment of the server, e.g. NUDGE_INGEST_LOG=0 (repeatable)")
    args = p.parse_args(argv)
    common.header("ingest-to-queryable freshness under background load")
    print(f"# {args.probes} probes per scenario, {args.parallel} in flight, polls every "
          f"{args.poll_gap * 1000:.0f} ms; background: {args.processes} process(es) x "
          f"{args.connections} connections, {args.batch} records/request ({data.source()}); "
          f"server env: {' '.join(args.server_env) or 'default'}; "
          f"load average before: {common.loadavg()}", flush=True)
    bodies = encode_bodies(data.event_records(args.events, args.users), args.batch)
    results = []
    with common.Server(env=dict(kv.split("=", 1) for kv in args.server_env)) as srv:
        for raw in args.rates.split(","):
            rate = None if raw.strip() == "none" else float(raw)
            r = scenario(srv, bodies, rate, args)
            results.append(r)
            print(f"  background {_label(r)}: {r['n']} probes in {r['probe_s']:.0f}s",
                  flush=True)
    rows = []
    for r in results:
        label = _label(r)
        for key, what in (("ack", "durable ack (reference)"),
                          ("timeline", "visible: GET /1/profile/events"),
                          ("count", "counted: GET /1/profile (count(*))")):
            p50, p99, mx = r[key]
            rows.append([label, what, p50, p99, mx, f"{r[key][1] / r['ack'][1]:.2f}x"])
    print()
    print(common.table(["background load", "send ->", "p50 ms", "p99 ms", "max ms",
                        "p99 ÷ ack p99"], rows))
    print(f"# target: p99 <= 1000 ms. Probes visible before their ack arrived: "
          f"{', '.join(str(r['before_ack']) for r in results)} (the commit precedes the ack)")
    print(f"# load average after: {common.loadavg()}")
    return results


if __name__ == "__main__":
    main()
