"""Rejected ingest records per account and reason code, kept in the control store.

The ingest path calls :func:`note` with a batch's record errors: an in-memory increment
under a lock (no I/O on the request path). A daemon thread adds the pending counts to
``ingest_rejects`` every ``FLUSH_S`` seconds (``count = count + n``, so several server
processes sharing one control store add up), and once more at interpreter exit; a crash
loses at most the last ``FLUSH_S`` seconds of counts. :func:`by_reason` (the dashboard's
home page) flushes first, so what it shows includes every reject noted so far in this
process.

One :class:`RejectCounts` per control store URL (``Settings.control_database_url``), so
servers started in one process (tests) each count into their own store.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.clock import clock
from nudge.store import control
from nudge.store.control import ingest_rejects as t

FLUSH_S = 1.0
log = logging.getLogger(__name__)


class RejectCounts:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pending: dict[tuple[str, int], list[Any]] = {}  # -> [count, latest message]
        self._lock = threading.Lock()  # the pending dict
        self._flush_lock = threading.Lock()  # one flush at a time
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def note(self, account_id: str, errors: Iterable[Any]) -> None:
        """Count ``errors`` (``RecordError``: ``code``, ``error``) for the account."""
        with self._lock:
            for err in errors:
                cell = self._pending.setdefault((account_id, int(err.code)), [0, ""])
                cell[0] += 1
                cell[1] = str(err.error)[:200]
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ingest-rejects",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_S)
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the store may be closing; next round retries
                log.warning("ingest reject counts not flushed; retrying", exc_info=True)

    def flush(self) -> None:
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, {}
            if not pending:
                return
            now = clock.now()
            try:
                with self.engine.begin() as conn:
                    for (account_id, code), (n, example) in pending.items():
                        done = conn.execute(t.update().where(
                            t.c.account_id == account_id, t.c.code == code).values(
                            count=t.c.count + n, example=example, updated_at=now)).rowcount
                        if not done:
                            conn.execute(t.insert().values(
                                account_id=account_id, code=code, count=n, example=example,
                                updated_at=now))
            except Exception:
                with self._lock:  # put them back for the next flush
                    for key, (n, example) in pending.items():
                        cell = self._pending.setdefault(key, [0, example])
                        cell[0] += n
                raise

    def by_reason(self, account_id: str) -> list[dict[str, Any]]:
        """``[{"code", "count", "example", "updated_at"}]`` for one account, most first."""
        self.flush()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t).where(t.c.account_id == account_id)
                                .order_by(t.c.count.desc(), t.c.code)).all()
        return [{"code": r.code, "count": int(r.count), "example": r.example,
                 "updated_at": r.updated_at} for r in rows]


_registry: dict[str, RejectCounts] = {}
_registry_lock = threading.Lock()


def for_url(url: str) -> RejectCounts:
    """The process's counter for the control store at ``url``."""
    with _registry_lock:
        counts = _registry.get(url)
        if counts is None:
            counts = _registry[url] = RejectCounts(control.connect(url))
        return counts


def note(settings: Any, account_id: str, errors: list[Any]) -> None:
    """Count a batch's record errors (a no-op for an empty list)."""
    if errors:
        for_url(settings.control_database_url).note(account_id, errors)


def flush_all() -> None:
    """Write every pending count now (the server's shutdown; again at interpreter exit)."""
    for counts in list(_registry.values()):
        try:
            counts.flush()
        except Exception:  # noqa: BLE001 - shutting down: log it, lose these counts
            log.warning("ingest reject counts lost at shutdown", exc_info=True)


atexit.register(flush_all)
