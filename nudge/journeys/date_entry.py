"""Date-property entry: enter people on a date of their profile, e.g. 3 days before
``renewal_date`` at 09:00 in each person's timezone.

An *occurrence* is the property's calendar date (as stored: date properties are UTC
instants, a date-only value is its UTC midnight) shifted by ``offset_days``, at ``at`` on
that day on the person's wall clock (profile ``timezone``, else the account's). A DST gap
moves a skipped wall time to the end of the gap, as delays do.

Each scan enters the occurrences that fell in ``(scanned_to, now]`` and then moves
``scanned_to`` (``journey_date_scans``) to ``now``:

- **once per occurrence**: the entry key is ``d:<user>:<shifted date>``, unique per
  journey, so a scan repeated after a crash (entries committed, watermark not yet moved)
  enters nobody twice, while next year's renewal (a new date) is a new occurrence;
- **nothing missed during downtime**: the watermark is durable; the first scan after a
  start covers everything since the last one (a new journey starts at its first publish);
- **one set query per scan**: one query over ``profiles`` selects every person whose date
  lies in the window widened by the largest timezone offsets (±14 h) and a day; the exact
  moment is then computed for those candidates only, in their timezone;
- **a changed date**: the profile is read at scan time, so a person whose date moved before
  the occurrence enters at the new date's occurrence, not the old one.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any

import msgspec
import sqlalchemy as sa

from nudge.clock import clock
from nudge.engage.compose import TZ_PROPS, _valid_zone
from nudge.store import control

from .model import Journey
from .timers import _resolve, property_time

if TYPE_CHECKING:
    from nudge.store.account import AccountStore

    from .engine import JourneyEngine

log = logging.getLogger("nudge.journeys")
J, V, W = control.journeys, control.journey_versions, control.journey_date_scans
SLACK = 15 * 3600 + 86400  # widest timezone offset (+14 h, -12 h) and the rest of the day
_JSON = msgspec.json.Decoder()


def occurrence(value: Any, offset_days: int, at_minutes: int, tz: str
               ) -> tuple[float, str] | None:
    """(instant, local date) of the occurrence for a date property value, or None.

    >>> occurrence("2026-03-11", -3, 9 * 60, "America/New_York")  # 3 days before, 09:00 EDT
    (1772974800.0, '2026-03-08')
    """
    t = property_time(value)
    if t is None:
        return None
    day = dt.datetime.fromtimestamp(t, dt.UTC).date() + dt.timedelta(days=offset_days)
    local = dt.datetime.combine(day, dt.time(at_minutes // 60, at_minutes % 60))
    return _resolve(local, tz), day.isoformat()


def candidates(store: AccountStore, prop: str, lo: float, hi: float
               ) -> list[tuple[int, Any, dict[str, Any]]]:
    """(user, property value, timezone properties) of everyone whose ``prop`` lies in
    [lo, hi] — one query over profiles (typed column; a string or JSON-overflow property
    is read for every profile that has it and filtered here)."""
    cat = store.catalog
    col = cat.get("profile", prop)
    tzc = [(n, c.column) for n in TZ_PROPS if (c := cat.get("profile", n)) is not None]
    tz_sql = "".join(f", {c}" for _, c in tzc)  # column names from our catalog only
    with store.cursor() as cur:
        if col is not None and col.type == "date":
            rows = cur.execute(
                f"SELECT user_id, {col.column}, props{tz_sql} FROM profiles "
                f"WHERE {col.column} BETWEEN ? AND ?",
                [_naive(lo), _naive(hi)]).fetchall()
        elif col is not None and col.type == "number":
            rows = cur.execute(
                f"SELECT user_id, {col.column}, props{tz_sql} FROM profiles "
                f"WHERE {col.column} BETWEEN ? AND ?", [lo, hi]).fetchall()
        elif col is not None:
            rows = cur.execute(f"SELECT user_id, {col.column}, props{tz_sql} FROM profiles "
                               f"WHERE {col.column} IS NOT NULL").fetchall()
        else:
            rows = cur.execute(f"SELECT user_id, NULL, props{tz_sql} FROM profiles "
                               "WHERE props IS NOT NULL").fetchall()
    out = []
    for row in rows:
        extra = _JSON.decode(row[2]) if row[2] is not None else {}
        value = row[1] if col is not None else extra.get(prop)
        t = property_time(value)
        if t is None or not lo <= t <= hi:
            continue
        tzp = {n: v for (n, _), v in zip(tzc, row[3:], strict=True) if v is not None}
        tzp.update({n: extra[n] for n in TZ_PROPS if n in extra})
        out.append((int(row[0]), value, tzp))
    return out


def _naive(ts: float) -> dt.datetime:
    return dt.datetime(1970, 1, 1) + dt.timedelta(seconds=ts)


def due(store: AccountStore, j: Journey, account_tz: str, start: float, end: float
        ) -> list[tuple[int, str, dict[str, Any] | None]]:
    """(user, entry key, context) for every occurrence in (start, end]."""
    e = j.entry
    shift = e["offset_days"] * 86400.0 + e["at_minutes"] * 60.0
    out: list[tuple[int, str, dict[str, Any] | None]] = []
    for uid, value, tzp in candidates(store, e["date_property"], start - shift - SLACK,
                                      end - shift + SLACK):
        tz = next((str(tzp[k]) for k in TZ_PROPS if _valid_zone(tzp.get(k))), account_tz)
        occ = occurrence(value, e["offset_days"], e["at_minutes"], tz)
        if occ is None or not start < occ[0] <= end:
            continue
        out.append((uid, f"d:{uid}:{occ[1]}",
                    {"$date_property": e["date_property"], "$occurrence": occ[1],
                     "$ts": occ[0]}))
    return out


def scan(eng: JourneyEngine) -> int:
    """Enter every occurrence that came due since the last scan; returns how many."""
    now = clock.now()
    with eng.engine.connect() as conn:
        rows = list(conn.execute(
            sa.select(J.c.id, J.c.account_id, J.c.version, W.c.scanned_to)
            .select_from(J.outerjoin(W, W.c.journey_id == J.c.id))
            .where(J.c.status == "published", J.c.deleted_at.is_(None))))
    n = 0
    for r in rows:
        j = eng.version(r.id, r.version)
        if not j.date_entry:
            continue
        start = r.scanned_to
        if start is None:  # first scan: from the journey's first publish
            with eng.engine.connect() as conn:
                start = conn.execute(sa.select(sa.func.min(V.c.published_at)).where(
                    V.c.journey_id == r.id)).scalar() or now
        if now <= start:
            continue
        store = eng.engage.stores.get(r.account_id)
        people = due(store, j, eng.engage.timezone(r.account_id), start, now)
        people.sort(key=lambda p: (p[2] or {})["$ts"])
        batch = eng.settings.journey_entry_batch
        for i in range(0, len(people), batch):
            n += eng.enter(r.account_id, r.id, r.version, people[i:i + batch])
        # Entries first, then the watermark: a crash in between repeats the window, and
        # the entry keys make the repeat enter nobody twice.
        with eng.engine.begin() as conn:
            _set_watermark(conn, r.id, now)
        if people:
            log.info("journey %s: %d date occurrences in %s", r.id, len(people),
                     json.dumps([start, now]))
    return n


def _set_watermark(conn: Any, journey_id: int, at: float) -> None:
    ins = control.dialect_insert(conn, W).values(journey_id=journey_id, scanned_to=at)
    conn.execute(ins.on_conflict_do_update(index_elements=[W.c.journey_id],
                                           set_={"scanned_to": ins.excluded.scanned_to}))
