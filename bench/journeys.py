"""Journeys: 100k users entering a 5-node journey from a segment (entries/s, steps/s), and
event-to-advance latency for waiting users (p50/p99).

**Throughput** (in one process, CPU seconds; the machine is shared, so wall time is printed
beside): an account store with ``--users`` profiles (tier gold/silver, an email, one of four
timezones) and a SQLite control store. A published journey enters everyone in the segment
``tier exists`` (``segment_entry.enter_all``: segment evaluated on the live store, re-entry
check, ``journey_entries`` inserted in batches of 5,000, one transaction each), then
``JourneyEngine.tick`` advances everyone through five nodes — send (an email campaign: render,
policy, outbox row through ``expand.build_rows``), A/B split, webhook (outbox row), profile
update (written to the account store), exit — each batch of 1,000 entries committing its
step rows, outbox rows and state changes in one transaction.

Reference, same process, same ids: ``executemany`` of the same number of rows into bare
SQLite tables (one entry row per user, one step row per step; no indexes, no unique keys,
no logic) — the floor for "one durable row per step".

**Latency** (real ``nudge serve``): ``--waiting`` users wait in a ``wait_event`` node for
``Ping``; Pings are uploaded one request at a time at ``--rate``/s; latency is from the
upload's HTTP response (the event is durable) to a local receiver getting the webhook of the
node that follows the wait (event → live bus → entry ready → tick → outbox → worker → POST).
Reference in the same run: the upload round trip.

    python -m bench.journeys                          # 100k users, 300 waiting
    python -m bench.journeys --users 20000 --waiting 100
    python -m bench.journeys --only segment        # live segment entry latency

**Live segment entry** (real ``nudge serve``): a journey whose entry segment is "did
Qualify" (reconciliation poll one hour, so only the live path enters); ``--waiting`` people
each upload one Qualify event at ``--rate``/s; latency from the upload's response to the
receiver getting the webhook of the journey's first node.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import Server, header, loadavg, median, percentile, ratio, table
from bench.engage_campaign import InstantChannel, load_users
from nudge.config import load_settings
from nudge.engage.directory import CampaignDirectory
from nudge.engage.service import Engage
from nudge.journeys import segment_entry
from nudge.journeys.directory import JourneyDirectory
from nudge.journeys.engine import JourneyEngine
from nudge.journeys.model import JourneyBuilder
from nudge.privacy.keys import Keyring
from nudge.store import control
from nudge.store.registry import StoreRegistry
from nudge.tenancy.accounts import AccountDirectory


def five_nodes(campaign_id: int) -> dict[str, Any]:
    return (JourneyBuilder("bench").start("send")
            .send("send", campaign_id, next="ab").split("ab", [(50, "hook"), (50, "upd")])
            .webhook("hook", "https://hooks.example/j", "upd")
            .update_profile("upd", {"journeyed": True}, "x").exit("x")
            .to_json() | {"entry": {"segment": {"profile": {"property": "tier",
                                                            "op": "exists"}}}})


def reference(n_entries: int, n_steps: int, path: Path) -> float:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE e (id INTEGER, user_id INTEGER, node TEXT, state TEXT)")
    con.execute("CREATE TABLE s (entry_id INTEGER, node TEXT, outcome TEXT)")
    started = time.process_time()
    for i in range(0, n_entries, 5000):
        with con:
            con.executemany("INSERT INTO e VALUES (?, ?, 'send', 'ready')",
                            [(u, u) for u in range(i, min(n_entries, i + 5000))])
    for i in range(0, n_steps, 5000):
        with con:
            con.executemany("INSERT INTO s VALUES (?, 'node', 'done')",
                            [(u,) for u in range(i, min(n_steps, i + 5000))])
    took = time.process_time() - started
    con.close()
    return took


def throughput(users: int, tmp: Path) -> None:
    settings = load_settings(data_dir=str(tmp), duckdb_threads=1, master_key="A" * 43 + "=")
    engine = control.connect(settings.control_database_url)
    keyring = Keyring(engine, __import__("base64").b64decode("A" * 43 + "="))
    accounts = AccountDirectory(engine)
    acct = accounts.create("bench").account
    stores = StoreRegistry(settings, keyring)
    t0 = time.perf_counter()
    load_users(stores.get(acct.id), users)
    header(f"journeys: {users:,} users entering a 5-node journey from a segment "
           f"(loaded in {time.perf_counter() - t0:.0f} s)")
    engage = Engage(settings, accounts, stores, keyring, lambda a, c: InstantChannel())
    camp = CampaignDirectory(engine, acct.id).create({
        "name": "j-mail", "kind": "api", "channels": ["email"],
        "content": {"email": {"subject": "Hi {{ profile.first_name }}",
                              "html": "<p>{{ profile.tier }}</p>"}}})
    jd = JourneyDirectory(engine, acct.id)
    jid = jd.create(five_nodes(camp.id))["id"]
    jd.publish(jid)
    eng = JourneyEngine(engage)
    j = eng.version(jid, 1)

    w0, c0 = time.perf_counter(), time.process_time()
    entered = segment_entry.enter_all(eng, acct.id, jid, 1, j)
    enter_cpu, enter_wall = time.process_time() - c0, time.perf_counter() - w0
    w0, c0 = time.perf_counter(), time.process_time()
    steps = 0
    while (n := eng.tick()) > 0:
        steps += n
    step_cpu, step_wall = time.process_time() - c0, time.perf_counter() - w0
    with engine.connect() as conn:
        done = conn.execute(control.journey_entries.select().where(
            control.journey_entries.c.exit_reason == "completed")).fetchall()
    assert entered == users and len(done) == users, (entered, len(done))
    ref = reference(users, steps, tmp / "ref.db")
    print(table(["stage", "CPU time", "rate (CPU)", "wall time"], [
        [f"enter from segment ({entered:,} entries)", f"{enter_cpu:.2f} s",
         f"{entered / enter_cpu:,.0f} entries/s", f"{enter_wall:.2f} s"],
        [f"advance 5 nodes ({steps:,} steps)", f"{step_cpu:.2f} s",
         f"{steps / step_cpu:,.0f} steps/s", f"{step_wall:.2f} s"],
        ["reference: bare executemany of the same rows", f"{ref:.2f} s",
         f"{(entered + steps) / ref:,.0f} rows/s", ""],
    ]))
    print(f"\nratio (entries + steps) to reference: "
          f"{ratio(enter_cpu + step_cpu, ref)}; load average {loadavg()}")
    stores.close()


class Receiver:
    """Plain asyncio HTTP/1.1 endpoint: arrival time of each journey webhook by user id."""

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True).start()

    async def _main(self) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    n = 0
                    for line in head.split(b"\r\n")[1:]:
                        k, _, v = line.partition(b":")
                        if k.strip().lower() == b"content-length":
                            n = int(v)
                    body = await reader.readexactly(n) if n else b"{}"
                    now = time.perf_counter()
                    uid = json.loads(body).get("user_id")
                    if uid is not None:
                        self.arrived.setdefault(int(uid), now)
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass

        server = await asyncio.start_server(handle, sock=self.sock)
        async with server:
            await server.serve_forever()


def latency(waiting: int, rate: float) -> None:
    rx = Receiver()
    url = f"http://127.0.0.1:{rx.port}/hook"
    with Server(env={"NUDGE_ENGAGE_POLL_MS": "250"}) as srv:
        c = httpx.Client(base_url=srv.url, headers=srv.headers, timeout=30)
        assert c.put("/1/channels/webhook", json={
            "provider": "http", "url": url, "secret": "bench-secret-0123456789"}).is_success
        users = [{"type": "profile", "identity": f"t{i}", "ts": int(time.time()),
                  "profileData": {"n": i}} for i in range(waiting)]
        for i in range(0, len(users), 1000):
            assert c.post("/1/upload", json={"d": users[i:i + 1000]}).is_success
        body = (JourneyBuilder("wait").on_api().start("w")
                .wait_event("w", "Ping", {"hours": 1}, on_event="hook", on_timeout="x")
                .webhook("hook", url, "x").exit("x").to_json())
        jid = c.post("/1/journeys", json=body).json()["id"]
        assert c.post(f"/1/journeys/{jid}/publish").is_success
        for i in range(0, waiting, 1000):
            r = c.post(f"/1/journeys/{jid}/enter", json={
                "to": [{"identity": f"t{k}"} for k in range(i, min(waiting, i + 1000))]})
            assert r.status_code == 202, r.text
        while c.get(f"/1/journeys/{jid}/report").json()["at_node"].get("w") != waiting:
            time.sleep(0.2)
        uid = {i: c.get(f"/1/journeys/{jid}/users", params={"identity": f"t{i}"})
               .json()["user_id"] for i in range(waiting)}
        lat, rtt = _paced_events(c, rx, uid, "t", "Ping", rate)
    header(f"journeys: event-to-advance latency, {waiting} waiting users, Pings at {rate:g}/s")
    _latency_table("ack → next node's webhook reached the receiver", lat, rtt)
    print(f"\nadvanced {len(lat)}/{waiting}; load average {loadavg()}")


def _paced_events(c: httpx.Client, rx: Receiver, uid: dict[int, int], prefix: str,
                  event: str, rate: float) -> tuple[list[float], list[float]]:
    """One ``event`` per person ``{prefix}{i}`` at ``rate`` per second; returns each
    person's latency from acknowledgement to their webhook at ``rx``, and the upload round
    trips (the reference)."""
    acked: dict[int, float] = {}
    rtt: list[float] = []
    gap = 1.0 / rate
    for i in range(len(uid)):
        t0 = time.perf_counter()
        resp = c.post("/1/upload", json={"d": [{
            "type": "event", "identity": f"{prefix}{i}", "ts": int(time.time()),
            "evtName": event, "evtData": {}}]})
        t1 = time.perf_counter()
        assert resp.is_success, resp.text
        acked[uid[i]] = t1
        rtt.append(t1 - t0)
        time.sleep(max(0.0, gap - (time.perf_counter() - t0)))
    deadline = time.monotonic() + 30
    while len(rx.arrived) < len(uid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [rx.arrived[u] - acked[u] for u in acked if u in rx.arrived], rtt


def _latency_table(measure: str, lat: list[float], rtt: list[float]) -> None:
    def ms(xs: list[float]) -> list[str]:
        return [f"{median(xs) * 1000:.0f} ms", f"{percentile(xs, 99) * 1000:.0f} ms",
                f"{max(xs) * 1000:.0f} ms"]
    print(table(["measure", "p50", "p99", "max"],
                [[measure, *ms(lat)], ["reference: upload request → ack", *ms(rtt)]]))


def segment_latency(people: int, rate: float) -> None:
    """Live segment entry: event that qualifies a person → their first node's webhook.

    The journey's entry segment is "did Qualify"; the reconciliation poll is an hour, so
    only the live path (the commit's changed users tested against the segment) enters."""
    rx = Receiver()
    url = f"http://127.0.0.1:{rx.port}/hook"
    with Server(env={"NUDGE_ENGAGE_POLL_MS": "250",
                     "NUDGE_JOURNEY_SEGMENT_POLL_S": "3600"}) as srv:
        c = httpx.Client(base_url=srv.url, headers=srv.headers, timeout=30)
        assert c.put("/1/channels/webhook", json={
            "provider": "http", "url": url, "secret": "bench-secret-0123456789"}).is_success
        users = [{"type": "profile", "identity": f"s{i}", "ts": int(time.time()),
                  "profileData": {"n": i}} for i in range(people)]
        for i in range(0, len(users), 1000):
            assert c.post("/1/upload", json={"d": users[i:i + 1000]}).is_success
        body = (JourneyBuilder("live segment").start("hook").webhook("hook", url, "x")
                .exit("x").to_json() | {"entry": {"segment": {"did": {"event": "Qualify"}}}})
        jid = c.post("/1/journeys", json=body).json()["id"]
        assert c.post(f"/1/journeys/{jid}/publish").is_success
        uid = {i: c.get(f"/1/journeys/{jid}/users", params={"identity": f"s{i}"})
               .json()["user_id"] for i in range(people)}
        lat, rtt = _paced_events(c, rx, uid, "s", "Qualify", rate)
    header(f"journeys: live segment entry, {people} people qualifying at {rate:g}/s")
    _latency_table("ack → first node's webhook reached the receiver", lat, rtt)
    print(f"\nentered {len(lat)}/{people}; load average {loadavg()}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--waiting", type=int, default=300)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--only", choices=("throughput", "latency", "segment"), default=None)
    args = ap.parse_args()
    if args.only in (None, "throughput"):
        tmp = Path(tempfile.mkdtemp(prefix="journey-bench-"))
        try:
            throughput(args.users, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.only in (None, "latency"):
        latency(args.waiting, args.rate)
    if args.only in (None, "segment"):
        segment_latency(args.waiting, args.rate)


if __name__ == "__main__":
    main()
