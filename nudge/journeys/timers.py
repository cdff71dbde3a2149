"""When a delay ends, in the user's timezone (pure functions; the engine stores the result).

- ``duration``: days and weeks are calendar days in the user's zone (the same wall-clock
  time N days later: 23 h or 25 h across a DST change); hours, minutes, seconds are
  elapsed time;
- ``until_time``: the next time the user's wall clock shows HH:MM (a time that a DST gap
  skips resolves to the instant after the gap);
- ``until_property``: a date property of the profile plus an offset (``before`` for a
  negative one), e.g. 3 days before ``renewal_date``; a date already past is due at once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from .model import Node


def _local(ts: float, tz: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, ZoneInfo(tz))


def _resolve(naive: dt.datetime, tz: str) -> float:
    """The instant of a local wall-clock time; in a DST gap, the first instant after it."""
    z = ZoneInfo(tz)
    aware = naive.replace(tzinfo=z)
    back = dt.datetime.fromtimestamp(aware.timestamp(), z).replace(tzinfo=None)
    if back != naive:  # nonexistent (spring forward): the transition instant ends the gap
        a, b = sorted((naive.replace(tzinfo=z, fold=1).timestamp(),
                       naive.replace(tzinfo=z, fold=0).timestamp()))
        before = dt.datetime.fromtimestamp(a, z).utcoffset()
        while b - a > 1:  # the offset changes once between a and b: find where
            mid = (a + b) / 2
            if dt.datetime.fromtimestamp(mid, z).utcoffset() == before:
                a = mid
            else:
                b = mid
        return float(round(b))
    return aware.timestamp()


def add_days(ts: float, days: int, tz: str) -> float:
    """The same wall-clock time ``days`` calendar days later in ``tz``.

    >>> import datetime as dt
    >>> t = dt.datetime(2026, 3, 7, 10, tzinfo=ZoneInfo("America/New_York")).timestamp()
    >>> (add_days(t, 1, "America/New_York") - t) / 3600   # across spring-forward
    23.0
    """
    loc = _local(ts, tz)
    target = (loc.replace(tzinfo=None) + dt.timedelta(days=days))
    return _resolve(target, tz)


def next_local_time(ts: float, minutes: int, tz: str) -> float:
    """The first instant after ``ts`` at which the wall clock in ``tz`` shows the time."""
    loc = _local(ts, tz).replace(tzinfo=None)
    day = loc.date()
    for i in range(3):
        cand = dt.datetime.combine(day + dt.timedelta(days=i), dt.time(minutes // 60,
                                                                       minutes % 60))
        at = _resolve(cand, tz)
        if at > ts:
            return at
    raise AssertionError("unreachable")


def property_time(value: Any) -> float | None:
    """A date property as epoch seconds (``$D_<epoch>``, epoch numbers, ISO dates)."""
    if hasattr(value, "epoch"):
        return float(value.epoch)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        if value.startswith("$D_"):
            try:
                return float(value[3:])
            except ValueError:
                return None
        try:
            d = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
        return (d if d.tzinfo else d.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(), dt.UTC).timestamp()
    return None


def delay_until(node: Node, now: float, tz: str, props: dict[str, Any]) -> float:
    """When a person who reaches delay ``node`` at ``now`` moves on."""
    if node.until_time is not None:
        return next_local_time(now, node.until_time, tz)
    if node.until_property is not None:
        t = property_time(props.get(node.until_property))
        return now if t is None else max(now, t + node.offset)
    at = add_days(now, node.days, tz) if node.days else now
    return at + (node.seconds or 0.0)
