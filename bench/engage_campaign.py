"""A campaign to a large segment: audience → render → policy → outbox, then sending with a
fake instant channel — messages per second on one core.

In one process, on one account store (DuckDB threads = 1) and a SQLite control store:

1. **audience**: the segment evaluated on the live store (``SegmentEngine.user_ids``);
2. **expand**: per batch of ``--batch`` ids, the path the scheduler takes
   (``expand.build_rows``: profiles and addresses from the store, variant split, policy with
   a global frequency cap and quiet hours, Liquid render of subject + HTML with a tracked
   link) and ``outbox.insert`` in one transaction with the run cursor;
3. **send**: ``DeliveryWorker.step`` (claim → send → record) against a channel that accepts
   every message at once, so the figure is the service's own cost.

Reference, same process, same data, run batch by batch right after each measured batch (so
both see the same load on a shared machine): a plain loop that only formats the same two
strings per user and inserts the rows with ``executemany`` into a bare SQLite table (no
policy, no Liquid, no unique key) — the floor for "one row per message".

    python -m bench.engage_campaign                   # 1M users
    python -m bench.engage_campaign --users 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import header, loadavg, ratio, table
from nudge.clock import clock
from nudge.config import load_settings
from nudge.engage import expand, outbox, sealing
from nudge.engage.channels.base import Channel, Message, SendResult
from nudge.engage.directory import CampaignDirectory, spec_of
from nudge.engage.service import Engage
from nudge.engage.worker import DeliveryWorker
from nudge.ingest.records import ProfileOp, Record
from nudge.privacy.keys import Keyring
from nudge.store import control
from nudge.store.registry import StoreRegistry
from nudge.tenancy.accounts import AccountDirectory

NAMES = [f"Name{i}" for i in range(2000)]
SUBJECT = "{{ profile.first_name | default: 'there' }}, your {{ profile.tier }} offer"
HTML = ("<p>Hi {{ profile.first_name | default: 'there' }},</p>"
        "<p><a href=\"{{ 'https://shop.example/sale' | track }}\">Shop the sale</a></p>"
        "<p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p>")


class InstantChannel(Channel):
    name = "email"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Channel:
        return cls()

    async def send(self, message: Message) -> SendResult:
        return SendResult("sent", provider_id=message.id)


def load_users(store: Any, n: int) -> None:
    rnd = random.Random(7)
    now = clock.now()
    for i in range(0, n, 20_000):
        recs = []
        for u in range(i, min(n, i + 20_000)):
            props = {"first_name": rnd.choice(NAMES), "tier": rnd.choice(["gold", "silver"]),
                     "timezone": rnd.choice(["Europe/Paris", "America/New_York", "UTC",
                                             "Asia/Tokyo"])}
            recs.append(Record(kind="profile", ids={"identity": f"u{u}",
                                                    "email": f"u{u}@example.com"},
                               ts=now, message_id=f"p{u}", index=u - i,
                               ops=[ProfileOp("set", k, v) for k, v in props.items()]))
        store.write(recs)


class Reference:
    """Format two strings per user and insert the rows (no policy, no Liquid, no unique key,
    no indexes), one batch at a time: run right after each measured batch, so that both
    see the same machine (on a shared box the CPU a second buys varies with its load)."""

    def __init__(self, names: dict[int, str], path: Path) -> None:
        self.names = names
        self.con = sqlite3.connect(path)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("CREATE TABLE m (user_id INTEGER, subject TEXT, html TEXT, status TEXT)")

    def step(self, uids: list[int]) -> float:
        """CPU seconds for this batch."""
        names = self.names
        started = time.process_time()
        rows = [(u, f"{names.get(u, 'there')}, your offer",
                 f"<p>Hi {names.get(u, 'there')},</p><a href='https://shop.example/sale'>x</a>",
                 "pending") for u in uids]
        with self.con:
            self.con.executemany("INSERT INTO m VALUES (?, ?, ?, ?)", rows)
        return time.process_time() - started


def insert_unsealed(engine: Any, rows: list[dict[str, Any]]) -> None:
    """``outbox.insert``'s SQLite path without sealing."""
    with engine.begin() as conn:
        control.insert_ignore(conn, control.outbox, rows, ("idem_key",))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--send", type=int, default=200_000, help="messages to send (0: skip)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="engage-bench-"))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> None:
    settings = load_settings(data_dir=str(tmp), duckdb_threads=1,
                             master_key="A" * 43 + "=", engage_expand_batch=args.batch)
    engine = control.connect(settings.control_database_url)
    keyring = Keyring(engine, __import__("base64").b64decode("A" * 43 + "="))
    accounts = AccountDirectory(engine)
    acct = accounts.create("bench").account
    stores = StoreRegistry(settings, keyring)
    store = stores.get(acct.id)
    t0 = time.perf_counter()
    load_users(store, args.users)
    header(f"engage campaign: {args.users:,} users (loaded in {time.perf_counter() - t0:.0f} s)")
    engage = Engage(settings, accounts, stores, keyring, lambda a, c: InstantChannel())
    engage.policies.put(acct.id, {"caps": [{"max": 3, "per": {"days": 1}}],
                                  "quiet_hours": {"start": "23:00", "end": "06:00",
                                                  "action": "delay"}}, clock.now())
    camp = CampaignDirectory(engine, acct.id).create({
        "name": "sale", "channels": ["email"],
        "audience": {"definition": {"profile": {"property": "tier", "op": "in",
                                                "value": ["gold", "silver"]}}},
        "content": {"email": {"subject": SUBJECT, "html": HTML}}})
    spec = spec_of(camp)
    # CPU seconds of this process (DuckDB runs one thread): "messages per second on one
    # core", independent of what else the machine is doing; wall time is shown beside it.
    w0, t = time.perf_counter(), time.process_time()
    ids = expand.audience_ids(engage, acct.id, spec)
    t_audience = time.process_time() - t
    stage = {"build_rows": 0.0, "seal": 0.0, "outbox insert": 0.0, "unsealed insert": 0.0}
    # Sealing's reference: the same rows unsealed into a second, identical control store.
    plain = control.connect(f"sqlite:///{tmp / 'plain-control.db'}")
    with store.cursor() as cur:
        col = store.catalog.by_scope("profile")
        fn = next(c.column for c in col if c.name == "first_name")
        ref = Reference(dict(cur.execute(f"SELECT user_id, {fn} FROM profiles").fetchall()),
                        tmp / "ref.db")
    t_ref = 0.0
    t = time.process_time()
    for i in range(0, len(ids), args.batch):
        s = time.process_time()
        rows = expand.build_rows(engage, camp, spec, "bench", ids[i:i + args.batch])
        stage["build_rows"] += time.process_time() - s
        s = time.process_time()  # outbox.insert seals; done first here to time it apart
        with outbox.paused_gc():  # as outbox.insert does
            sealed = sealing.seal_outbox_rows(keyring, rows)
        stage["seal"] += time.process_time() - s
        s = time.process_time()
        with engine.begin() as conn:
            outbox.insert(conn, sealed)
        stage["outbox insert"] += time.process_time() - s
        s = time.process_time()
        insert_unsealed(plain, rows)
        stage["unsealed insert"] += time.process_time() - s
        t_ref += ref.step(ids[i:i + args.batch])
    ref.con.close()
    # the references' own time is not the expansion's
    t_expand = time.process_time() - t - stage["unsealed insert"] - t_ref
    wall = time.perf_counter() - w0
    total = t_audience + t_expand
    with engine.connect() as conn:
        queued = conn.exec_driver_sql("SELECT count(*) FROM outbox").scalar_one()
    rows_out = [
        ["audience (segment → ids)", f"{t_audience:.2f} s", ""],
        ["render + policy (build_rows)", f"{stage['build_rows']:.2f} s", ""],
        ["seal (AES-256-GCM, one per message)", f"{stage['seal']:.2f} s", ""],
        ["outbox insert", f"{stage['outbox insert']:.2f} s", ""],
        ["**audience → outbox**", f"{total:.2f} s", f"**{len(ids) / total:,.0f} msg/s**"],
        ["reference (format + executemany)", f"{t_ref:.2f} s", f"{len(ids) / t_ref:,.0f} msg/s"],
        ["sealing's reference: the same rows unsealed into a second outbox",
         f"{stage['unsealed insert']:.2f} s", ""],
    ]
    print(table(["stage", "CPU time", "rate"], rows_out))
    seal_cost = stage["seal"] + stage["outbox insert"] - stage["unsealed insert"]
    print(f"\nsealing: {seal_cost:.2f} s of CPU ({seal_cost / len(ids) * 1e6:.1f} µs a message;"
          f" {len(ids) / (total - seal_cost):,.0f} msg/s without it)")
    print(f"\nqueued rows: {queued:,}; ratio to reference: {ratio(total, t_ref)}; wall time "
          f"{wall:.2f} s (load average {loadavg()})")
    if args.send:
        send_rate = asyncio.run(send(engage, min(args.send, len(ids))))
        print(f"\nsend with an instant channel: {send_rate:,.0f} msg/s "
              f"(claim batch {settings.engage_claim_batch})")
    print(json.dumps({"users": args.users, "audience_s": t_audience, "expand_s": t_expand,
                      "msgs_per_s": len(ids) / total, "reference_s": t_ref,
                      "stages": stage}))
    stores.close()


async def send(engage: Engage, n: int) -> float:
    engage.loop = asyncio.get_running_loop()
    w = DeliveryWorker(engage, 0)
    w.batch = 1000
    # Everything queued is due now (quiet hours may have delayed some).
    with engage.engine.begin() as conn:
        conn.execute(control.outbox.update().values(next_attempt_at=0))
    done, started = 0, time.process_time()
    while done < n:
        k = await w.step()
        if not k:
            break
        done += k
    took = time.process_time() - started
    return done / took


if __name__ == "__main__":
    main()
