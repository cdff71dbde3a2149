"""Crypto-shredding: after erasures, an account's file is rewritten under a new key.

DuckDB deletes rows logically, and blocks it frees keep their old (encrypted) content, so an
erased person survives as ciphertext in the account file until that file is gone *and* its
key is. A rewrite copies the live database into a fresh file encrypted with a new random
key, swaps it in atomically and deletes the old key's only copy (``account_file_keys``):
every byte the old file ever held — erased rows, free blocks, an old copy of the file
somewhere — is unreadable from then on.

Steps (on the account's writer thread, so no commit runs in between), and what a crash
(``kill -9``) at each point leaves:

1. ``CHECKPOINT``; a new key is stored wrapped as *pending*. Crash: the old file with its
   active key; the pending key is dropped at the next open.
2. ``COPY FROM DATABASE`` into ``events.duckdb.rekey``, ``CHECKPOINT``, fsync. Crash: the
   same (the partial copy is deleted at the next open).
3. The database is closed, ``os.replace`` puts the copy in place, the directory is fsynced.
   Crash after this: the new file and its pending key; the next open finds that the pending
   key opens the file (DuckDB checks the key) and makes it active.
4. One control-store transaction makes the new key active and deletes the old one.
5. The new file is attached; readers that waited for the swap go on.

Rewrites are batched: an erasure records that one is owed (``store_rewrites``) with a due
time ``NUDGE_ERASURE_REWRITE_DELAY_S`` after the first erasure not yet rewritten; later
erasures join it. :class:`RewriteScheduler` (in the server) runs due rewrites; a CLI process
that erased without a server runs them before it exits. The row survives a crash, so an
owed rewrite is done after a restart. Backups pause rewrites (a backup's control store and
account files must agree on the keys).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.clock import clock
from nudge.privacy import storage
from nudge.privacy.keys import Keyring
from nudge.store import control
from nudge.store.account import AccountStore

log = logging.getLogger("nudge.privacy")

# Held by a backup for its whole run and by each rewrite: they never overlap in a process.
_exclusive = threading.Lock()

# Test hook for crash tests (tests/privacy/test_shred_crash.py): the process kills itself
# with SIGKILL when a rewrite reaches the named step. Not a setting; never set in production.
_CRASH_ENV = "NUDGE_TEST_CRASH_IN_REWRITE"


def _crash_point(step: str) -> None:
    if os.environ.get(_CRASH_ENV) == step:
        os.kill(os.getpid(), 9)


@contextmanager
def rewrites_paused() -> Iterator[None]:
    """No rewrite starts in this process while the block runs (backups)."""
    with _exclusive:
        yield


# -- the rewrite itself ---------------------------------------------------------------------

def rewrite_on_writer(store: AccountStore, keyring: Keyring | None) -> dict[str, Any]:
    """Rewrite the account file under a new key; writer thread only. ``keyring=None``
    rewrites an unencrypted store into a new unencrypted file (store tests).

    The ingest log (nudge/ingest/log.py) is sealed with a key derived from the file's, so
    it goes along: appends are paused (requests wait, unacknowledged), every acknowledged
    entry is committed and every segment deleted, and after the swap new frames are sealed
    with the new key. No frame under the old key outlives it.
    """
    started = time.perf_counter()
    ingest_log = getattr(store, "log", None)
    if ingest_log is not None and not hasattr(ingest_log, "set_key"):
        raise RuntimeError("this ingest log cannot change its key; rewrite skipped")
    current = keyring.duckdb_key(store.account_id) if keyring else None
    if ingest_log is not None:
        ingest_log.close()
    try:
        if ingest_log is not None:
            store.commit_queued()
            ingest_log.release(store.applied_lsn, rotate=True)
            if any(ingest_log.dir.glob("*.seg")):
                raise RuntimeError("ingest log segments remain after applying them; "
                                   "rewrite skipped (retried later)")
        before = store.path.stat().st_size
        generation, current = _rewrite_file(store, keyring, current)
    finally:
        if ingest_log is not None:
            from nudge.ingest.log import log_key

            ingest_log.set_key(log_key(current))
            ingest_log.start()
    return {"generation": generation, "seconds": round(time.perf_counter() - started, 3),
            "bytes_before": before, "bytes_after": store.path.stat().st_size}


def _rewrite_file(store: AccountStore, keyring: Keyring | None,
                  old_key: str | None) -> tuple[int, str | None]:
    """Steps 1-5 of the module docstring; returns the new generation and key."""
    account_id, path = store.account_id, store.path
    cur = store.writer_cursor
    cur.execute("CHECKPOINT")
    generation, key = keyring.begin_file_key(account_id) if keyring else (0, None)
    _crash_point("pending")
    tmp = storage.rewrite_path(path)
    try:
        storage.remove_partial_rewrite(path)
        _copy(cur, tmp, key)
        _crash_point("copied")
    except BaseException:
        storage.remove_partial_rewrite(path)
        if keyring:
            keyring.abandon_file_key(account_id, generation)
        raise

    def replace() -> str | None:
        wal = Path(str(path) + ".wal")
        if wal.exists() and wal.stat().st_size > 0:
            # Never expected after CHECKPOINT and close; keep the old file rather than lose
            # whatever that log holds (the rewrite is retried later).
            storage.remove_partial_rewrite(path)
            if keyring:
                keyring.abandon_file_key(account_id, generation)
            raise RuntimeError(f"{wal} is not empty after a checkpoint; rewrite skipped")
        wal.unlink(missing_ok=True)
        os.replace(tmp, path)
        storage.fsync(path.parent)
        _crash_point("swapped")
        if keyring:
            keyring.commit_file_key(account_id, generation)
        _crash_point("committed")
        return key

    try:
        store.reopen_file(replace)
    except RuntimeError:
        store.reopen_file(lambda: old_key)
        raise
    return generation, key


def _copy(cur: Any, tmp: Path, key: str | None) -> None:
    target = storage._literal(str(tmp))
    opts = f" (ENCRYPTION_KEY '{key}')" if key else ""  # key: hex from our keyring
    cur.execute(f"ATTACH {target} AS rekey_dst{opts}")
    try:
        cur.execute("COPY FROM DATABASE acct TO rekey_dst")
        cur.execute("CHECKPOINT rekey_dst")
    finally:
        cur.execute("DETACH rekey_dst")
    storage.fsync(tmp)


def rewrite(store: AccountStore, keyring: Keyring, engine: Engine) -> dict[str, Any]:
    """Rewrite now (on the writer) and clear the account's owed rewrite in the same job, so
    an erasure queued behind it is owed a rewrite of its own."""
    def job() -> dict[str, Any]:
        result = rewrite_on_writer(store, keyring)
        with engine.begin() as conn:
            conn.execute(control.store_rewrites.delete().where(
                control.store_rewrites.c.account_id == store.account_id))
        return result

    with _exclusive:
        result = store.run_on_writer(job).result()
    log.info("account %s: file rewritten under key generation %d in %.1f s",
             store.account_id, result["generation"], result["seconds"])
    return result


# -- owing and scheduling -------------------------------------------------------------------

def owe(engine: Engine, account_id: str, delay_s: float) -> float:
    """Record that the account's file must be rewritten; returns the time it will be by
    (an owed rewrite keeps its earlier due time: erasures share it)."""
    t = control.store_rewrites
    now = clock.now()
    with engine.begin() as conn:
        row = conn.execute(sa.select(t.c.due_at).where(t.c.account_id == account_id)).first()
        if row is not None:
            conn.execute(t.update().where(t.c.account_id == account_id)
                         .values(erasures=t.c.erasures + 1))
            return float(row.due_at)
        due = now + max(0.0, float(delay_s))
        conn.execute(t.insert().values(account_id=account_id, requested_at=now, due_at=due,
                                       erasures=1))
        return due


def owed(engine: Engine, due_by: float | None = None) -> list[str]:
    """Accounts owed a rewrite (due by ``due_by``; all when ``None``), earliest first."""
    t = control.store_rewrites
    q = sa.select(t.c.account_id).order_by(t.c.due_at)
    if due_by is not None:
        q = q.where(t.c.due_at <= due_by)
    with engine.connect() as conn:
        return [r.account_id for r in conn.execute(q)]


def run_owed(open_store: Callable[[str], AccountStore], keyring: Keyring, engine: Engine,
             due_by: float | None = None) -> int:
    """Run the owed rewrites (due by ``due_by``); returns how many ran."""
    n = 0
    for account_id in owed(engine, due_by):
        try:
            rewrite(open_store(account_id), keyring, engine)
            n += 1
        except Exception:
            log.exception("account %s: rewrite after erasure failed; retried later",
                          account_id)
    return n


def rewritten_since(keyring: Keyring, account_id: str, erased_at: float) -> float | None:
    """When the account file was last rewritten, if after ``erased_at``."""
    created = keyring.file_key_info(account_id)["created_at"]
    return created if created is not None and created >= erased_at else None


class RewriteScheduler:
    """A thread of the server that runs owed rewrites when they fall due."""

    def __init__(self, open_store: Callable[[str], AccountStore], keyring: Keyring,
                 poll_s: float) -> None:
        self._open_store, self._keyring = open_store, keyring
        self._poll_s = max(0.2, poll_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> RewriteScheduler:
        self._thread = threading.Thread(target=self._loop, name="rewrite-scheduler",
                                        daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                run_owed(self._open_store, self._keyring, self._keyring.engine, clock.now())
            except Exception:
                log.exception("rewrite scheduler")
            self._stop.wait(self._poll_s)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
