"""``nudge demo``: create the demo account and fill it with the demo data.

Profiles and tokens go through the ingest path (validation, identity resolution, merges);
the events, ~95% of the records, are appended as Arrow columns (nudge/demo_columns.py,
nudge/store/bulk_events.py): the per-event Python of the record path was most of a
default demo's time (docs/benchmarks.md).
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import multiprocessing as mp
import os
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from nudge.bulk import bulk_mode, progress
from nudge.config import Limits, Settings
from nudge.ingest.log import decode_packed, pack, unpack
from nudge.ingest.records import RecordError
from nudge.store import control
from nudge.store.account import AccountStore
from nudge.store.bulk_events import ColumnarCommit
from nudge.store.commit import CommitResult
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
        with bulk_mode(store):
            parts = generated_elsewhere(users, events, seed, settings.limits)
            stored, errors = load_parts(store, parts, total=users + events,
                                        label=f"demo: {users:,} users")
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


def load_parts(store: AccountStore, parts: Iterator[tuple[str, Any]], *, total: int,
               label: str, quiet: bool = False) -> tuple[int, list[RecordError]]:
    """Profile and token records through the ingest path, then the events as columns.

    Each part is committed while the child generates the next one (one part in flight);
    the events wait for the last profile commit, as they go to the users it resolved, and
    are written in sorted runs of ``store.compact_rows`` (``bulk_mode``: 4M) events.
    """
    stored, errors = 0, []
    pending: Callable[[], int] | None = None
    uids: np.ndarray | None = None
    held: list[pa.Table] = []  # event batches waiting to make one sorted run

    def write_events() -> Callable[[], int]:
        table = pa.concat_tables(held)
        held.clear()
        assert uids is not None
        return store.run_on_writer(functools.partial(
            _append, store, table, uids[table["user"].to_numpy()])).result

    with progress() as bar:
        task = bar.add_task(label, total=total)
        if quiet:
            bar.stop()
        for kind, part in parts:
            settle: Callable[[], int] | None = None
            if kind == "records":
                records, bad, n = part
                errors.extend(bad)
                settle = functools.partial(_settle, store.submit_nowait(records), errors)
            else:
                if uids is None:
                    stored += pending() if pending is not None else 0
                    pending = None
                    uids = _user_ids(store)
                n = part.num_rows
                held.append(part)
                if sum(t.num_rows for t in held) >= store.compact_rows:
                    settle = write_events()
            if settle is not None:
                if pending is not None:
                    stored += pending()
                pending = settle
            bar.update(task, advance=n)
        if held:
            if pending is not None:
                stored += pending()
            pending = write_events()
        if pending is not None:
            stored += pending()
    return stored, errors


def _settle(fut: concurrent.futures.Future[CommitResult], errors: list[RecordError]) -> int:
    bad = [e for e in fut.result().errors if e is not None]
    errors.extend(bad)
    return len(fut.result().errors) - len(bad)


def _append(store: AccountStore, table: pa.Table, user_ids: np.ndarray) -> int:
    return ColumnarCommit(store, table, user_ids).append()  # on the writer thread


def _user_ids(store: AccountStore) -> np.ndarray:
    """The store's user id of every demo user, by index (identity ``u<index+1>``)."""
    with store.cursor() as cur:
        idx, uid = cur.execute(
            "SELECT CAST(substr(value, 2) AS BIGINT) - 1, user_id FROM identities "
            "WHERE kind = 'identity' AND regexp_full_match(value, 'u[0-9]+')").fetchnumpy(
            ).values()
    out = np.full(int(idx.max()) + 1 if len(idx) else 0, -1, dtype=np.int64)
    out[idx] = uid
    return out


def generated_elsewhere(users: int, events: int, seed: int, limits: Limits,
                        ) -> Iterator[tuple[str, Any]]:
    """``generated_here``'s parts, made in a child process on the other core.

    Profile and token records are validated there (``parse_records``, as for uploads) and
    cross in the ingest log's msgpack form (nudge/ingest/log.py; ~6 µs a record to read back
    against ~16 µs to decode and validate JSON); event batches cross as Arrow IPC streams.
    The queue is two parts deep.
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
            kind, data = item
            if kind == "records":
                packed, bad, n = decode_packed(data)
                yield kind, ([unpack(r) for r in packed], [RecordError(*e) for e in bad], n)
            else:
                yield kind, pa.ipc.open_stream(data).read_all()
    finally:
        child.join(timeout=5)
        if child.is_alive():
            child.kill()


def generated_here(users: int, events: int, seed: int, now: float, limits: Limits,
                   **kw: Any) -> Iterator[tuple[str, Any]]:
    """The parts ``load_parts`` takes, made in this process: profile and token records validated
    by ``parse_records`` (as uploads are), event batches as they come."""
    from nudge.clock import clock
    from nudge.demo_columns import generate_columns
    from nudge.ingest.upload import parse_records

    offset = 0
    for kind, part in generate_columns(users, events, seed=seed, now=now, **kw):
        if kind == "records":
            records, bad = parse_records(part, offset, clock.now(), limits)
            yield kind, (records, bad, len(part))
            offset += len(part)
        else:
            yield kind, part


def _generate_into(q: Any, users: int, events: int, seed: int, now: float,
                   limits: Limits) -> None:
    import gc

    gc.disable()  # nothing here makes cycles; see bulk.bulk_mode
    encode = msgspec.msgpack.Encoder().encode
    try:
        for kind, part in generated_here(users, events, seed, now, limits):
            if kind == "records":
                records, bad, n = part
                q.put((kind, encode(([pack(r) for r in records],
                                     [(e.index, e.code, e.error) for e in bad], n))))
            else:
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, part.schema) as w:
                    w.write_table(part)
                q.put((kind, sink.getvalue().to_pybytes()))
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
