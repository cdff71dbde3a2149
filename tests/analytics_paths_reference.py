"""Plain-Python references for funnels, retention and flows, on small data.

They follow the definitions in docs/analytics.md literally (searching every chain, every set,
every session) rather than the vectorised greedy passes of ``nudge.query.analytics``, so
that agreement means something. Times are integer microseconds; ``seq`` is arrival order.
Also: loading the same rows into chDB to run ClickHouse's ``windowFunnel`` and ``retention``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

US = 1_000_000


@dataclass(frozen=True)
class Ev:
    user: str
    t: int  # µs
    seq: int
    event: str
    props: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


Pred = Callable[[Ev], bool]


def is_event(name: str, **where: Callable[[Any], bool]) -> Pred:
    """An event name with property tests: ``is_event("A", p=lambda v: v > 1)``."""
    def pred(e: Ev) -> bool:
        return e.event == name and all(k in e.props and f(e.props[k]) for k, f in where.items())
    return pred


def streams(events: Iterable[Ev]) -> dict[str, list[Ev]]:
    out: dict[str, list[Ev]] = defaultdict(list)
    for e in events:
        out[e.user].append(e)
    for evs in out.values():
        evs.sort(key=lambda e: (e.t, e.seq))
    return out


# -- funnels --------------------------------------------------------------------------------
@dataclass
class Reach:
    level: int
    first: list[int | None]  # per step: duration (µs) of the first chain reaching it


def funnel(evs: list[Ev], steps: list[Pred], order: str, window: int, within: list[int | None],
           lo: int, hi: int, enters: Pred = lambda e: True) -> Reach:
    """One user's funnel. ``enters``: which events may enter (e.g. those of one group);
    an entering event is inside [lo, hi)."""
    def entering(e: Ev) -> bool:
        return lo <= e.t < hi and enters(e)

    if order == "any":
        return _any_order(evs, steps, window, entering)
    chains = _strict_chains(evs, steps, window, within, entering) if order == "strict" \
        else _ordered_chains(evs, steps, window, within, entering)
    return _first_chains(chains, len(steps))


def _ordered_chains(evs: list[Ev], steps: list[Pred], window: int,
                    within: list[int | None], entering: Pred) -> set[tuple[int, int, int]]:
    """Every valid chain, as (steps, start index, end index): events at increasing
    positions, one per step, within the window of the first and each step's window.
    (Chains from the same start through the same event extend alike: memoised.)"""
    memo: dict[tuple[int, int, int], set[tuple[int, int, int]]] = {}

    def extend(start: int, last: int, k: int) -> set[tuple[int, int, int]]:
        key = (start, last, k)
        if key not in memo:
            out = {(k, start, last)}
            for j in range(last + 1, len(evs)) if k < len(steps) else ():
                e = evs[j]
                if e.t - evs[start].t > window:
                    break
                gap = within[k]
                if steps[k](e) and (gap is None or e.t - evs[last].t <= gap):
                    out |= extend(start, j, k + 1)
            memo[key] = out
        return memo[key]

    chains: set[tuple[int, int, int]] = set()
    for i, e in enumerate(evs):
        if steps[0](e) and entering(e):
            chains |= extend(i, i, 1)
    return chains


def _strict_chains(evs: list[Ev], steps: list[Pred], window: int,
                   within: list[int | None], entering: Pred) -> list[tuple[int, int, int]]:
    """Chains on consecutive events of the whole stream."""
    out = []
    for i, e in enumerate(evs):
        if not (steps[0](e) and entering(e)):
            continue
        out.append((1, i, i))
        for k in range(1, len(steps)):
            j = i + k
            if j >= len(evs) or not steps[k](evs[j]) or evs[j].t - e.t > window:
                break
            gap = within[k]
            if gap is not None and evs[j].t - evs[j - 1].t > gap:
                break
            out.append((k + 1, i, j))
    return out


def _first_chains(chains: Iterable[tuple[int, int, int]], n: int) -> Reach:
    """Level = longest chain; per step the chain that ended first, then started last."""
    level = max((k for k, _, _ in chains), default=0)
    first: list[int | None] = []
    for k in range(1, n + 1):
        done = [(end, -start) for kk, start, end in chains if kk == k]
        first.append(None if not done else min(done))
    return Reach(level, first)  # durations filled in by caller


def _any_order(evs: list[Ev], steps: list[Pred], window: int, entering: Pred) -> Reach:
    """Sets of events covering steps 1…k (an event may cover several), spanning at most the
    window, whose earliest event enters."""
    level, first = 0, []
    for k in range(1, len(steps) + 1):
        best = None  # (completion index, -start index)
        for q, e in enumerate(evs):
            if not entering(e) or not any(steps[j](e) for j in range(k)):
                continue
            ends = []
            for j in range(k):
                hit = next((i for i in range(q, len(evs)) if steps[j](evs[i])), None)
                ends.append(hit)
            if None in ends:
                continue
            last = max(ends)  # type: ignore[type-var]
            if evs[last].t - e.t <= window:
                level = max(level, k)
                cand = (last, -q)
                best = cand if best is None or cand < best else best
        first.append(best)
    return Reach(level, first)  # type: ignore[arg-type]


def funnel_report(events: list[Ev], steps: list[Pred], order: str, window: int,
                  within: list[int | None], lo: int, hi: int,
                  group_of: Callable[[Ev], Any] | None = None) -> dict[Any, dict[str, Reach]]:
    """Per group (None without ``group_of``; else the group of the entering event) and
    user: how far and how fast they got. Durations are in µs."""
    by_user = streams(events)
    out: dict[Any, dict[str, Reach]] = defaultdict(dict)
    for user, evs in by_user.items():
        stream = evs if order == "strict" else [e for e in evs if any(p(e) for p in steps)]
        groups = {None} if group_of is None else {
            group_of(e) for e in stream if lo <= e.t < hi and
            (steps[0](e) if order != "any" else any(p(e) for p in steps))}
        for g in groups:
            enters = (lambda e: True) if group_of is None else \
                (lambda e, g=g: group_of(e) == g)
            r = funnel(stream, steps, order, window, within, lo, hi, enters)
            r.first = [None if f is None else stream[f[0]].t - stream[-f[1]].t
                       for f in r.first]  # type: ignore[index]
            if r.level or group_of is None:
                out[g][user] = r
    return out


def funnel_counts(reaches: dict[str, Reach], n: int) -> list[int]:
    return [sum(1 for r in reaches.values() if r.level >= k) for k in range(1, n + 1)]


# -- retention ------------------------------------------------------------------------------
def period_start(t: int, interval: str, tz: ZoneInfo) -> dt.date:
    d = dt.datetime.fromtimestamp(t / US, tz).date()
    if interval == "week":
        return d - dt.timedelta(days=d.weekday())
    if interval == "month":
        return d.replace(day=1)
    return d


def period_index(a: dt.date, b: dt.date, interval: str) -> int:
    if interval == "day":
        return (b - a).days
    if interval == "week":
        return (b - a).days // 7
    return (b.year - a.year) * 12 + b.month - a.month


def retention(events: list[Ev], start: Pred, back: Pred, cohort: str, interval: str,
              periods: int, mode: str, lo: int, hi: int, tz: ZoneInfo
              ) -> dict[dt.date, tuple[int, list[int]]]:
    """Cohort start date → (size, retained per period 0…N) (future periods included)."""
    by_user = streams(events)
    out: dict[dt.date, list[Any]] = {}
    for evs in by_user.values():
        starts = [e for e in evs if start(e)]
        if cohort == "first_time":
            starts = starts[:1]
        cohorts = {period_start(e.t, interval, tz) for e in starts if lo <= e.t < hi}
        returns = {period_start(e.t, interval, tz) for e in evs if back(e)}
        for c in cohorts:
            row = out.setdefault(c, [0, [0] * (periods + 1)])
            row[0] += 1
            ks = {period_index(c, r, interval) for r in returns}
            for k in range(periods + 1):
                hit = k in ks if mode == "bracketed" else any(x >= k for x in ks)
                row[1][k] += hit
    return {c: (v[0], v[1]) for c, v in sorted(out.items())}


# -- flows ----------------------------------------------------------------------------------
def flow_paths(events: list[Ev], anchor: Pred, direction: str, steps: int, gap: int,
               lo: int, hi: int, exclude: set[str] = frozenset()) -> list[tuple[str, ...]]:  # type: ignore[assignment]
    """One path (event names in time order, anchor included) per session with the anchor."""
    by_user = streams(e for e in events if lo <= e.t < hi and e.event not in exclude)
    paths = []
    for evs in by_user.values():
        if not any(anchor(e) for e in evs):
            continue
        sessions: list[list[Ev]] = []
        for e in evs:
            if not sessions or e.t - sessions[-1][-1].t > gap:
                sessions.append([])
            sessions[-1].append(e)
        for sess in sessions:
            runs: list[tuple[str, bool]] = []
            for e in sess:
                if runs and runs[-1][0] == e.event:
                    runs[-1] = (e.event, runs[-1][1] or anchor(e))
                else:
                    runs.append((e.event, anchor(e)))
            at = next((i for i, (_, hit) in enumerate(runs) if hit), None)
            if at is None:
                continue
            names = [name for name, _ in runs]
            part = names[at:at + steps + 1] if direction == "after" else \
                names[max(0, at - steps):at + 1]
            paths.append(tuple(part))
    return paths


def flow_graph(paths: list[tuple[str, ...]], direction: str, steps: int, top: int
               ) -> tuple[Counter, Counter, Counter]:
    """(nodes, links, ends) keyed by (step, event or None for "other")."""
    def column(p: tuple[str, ...]) -> dict[int, str]:
        if direction == "after":
            return {i: name for i, name in enumerate(p)}
        return {i - (len(p) - 1): name for i, name in enumerate(p)}

    cols = [column(p) for p in paths]
    keep: dict[int, set[str]] = {}
    for d in (range(0, steps + 1) if direction == "after" else range(-steps, 1)):
        counts = Counter(c[d] for c in cols if d in c)
        ranked = sorted(counts, key=lambda n: (-counts[n], n))
        keep[d] = set(ranked if d == 0 else ranked[:top])
    nodes: Counter = Counter()
    links: Counter = Counter()
    ends: Counter = Counter()
    for c in cols:
        named = {d: (n if n in keep[d] else None) for d, n in c.items()}
        for d, n in named.items():
            nodes[(d, n)] += 1
            if d + 1 in named:
                links[((d, n), (d + 1, named[d + 1]))] += 1
        last = max(named) if direction == "after" else min(named)
        ends[(last, named[last])] += 1
    return nodes, links, ends


# -- ClickHouse (chDB) -----------------------------------------------------------------------
def to_parquet(events: list[Ev], path: Path, props: tuple[str, ...] = ()) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols: dict[str, Any] = {
        "user": [e.user for e in events], "ts": [e.t for e in events],
        "seq": [e.seq for e in events], "event": [e.event for e in events]}
    for p in props:
        cols[p] = [e.props.get(p) for e in events]
    pq.write_table(pa.table(cols), path)
    return path


def chdb_rows(sql: str) -> list[dict[str, Any]]:
    import chdb

    res = chdb.query(sql, "JSON")
    return json.loads(res.bytes())["data"]  # type: ignore[no-any-return]
