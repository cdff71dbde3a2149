"""The cost per message of the shared send-rate limit (nudge/engage/ratelimit.py).

One process, a SQLite control store on disk (WAL, synchronous=FULL, as the server runs it),
``--messages`` sends through ``SendRateLimiter.acquire`` in waves of ``--concurrency`` (the
delivery workers' sends in flight per account and channel), at a rate far above what is
asked (``--rate``), so nothing waits for a slot and the figure is the limiter's own cost:
control-store statements, the thread hop, the bookkeeping.

Reference, same process, same waves: the previous per-process token bucket (an in-memory
dict per key, no control store), which could not hold a limit across processes.

    python -m bench.engage_ratelimit
    python -m bench.engage_ratelimit --messages 50000 --concurrency 64 --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import header, loadavg, median, ratio, table
from nudge.engage.ratelimit import SendRateLimiter
from nudge.store import control


class ProcessBucket:
    """The per-process limiter this replaced (nudge/engage/service.py before), verbatim."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], list[float]] = {}

    def set_rate(self, key: tuple[str, str], rate: float) -> None:
        self._buckets.setdefault(key, [rate, time.monotonic(), rate])[2] = rate

    async def acquire(self, key: tuple[str, str]) -> None:
        b = self._buckets[key]
        while True:
            now = time.monotonic()
            b[0] = min(b[2], b[0] + (now - b[1]) * b[2])
            b[1] = now
            if b[0] >= 1:
                b[0] -= 1
                return
            await asyncio.sleep((1 - b[0]) / b[2])


async def waves(limiter: object, key: tuple[str, str], n: int, conc: int
                ) -> tuple[float, float]:
    """(wall, CPU) seconds; CPU of the whole process (the reservation thread included)."""
    acquire = limiter.acquire  # type: ignore[attr-defined]
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(0, n, conc):
        await asyncio.gather(*(acquire(key) for _ in range(conc)))
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rate", type=float, default=1_000_000.0)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ratelimit-bench-"))
    try:
        engine = control.connect(f"sqlite:///{tmp / 'control.db'}")
        header(f"shared send-rate limit: {args.messages:,} sends in waves of "
               f"{args.concurrency}, rate {args.rate:,.0f}/s (nothing waits)")
        shared, ours, ref = SendRateLimiter(engine), [], []
        bucket = ProcessBucket()
        for i in range(args.repeats):
            key = ("acct", f"sms{i}")
            shared.set_rate(key, args.rate)
            bucket.set_rate(key, args.rate)
            ours.append(asyncio.run(waves(shared, key, args.messages, args.concurrency)))
            ref.append(asyncio.run(waves(bucket, key, args.messages, args.concurrency)))
        n = args.messages
        m, r = median([w for w, _ in ours]), median([w for w, _ in ref])
        mc, rc = median([c for _, c in ours]), median([c for _, c in ref])
        per_stmt = n * args.repeats / max(1, shared.reservations)
        print(table(["limiter", "median wall", "wall per message", "CPU per message"], [
            ["shared (control store, GCRA slots)", f"{m:.3f} s", f"{m / n * 1e6:.1f} µs",
             f"{mc / n * 1e6:.1f} µs"],
            ["reference: per-process bucket", f"{r:.3f} s", f"{r / n * 1e6:.1f} µs",
             f"{rc / n * 1e6:.1f} µs"],
        ]))
        print(f"\nratio to reference: wall {ratio(m, r)}, CPU {ratio(mc, rc)}; "
              f"control-store statements: "
              f"{shared.reservations:,} ({per_stmt:,.0f} messages per statement); "
              f"load average {loadavg()}")
        engine.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
