"""A durable feed of committed events: live, and replayed from the account store after a crash.

The account store calls its commit subscribers after each durable commit (the live path:
nothing is read back, so trigger latency is one hop). That alone loses the events committed
just before a crash: they are stored, but nobody evaluated them. So each consumer (``name``:
``"engage"`` for triggers, conversions and event webhooks) keeps, per account, a
*watermark* — the highest event ``seq`` it has fully processed — in the control store
(``event_feed_watermarks``). At start it first replays every account's stored events after
its watermark (``SELECT … FROM events WHERE seq > ?``, in ``seq`` order), then goes live;
live batches already covered by the replay are skipped by their last ``seq``.

The guarantee is *at least once* per event, in ``seq`` order per account, so a handler must
be idempotent: engagement's are (outbox rows are keyed by the event's message id, a
conversion already recorded at the event's time is not recorded again). Watermarks are
written at most every ``FLUSH_S`` (one control-store write per account per interval, not
per commit), so a restart replays at most that much already-handled work plus whatever was
not handled.

The subscriber runs on the store's writer thread right after the commit, when
``store.next_seq - 1`` is the commit's last ``seq``; it only records that and enqueues (the
first batch of an account in a process also stores the account's first watermark, once).

Example::

    feed = EventFeed("engage", engine, stores, handler)   # handler(account_id, events) -> n
    feed.attach(); task = asyncio.create_task(feed.run())
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.query.profiles import event_props
from nudge.store import account as account_store
from nudge.store import control
from nudge.store.catalog import EPOCH
from nudge.store.registry import StoreRegistry

log = logging.getLogger("nudge.engage")
W = control.event_feed_watermarks
FLUSH_S = 0.5
REPLAY_BATCH = 5000
RETRY_S = 1.0

Handler = Callable[[str, list[Any]], int]


class EventFeed:
    def __init__(self, name: str, engine: Engine, stores: StoreRegistry, handler: Handler,
                 wants: Callable[[str], bool] | None = None,
                 on_handled: Callable[[int], None] | None = None) -> None:
        self.name = name
        self.engine = engine
        self.stores = stores
        self.handler = handler
        self.wants = wants or (lambda _a: True)  # False: nothing to do for this account now
        self.on_handled = on_handled or (lambda _n: None)
        self.queue: asyncio.Queue[tuple[str, int, list[Any]]] = asyncio.Queue()
        self.done: dict[str, int] = {}  # account → last seq handled (in memory)
        self._stored: dict[str, int] = {}  # account → watermark in the control store
        self._known: set[str] = set()  # accounts whose watermark row exists
        self._flushed_at = time.monotonic()
        self.replayed = 0  # events handled by replays (tests, logs)
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- live path -----------------------------------------------------------------------
    def attach(self) -> None:
        self.loop = asyncio.get_running_loop()
        account_store.commit_subscribers.append(self._on_commit)

    def detach(self) -> None:
        if self._on_commit in account_store.commit_subscribers:
            account_store.commit_subscribers.remove(self._on_commit)

    def _on_commit(self, account_id: str, events: list[Any]) -> None:
        last = self.stores.get(account_id).next_seq - 1  # writer thread, after this commit
        if account_id not in self._known:
            # At most len(events) events were stored by this commit: no event of it can
            # fall below this first watermark.
            self._ensure_row(account_id, last - len(events))
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (account_id, last, events))

    def _ensure_row(self, account_id: str, seq: int) -> None:
        with self.engine.begin() as conn:
            _insert_ignore(conn, {"consumer": self.name, "account_id": account_id,
                                  "seq": max(0, seq), "updated_at": time.time()})
        self._known.add(account_id)

    # -- the consumer task ---------------------------------------------------------------
    async def run(self) -> None:
        """Replay every account past its watermark, then handle live batches."""
        await asyncio.to_thread(self.replay_all)
        while True:
            try:
                item = await asyncio.wait_for(self.queue.get(), FLUSH_S)
            except TimeoutError:
                await asyncio.to_thread(self.flush)
                continue
            account_id, last, events = item
            if last <= self.done.get(account_id, -1):
                continue  # covered by a replay
            try:
                n = await asyncio.to_thread(self.handler, account_id, events)
            except Exception:
                log.exception("%s feed failed on %d events of account %s; replaying from "
                              "the store", self.name, len(events), account_id)
                await asyncio.sleep(RETRY_S)
                await asyncio.to_thread(self._replay_safely, account_id)
                continue
            self.done[account_id] = last
            self.on_handled(n)
            if time.monotonic() - self._flushed_at >= FLUSH_S:
                await asyncio.to_thread(self.flush)

    def flush(self) -> None:
        """Store the watermarks that moved."""
        self._flushed_at = time.monotonic()
        moved = {a: s for a, s in self.done.items() if self._stored.get(a) != s}
        if not moved:
            return
        now = time.time()
        with self.engine.begin() as conn:
            for account_id, seq in moved.items():
                conn.execute(W.update().where(W.c.consumer == self.name,
                                              W.c.account_id == account_id, W.c.seq < seq)
                             .values(seq=seq, updated_at=now))
        self._stored.update(moved)

    # -- replay --------------------------------------------------------------------------
    def replay_all(self) -> int:
        with self.engine.connect() as conn:
            marks = {r.account_id: int(r.seq) for r in conn.execute(
                sa.select(W.c.account_id, W.c.seq).where(W.c.consumer == self.name))}
        self._known.update(marks)
        self._stored.update(marks)
        for account_id, seq in marks.items():
            self.done.setdefault(account_id, seq)
        n = 0
        for account_id in marks:
            n += self._replay_safely(account_id)
        self.flush()
        if n:
            log.info("%s feed replayed %d committed events", self.name, n)
        return n

    def _replay_safely(self, account_id: str) -> int:
        try:
            return self.replay(account_id)
        except Exception:
            log.exception("%s feed could not replay account %s", self.name, account_id)
            return 0

    def replay(self, account_id: str) -> int:
        """Handle the account's stored events after its watermark, in ``seq`` order."""
        store = self.stores.get(account_id)
        after = self.done.get(account_id, 0)
        if not self.wants(account_id):
            self.done[account_id] = max(after, store.next_seq - 1)
            return 0
        n = 0
        while True:
            with store.cursor() as cur:
                res = cur.execute("SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                                  [after, REPLAY_BATCH])
                names = [d[0] for d in res.description]
                rows = [dict(zip(names, r, strict=True)) for r in res.fetchall()]
            if not rows:
                return n
            final = store.identity.final
            events = [(final(int(r["user_id"])), r["event"],
                       (r["ts"] - EPOCH).total_seconds(), event_props(store, r),
                       r["message_id"]) for r in rows]
            self.on_handled(self.handler(account_id, events))
            after = int(rows[-1]["seq"])
            self.done[account_id] = after
            n += len(rows)
            self.replayed += len(rows)


def _insert_ignore(conn: sa.Connection, values: dict[str, Any]) -> None:
    control.insert_ignore(conn, W, [values], ("consumer", "account_id"))
