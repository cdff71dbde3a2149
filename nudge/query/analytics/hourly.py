"""Trend cells (event counts and unique users per time bucket) from the hourly user sets.

``nudge/store/user_sets.py`` keeps, per (event, UTC hour) of the compacted events, the
count and the roaring bitmap of users. A bucket whose boundaries fall on whole UTC hours —
a day, week or month in any zone with whole-hour offsets, DST days included — is the union
of its hours' sets, plus the rows no set holds yet, read exactly from the table:

* the recent tail (``events_recent``, not compacted yet) inside the range;
* the compacted rows of the partial hours at either end of the range (``from``/``to`` need
  not be on the hour).

So the 30-day daily-unique trend reads 720 small sets and a few thousand rows instead of
every event of the range (docs/benchmarks.md). Anything else — property, profile or segment
filters, breakdowns, statistics of property values, minute buckets, half-hour zones, sets
not current in this snapshot — returns None and is aggregated from the rows as before.
"""

from __future__ import annotations

import math

import duckdb
import numpy as np
from pyroaring import BitMap

from nudge.query.segments.compiler import to_ts
from nudge.store import user_sets

from .rollup import Cell, Cube

HOUR_S = 3_600
US = 1_000_000
STATS = {"count", "users"}


def cube(cur: duckdb.DuckDBPyConnection, event: str, slices: list[tuple[float, float]] | None,
         stats: set[str], users: tuple[int, int] | None) -> Cube | None:
    """The cells of ``slices`` (bucket time ranges [a, b) in order, tiling the range) for
    ``event`` without filters, as ``rollup.aggregate`` returns them; None when the hourly
    sets cannot answer (the caller then reads rows)."""
    if not slices or not stats <= STATS or users is None or users[1] > user_sets.MAX_USER_ID:
        return None
    lo, hi = slices[0][0], slices[-1][1]
    if any(a % HOUR_S for a, _ in slices[1:]):
        return None  # a bucket boundary inside an hour
    h0, h1 = math.ceil(lo / HOUR_S), math.floor(hi / HOUR_S)
    if h1 <= h0 or not user_sets.current(cur):
        return None
    starts = np.array([a for a, _ in slices], dtype=np.float64)
    counts = np.zeros(len(slices), dtype=np.int64)
    sets: list[list[BitMap]] = [[] for _ in slices]
    for hour, n, bm in user_sets.read(cur, event, h0, h1):
        i = int(np.searchsorted(starts, hour * HOUR_S, side="right")) - 1
        counts[i] += n
        sets[i].append(bm)
    t, u = _rows(cur, event, lo, hi, h0 * HOUR_S, h1 * HOUR_S)
    if len(t):
        idx = np.searchsorted(np.round(starts * US).astype(np.int64), t, side="right") - 1
        idx = np.maximum(idx, 0)  # a row at ``from`` rounded to the µs
        counts += np.bincount(idx, minlength=len(slices))
        order = np.argsort(idx, kind="stable")
        bounds = np.searchsorted(idx[order], np.arange(len(slices) + 1))
        for i in range(len(slices)):
            a, b = bounds[i], bounds[i + 1]
            if b > a:
                sets[i].append(BitMap(memoryview(u[order[a:b]].astype(np.uint32))))
    out: Cube = {}
    union = [BitMap.union(*s) if s else BitMap() for s in sets]
    for i, (n, bm) in enumerate(zip(counts.tolist(), union, strict=True)):
        if n:
            out[(i,)] = Cell(n, len(bm))
    out[(None,)] = Cell(int(counts.sum()), len(BitMap.union(*union)) if union else 0)
    return out


def _rows(cur: duckdb.DuckDBPyConnection, event: str, lo: float, hi: float, a: float,
          b: float) -> tuple[np.ndarray, np.ndarray]:
    """(µs, user) of the event's rows no hourly set holds: compacted ones in [lo, a) and
    [b, hi), recent ones in [lo, hi)."""
    part = "SELECT epoch_us(e.ts) AS t, e.user_id AS u FROM {} e " \
           "WHERE e.event = ? AND e.ts >= ? AND e.ts < ?"
    sql = " UNION ALL ".join([part.format("events_sorted")] * 2 + [part.format("events_recent")])
    got = cur.execute(sql, [event, to_ts(lo), to_ts(a), event, to_ts(b), to_ts(hi),
                            event, to_ts(lo), to_ts(hi)]).fetchnumpy()
    return np.asarray(got["t"], dtype=np.int64), np.asarray(got["u"], dtype=np.int64)
