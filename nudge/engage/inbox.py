"""The in-app inbox: messages stored per profile in the control store, read by the SDKs.

Rows live in ``inbox_messages`` (see :mod:`nudge.store.control`), one per (account, outbox
message); ``seq`` orders them and is the cursor of both paging and the event stream.
Listeners (Server-Sent Events connections) wait on a per-(account, user) wake-up set by
:meth:`Inbox.notify` when this process adds a message. For messages added by another process
(a separate worker) one watcher task per event loop reads the rows past the highest ``seq``
it has seen every ``POLL_S`` seconds and wakes their listeners: one cheap indexed query per
second per process, however many streams are open, instead of one per stream.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from nudge.clock import clock
from nudge.errors import NotFound
from nudge.privacy.keys import Keyring
from nudge.store.control import inbox_messages as t

from .sealing import open_text, seal_text

DEFAULT_TTL_S = 30 * 86400
POLL_S = 0.5
PURGE_EVERY_S = 3600.0  # expired rows are deleted by the first add after this long


@dataclass(frozen=True)
class InboxPage:
    messages: list[dict[str, Any]]
    unread: int
    next_cursor: int | None


def _item(keyring: Keyring, r: Any) -> dict[str, Any]:
    purpose = f"inbox:{r.message_id}"
    return {"id": r.message_id, "seq": r.seq, "campaign_id": r.campaign_id,
            "meta": json.loads(open_text(keyring, r.account_id, purpose + ":meta", r.meta)),
            "content": json.loads(open_text(keyring, r.account_id, purpose + ":content",
                                            r.content)),
            "created_at": r.created_at, "expires_at": r.expires_at,
            "read_at": r.read_at, "dismissed_at": r.dismissed_at,
            "read": r.read_at is not None}


class Inbox:
    """Reads and writes inbox rows; wakes stream listeners."""

    def __init__(self, engine: Engine, keyring: Keyring) -> None:
        self.engine = engine
        self.keyring = keyring  # content and meta are sealed (nudge/engage/sealing.py)
        self._waiters: dict[tuple[str, int], set[tuple[asyncio.AbstractEventLoop,
                                                        asyncio.Event]]] = defaultdict(set)
        self._lock = threading.Lock()
        self._watchers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}
        self._seen = -1
        self._purged_at = time.monotonic()

    def _live(self, account_id: str, user_id: int, now: float) -> Any:
        return sa.and_(t.c.account_id == account_id, t.c.user_id == user_id,
                       t.c.dismissed_at.is_(None),
                       sa.or_(t.c.expires_at.is_(None), t.c.expires_at > now))

    def add(self, account_id: str, user_id: int, message_id: str, content: dict[str, Any],
            meta: dict[str, Any], ttl_s: float | None = DEFAULT_TTL_S) -> tuple[int, bool]:
        """Store one message; ``(seq, created)``. The same ``message_id`` again returns the
        existing row (a retried send must not add a second copy)."""
        now = clock.now()
        campaign = meta.get("campaign_id")
        purpose = f"inbox:{message_id}"
        row = dict(account_id=account_id, user_id=user_id, message_id=message_id,
                   campaign_id=None if campaign is None else str(campaign),
                   meta=seal_text(self.keyring, account_id, purpose + ":meta",
                                  json.dumps(meta, default=str)),
                   content=seal_text(self.keyring, account_id, purpose + ":content",
                                     json.dumps(content, default=str)),
                   created_at=now, expires_at=None if not ttl_s else now + ttl_s)
        try:
            with self.engine.begin() as conn:
                inserted = conn.execute(t.insert().values(**row)).inserted_primary_key
            assert inserted is not None
            seq = inserted[0]
            created = True
        except IntegrityError:
            with self.engine.connect() as conn:
                seq = conn.execute(sa.select(t.c.seq).where(
                    t.c.account_id == account_id, t.c.message_id == message_id)).scalar_one()
            created = False
        if created:
            self.notify(account_id, user_id)
        if time.monotonic() - self._purged_at > PURGE_EVERY_S:
            self._purged_at = time.monotonic()
            self.purge_expired()
        return int(seq), created

    def page(self, account_id: str, user_id: int | None, *, limit: int = 20,
             before: int | None = None, unread_only: bool = False) -> InboxPage:
        """Newest first; ``next_cursor`` is the ``before`` of the next page."""
        if user_id is None:
            return InboxPage([], 0, None)
        now = clock.now()
        live = self._live(account_id, user_id, now)
        q = sa.select(t).where(live)
        if before is not None:
            q = q.where(t.c.seq < before)
        if unread_only:
            q = q.where(t.c.read_at.is_(None))
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(t.c.seq.desc()).limit(limit + 1)).all()
            unread = conn.execute(sa.select(sa.func.count()).select_from(t).where(
                live, t.c.read_at.is_(None))).scalar_one()
        more = len(rows) > limit
        rows = rows[:limit]
        return InboxPage([_item(self.keyring, r) for r in rows], int(unread),
                         rows[-1].seq if more and rows else None)

    def since(self, account_id: str, user_id: int, after: int) -> list[dict[str, Any]]:
        """Live messages with ``seq > after``, oldest first (the stream's next events)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(t).where(
                self._live(account_id, user_id, clock.now()), t.c.seq > after)
                .order_by(t.c.seq).limit(500)).all()
        return [_item(self.keyring, r) for r in rows]

    def last_seq(self, account_id: str, user_id: int | None) -> int:
        if user_id is None:
            return 0
        with self.engine.connect() as conn:
            v = conn.execute(sa.select(sa.func.max(t.c.seq)).where(
                t.c.account_id == account_id, t.c.user_id == user_id)).scalar()
        return int(v or 0)

    def unread(self, account_id: str, user_id: int | None) -> int:
        if user_id is None:
            return 0
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(t).where(
                self._live(account_id, user_id, clock.now()),
                t.c.read_at.is_(None))).scalar_one())

    def mark(self, account_id: str, user_id: int | None, message_id: str,
             state: str) -> dict[str, Any]:
        """Set ``read_at`` or ``dismissed_at`` (once; repeating is harmless). 404 when the
        message is not this user's."""
        column = {"read": t.c.read_at, "dismiss": t.c.dismissed_at}[state]
        where = (t.c.account_id == account_id, t.c.user_id == user_id,
                 t.c.message_id == message_id)
        with self.engine.begin() as conn:
            if user_id is not None:
                conn.execute(t.update().where(*where, column.is_(None))
                             .values({column.name: clock.now()}))
            row = None if user_id is None else conn.execute(sa.select(t).where(*where)).first()
        if row is None:
            raise NotFound(f"no inbox message {message_id!r} for this user")
        return _item(self.keyring, row)

    def purge_expired(self, before: float | None = None) -> int:
        cutoff = clock.now() if before is None else before
        with self.engine.begin() as conn:
            return conn.execute(t.delete().where(t.c.expires_at.is_not(None),
                                                 t.c.expires_at <= cutoff)).rowcount or 0

    # -- wake-ups for stream listeners ---------------------------------------------------
    @contextmanager
    def listen(self, account_id: str, user_id: int) -> Iterator[asyncio.Event]:
        """An event set whenever a message for the user is added in this process."""
        ev = asyncio.Event()
        loop = asyncio.get_running_loop()
        entry = (loop, ev)
        if self._seen < 0:  # before the caller's first read, so no row falls in between
            self._seen = self._max_seq()
        with self._lock:
            self._waiters[(account_id, user_id)].add(entry)
            task = self._watchers.get(loop)
            if task is None or task.done():
                self._watchers[loop] = loop.create_task(self._watch(loop))
        try:
            yield ev
        finally:
            with self._lock:
                waiters = self._waiters.get((account_id, user_id))
                if waiters is not None:
                    waiters.discard(entry)
                    if not waiters:
                        del self._waiters[(account_id, user_id)]

    def notify(self, account_id: str, user_id: int) -> None:
        with self._lock:
            entries = list(self._waiters.get((account_id, user_id), ()))
        for loop, ev in entries:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # that loop has closed; its listener is gone
                pass

    async def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake listeners of rows other processes added, while this loop has listeners."""
        while True:
            await asyncio.sleep(POLL_S)
            with self._lock:
                if not any(lp is loop for ws in self._waiters.values() for lp, _ in ws):
                    self._watchers.pop(loop, None)
                    return
            try:
                rows = await asyncio.to_thread(self._new_rows, self._seen)
            except Exception:  # noqa: BLE001, S112 - the store is briefly busy: next tick
                continue
            for account_id, user_id, seq in rows:
                self._seen = max(self._seen, seq)
                self.notify(account_id, user_id)

    def _max_seq(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(t.c.seq))).scalar() or 0)

    def _new_rows(self, after: int) -> list[tuple[str, int, int]]:
        with self.engine.connect() as conn:
            return [(r.account_id, int(r.user_id), int(r.seq)) for r in conn.execute(
                sa.select(t.c.account_id, t.c.user_id, t.c.seq).where(t.c.seq > after)
                .order_by(t.c.seq).limit(10_000)).all()]
