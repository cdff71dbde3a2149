"""Trend and day-parting cells (event counts and unique users) from the hourly user sets.

``nudge/store/user_sets.py`` keeps, per (event, UTC hour) of the compacted events, the
count and the roaring bitmap of users. A bucket whose boundaries fall on whole UTC hours —
a day, week or month in any zone with whole-hour offsets, DST days included — is the union
of its hours' sets, plus the rows no set holds yet, read exactly from the table:

* the recent tail (``events_recent``, not compacted yet) inside the range;
* the compacted rows of the partial hours at either end of the range (``from``/``to`` need
  not be on the hour).

So the 30-day daily-unique trend reads 720 small sets and a few thousand rows instead of
every event of the range (docs/benchmarks.md); day-parting in the account's zone maps each
UTC hour to its (weekday, hour) cell the same way. Anything else — property, profile or
segment filters, breakdowns, statistics of property values, minute buckets, half-hour
zones, users' own zones, sets not current in this snapshot — returns None and is
aggregated from the rows as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
from pyroaring import BitMap

from nudge.query.segments.compiler import to_ts
from nudge.store import user_sets

from .buckets import offset_periods
from .rollup import Cell, Cube

HOUR_S = 3_600
US = 1_000_000
STATS = {"count", "users"}
# Cells of rows or of whole hours, from their epoch microseconds.
CellOf = Callable[[np.ndarray], np.ndarray]


@dataclass
class Cells:
    """Per cell: events and the set of their users."""

    counts: np.ndarray
    users: list[BitMap]


def cells(cur: duckdb.DuckDBPyConnection, event: str, lo: float, hi: float, size: int,
          cell_of: CellOf, users: tuple[int, int] | None) -> Cells | None:
    """Counts and user sets of ``event``'s rows in [lo, hi) in ``size`` cells, a row's cell
    being ``cell_of(µs)``, which must give every instant of a whole UTC hour the same cell;
    None when the hourly sets cannot answer."""
    if users is None or users[1] > user_sets.MAX_USER_ID:
        return None
    h0, h1 = math.ceil(lo / HOUR_S), math.floor(hi / HOUR_S)
    if h1 <= h0 or not user_sets.current(cur):
        return None
    counts = np.zeros(size, dtype=np.int64)
    parts: list[list[BitMap]] = [[] for _ in range(size)]
    got = user_sets.read(cur, event, h0, h1)
    if got:
        at = cell_of(np.array([h for h, _, _ in got], dtype=np.int64) * HOUR_S * US).tolist()
        for i, (_, n, bm) in zip(at, got, strict=True):
            counts[i] += n
            parts[i].append(bm)
    t, u = _rows(cur, event, lo, hi, h0 * HOUR_S, h1 * HOUR_S)
    if len(u) and (u.min() < 0 or u.max() > user_sets.MAX_USER_ID):
        return None
    if len(t):
        idx = cell_of(t)
        counts += np.bincount(idx, minlength=size)
        order = np.argsort(idx, kind="stable")
        bounds = np.searchsorted(idx[order], np.arange(size + 1))
        for i in range(size):
            a, b = bounds[i], bounds[i + 1]
            if b > a:
                parts[i].append(BitMap(u[order[a:b]].astype(np.uint32).data))
    return Cells(counts, [BitMap.union(*p) if p else BitMap() for p in parts])


def cube(cur: duckdb.DuckDBPyConnection, event: str, slices: list[tuple[float, float]] | None,
         stats: set[str], users: tuple[int, int] | None) -> Cube | None:
    """The cells of ``slices`` (bucket time ranges [a, b) in order, tiling the range) for
    ``event`` without filters, as ``rollup.aggregate`` returns them; None when the hourly
    sets cannot answer (the caller then reads rows)."""
    if not slices or not stats <= STATS or any(a % HOUR_S for a, _ in slices[1:]):
        return None  # (a bucket boundary inside an hour)
    starts = np.array([round(a * US) for a, _ in slices], dtype=np.int64)

    def bucket(t: np.ndarray) -> np.ndarray:
        # (max: a row at ``from`` rounded down to the µs)
        return np.maximum(np.searchsorted(starts, t, side="right") - 1, 0)

    got = cells(cur, event, slices[0][0], slices[-1][1], len(slices), bucket, users)
    if got is None:
        return None
    out: Cube = {(i,): Cell(n, len(bm))
                 for i, (n, bm) in enumerate(zip(got.counts.tolist(), got.users, strict=True))
                 if n}
    out[(None,)] = Cell(int(got.counts.sum()), len(BitMap.union(*got.users)))
    return out


def grid(cur: duckdb.DuckDBPyConnection, event: str, lo: float, hi: float, tz: ZoneInfo,
         users: tuple[int, int] | None) -> Cube | None:
    """Day-parting's cube — (weekday, hour of day) in ``tz``, with every subtotal — from
    the hourly sets; None when they cannot answer (a zone offset or an offset change off
    the whole hour)."""
    periods = offset_periods(tz, lo, hi)
    if any(p.offset % HOUR_S for p in periods) or any(p.start % HOUR_S for p in periods[1:]):
        return None
    starts = np.array([round(p.start * US) for p in periods], dtype=np.int64)
    offsets = np.array([p.offset * US for p in periods], dtype=np.int64)

    def weekday_hour(t: np.ndarray) -> np.ndarray:
        off = offsets[np.maximum(np.searchsorted(starts, t, side="right") - 1, 0)]
        lh = (t + off) // (HOUR_S * US)
        return ((lh // 24 + 3) % 7) * 24 + lh % 24  # 1970-01-01 was a Thursday

    got = cells(cur, event, lo, hi, 7 * 24, weekday_hour, users)
    if got is None:
        return None
    counts, sets = got.counts.reshape(7, 24), got.users
    out: Cube = {}
    for d in range(7):
        for h in range(24):
            if counts[d, h]:
                out[(d, h)] = Cell(int(counts[d, h]), len(sets[d * 24 + h]))
    days = [BitMap.union(*sets[d * 24:(d + 1) * 24]) for d in range(7)]
    for d in range(7):
        out[(d, None)] = Cell(int(counts[d].sum()), len(days[d]))
    for h in range(24):
        out[(None, h)] = Cell(int(counts[:, h].sum()), len(BitMap.union(*sets[h::24])))
    out[(None, None)] = Cell(int(counts.sum()), len(BitMap.union(*days)))
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
