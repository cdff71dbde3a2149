"""Small generated data for the analytics tests, its upload, and plain-Python references.

The references read the generated records directly (not Nudge's tables or SQL) and follow
the semantics in docs/analytics.md: buckets are local calendar intervals of the account's
timezone (a fall-back hour is two buckets, a spring-forward day has 23 hours); medians and
percentiles interpolate linearly between the closest ranks (DuckDB's ``quantile_cont``).

The data sit in two windows around the 2026 DST changes of America/New_York (2026-03-08 and
2026-11-01), with events on the exact local midnights and transition instants. Uploads are
shuffled and split over several requests, so events arrive out of time order, and the
server compacts every few hundred events, so the data span both event tables.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from conftest import NudgeServer, free_port, nudge_cli

TZ_NAME = "America/New_York"
TZ = ZoneInfo(TZ_NAME)
CATEGORIES = ["books", "games", "music", "toys", "tools", "garden"]
CITIES = ["Paris", "Lima", "Oslo", "Pune"]
# Valid zones, and names that are not zones (those users fall back to the account's).
USER_ZONES = ["Europe/Paris", "Asia/Kolkata", "America/Los_Angeles", "Not/AZone", ""]
WINDOWS = [(dt.datetime(2026, 2, 26, tzinfo=TZ), 18), (dt.datetime(2026, 10, 26, tzinfo=TZ), 14)]


@dataclass
class Event:
    user: str
    name: str
    ts: int
    props: dict[str, Any] = field(default_factory=dict)


@dataclass
class Person:
    identity: str
    props: dict[str, Any]


@dataclass
class Data:
    people: dict[str, Person]
    events: list[Event]

    def rows(self, name: str, lo: float, hi: float,
             keep: Callable[[Event], bool] = lambda e: True) -> list[Event]:
        return [e for e in self.events if e.name == name and lo <= e.ts < hi and keep(e)]


def local(y: int, m: int, d: int, h: int = 0, mi: int = 0, fold: int = 0) -> int:
    """Epoch seconds of a local wall-clock time in the account's zone."""
    return int(dt.datetime(y, m, d, h, mi, tzinfo=TZ, fold=fold).timestamp())


def generate(seed: int = 4) -> Data:
    rng = random.Random(seed)
    people: dict[str, Person] = {}
    for i in range(40):
        props: dict[str, Any] = {"Plan": rng.choice(["free", "pro"]), "Age": rng.randint(18, 70)}
        if i % 9:
            props["City"] = CITIES[i % len(CITIES)]
        zone = USER_ZONES[i % len(USER_ZONES)]
        if zone:
            props["Timezone"] = zone
        people[f"a-{i}"] = Person(f"a-{i}", props)
    ids = list(people)
    weights = [1 + (i % 7) ** 2 for i in range(len(ids))]  # some users far more active
    events: list[Event] = []
    for start, days in WINDOWS:
        lo = int(start.timestamp())
        hi = int((start + dt.timedelta(days=days)).timestamp())
        for _ in range(days * 70):
            user = rng.choices(ids, weights)[0]
            events.append(_event(rng, user, rng.randrange(lo, hi)))
    # Edges: local midnights, the transition instants and the second before each.
    edges = [local(2026, 3, 8), local(2026, 3, 9), local(2026, 3, 8, 3), local(2026, 3, 8, 3) - 1,
             local(2026, 11, 1), local(2026, 11, 2), local(2026, 11, 1, 1, fold=1),
             local(2026, 11, 1, 1, fold=1) - 1, local(2026, 11, 1, 1, 30, fold=0)]
    for ts in edges:
        for name in ("Purchase", "View"):
            events.append(_event(rng, rng.choice(ids), ts, name))
    return Data(people, events)


def _event(rng: random.Random, user: str, ts: int, name: str | None = None) -> Event:
    name = name or rng.choices(["Purchase", "View", "Signup"], [5, 8, 1])[0]
    props: dict[str, Any] = {}
    if name == "Purchase":
        if rng.random() < 0.9:
            props["Amount"] = rng.randint(1, 400) / 4  # quarters: sums are exact in binary
        if rng.random() < 0.85:
            props["Category"] = rng.choice(CATEGORIES)
        props["Paid"] = rng.random() < 0.7
    elif name == "View":
        props["Page"] = rng.choice(["home", "cart", "item"])
        props["Seconds"] = rng.randint(0, 120)
    return Event(user, name, ts, props)


# -- the server and the upload --------------------------------------------------------------
def start_server(tmp: Path, timezone: str = TZ_NAME, **env: str) -> NudgeServer:
    """A server with one account in ``timezone`` (compacting every 300 events)."""
    acct = json.loads(nudge_cli(tmp, "accounts", "create", "analytics", "--timezone", timezone,
                                "--json"))
    srv = NudgeServer(tmp, free_port(), acct["id"], acct["passcode"], acct["write_key"],
                      {"NUDGE_COMPACT_THRESHOLD_ROWS": "300", **env})
    srv.start()
    return srv


def upload(srv: NudgeServer, data: Data, seed: int = 9) -> None:
    """Profiles first, then the events shuffled (out of time order) in batches of 400."""
    profiles = [{"type": "profile", "identity": p.identity, "ts": 1_700_000_000,
                 "profileData": p.props} for p in data.people.values()]
    _send(srv, profiles)
    events = list(data.events)
    random.Random(seed).shuffle(events)
    for i in range(0, len(events), 400):
        _send(srv, [{"type": "event", "identity": e.user, "ts": e.ts, "evtName": e.name,
                     "evtData": e.props} for e in events[i:i + 400]])


def _send(srv: NudgeServer, records: list[dict[str, Any]]) -> None:
    r = srv.upload(records, timeout=60)
    assert r.status_code == 200 and r.json()["processed"] == len(records), r.text


def post(srv: NudgeServer, report: str, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{srv.url}/1/analytics/{report}", json=body, headers=srv.headers,
                   timeout=60)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def rejected(srv: NudgeServer, report: str, body: Any) -> str:
    """The field a 422 answer names."""
    r = httpx.post(f"{srv.url}/1/analytics/{report}", json=body, headers=srv.headers,
                   timeout=60)
    assert r.status_code == 422, r.text
    return r.json()["field"]  # type: ignore[no-any-return]


# -- references ----------------------------------------------------------------------------
def bucket_label(ts: float, interval: str) -> str:
    """The ISO label of the local calendar bucket holding ``ts`` (independent of Nudge)."""
    t = dt.datetime.fromtimestamp(ts, TZ)
    if interval == "minute":
        start = t.replace(second=0, microsecond=0)  # keeps fold: repeated times stay apart
    elif interval == "hour":
        start = t.replace(minute=0, second=0, microsecond=0)
    else:
        day = t.date()
        if interval == "week":
            day -= dt.timedelta(days=day.weekday())
        elif interval == "month":
            day = day.replace(day=1)
        start = dt.datetime.combine(day, dt.time(), TZ)
    return start.isoformat()


def quantile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks, computed as DuckDB's quantile_cont."""
    if not values:
        return None
    v = sorted(values)
    pos = (len(v) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    d = pos - lo
    return v[lo] * (1 - d) + v[hi] * d


def measure(rows: Iterable[Event], name: str, prop: str | None = None) -> Any:
    rows = list(rows)
    users = {e.user for e in rows}
    values = [e.props[prop] for e in rows if prop is not None and prop in e.props]
    if name == "total":
        return len(rows)
    if name == "unique_users":
        return len(users)
    if name == "per_user_avg":
        return len(rows) / len(users) if users else None
    if name == "sum":
        return float(sum(values))
    if name == "avg":
        return sum(values) / len(values) if values else None
    if name in ("min", "max"):
        return (min if name == "min" else max)(values) if values else None
    return quantile(values, {"median": 0.5, "p90": 0.9}[name])


def by_bucket(rows: Iterable[Event], interval: str) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = {}
    for e in rows:
        out.setdefault(bucket_label(e.ts, interval), []).append(e)
    return out


def ranked(values: Iterable[Any], limit: int) -> tuple[list[Any], bool]:
    """Top values by frequency, ties by value, absent (None) last among equals."""
    counts: dict[Any, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    order = sorted(counts, key=lambda v: (-counts[v], v is None, "" if v is None else v))
    return order[:limit], len(order) > limit
