"""Matching funnel steps in per-user streams: how far each stream got, and how fast.

Each row of a stream carries a bit mask of the steps its event matches (bit i = step i+1).
Every matcher returns, per stream, the number of steps reached (0 … n) and, per step k, the
duration of the *first* chain that reached step k (µs; -1 when not reached): the chain that
completed step k earliest, and among those the one that started latest.

``ordered`` (other events may come between steps) is the greedy of ClickHouse's
``windowFunnel``: the chain to extend is always the latest one that reached the previous step,
because it started last (most of the window left) and ended last (most of a per-step window
left), so it dominates every other. ``strict`` needs the steps on consecutive events;
``any_order`` needs all of steps 1…k within one window, in any order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .streams import NONE, Streams, bit

NO_LIMIT = np.iinfo(np.int64).max // 4  # a per-step window that is not set


@dataclass
class Match:
    level: np.ndarray  # per stream: steps reached
    first: list[np.ndarray]  # per step: duration of the first chain reaching it, or -1


@dataclass(frozen=True)
class Windows:
    """Conversion windows in µs: for the whole funnel, and per step from the previous one
    (``steps[k]`` for step k+1; ``NO_LIMIT`` where unset; ``steps[0]`` is unused)."""

    total: int
    steps: tuple[int, ...]


def ordered(s: Streams, mask: np.ndarray, w: Windows) -> Match:
    """Steps in order, other events allowed between.

    ``start`` holds, on each row that completes step k, the start time of the best chain
    completing it there; the next step extends the last such row before it.

    >>> s = Streams.build({"u": np.zeros(4, int), "t": np.array([0, 5, 7, 20]),
    ...                    "seq": np.arange(4)}, ("u",))
    >>> m = ordered(s, np.array([1, 1, 2, 4]), Windows(10, (0, NO_LIMIT, NO_LIMIT)))
    >>> m.level.tolist(), [f.tolist() for f in m.first]   # A A B C: C is 15 after the last A
    ([2], [[0], [2], [-1]])
    """
    t = s.t
    valid = bit(mask, 0)
    start = np.where(valid, t, NONE)
    level = valid.astype(np.int64)
    first = [_first_duration(s, valid, start)]
    for k in range(1, len(w.steps)):
        last = s.last_before(valid)
        at = np.maximum(last, 0)
        chain_start, chain_end = start[at], t[at]
        valid = (bit(mask, k) & (last >= 0) & (t - chain_start <= w.total)
                 & (t - chain_end <= w.steps[k]))
        start = np.where(valid, chain_start, NONE)
        level[valid] = k + 1
        first.append(_first_duration(s, valid, start))
    return Match(s.max_per_segment(level), first)


def strict(s: Streams, mask: np.ndarray, w: Windows) -> Match:
    """Steps on consecutive events of the stream (which then holds *all* the user's events,
    mask 0 for those matching no step): step k+1 must be the very next event after step k.

    >>> s = Streams.build({"u": np.zeros(5, int), "t": np.arange(5), "seq": np.arange(5)},
    ...                   ("u",))
    >>> strict(s, np.array([1, 0, 1, 2, 4]), Windows(10, (0, NO_LIMIT, NO_LIMIT))).level.tolist()
    [3]
    """
    t = s.t
    prev = s.previous_row()
    at = np.maximum(prev, 0)
    valid = bit(mask, 0)
    start = np.where(valid, t, NONE)
    level = valid.astype(np.int64)
    first = [_first_duration(s, valid, start)]
    for k in range(1, len(w.steps)):
        chain_start = start[at]
        valid = (bit(mask, k) & (prev >= 0) & valid[at] & (t - chain_start <= w.total)
                 & (t - t[at] <= w.steps[k]))
        start = np.where(valid, chain_start, NONE)
        level[valid] = k + 1
        first.append(_first_duration(s, valid, start))
    return Match(s.max_per_segment(level), first)


def any_order(s: Streams, mask: np.ndarray, entry: np.ndarray, total: int,
              steps: int) -> Match:
    """Steps 1…k all done within ``total`` µs, in any order, the earliest of those events
    being an ``entry`` row (inside the report's range). One event may count for several
    steps if it matches them.

    Each row q is tried as the earliest event of the set: the best set starting there takes
    the first event of every step at or after q; it counts when q itself matches one of the
    steps (otherwise a later row is the set's earliest and is tried on its own).

    >>> s = Streams.build({"u": np.zeros(3, int), "t": np.array([0, 2, 4]),
    ...                    "seq": np.arange(3)}, ("u",))
    >>> any_order(s, np.array([2, 4, 1]), np.ones(3, bool), 5, 3).level.tolist()  # B C A
    [3]
    """
    t = s.t
    rows = np.arange(len(t))
    last = np.full(len(t), -1, dtype=np.int64)  # the last event of the best set from row q
    missing = np.zeros(len(t), dtype=bool)  # some step of 1…k never happens from row q on
    level = np.zeros(len(t), dtype=np.int64)
    first = []
    for k in range(steps):
        nxt = s.next_from(bit(mask, k))
        missing |= nxt < 0
        last = np.maximum(last, nxt)
        own = (mask & ((1 << (k + 1)) - 1)) != 0
        valid = entry & own & ~missing & (t[last] - t <= total)
        level[valid] = k + 1
        first.append(_earliest_completion(s, valid, last, rows))
    return Match(s.max_per_segment(level), first)


def _first_duration(s: Streams, valid: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Per stream, end − start of the first row completing a step (-1 if none)."""
    row = s.first_flagged(valid)
    at = np.maximum(row, 0)
    return np.where(row >= 0, s.t[at] - start[at], -1) if len(row) else row


def _earliest_completion(s: Streams, valid: np.ndarray, last: np.ndarray,
                         rows: np.ndarray) -> np.ndarray:
    """Per stream, the duration of the set completed first, started last (-1 if none)."""
    none = len(last)
    done = s.min_per_segment(np.where(valid, last, none))
    began = s.max_per_segment(np.where(valid & (last == done[s.seg]), rows, -1))
    at, start = np.minimum(done, none - 1), np.maximum(began, 0)
    return np.where(done < none, s.t[at] - s.t[start], -1) if none else done
