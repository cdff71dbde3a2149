"""Funnels (``POST /1/analytics/funnels`` and ``/funnels/users``) against the plain-Python
reference (tests/analytics_paths_reference.py) and ClickHouse's ``windowFunnel`` (chDB).

One server for the module, account in America/New_York; the data span the 2026-11-01 DST
change, are uploaded shuffled (out of time order) and partly compacted. Every figure is
compared exactly.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from analytics_paths_reference import (
    US,
    Ev,
    Reach,
    chdb_rows,
    funnel_counts,
    funnel_report,
    is_event,
    to_parquet,
)
from analytics_reference import TZ, local, post, quantile, ranked, rejected, start_server

from conftest import NudgeServer

DAY, HOUR = 86_400, 3_600
LO, HI = local(2026, 10, 28), local(2026, 11, 5)  # 8 local days; DST ends on the 1st
PLANS = ["free", "pro", "team", None]
CATS = ["x", "y", "z", None]


# -- data -------------------------------------------------------------------------------------
def generate(seed: int = 11) -> tuple[list[Ev], dict[str, str | None]]:
    """Users who act in bursts (so funnels convert within hours), with unique timestamps
    (ClickHouse orders equal timestamps arbitrarily); seq = upload order, set later."""
    rng = random.Random(seed)
    used: set[int] = set()
    events: list[Ev] = []
    plans = {f"f{i:02d}": PLANS[i % 4] for i in range(70)}
    for user in plans:
        for _ in range(rng.randint(0, 4)):
            center = rng.randrange(LO - DAY, HI + DAY)
            for _ in range(rng.randint(1, 9)):
                t = center + int(rng.expovariate(1 / (2 * HOUR)))
                while t in used:
                    t += 1
                used.add(t)
                name = rng.choices(["Visit", "Cart", "Pay", "Ping", "Rate"], [35, 20, 15, 25, 5])[0]
                props: dict[str, Any] = {"p": rng.randint(0, 3)}
                cat = rng.choice(CATS)
                if cat is not None:
                    props["cat"] = cat
                events.append(Ev(user, t * US, 0, name, props))
    # Strict-order users: one attempt each (see test_strict_agrees_with_windowfunnel).
    for i in range(40):
        t = LO + rng.randrange(6 * DAY)
        seq = ["Noise"] * rng.randint(0, 2) + ["SA"]
        for name in ("SB", "SC"):
            if rng.random() < 0.3:
                seq.append("Noise")
            if rng.random() < 0.75:
                seq.append(name)
        seq += ["Noise"] * rng.randint(0, 2)
        for name in seq:
            t += rng.randint(60, 3 * HOUR)
            while t in used:
                t += 1
            used.add(t)
            events.append(Ev(f"s{i:02d}", t * US, 0, name, {}))
    return events, plans


def with_ties(seed: int = 5) -> list[Ev]:
    """Events with equal timestamps for the same user: order is arrival (seq) order."""
    rng = random.Random(seed)
    out = []
    for i in range(15):
        t = LO + rng.randrange(3 * DAY)
        for k, name in enumerate(rng.choices(["TA", "TB", "TC"], k=8)):
            out.append(Ev(f"t{i:02d}", t * US, 0, name, {"i": k}))  # distinct: no dedup
            t += rng.choice([0, 0, 60])
    return out


@pytest.fixture(scope="module")
def data() -> list[Ev]:
    events, _ = generate()
    return events + with_ties()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, data: list[Ev]) -> Iterator[NudgeServer]:
    server = start_server(tmp_path_factory.mktemp("funnels"))
    try:
        _, plans = generate()
        r = server.upload([{"type": "profile", "identity": u, "ts": 1_700_000_000,
                            "profileData": {"Plan": p} if p else {"Seen": True}}
                           for u, p in plans.items()])
        assert r.status_code == 200, r.text
        rng = random.Random(3)
        order = list(range(len(data)))
        rng.shuffle(order)
        # Ties keep their relative order (arrival order is what breaks them); the rest is
        # shuffled, so events arrive out of time order.
        ties = [i for i in order if data[i].event.startswith("T")]
        rest = [i for i in order if not data[i].event.startswith("T")]
        sent = rest[: len(rest) // 2] + sorted(ties) + rest[len(rest) // 2:]
        for n, i in enumerate(sent):
            e = data[i]
            data[i] = Ev(e.user, e.t, n, e.event, e.props)
        for k in range(0, len(sent), 250):
            batch = [data[i] for i in sent[k:k + 250]]
            r = server.upload([{"type": "event", "identity": e.user, "ts": e.t // US,
                                "evtName": e.event, "evtData": e.props} for e in batch])
            assert r.status_code == 200 and r.json()["processed"] == len(batch), r.text
        yield server
    finally:
        server.stop()


def funnel(srv: NudgeServer, steps: list[Any], **extra: Any) -> dict[str, Any]:
    body = {"steps": [s if isinstance(s, dict) else {"event": s} for s in steps],
            "from": LO, "to": HI, "window": {"days": 1}, **extra}
    return post(srv, "funnels", body)


def reference(data: list[Ev], names: list[str], order: str = "ordered", window: int = DAY,
              within: list[int | None] | None = None, lo: int = LO, hi: int = HI,
              preds: list[Any] | None = None, group_of: Any = None) -> dict[Any, dict[str, Reach]]:
    steps = preds or [is_event(n) for n in names]
    within_us = [None if w is None else w * US for w in (within or [None] * len(steps))]
    return funnel_report(data, steps, order, window * US, within_us, lo * US, hi * US, group_of)


def check(out: dict[str, Any], reaches: dict[str, Reach], n: int) -> None:
    """Counts, rates, times from the start and the time-to-convert histogram."""
    counts = funnel_counts(reaches, n)
    assert [s["users"] for s in out["steps"]] == counts
    assert out["entered"] == counts[0] and out["converted"] == counts[-1]
    assert out["conversion"] == (counts[-1] / counts[0] if counts[0] else None)
    for k in range(1, n):
        durs = [r.first[k] for r in reaches.values() if r.first[k] is not None]
        step = out["steps"][k]
        assert step["dropped"] == counts[k - 1] - counts[k]
        med, p90 = quantile(durs, 0.5), quantile(durs, 0.9)
        assert step["time_from_start"] == {"median_s": None if med is None else med / US,
                                           "p90_s": None if p90 is None else p90 / US}
    ttc = [r.first[-1] / US for r in reaches.values() if r.first[-1] is not None]
    hist = out["time_to_convert"]["histogram"]
    assert sum(b["users"] for b in hist) == len(ttc)
    for b in hist:
        last = b is hist[-1]
        assert b["users"] == sum(1 for x in ttc if b["from_s"] <= x and
                                 (x <= b["to_s"] if last else x < b["to_s"]))


# -- orders and windows -------------------------------------------------------------------------
@pytest.mark.parametrize(("order", "window", "within"), [
    ("ordered", DAY, None), ("ordered", 6 * HOUR, [None, HOUR, 2 * HOUR]),
    ("strict", DAY, None), ("strict", 12 * HOUR, [None, None, 30 * 60]),
    ("any", DAY, None), ("any", 3 * HOUR, None)])
def test_matches_reference(srv: NudgeServer, data: list[Ev], order: str, window: int,
                           within: list[int | None] | None) -> None:
    steps: list[Any] = [{"event": "Visit"}, {"event": "Cart"}, {"event": "Pay"}]
    for step, w in zip(steps, within or [], strict=False):
        if w is not None:
            step["within"] = {"minutes": w / 60}
    out = funnel(srv, steps, order=order, window={"hours": window / HOUR})
    assert out["order"] == order and out["window_s"] == window
    check(out, reference(data, ["Visit", "Cart", "Pay"], order, window, within)[None], 3)
    assert out["entered"] > 20 and out["converted"] > 3  # the data exercise every step


def test_property_filters_and_repeated_event(srv: NudgeServer, data: list[Ev]) -> None:
    """A step may repeat an event (with other filters); one event fills one step."""
    steps = [{"event": "Visit", "where": [{"property": "p", "op": "gte", "value": 1}]},
             {"event": "Visit"},
             {"event": "Pay", "where": [{"property": "cat", "op": "in", "value": ["x", "y"]}]}]
    preds = [is_event("Visit", p=lambda v: v >= 1), is_event("Visit"),
             is_event("Pay", cat=lambda v: v in ("x", "y"))]
    for order in ("ordered", "strict", "any"):
        out = funnel(srv, steps, order=order, window={"days": 2})
        check(out, reference(data, [], order, 2 * DAY, preds=preds)[None], 3)


def test_ten_steps(srv: NudgeServer, data: list[Ev]) -> None:
    names = ["Visit", "Cart", "Visit", "Cart", "Pay", "Visit", "Ping", "Cart", "Pay", "Rate"]
    out = funnel(srv, names, window={"days": 7})
    check(out, reference(data, names, window=7 * DAY)[None], 10)


def test_ties_in_arrival_order(srv: NudgeServer, data: list[Ev]) -> None:
    for order in ("ordered", "strict", "any"):
        out = funnel(srv, ["TA", "TB", "TC"], order=order, window={"hours": 1})
        check(out, reference(data, ["TA", "TB", "TC"], order, HOUR)[None], 3)


def test_later_steps_may_follow_the_range(srv: NudgeServer, data: list[Ev]) -> None:
    """Entering counts only inside [from, to); conversion may come up to a window later."""
    lo, hi = local(2026, 10, 30, 12), local(2026, 11, 2, 12)
    out = post(srv, "funnels", {"steps": [{"event": "Visit"}, {"event": "Pay"}],
                                "from": lo, "to": hi, "window": {"days": 1}})
    ref = reference(data, ["Visit", "Pay"], lo=lo, hi=hi)[None]
    check(out, ref, 2)
    assert any(r.first[1] is not None for r in ref.values())


# -- ClickHouse ---------------------------------------------------------------------------------
def _window_funnel(data: list[Ev], tmp: Path, conds: list[str], lo: int, hi: int, window: int,
                   mode: str = "", names: list[str] | None = None) -> list[int]:
    """Users per level 1…n by windowFunnel over the rows Nudge reads."""
    path = to_parquet(data, tmp / "events.parquet", ("p", "cat"))
    names_sql = "" if names is None else \
        "AND event IN (" + ", ".join(f"'{n}'" for n in names) + ")"
    m = f", '{mode}'" if mode else ""
    rows = chdb_rows(f"""
        SELECT level, count() AS users FROM (
          SELECT user, windowFunnel({window * US}{m})(toUInt64(ts), {', '.join(conds)}) AS level
          FROM file('{path}', Parquet)
          WHERE ts >= {lo * US} AND ts < {(hi + window) * US} {names_sql}
          GROUP BY user) GROUP BY level""")
    per = {int(r["level"]): int(r["users"]) for r in rows}
    n = len(conds)
    return [sum(v for k, v in per.items() if k >= level) for level in range(1, n + 1)]


def test_ordered_agrees_with_windowfunnel(srv: NudgeServer, data: list[Ev], tmp_path: Path) -> None:
    plain = [e for e in data if e.user.startswith("f")]
    conds = [f"event = 'Visit' AND ts < {HI * US}", "event = 'Cart'", "event = 'Pay'"]
    expect = _window_funnel(plain, tmp_path, conds, LO, HI, DAY,
                            names=["Visit", "Cart", "Pay"])
    out = funnel(srv, ["Visit", "Cart", "Pay"], window={"days": 1})
    assert [s["users"] for s in out["steps"]] == expect
    # With property filters and a repeated event: one event fills one step, which is
    # ClickHouse's 'strict_once' (by default one event may fill several steps).
    conds = [f"event = 'Visit' AND p >= 1 AND ts < {HI * US}", "event = 'Visit'",
             "event = 'Pay' AND cat IN ('x', 'y')"]
    expect = _window_funnel(plain, tmp_path, conds, LO, HI, 2 * DAY, "strict_once",
                            names=["Visit", "Pay"])
    out = funnel(srv, [{"event": "Visit", "where": [{"property": "p", "op": "gte", "value": 1}]},
                       {"event": "Visit"},
                       {"event": "Pay", "where": [{"property": "cat", "op": "in",
                                                   "value": ["x", "y"]}]}],
                 window={"days": 2})
    assert [s["users"] for s in out["steps"]] == expect


def test_strict_agrees_with_windowfunnel(srv: NudgeServer, data: list[Ev], tmp_path: Path) -> None:
    """On users with one attempt and each step event at most once, ClickHouse's strict_order
    and our strict order coincide (docs/analytics.md says where they differ)."""
    one_attempt = [e for e in data if e.user.startswith("s")]
    conds = [f"event = 'SA' AND ts < {HI * US}", "event = 'SB'", "event = 'SC'"]
    expect = _window_funnel(one_attempt, tmp_path, conds, LO, HI, DAY, "strict_order")
    out = funnel(srv, ["SA", "SB", "SC"], order="strict", window={"days": 1})
    assert [s["users"] for s in out["steps"]] == expect
    assert expect[0] > expect[1] > expect[2] > 0


def test_strict_differs_from_clickhouse_as_documented() -> None:
    """ClickHouse's strict_order stops at the first interruption after the first entry and
    lets repeated step events through; ours takes the best run of consecutive events."""
    def levels(seq: str) -> tuple[int, int]:
        evs = [Ev("u", i * US, i, c, {}) for i, c in enumerate(seq)]
        ours = funnel_report(evs, [is_event(c) for c in "ABC"], "strict", 100 * US,
                             [None] * 3, 0, 100 * US)[None]["u"].level
        rows = ",".join(f"({i},'{c}')" for i, c in enumerate(seq))
        ch = chdb_rows(f"SELECT windowFunnel(100, 'strict_order')(toUInt64(t), e = 'A', "
                       f"e = 'B', e = 'C') AS level FROM values('t UInt32, e String', {rows})")
        return ours, int(ch[0]["level"])

    assert levels("AXAB") == (2, 1)  # a second attempt
    assert levels("ABBC") == (2, 3)  # a repeated step in between
    assert levels("ABAC") == (2, 3)  # a restart in between
    assert levels("XABXC") == (2, 2)


# -- breakdown and trend ------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["ordered", "any"])
def test_breakdown_by_event_property(srv: NudgeServer, data: list[Ev], order: str) -> None:
    out = funnel(srv, ["Visit", "Cart", "Pay"], order=order,
                 breakdown={"property": "cat", "limit": 2})
    entering = [e.props.get("cat") for e in data if LO * US <= e.t < HI * US
                and (e.event == "Visit" or order == "any" and e.event in ("Cart", "Pay"))]
    top, other = ranked(entering, 2)
    assert [g.get("value") for g in out["breakdown"]["groups"]] == top + ([None] if other else [])
    group = {v: i for i, v in enumerate(top)}
    ref = reference(data, ["Visit", "Cart", "Pay"], order,
                    group_of=lambda e: group.get(e.props.get("cat"), len(top)))
    for i, g in enumerate(out["breakdown"]["groups"]):
        assert g["users"] == funnel_counts(ref.get(i, {}), 3), g


def test_breakdown_by_profile_property(srv: NudgeServer, data: list[Ev]) -> None:
    _, plans = generate()
    out = funnel(srv, ["Visit", "Cart", "Pay"], breakdown={"scope": "profile",
                                                           "property": "Plan", "limit": 2})
    entering = [plans[e.user] for e in data if e.event == "Visit" and LO * US <= e.t < HI * US
                and e.user in plans]
    top, other = ranked(entering, 2)
    labels = out["breakdown"]["groups"]
    assert [g.get("value") for g in labels] == top + ([None] if other else [])
    ref = reference(data, ["Visit", "Cart", "Pay"])[None]
    for i, g in enumerate(labels):
        members = {u: r for u, r in ref.items() if u in plans and
                   (top.index(plans[u]) if plans[u] in top else len(top)) == i}
        assert g["users"] == funnel_counts(members, 3)


def test_conversion_trend_by_local_day(srv: NudgeServer, data: list[Ev]) -> None:
    out = funnel(srv, ["Visit", "Cart", "Pay"], interval="day")
    trend = out["trend"]
    days = [dt.date(2026, 10, 28) + dt.timedelta(days=i) for i in range(8)]
    assert trend["buckets"] == [dt.datetime.combine(d, dt.time(), TZ).isoformat() for d in days]
    ref = reference(data, ["Visit", "Cart", "Pay"],
                    group_of=lambda e: dt.datetime.fromtimestamp(e.t / US, TZ).date())
    for d, users, rate in zip(days, trend["users"], trend["conversion"], strict=True):
        counts = funnel_counts(ref.get(d, {}), 3)
        assert users == counts
        assert rate == (counts[-1] / counts[0] if counts[0] else None)
    # 2026-11-01 has 25 hours; every entering event falls in exactly one day.
    entered = sum(1 for e in data if e.event == "Visit" and LO * US <= e.t < HI * US)
    assert entered >= sum(u[0] for u in trend["users"]) >= out["entered"]


def test_segment_and_profile_filters(srv: NudgeServer, data: list[Ev]) -> None:
    _, plans = generate()
    pro = [e for e in data if plans.get(e.user) == "pro"]
    for extra in ({"segment": {"profile": {"property": "Plan", "op": "eq", "value": "pro"}}},
                  {"profile_where": [{"property": "Plan", "op": "eq", "value": "pro"}]}):
        out = funnel(srv, ["Visit", "Cart", "Pay"], **extra)
        check(out, reference(pro, ["Visit", "Cart", "Pay"])[None], 3)
        assert 0 < out["entered"] < funnel(srv, ["Visit", "Cart", "Pay"])["entered"]


# -- who converted or dropped -------------------------------------------------------------------
def users(srv: NudgeServer, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{srv.url}/1/analytics/funnels/users", json=body, headers=srv.headers,
                      timeout=60)


def test_users_who_converted_or_dropped(srv: NudgeServer, data: list[Ev]) -> None:
    body: dict[str, Any] = {"steps": [{"event": "Visit"}, {"event": "Cart"}, {"event": "Pay"}],
                            "from": LO, "to": HI, "window": {"days": 1}}
    ref = reference(data, ["Visit", "Cart", "Pay"])[None]
    for step, status, want in [
            (3, "converted", {u for u, r in ref.items() if r.level >= 3}),
            (2, "dropped", {u for u, r in ref.items() if r.level == 1}),
            (1, "converted", {u for u, r in ref.items() if r.level >= 1})]:
        got, cursor, pages = [], 0, 0
        while cursor is not None:
            r = users(srv, {**body, "step": step, "status": status, "limit": 7, "cursor": cursor})
            assert r.status_code == 200, r.text
            page = r.json()
            assert page["total"] == len(want)
            got += page["users"]
            cursor, pages = page["next_cursor"], pages + 1
        assert {u["identity"] for u in got} == want and len(got) == len(want)
        assert [u["id"] for u in got] == sorted(u["id"] for u in got)
        assert pages == max(1, -(-len(want) // 7))
        r = users(srv, {**body, "step": step, "status": status, "format": "csv"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert {row["identity"] for row in rows} == want


# -- edges and bad requests ---------------------------------------------------------------------
def test_empty_funnel(srv: NudgeServer) -> None:
    out = funnel(srv, ["Never", "Happened"], breakdown={"property": "cat"}, interval="week")
    assert [s["users"] for s in out["steps"]] == [0, 0]
    assert out["conversion"] is None and out["steps"][1]["conversion"] is None
    assert out["time_to_convert"]["median_s"] is None
    assert all(b["users"] == 0 for b in out["time_to_convert"]["histogram"])
    assert all(u == [0, 0] for u in out["trend"]["users"])
    r = users(srv, {"steps": [{"event": "Never"}, {"event": "Happened"}], "from": LO,
                    "step": 2, "status": "dropped"})
    assert r.status_code == 200 and r.json()["users"] == [] and r.json()["next_cursor"] is None


@pytest.mark.parametrize(("body", "field"), [
    ({"steps": [{"event": "A"}] * 11}, "steps"),
    ({"steps": [{"event": "A"}]}, "steps"),
    ({"window": {"days": 0}}, "window.days"),
    ({"window": {"hours": -1}}, "window.hours"),
    ({"window": {"days": 400}}, "window"),
    ({"from": HI, "to": LO}, "from"),
    ({"interval": "fortnight"}, "interval"),
    ({"order": "sideways"}, "order"),
    ({"steps": [{"event": "A"}, {"evt": "B"}]}, "steps[1].event"),
    ({"steps": [{"event": "A", "within": {"hours": 1}}, {"event": "B"}]}, "steps[0].within"),
    ({"order": "any", "steps": [{"event": "A"}, {"event": "B", "within": {"hours": 1}}]},
     "steps[1].within"),
    ({"steps": [{"event": "A", "where": [{"property": "p", "op": "bogus"}]}, {"event": "B"}]},
     "steps[0].where[0].op"),
    ({"breakdown": {"property": "nope"}}, "breakdown.property"),
    ({"colour": "red"}, "colour"),
])
def test_bad_requests_name_the_field(srv: NudgeServer, body: dict[str, Any], field: str) -> None:
    full = {"steps": [{"event": "A"}, {"event": "B"}], "from": LO, "to": HI, **body}
    assert rejected(srv, "funnels", full) == field


@pytest.mark.parametrize(("extra", "field"), [
    ({"step": 4, "status": "converted"}, "step"), ({"step": 1, "status": "dropped"}, "step"),
    ({"step": 2, "status": "maybe"}, "status"), ({"step": 2, "limit": 5000}, "limit")])
def test_bad_user_requests(srv: NudgeServer, extra: dict[str, Any], field: str) -> None:
    r = users(srv, {"steps": [{"event": "A"}, {"event": "B"}, {"event": "C"}], "from": LO,
                    **extra})
    assert r.status_code == 422 and r.json()["field"] == field


def test_levels_spread(data: list[Ev]) -> None:
    """The generated data reach every level (so the comparisons above are not vacuous)."""
    ref = reference(data, ["Visit", "Cart", "Pay"])[None]
    assert set(Counter(r.level for r in ref.values())) >= {1, 2, 3}
