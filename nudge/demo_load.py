"""``nudge demo``: create the demo account and fill it through the real ingest pipeline."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import secrets
import time
from collections.abc import Iterator
from typing import Any

import msgspec

from nudge.bulk import Parsed, ingest_chunks
from nudge.config import Limits, Settings
from nudge.ingest.log import decode_packed, pack, unpack
from nudge.ingest.records import RecordError
from nudge.store import control
from nudge.store.registry import StoreRegistry
from nudge.tenancy.accounts import AccountDirectory

DEMO_NAME = "Demo Store"
CREDENTIALS = "demo-account.json"


def load_demo(settings: Settings, *, users: int, events: int, seed: int, if_empty: bool) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    creds_path = settings.data_dir / CREDENTIALS
    if if_empty and creds_path.exists():
        _announce(json.loads(creds_path.read_text()), existing=True)
        return
    accounts = AccountDirectory(control.connect(settings.control_database_url))
    new = accounts.create(DEMO_NAME, "UTC")
    creds = {"id": new.account.id, "passcode": new.passcode, "write_key": new.write_key,
             **_dashboard_owner(accounts.engine, new.account.id)}
    registry = StoreRegistry(settings)
    store = registry.get(new.account.id)
    started = time.perf_counter()
    try:
        chunks = generated_elsewhere(users, events, seed, settings.limits)
        stored, errors = ingest_chunks(store, chunks, settings.limits,
                                       total=users + events, label=f"demo: {users:,} users",
                                       bulk=True, parsed=True)
        store.compact_now()
    finally:
        registry.close()
    elapsed = time.perf_counter() - started
    # Keys are stored hashed; the demo's own keys are kept beside the data so that
    # `make run` can show them again. Readable by the owner only.
    fd = os.open(creds_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(creds, f)
    print(f"demo data: {stored:,} records stored ({len(errors)} rejected) in {elapsed:.1f}s")
    _announce(creds, existing=False)


def generated_elsewhere(users: int, events: int, seed: int, limits: Limits,
                        ) -> Iterator[Parsed]:
    """``demo.generate``'s chunks, generated and validated in a child process.

    Generating and validating (``parse_records``, the same as for uploads) run on the other
    core while this one commits. Validated records cross in the ingest log's msgpack form
    (nudge/ingest/log.py): ~6 µs a record to read back here against ~16 µs to decode and
    validate the JSON (measured on demo data, docs/benchmarks.md), through a queue two
    chunks deep.
    """
    ctx = mp.get_context("spawn")  # no fork of a process holding DuckDB's threads
    q: Any = ctx.Queue(maxsize=2)
    child = ctx.Process(target=_generate_into,
                        args=(q, users, events, seed, time.time(), limits), daemon=True)
    child.start()
    try:
        while True:
            item = q.get()
            if item is None:
                break
            if isinstance(item, str):
                raise RuntimeError(f"demo generator failed: {item}")
            packed, bad, n = decode_packed(item)
            yield ([unpack(r) for r in packed], [RecordError(*e) for e in bad], n)
    finally:
        child.join(timeout=5)
        if child.is_alive():
            child.kill()


def _generate_into(q: Any, users: int, events: int, seed: int, now: float,
                   limits: Limits) -> None:
    import gc

    from nudge import demo
    from nudge.clock import clock
    from nudge.ingest.upload import parse_records

    gc.disable()  # nothing here makes cycles; see bulk.ingest_chunks
    encode = msgspec.msgpack.Encoder().encode
    offset = 0
    try:
        for chunk in demo.generate(users, events, seed=seed, now=now):
            records, bad = parse_records(chunk, offset, clock.now(), limits)
            q.put(encode(([pack(r) for r in records],
                          [(e.index, e.code, e.error) for e in bad], len(chunk))))
            offset += len(chunk)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises
        q.put(f"{type(e).__name__}: {e}")
    q.put(None)


def _dashboard_owner(engine: Any, account_id: str) -> dict[str, str]:
    """A dashboard owner for the demo account, with a random password shown by `make run`
    (owners enroll an authenticator app at their first sign-in: MFA is required for them)."""
    from nudge.tenancy.users import UserDirectory

    email, password = "owner@demo.nudge.dev", secrets.token_urlsafe(15)
    UserDirectory(engine).create(email, account_id, "owner", password=password)
    return {"dashboard_user": email, "dashboard_password": password}


def _announce(creds: dict[str, str], *, existing: bool) -> None:
    word = "existing" if existing else "new"
    print(f"""
Nudge {word} demo account
  account id : {creds['id']}
  passcode   : {creds['passcode']}
  write key  : {creds['write_key']}

Next:
  curl -s 'http://localhost:8000/1/events/catalog' \\
       -H 'X-Nudge-Account-Id: {creds['id']}' -H 'X-Nudge-Passcode: {creds['passcode']}'
  curl -s 'http://localhost:8000/1/profile?identity=u1' \\
       -H 'X-Nudge-Account-Id: {creds['id']}' -H 'X-Nudge-Passcode: {creds['passcode']}'
  API reference: docs/api.md
""")
    if "dashboard_user" in creds:
        print(f"""Dashboard: http://localhost:8000/ui
  sign in as {creds['dashboard_user']} with password {creds['dashboard_password']}
  (first sign-in enrolls an authenticator app: owners need MFA)
""")
