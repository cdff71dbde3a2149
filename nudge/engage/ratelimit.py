"""Per-(account, channel) send-rate limits shared by every worker of every server process.

A provider's ``rate_per_second`` holds however many processes send for the account, so the
limit lives in the control store: one ``send_rates`` row per (account, channel) holding the
*theoretical arrival time* of the generic cell rate algorithm (GCRA, the token bucket
expressed as one timestamp). Reserving ``n`` sends is one atomic statement::

    UPDATE send_rates SET tat = max(tat, now - burst) + n / rate ... RETURNING tat

which returns the end of ``n`` consecutive slots, ``1 / rate`` apart; the caller sends
message *i* no earlier than its slot. A single ``UPDATE … RETURNING`` is atomic on SQLite
(the database-wide write lock) and on PostgreSQL (the row lock), so no two reservations —
from any process — get the same slot, with no read-modify-write race and no lease to expire.

A process reserves for all of its sends waiting on that (account, channel) at once, so the
control-store write is paid once per batch, not per message (docs/benchmarks.md). Slots a
process reserved and did not use (it crashed, or its waiters were cancelled) are lost
capacity, never extra sends; a slot found more than ``STALE_S`` in the past is dropped rather
than used late, so late sends cannot bunch up beyond the burst.

Times are wall-clock seconds (``time.time()``), not ``nudge.clock``: the rate is a promise
to a provider about real time across processes, like protocol timestamps.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.store import control

T = control.send_rates
BURST_S = 1.0  # a bucket of one second's worth of sends, as the provider's own limits allow
STALE_S = 1.0
MAX_BLOCK = 512  # slots reserved by one statement
MAX_AHEAD_S = 86_400.0  # a stored time further ahead is a clock jump: start again from now

Key = tuple[str, str]


def reserve(engine: Engine, key: Key, rate: float, n: int, now: float | None = None
            ) -> list[float]:
    """Reserve ``n`` consecutive send slots (wall-clock times) for ``key`` at ``rate``/s."""
    now = time.time() if now is None else now
    interval = 1.0 / rate
    floor = now - BURST_S
    account_id, channel = key
    where = (T.c.account_id == account_id, T.c.channel == channel)
    keep = sa.and_(T.c.tat > floor, T.c.tat < now + MAX_AHEAD_S)
    stmt = (sa.update(T).where(*where)
            .values(tat=sa.case((keep, T.c.tat), else_=floor) + n * interval)
            .returning(T.c.tat))
    with engine.begin() as conn:
        end = conn.execute(stmt).scalar()
        if end is None:  # first use of this key anywhere
            control.insert_ignore(conn, T, [{"account_id": account_id, "channel": channel,
                                             "tat": floor}], ("account_id", "channel"))
            end = conn.execute(stmt).scalar_one()
    start = float(end) - n * interval
    return [start + i * interval for i in range(n)]


@dataclass
class _Local:
    rate: float
    slots: deque[float] = field(default_factory=deque)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0


class SendRateLimiter:
    """What the delivery workers of one process call before each send.

    Example::

        limiter = SendRateLimiter(engine)
        limiter.set_rate(("acct", "sms"), 10)       # from the channel's rate_per_second
        await limiter.acquire(("acct", "sms"))      # returns at this send's slot
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._keys: dict[Key, _Local] = {}
        self.reservations = 0  # control-store statements made (for benchmarks)

    def set_rate(self, key: Key, rate: float | None) -> None:
        if not rate:
            self._keys.pop(key, None)
            return
        st = self._keys.get(key)
        if st is None or st.rate != rate:
            self._keys[key] = _Local(rate)

    async def acquire(self, key: Key) -> float | None:
        """Wait for this send's slot; returns the slot (None when the key has no limit)."""
        st = self._keys.get(key)
        if st is None:
            return None
        st.waiting += 1
        try:
            async with st.lock:
                slot = self._next(st)
                if slot is None:
                    # Let the sends started in the same step (a worker's batch) queue up
                    # first, so one statement reserves for all of them.
                    await asyncio.sleep(0)
                    n = max(1, min(st.waiting, MAX_BLOCK))
                    self.reservations += 1
                    st.slots.extend(await asyncio.to_thread(reserve, self.engine, key,
                                                            st.rate, n))
                    slot = self._next(st)
                    assert slot is not None
        finally:
            st.waiting -= 1
        delay = slot - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        return slot

    @staticmethod
    def _next(st: _Local) -> float | None:
        stale = time.time() - BURST_S - STALE_S
        while st.slots:
            slot = st.slots.popleft()
            if slot >= stale:
                return slot
        return None
