"""API rate limits shared by every server process, through the control store.

A limit of ``per_minute`` requests with a minute's worth of burst is a token bucket; stored
as one *theoretical arrival time* per bucket (GCRA, as nudge/engage/ratelimit.py does for
send rates), taking ``n`` requests is one atomic statement::

    UPDATE rate_buckets SET tat = max(tat, now) + n * T
     WHERE key = ? AND max(tat, now) + n * T <= now + 60        -- T = 60 / per_minute

An ``UPDATE`` is atomic on SQLite (the database write lock) and on PostgreSQL (the row
lock), so processes sharing a control store never hand out more than the bucket holds.

So that a busy key does not cost a control-store write per request, a process takes a
*block* of tokens at a time (a tenth of a second's worth at the full rate, at most
``MAX_BLOCK``) and spends it locally; a block left unspent for ``HOLD_S`` is dropped. Tokens
a process took and did not use are lost capacity, never extra requests. With small limits
the block is one token: every request is one statement, exactly as strict as a single
process. Times are ``nudge.clock`` seconds. A control store too busy to answer within its
busy timeout lets the request through (logged): the limit must not become the outage.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.clock import clock
from nudge.errors import TooManyRequests
from nudge.store import control

log = logging.getLogger("nudge.auth")
T = control.rate_buckets
WINDOW_S = 60.0  # limits are per minute, with a minute's worth of burst
BLOCK_S = 0.1  # a block holds this many seconds' worth of requests at the full rate
MAX_BLOCK = 100
HOLD_S = 1.0


@dataclass
class _Block:
    tokens: int
    taken_at: float
    per_minute: int


def take(engine: Engine, key: str, per_minute: int, n: int, now: float) -> int:
    """Take up to ``n`` tokens (all of them, else one) from the shared bucket ``key``;
    returns how many were taken (0: over the limit)."""
    interval = WINDOW_S / per_minute
    start = sa.case((T.c.tat > now, T.c.tat), else_=now)
    with engine.begin() as conn:
        for want in dict.fromkeys((n, 1)):
            stmt = (sa.update(T).where(T.c.key == key,
                                       start + want * interval <= now + WINDOW_S + 1e-9)
                    .values(tat=start + want * interval))
            if conn.execute(stmt).rowcount:
                return want
            if control.insert_ignore(conn, T, [{"key": key, "tat": 0.0}], ("key",)):
                if conn.execute(stmt).rowcount:
                    return want
    return 0


def retry_after(engine: Engine, key: str, per_minute: int, now: float) -> int:
    """Seconds until one more request would pass."""
    interval = WINDOW_S / per_minute
    with engine.connect() as conn:
        tat = conn.execute(sa.select(T.c.tat).where(T.c.key == key)).scalar()
    wait = (float(tat or now) + interval) - (now + WINDOW_S)
    return max(1, math.ceil(wait))


def _buckets_engine(engine: Engine) -> Engine:
    """On SQLite, a connection pool of its own without an fsync per commit
    (``synchronous=NORMAL`` in WAL mode): a bucket's state need not survive a power cut —
    losing the last updates only lets a few more requests through — and an fsync per refill
    is most of its cost (docs/benchmarks.md, *Shared rate limits*). Other control-store
    writes keep ``synchronous=FULL``; the setting is per connection."""
    if engine.dialect.name != "sqlite":
        return engine
    own = sa.create_engine(engine.url, pool_pre_ping=True)

    def pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=5000")
        cur.close()

    sa.event.listen(own, "connect", pragmas)
    return own


class RateLimiter:
    """What authorization calls on every request: ``take(key, per_minute)`` or 429."""

    def __init__(self, engine: Engine) -> None:
        self.engine = _buckets_engine(engine)
        self._blocks: dict[str, _Block] = {}
        self._lock = threading.Lock()
        self.statements = 0  # control-store statements made (benchmarks)

    def take(self, key: str, per_minute: int) -> None:
        """One request against ``key``'s limit; raises TooManyRequests (429 + Retry-After)."""
        if per_minute <= 0:
            return
        now = clock.now()
        with self._lock:
            block = self._blocks.get(key)
            if (block is not None and block.tokens > 0 and block.per_minute == per_minute
                    and now - block.taken_at < HOLD_S):
                block.tokens -= 1
                return
        n = max(1, min(MAX_BLOCK, int(per_minute * BLOCK_S / WINDOW_S)))
        try:
            got = take(self.engine, key[:80], per_minute, n, now)
        except sa.exc.OperationalError as e:
            # The control store is too busy to answer within its busy timeout: let the
            # request through rather than fail it (a limit protects the service; an error
            # here would be the outage it protects against).
            log.warning("rate limit not checked (control store busy): %s", e.orig)
            return
        self.statements += 1
        if not got:
            raise TooManyRequests(f"rate limit of {per_minute} requests per minute reached",
                                  retry_after=retry_after(self.engine, key[:80], per_minute,
                                                          now))
        with self._lock:
            if len(self._blocks) > 100_000:
                self._blocks.clear()
            self._blocks[key] = _Block(got - 1, now, per_minute)
