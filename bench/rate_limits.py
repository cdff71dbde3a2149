"""Cost per request of the shared API rate limits (nudge/tenancy/ratelimit.py).

    python -m bench.rate_limits [--requests 20000] [--pg-url postgresql+psycopg://...]

Per request, on one key's bucket, in one process:

- **reference**: the in-memory token bucket the limiter replaced (per process, reproduced
  here as it was: a dict and a lock);
- **shared, blocks**: ``RateLimiter.take`` as the server calls it with the default limit
  (60,000/min: blocks of 100 tokens, one control-store ``UPDATE`` per block);
- **shared, one statement per request**: the same ``UPDATE`` for every request (what a
  limit below 600/min costs, and what the limiter would cost without blocks).

On a SQLite control store in a temp directory (WAL; the limiter's own connections use
``synchronous=NORMAL``, no fsync per commit), and on PostgreSQL with ``--pg-url``.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import threading
import time
from pathlib import Path

from bench.common import header, loadavg, median, ratio, table
from nudge.errors import TooManyRequests
from nudge.store import control
from nudge.tenancy.ratelimit import RateLimiter, take


class MemoryBucket:
    """The per-process limiter as it was before (reference)."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, per_minute: int) -> None:
        now, rate = time.time(), per_minute / 60.0
        with self._lock:
            tokens, last = self._buckets.get(key, (float(per_minute), now))
            tokens = min(float(per_minute), tokens + max(0.0, now - last) * rate)
            if tokens < 1.0:
                raise TooManyRequests("limited", retry_after=math.ceil((1 - tokens) / rate))
            self._buckets[key] = (tokens - 1.0, now)


def _per_request(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - t) / n * 1e6


def run(url: str, n: int, reps: int) -> list[list[object]]:
    engine = control.connect(url)
    mem, shared = MemoryBucket(), RateLimiter(engine)
    out: dict[str, list[float]] = {"reference": [], "blocks": [], "single": []}
    for r in range(reps):
        key = f"bench:{r}:{time.time()}"
        out["reference"].append(_per_request(lambda i, k=key: mem.take(k, 60_000), n))
        out["blocks"].append(_per_request(lambda i, k=key: shared.take(k + "b", 60_000), n))
        single = max(200, n // 50)  # an fsync each: fewer of them
        out["single"].append(_per_request(
            lambda i, k=key: take(shared.engine, k + "s", 10**9, 1, time.time()), single))
    engine.dispose()
    ref = median(out["reference"])
    return [[name, f"{median(v):,.2f}", ratio(median(v), ref)] for name, v in (
        ("reference: in-memory bucket (per process)", out["reference"]),
        ("shared, blocks of 100 (default limits)", out["blocks"]),
        ("shared, one UPDATE per request", out["single"]))]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--pg-url", default="")
    args = p.parse_args(argv)
    header("Shared rate limits: cost per request")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"\n## SQLite control store; load {loadavg()}")
        print(table(["limiter", "µs per request (median)", "vs reference"],
                    run(f"sqlite:///{Path(tmp) / 'control.db'}", args.requests, args.reps)))
    if args.pg_url:
        print(f"\n## PostgreSQL control store; load {loadavg()}")
        print(table(["limiter", "µs per request (median)", "vs reference"],
                    run(args.pg_url, args.requests, args.reps)))
    print(f"\n# load {loadavg()}")


if __name__ == "__main__":
    main()
