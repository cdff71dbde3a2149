"""Time buckets in an account's timezone, correct across daylight-saving changes.

Events are stored with naive UTC timestamps. A bucket is a calendar interval of the local
clock (a local day lasts 23 or 25 hours on a DST change; the repeated hour of a fall-back
change is two hour buckets, the skipped hour of a spring-forward change is none).

Converting every row with DuckDB's ``timezone()`` (ICU) cost ~1.3 µs per row — over a second
for 1M events — so rows are converted with plain integer arithmetic instead: the UTC offsets
that apply within the queried range are found here with ``zoneinfo`` (a handful of periods,
split at each transition), and SQL adds the offset of the row's period to its epoch
microseconds. Python is the authority for bucket starts and labels; SQL only computes each
row's bucket *key*, by the same formula as :meth:`Buckets.key_of`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from nudge.query.segments.compiler import to_ts

from .common import ReportError

US = 1_000_000
DAY_S = 86_400
WIDTH_S = {"minute": 60, "hour": 3_600}
# The shortest length of each interval, to refuse huge ranges before enumerating them.
MIN_SECONDS = {"minute": 60, "hour": 3_600, "day": 23 * 3_600, "week": 7 * DAY_S,
               "month": 28 * DAY_S}
EPOCH_DATE = dt.date(1970, 1, 1)
# Searching for offset changes in steps of this size: no zone changes twice within 6 hours.
_STEP_S = 6 * 3_600
MAX_BUCKETS = 50_000


@dataclass(frozen=True)
class Period:
    """From ``start`` (epoch seconds) on, until the next period, local = UTC + ``offset``."""

    start: float
    offset: int  # seconds


def offset_at(tz: ZoneInfo, t: float) -> int:
    off = dt.datetime.fromtimestamp(t, tz).utcoffset()
    return int(off.total_seconds()) if off is not None else 0


def offset_periods(tz: ZoneInfo, lo: float, hi: float) -> list[Period]:
    """The UTC offsets of ``tz`` in [lo, hi), one period per offset change."""
    periods = [Period(lo, offset_at(tz, lo))]
    t = lo
    while t < hi:
        nxt = min(t + _STEP_S, hi)
        if offset_at(tz, nxt) != periods[-1].offset:
            a, b = t, nxt  # the change is in (a, b]; transitions fall on whole seconds
            while b - a > 1:
                mid = (a + b) // 2
                if offset_at(tz, mid) == periods[-1].offset:
                    a = mid
                else:
                    b = mid
            periods.append(Period(float(b), offset_at(tz, b)))
        t = nxt
    return [p for p in periods if p.start < hi]


def offset_sql(periods: list[Period], column: str = "e.ts",
               value: Any = lambda p: p.offset * US) -> tuple[str, list[Any]]:
    """A SQL expression for the offset (µs, or ``value(period)``) at ``column``."""
    if len(periods) == 1:
        return "?::BIGINT", [value(periods[0])]
    parts, params = [], []
    for before, p in zip(periods, periods[1:], strict=False):
        parts.append(f"WHEN {column} < ? THEN ?::BIGINT")
        params += [to_ts(p.start), value(before)]
    return f"(CASE {' '.join(parts)} ELSE ?::BIGINT END)", params + [value(periods[-1])]


def iso_local(t: float, tz: ZoneInfo) -> str:
    """Epoch seconds as ISO 8601 local time with its offset (``2026-03-08T00:00:00-05:00``)."""
    return dt.datetime.fromtimestamp(t, tz).isoformat()


def local_us_sql(periods: list[Period], column: str = "e.ts") -> tuple[str, list[Any]]:
    """SQL for the wall-clock time of ``column`` as epoch microseconds."""
    off, params = offset_sql(periods, column)
    return f"(epoch_us({column}) + {off})", params


@dataclass(frozen=True)
class Bucket:
    key: int
    start: float  # epoch seconds of the bucket's nominal (calendar) start

    def label(self, tz: ZoneInfo) -> str:
        return iso_local(self.start, tz)


class Buckets:
    """The buckets of ``interval`` covering [lo, hi) in ``tz``.

    Keys: minute/hour — the number of whole intervals since the epoch of the UTC instant
    shifted by (offset mod width), so hours stay absolute (two buckets for the repeated hour)
    yet align with a local clock that is off by a fraction of the width (+05:30); day — local
    days since 1970-01-01; week — local weeks starting on Monday; month — year*12 + month - 1.
    """

    def __init__(self, interval: str, tz: ZoneInfo, lo: float, hi: float) -> None:
        self.interval, self.tz, self.lo, self.hi = interval, tz, lo, hi
        if (hi - lo) / MIN_SECONDS[interval] > MAX_BUCKETS:
            raise ReportError("interval", f"the range has more than {MAX_BUCKETS} "
                                          f"{interval} buckets; use a longer interval")
        self.periods = offset_periods(tz, lo, hi)
        self.items = self._enumerate()
        self.index = {b.key: i for i, b in enumerate(self.items)}

    def __len__(self) -> int:
        return len(self.items)

    def labels(self) -> list[str]:
        return [b.label(self.tz) for b in self.items]

    # -- keys ---------------------------------------------------------------------------
    def key_of(self, t: float) -> int:
        """The key of the bucket holding instant ``t`` (the same formula as :meth:`key_sql`)."""
        off = offset_at(self.tz, t)
        us = round(t * US)
        if self.interval in WIDTH_S:
            w = WIDTH_S[self.interval] * US
            return (us + (off * US) % w) // w
        local = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=us + off * US)
        return self._calendar_key(local.date())

    def _calendar_key(self, d: dt.date) -> int:
        days = (d - EPOCH_DATE).days
        if self.interval == "day":
            return days
        if self.interval == "week":
            return (days + 3) // 7  # 1970-01-01 was a Thursday; weeks start on Monday
        return d.year * 12 + d.month - 1

    def key_sql(self, column: str = "e.ts") -> tuple[str, list[Any]]:
        """SQL for the bucket key of ``column`` minus the first key (0 … len-1 in range)."""
        base = self.items[0].key if self.items else 0
        if self.interval in WIDTH_S:
            w = WIDTH_S[self.interval] * US
            frac, params = offset_sql(self.periods, column, lambda p: (p.offset * US) % w)
            return f"((epoch_us({column}) + {frac}) // {w} - ?)", params + [base]
        local, params = local_us_sql(self.periods, column)
        days = f"({local} // {DAY_S * US})"
        if self.interval == "day":
            return f"({days} - ?)", params + [base]
        if self.interval == "week":
            return f"(({days} + 3) // 7 - ?)", params + [base]
        # Month boundaries crossed since 1970-01 (the local expression appears once, so its
        # parameters do too).
        months = f"datediff('month', TIMESTAMP '1970-01-01', make_timestamp({local}))"
        return f"({months} + {1970 * 12} - ?)", params + [base]

    def slices(self) -> list[tuple[float, float]] | None:
        """Each bucket as the range of instants [a, b) it holds within [lo, hi), or None
        when they do not tile the range in order (checked with :meth:`key_of` at both ends
        of every slice, so a slice holds exactly the rows whose key is its bucket's)."""
        if not self.items:
            return None
        ends = [max(b.start, self.lo) for b in self.items[1:]] + [self.hi]
        out, a = [], self.lo
        for b, end in zip(self.items, ends, strict=True):
            if not a < end or self.key_of(a) != b.key or self.key_of(end - 1e-6) != b.key:
                return None
            out.append((a, end))
            a = end
        return out

    # -- enumeration --------------------------------------------------------------------
    def _enumerate(self) -> list[Bucket]:
        if self.hi <= self.lo:
            return []
        if self.interval in WIDTH_S:
            return self._fixed()
        return self._calendar()

    def _fixed(self) -> list[Bucket]:
        """Minute/hour buckets: within each offset period the key grows by one per width."""
        w = WIDTH_S[self.interval]
        out: dict[int, Bucket] = {}
        ends = [p.start for p in self.periods[1:]] + [self.hi]
        for p, end in zip(self.periods, ends, strict=True):
            frac = p.offset % w
            first, last = self.key_of(p.start), self.key_of(end - 1e-6)
            for key in range(first, last + 1):
                out.setdefault(key, Bucket(key, float(key * w - frac)))
        return list(out.values())

    def _calendar(self) -> list[Bucket]:
        first = dt.datetime.fromtimestamp(self.lo, self.tz).date()
        last = dt.datetime.fromtimestamp(self.hi - 1e-6, self.tz).date()
        day = self._floor(first)
        out = []
        while day <= last:
            start = dt.datetime.combine(day, dt.time(), self.tz).timestamp()
            out.append(Bucket(self._calendar_key(day), start))
            day = self._next(day)
        return out

    def _floor(self, d: dt.date) -> dt.date:
        if self.interval == "week":
            return d - dt.timedelta(days=d.weekday())
        if self.interval == "month":
            return d.replace(day=1)
        return d

    def _next(self, d: dt.date) -> dt.date:
        if self.interval == "day":
            return d + dt.timedelta(days=1)
        if self.interval == "week":
            return d + dt.timedelta(days=7)
        return (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1)

    # -- the previous period ------------------------------------------------------------
    def shift(self, t: float, n: int) -> float:
        """``t`` moved back by ``n`` intervals on the local clock (months clamp the day)."""
        if self.interval in WIDTH_S:
            return t - n * WIDTH_S[self.interval]
        local = dt.datetime.fromtimestamp(t, self.tz).replace(tzinfo=None)
        if self.interval == "month":
            months = local.year * 12 + local.month - 1 - n
            year, month = divmod(months, 12)
            day = min(local.day, _month_days(year, month + 1))
            local = local.replace(year=year, month=month + 1, day=day)
        else:
            local -= dt.timedelta(days=n * (7 if self.interval == "week" else 1))
        return local.replace(tzinfo=self.tz).timestamp()


def _month_days(year: int, month: int) -> int:
    nxt = dt.date(year + month // 12, month % 12 + 1, 1)
    return (nxt - dt.timedelta(days=1)).day
