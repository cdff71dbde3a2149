"""The demo-data generator (nudge.demo): shape, volume, determinism and realism of the stream.

Pure-Python tests on a small run (2,000 users, 60,000 events); no server needed.
"""

from __future__ import annotations

import collections
import statistics
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone

import pytest

from nudge.demo import CITIES, EVENT_NAMES, estimate_chunks, generate

USERS = 2_000
EVENTS = 60_000
NOW = 1_750_000_000  # fixed: a Sunday evening in June 2025 (UTC)
DAYS = 90
START = NOW - DAYS * 86_400

PROFILE_KEYS = {"Name", "City", "Country", "Gender", "Age", "Signup Date", "Timezone", "Platform",
                "MSG-email", "MSG-push", "MSG-sms", "Customer Type"}


@pytest.fixture(scope="module")
def chunks() -> list[list[dict]]:
    return list(generate(USERS, EVENTS, seed=7, now=NOW, days=DAYS, chunk_size=10_000))


@pytest.fixture(scope="module")
def records(chunks: list[list[dict]]) -> list[dict]:
    return [r for c in chunks for r in c]


@pytest.fixture(scope="module")
def events(records: list[dict]) -> list[dict]:
    return [r for r in records if r["type"] == "event"]


@pytest.fixture(scope="module")
def profiles(records: list[dict]) -> dict[str, dict]:
    """identity -> its (first) identified profile record."""
    out: dict[str, dict] = {}
    for r in records:
        if r["type"] == "profile" and "identity" in r:
            out.setdefault(r["identity"], r)
    return out


def _tzinfo(name: str):
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    except Exception:  # no tzdata: the generator then uses the same standard offsets
        hours = next(c[3] for c in CITIES if c[2] == name)
        return timezone(timedelta(hours=hours))


def _local(events: list[dict], profiles: dict[str, dict]) -> list[tuple[dict, datetime]]:
    zones: dict[str, object] = {}
    out = []
    for e in events:
        if "identity" not in e:
            continue
        tz = profiles[e["identity"]]["profileData"]["Timezone"]
        z = zones.get(tz) or zones.setdefault(tz, _tzinfo(tz))
        out.append((e, datetime.fromtimestamp(e["ts"], z)))
    return out


# --- volume, shape, order ---------------------------------------------------------------------

def test_exact_user_count(records: list[dict], profiles: dict[str, dict]) -> None:
    identified = [r for r in records if r["type"] == "profile" and "identity" in r]
    assert len(identified) == USERS  # one identified profile record per user
    assert len(profiles) == USERS
    assert set(profiles) == {f"u{i}" for i in range(1, USERS + 1)}


def test_event_count_within_5_percent(events: list[dict]) -> None:
    assert abs(len(events) - EVENTS) <= 0.05 * EVENTS


@pytest.mark.parametrize(("users", "n_events", "days"), [(500, 5_000, 30), (300, 40_000, 14)])
def test_event_count_other_sizes(users: int, n_events: int, days: int) -> None:
    recs = [r for c in generate(users, n_events, seed=3, now=NOW, days=days) for r in c]
    assert sum(r["type"] == "profile" and "identity" in r for r in recs) == users
    got = sum(r["type"] == "event" for r in recs)
    assert abs(got - n_events) <= 0.05 * n_events
    assert all(NOW - days * 86_400 <= r["ts"] <= NOW for r in recs)


def test_chunking_and_estimate(chunks: list[list[dict]], records: list[dict]) -> None:
    assert all(len(c) == 10_000 for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= 10_000
    est = estimate_chunks(USERS, EVENTS, 10_000)
    assert abs(est - len(chunks)) <= 1
    assert abs(estimate_chunks(USERS, EVENTS, 1) - len(records)) <= 0.06 * len(records)


def test_record_shapes(records: list[dict]) -> None:
    kinds = collections.Counter(r["type"] for r in records)
    assert set(kinds) == {"profile", "token", "event"}
    for r in records:
        assert isinstance(r["ts"], int)
        assert ("identity" in r) or ("objectId" in r)
        if r["type"] == "event":
            assert set(r) == {"type", "identity", "ts", "evtName", "evtData", "msgId"} or \
                set(r) == {"type", "objectId", "ts", "evtName", "evtData", "msgId"}
            assert r["evtName"] in EVENT_NAMES
            assert isinstance(r["evtData"], dict)
        elif r["type"] == "token":
            assert set(r) == {"type", "identity", "ts", "tokenData"}
            assert r["tokenData"]["type"] in ("fcm", "apns") and len(r["tokenData"]["id"]) >= 64
        elif "identity" in r:
            pd = r["profileData"]
            assert PROFILE_KEYS <= set(pd)
            assert r["email"].split("@")[1] in ("example.com", "example.net", "example.org")
            assert pd["Gender"] in ("M", "F", "O") and 18 <= pd["Age"] <= 75
            assert pd["Signup Date"].startswith("$D_") and int(pd["Signup Date"][3:]) <= r["ts"]
            assert pd["Platform"] in ("Android", "iOS", "Web")
            assert ("App Version" in pd) == (pd["Platform"] != "Web")
            assert all(isinstance(pd[k], bool) for k in ("MSG-email", "MSG-push", "MSG-sms"))
    emails = [r["email"] for r in records if r["type"] == "profile" and "email" in r]
    assert len(set(emails)) == len(emails) == USERS
    assert {"App Launched", "Session Started", "Product Viewed", "Searched", "Added To Cart",
            "Checkout Started", "Charged", "Notification Viewed", "Notification Clicked",
            "App Uninstalled", "Rated"} <= {r["evtName"] for r in records if r["type"] == "event"}


def test_event_properties(events: list[dict]) -> None:
    by = collections.defaultdict(list)
    for e in events:
        by[e["evtName"]].append(e["evtData"])
    for d in by["Product Viewed"]:
        assert set(d) == {"Product ID", "Category", "Price", "Brand"} and d["Price"] > 0
    for d in by["Added To Cart"]:
        assert {"Product ID", "Category", "Price", "Quantity", "Cart ID"} == set(d)
        assert d["Quantity"] >= 1
    for d in by["Checkout Started"]:
        assert set(d) == {"Cart ID", "Items", "Value"} and d["Items"] >= 1 and d["Value"] > 0
    coupons = 0
    for d in by["Charged"]:
        assert isinstance(d["Amount"], float) and d["Amount"] > 0
        assert isinstance(d["Items"], int) and d["Items"] >= 1
        assert {"Amount", "Category", "Items", "Payment Method", "Cart ID"} <= set(d)
        coupons += "Coupon" in d
    assert 0 < coupons < len(by["Charged"])
    for d in by["Searched"]:
        assert isinstance(d["Query"], str) and d["Results"] >= 0
    assert any(d["Results"] == 0 for d in by["Searched"])
    for d in by["Rated"]:
        assert 1 <= d["Stars"] <= 5
    for d in by["Notification Viewed"] + by["Notification Clicked"]:
        assert d["Channel"] in ("push", "email") and d["Campaign ID"].startswith("cmp-")
    for d in by["App Launched"]:
        assert d["Platform"] in ("Android", "iOS") and d["Session Length"] > 0
    # prices per product are stable and categories have different price levels
    price = {}
    for d in by["Product Viewed"]:
        assert price.setdefault(d["Product ID"], d["Price"]) == d["Price"]
    med = {c: statistics.median(d["Price"] for d in by["Product Viewed"] if d["Category"] == c)
           for c in ("Electronics", "Books", "Grocery")}
    assert med["Electronics"] > 3 * med["Books"] > 3 * med["Grocery"]


def test_timestamps_in_window_and_ascending(records: list[dict], events: list[dict]) -> None:
    assert all(START <= r["ts"] <= NOW for r in records)
    ts = [e["ts"] for e in events]
    assert ts == sorted(ts)
    assert max(ts) > NOW - 86_400 and min(ts) < START + 86_400


def test_msg_ids_unique(events: list[dict]) -> None:
    ids = [e["msgId"] for e in events]
    assert len(set(ids)) == len(ids)


def test_profiles_precede_events(records: list[dict]) -> None:
    seen_id: set[str] = set()
    seen_obj: set[str] = set()
    for r in records:
        if r["type"] == "profile":
            if "identity" in r:
                seen_id.add(r["identity"])
            if "objectId" in r:
                seen_obj.add(r["objectId"])
        elif "identity" in r:
            assert r["identity"] in seen_id, r
        else:
            assert r["objectId"] in seen_obj, r


def test_anonymous_first_users_are_merged(records: list[dict]) -> None:
    first_anon: dict[str, int] = {}   # objectId -> stream position of its first event
    link: dict[str, tuple[int, str]] = {}  # objectId -> (position, identity)
    after_link_anon = 0
    first_identified: dict[str, int] = {}
    for i, r in enumerate(records):
        if r["type"] == "profile" and "objectId" in r and "identity" in r:
            link[r["objectId"]] = (i, r["identity"])
        elif r["type"] == "event" and "objectId" in r:
            first_anon.setdefault(r["objectId"], i)
            after_link_anon += r["objectId"] in link
        elif r["type"] == "event":
            first_identified.setdefault(r["identity"], i)
    assert len(link) >= 0.05 * USERS  # a real share of users start anonymous
    assert len(first_anon) >= 0.8 * len(link)
    assert set(first_anon) <= set(link)  # every anonymous device is later identified
    assert after_link_anon == 0  # once linked, events carry the identity
    for obj, pos in first_anon.items():
        lpos, ident = link[obj]
        assert pos < lpos
        assert first_identified.get(ident, lpos + 1) > lpos
    assert all(o.startswith("anon-") for o in link)


# --- determinism --------------------------------------------------------------------------

def test_deterministic_for_same_seed(records: list[dict]) -> None:
    again = [r for c in generate(USERS, EVENTS, seed=7, now=NOW, days=DAYS, chunk_size=4_321)
             for r in c]
    assert again == records  # chunk size only regroups the same records


def test_other_seed_differs(records: list[dict]) -> None:
    other = [r for c in generate(USERS, EVENTS, seed=8, now=NOW, days=DAYS) for r in c]
    assert other != records
    ids = {e["msgId"] for e in other if e["type"] == "event"}
    assert not ids & {e["msgId"] for e in records if e["type"] == "event"}


# --- behaviour ----------------------------------------------------------------------------

def test_funnels_leak(events: list[dict]) -> None:
    users = collections.defaultdict(set)
    n = collections.Counter()
    sessions = collections.defaultdict(set)
    for e in events:
        users[e["evtName"]].add(e.get("identity") or e.get("objectId"))
        n[e["evtName"]] += 1
        if "Cart ID" in e["evtData"]:
            sessions[e["evtName"]].add(e["evtData"]["Cart ID"])
    assert (len(users["Charged"]) < len(users["Checkout Started"]) < len(users["Added To Cart"])
            < len(users["Product Viewed"]))
    assert 0.18 <= n["Added To Cart"] / n["Product Viewed"] <= 0.32
    carts, cks, chs = sessions["Added To Cart"], sessions["Checkout Started"], sessions["Charged"]
    assert cks <= carts and chs <= cks
    assert 0.40 <= len(cks) / len(carts) <= 0.62
    assert 0.55 <= len(chs) / len(cks) <= 0.75


def test_segments_exist(events: list[dict], profiles: dict[str, dict]) -> None:
    charges = collections.Counter(e["identity"] for e in events if e["evtName"] == "Charged")
    viewers = {e["identity"] for e in events if e["evtName"] == "Product Viewed"
               and "identity" in e}
    one_time = sum(1 for c in charges.values() if c == 1)
    loyal = sum(1 for c in charges.values() if c >= 5)
    assert one_time >= 0.1 * len(charges) and loyal >= 10
    assert len(viewers - set(charges)) >= 0.3 * len(viewers)  # browsers who never buy
    # churners: uninstalls end the user's activity
    last = {}
    for e in events:
        if "identity" in e:
            last[e["identity"]] = e
    uninstalled = {e["identity"] for e in events if e["evtName"] == "App Uninstalled"}
    assert len(uninstalled) >= 0.02 * USERS
    assert all(last[u]["evtName"] == "App Uninstalled" for u in uninstalled)
    # power law: the top 10% of users produce a large share of events
    per_user = sorted(collections.Counter(e["identity"] for e in events if "identity" in e)
                      .values(), reverse=True)
    assert sum(per_user[: len(per_user) // 10]) > 0.35 * sum(per_user)
    assert statistics.median(per_user) < 0.8 * sum(per_user) / len(per_user)  # heavy tail


def test_daily_and_weekly_rhythm(events: list[dict], profiles: dict[str, dict]) -> None:
    loc = _local(events, profiles)
    hours = collections.Counter(t.hour for _, t in loc)
    evening = sum(hours[h] for h in range(18, 23)) / 5
    night = sum(hours[h] for h in range(2, 6)) / 4
    assert evening > 4 * night
    # weekends differ from weekdays, per calendar day, in each user's local time
    days_of = collections.defaultdict(set)
    per_dow = collections.Counter()
    for _, t in loc:
        per_dow[t.weekday()] += 1
        days_of[t.weekday()].add(t.date())
    weekday = sum(per_dow[d] for d in range(5)) / sum(len(days_of[d]) for d in range(5))
    weekend = sum(per_dow[d] for d in (5, 6)) / sum(len(days_of[d]) for d in (5, 6))
    assert weekend > 1.08 * weekday
    # and weekend mornings start later
    wk_morning = sum(1 for _, t in loc if t.weekday() < 5 and 7 <= t.hour < 9)
    we_morning = sum(1 for _, t in loc if t.weekday() >= 5 and 7 <= t.hour < 9)
    wk_total = sum(per_dow[d] for d in range(5))
    we_total = sum(per_dow[d] for d in (5, 6))
    assert we_morning / we_total < 0.8 * (wk_morning / wk_total)


def test_cohorts_and_retention(events: list[dict], profiles: dict[str, dict]) -> None:
    signup = {u: int(p["profileData"]["Signup Date"][3:]) for u, p in profiles.items()}
    assert sum(s < START for s in signup.values()) > 0.2 * USERS  # existing customers
    in_window = [s for s in signup.values() if s >= START]
    weeks = collections.Counter((s - START) // (7 * 86_400) for s in in_window)
    assert len(weeks) >= 12 and min(weeks.values()) > 0  # a cohort every week
    active = collections.defaultdict(set)
    for e in events:
        if "identity" in e:
            active[e["identity"]].add((e["ts"] - signup[e["identity"]]) // (7 * 86_400))
    cohort = [u for u, s in signup.items() if START <= s < START + 28 * 86_400]
    w1 = sum(1 for u in cohort if 1 in active[u]) / len(cohort)
    w7 = sum(1 for u in cohort if 7 in active[u]) / len(cohort)
    assert 0.25 < w1 and w7 < 0.8 * w1


def test_cities_and_timezones(profiles: dict[str, dict]) -> None:
    cities = collections.Counter(p["profileData"]["City"] for p in profiles.values())
    countries = {p["profileData"]["Country"] for p in profiles.values()}
    assert len(cities) >= 25 and len(countries) == 12
    city_tz = {c[0]: c[2] for c in CITIES}
    assert all(p["profileData"]["Timezone"] == city_tz[p["profileData"]["City"]]
               for p in profiles.values())


def test_streaming_memory_is_bounded() -> None:
    """Peak memory tracks a chunk and a day of columns, not the whole stream."""
    tracemalloc.start()
    try:
        n = 0
        for chunk in generate(600, 30_000, seed=1, now=NOW, chunk_size=1_000):
            n += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n > 30_000
    assert peak < 8 * 2**20  # holding the whole stream as dicts takes ~17 MB


def test_now_defaults_to_current_time() -> None:
    first = next(generate(50, 500, days=7))
    now = datetime.now(UTC).timestamp()
    assert all(now - 7 * 86_400 - 5 <= r["ts"] <= now + 5 for r in first)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        generate(10, 100, days=0)  # checked at the call, not at the first chunk
    with pytest.raises(ValueError):
        generate(-1, 100)
    with pytest.raises(ValueError):
        generate(10, 100, chunk_size=0)
    assert list(generate(0, 100, now=NOW)) == []
    assert estimate_chunks(0, 100, 10) == 0
