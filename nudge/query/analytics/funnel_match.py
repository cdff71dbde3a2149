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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .streams import NONE, Streams, bit, time_order

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



StepRows = tuple[np.ndarray, np.ndarray, np.ndarray]  # user, µs, seq of one step's events


def ordered_by_step(steps: list[StepRows], w: Windows) -> tuple[np.ndarray, Match] | None:
    """``ordered`` for one stream per user, from each step's events as fetched (in any
    order; step 1's are the entering ones): the users that reached step 1 (ascending) and
    their ``Match``. None when the keys do not fit an int64 (then ``ordered`` on
    ``Streams``).

    The same greedy, done per step on sorted keys instead of over every row per step: each
    step's rows become ``user << bits | time`` keys sorted by value, and the latest valid
    row of the previous step before each row is a ``searchsorted`` into the previous
    step's valid keys. ``time`` is the µs offset itself when no two rows of consecutive
    steps share a user and a microsecond (no sort by time at all), else the row's rank in
    (t, seq) order (one event matching several steps has one rank, so it fills one step).
    Users who reach step 1 and do nothing later need no ordering (in a view → cart → buy
    funnel most viewers never add to the cart).

    >>> step = lambda t: (np.zeros(len(t), int), np.array(t), np.array(t))
    >>> users, m = ordered_by_step([step([0, 5]), step([7]), step([20])],
    ...                            Windows(10, (0, NO_LIMIT, NO_LIMIT)))
    >>> m.level.tolist(), [f.tolist() for f in m.first]   # A A B C: C is 15 after the last A
    ([2], [[0], [2], [-1]])
    """
    users = np.concatenate([u for u, _, _ in steps])
    lo = int(users.min()) if len(users) else 0
    span = int(users.max()) - lo + 1 if len(users) else 1
    if span > 1 << 31:
        return None
    rel = [u - lo if lo else u for u, _, _ in steps]
    entered = np.zeros(span, dtype=bool)
    entered[rel[0]] = True
    later = np.zeros(span, dtype=bool)
    for r in rel[1:]:
        later[r] = True
    # Only step 1's rows of users who did a later step are worth ordering.
    keep = later[rel[0]]
    rel[0] = rel[0][keep]
    ts = [steps[0][1][keep], *(t for _, t, _ in steps[1:])]
    user_bits = max(span - 1, 1).bit_length()
    level = entered.astype(np.int64)
    t0 = min((int(t.min()) for t in ts if len(t)), default=0)
    t_bits = max(max((int(t.max()) for t in ts if len(t)), default=0) - t0, 1).bit_length()
    if user_bits + t_bits <= 63:
        keys = [_keys(r, t - t0, t_bits) for r, t in zip(rel, ts, strict=True)]
        first = _greedy(keys, t_bits, lambda k: (k & ((1 << t_bits) - 1)) + t0, w, level,
                        ties=False)
        if first is not None:
            return np.flatnonzero(entered) + lo, Match(level[entered], first)
        level = entered.astype(np.int64)
    t_of, ranks = _ranks(ts, [steps[0][2][keep], *(seq for _, _, seq in steps[1:])])
    bits = max(len(t_of) - 1, 1).bit_length()
    if bits + user_bits > 63:
        return None
    keys = [_keys(r, rank, bits) for r, rank in zip(rel, ranks, strict=True)]
    first = _greedy(keys, bits, lambda k: t_of[k & ((1 << bits) - 1)], w, level, ties=True)
    assert first is not None
    return np.flatnonzero(entered) + lo, Match(level[entered], first)


def _greedy(keys: list[np.ndarray], bits: int, time_of: Callable[[np.ndarray], np.ndarray],
            w: Windows, level: np.ndarray, ties: bool) -> list[np.ndarray] | None:
    """The greedy over each step's sorted ``user << bits | time`` keys: sets ``level`` (per
    user, 1 where entered) and returns the per-step durations of each entered user's first
    chain. Equal keys of consecutive steps are the same event when ``ties`` (ranks), else
    undecidable without ``seq``: then None."""
    entered = np.flatnonzero(level)
    index = np.cumsum(level) - 1  # each user's place in ``entered``
    first = [np.zeros(len(entered), dtype=np.int64)]
    valid_keys = keys[0]
    start = ends = np.zeros(0, dtype=np.int64)  # of the chains ending at ``valid_keys``
    for k in range(1, len(keys)):
        cand = keys[k]
        after = np.searchsorted(valid_keys, cand)
        if not ties and len(valid_keys) and \
                (valid_keys[np.minimum(after, len(valid_keys) - 1)] == cand).any():
            return None
        j = np.maximum(after - 1, 0)  # the latest valid row of the previous step before
        prev = valid_keys[j] if len(valid_keys) else cand
        has = np.flatnonzero((after > 0) & (prev >> bits == cand >> bits))  # same user
        cand, j = cand[has], j[has]
        tk = time_of(cand)
        if k == 1:
            start = ends = time_of(prev[has])
        else:
            start, ends = start[j], ends[j]
        valid = (tk - start <= w.total) & (tk - ends <= w.steps[k])
        valid_keys, start, ends = cand[valid], start[valid], tk[valid]
        who = valid_keys >> bits
        level[who] = k + 1
        firsts = np.concatenate(([True], who[1:] != who[:-1])) if len(who) else who
        duration = np.full(len(entered), -1, dtype=np.int64)
        duration[index[who[firsts]]] = (ends - start)[firsts]
        first.append(duration)
    return first


def _ranks(ts: list[np.ndarray], seqs: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Dense ranks in (t, seq) order of each part's rows (a row in several parts — the same
    event — gets one rank), and the time of each rank."""
    t, seq = np.concatenate(ts), np.concatenate(seqs)
    order = time_order(t, seq)
    t, seq = t[order], seq[order]
    new = np.ones(len(t), dtype=bool)
    new[1:] = (t[1:] != t[:-1]) | (seq[1:] != seq[:-1])
    rank = np.empty(len(t), dtype=np.int64)
    rank[order] = np.cumsum(new) - 1
    bounds = np.cumsum([0] + [len(x) for x in ts])
    return t[new], [rank[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _keys(users: np.ndarray, times: np.ndarray, bits: int) -> np.ndarray:
    """``user << bits | time``, sorted: a step's rows in (user, time) order."""
    keys = (users.astype(np.int64) << bits) | times
    keys.sort()
    return keys
