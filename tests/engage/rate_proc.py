"""One "server process" of the shared send-rate test: ``n`` concurrent sends through its own
``SendRateLimiter`` on the shared control store; writes (slot, returned at) pairs as JSON.

    python -m tests.engage.rate_proc <control url> <rate> <n> <out.json> <start at>
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from nudge.engage.ratelimit import SendRateLimiter
from nudge.store import control


async def main(url: str, rate: float, n: int, out: str, start_at: float) -> None:
    limiter = SendRateLimiter(control.connect(url))
    key = ("acct-shared", "sms")
    limiter.set_rate(key, rate)
    await asyncio.sleep(max(0.0, start_at - time.time()))  # both processes start together

    async def one() -> tuple[float, float]:
        slot = await limiter.acquire(key)
        assert slot is not None
        return slot, time.time()

    got = await asyncio.gather(*(one() for _ in range(n)))
    with open(out, "w") as f:
        json.dump({"sends": got, "reservations": limiter.reservations}, f)


if __name__ == "__main__":
    url, rate, n, out, start = sys.argv[1:6]
    asyncio.run(main(url, float(rate), int(n), out, float(start)))
