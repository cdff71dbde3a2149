"""Retention (``POST /1/analytics/retention``) against the plain-Python reference
(tests/analytics_paths_reference.py) and ClickHouse's ``retention`` function (chDB).

One server for the module, account in America/New_York; the data span the 2026-11-01 DST
change and are uploaded shuffled (out of time order), partly compacted.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from analytics_paths_reference import US, Ev, chdb_rows, is_event, period_index, to_parquet
from analytics_paths_reference import retention as reference_retention
from analytics_reference import TZ, TZ_NAME, local, post, rejected, start_server

from conftest import NudgeServer

DAY, HOUR = 86_400, 3_600
START, END = local(2026, 8, 20), local(2026, 11, 28)  # the data
LO, HI = local(2026, 9, 14), local(2026, 11, 9)  # eight weeks of cohorts, DST ends Nov 1
PLANS = {f"r{i:02d}": ("pro" if i % 3 == 0 else "free") for i in range(80)}


def generate(seed: int = 21) -> list[Ev]:
    """Users who sign up, then come back on fewer and fewer days; some opened the app before
    the cohorts' range (not first-timers), some events sit on local midnights."""
    rng = random.Random(seed)
    events = []
    for user in PLANS:
        day = dt.date(2026, 8, 20) + dt.timedelta(days=rng.randrange(95))
        stay = rng.uniform(0.2, 0.9)
        while day < dt.date(2026, 11, 28):
            midnight = int(dt.datetime.combine(day, dt.time(), TZ).timestamp())
            for _ in range(rng.randint(1, 3)):
                t = midnight + rng.choice([0, DAY - 1, rng.randrange(DAY)])
                events.append(Ev(user, t * US, 0, "Open", {"n": len(events)}))
            if rng.random() < 0.4:
                t = midnight + rng.randrange(DAY)
                events.append(Ev(user, t * US, 0, "Buy", {"p": rng.randint(0, 3),
                                                          "n": len(events)}))
            if rng.random() > stay:
                break
            day += dt.timedelta(days=rng.choice([1, 1, 2, 3, 6, 9]))
    return events


@pytest.fixture(scope="module")
def data() -> list[Ev]:
    return generate()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, data: list[Ev]) -> Iterator[NudgeServer]:
    server = start_server(tmp_path_factory.mktemp("retention"))
    try:
        r = server.upload([{"type": "profile", "identity": u, "ts": 1_700_000_000,
                            "profileData": {"Plan": p}} for u, p in PLANS.items()])
        assert r.status_code == 200, r.text
        order = list(range(len(data)))
        random.Random(8).shuffle(order)
        for k in range(0, len(order), 300):
            batch = [data[i] for i in order[k:k + 300]]
            r = server.upload([{"type": "event", "identity": e.user, "ts": e.t // US,
                                "evtName": e.event, "evtData": e.props} for e in batch])
            assert r.status_code == 200 and r.json()["processed"] == len(batch), r.text
        yield server
    finally:
        server.stop()


def label(d: dt.date) -> str:
    return dt.datetime.combine(d, dt.time(), TZ).isoformat()


def shift(d: dt.date, interval: str, k: int) -> dt.date:
    if interval == "day":
        return d + dt.timedelta(days=k)
    if interval == "week":
        return d + dt.timedelta(days=7 * k)
    months = d.year * 12 + d.month - 1 + k
    return dt.date(months // 12, months % 12 + 1, 1)


def expected(data: list[Ev], body: dict[str, Any], keep: Any = lambda e: True
             ) -> dict[str, tuple[int, list[int | None]]]:
    """Label → (size, retained per period, None for periods that have not begun)."""
    start = is_event("Open")
    back = is_event("Buy", p=lambda v: v >= 1) if body.get("return") else start
    interval = body.get("interval", "day")
    n = body.get("periods", 7)
    ref = reference_retention([e for e in data if keep(e)], start, back,
                              body.get("cohort", "first_time"), interval, n,
                              body.get("mode", "bracketed"), body["from"] * US,
                              body["to"] * US, TZ)
    now = time.time()
    out = {}
    for c, (size, retained) in ref.items():
        out[label(c)] = (size, [None if dt.datetime.combine(shift(c, interval, k), dt.time(),
                                                            TZ).timestamp() > now else x
                                for k, x in enumerate(retained)])
    return out


def check(out: dict[str, Any], want: dict[str, tuple[int, list[int | None]]]) -> None:
    got = {c["start"]: (c["size"], c["retained"]) for c in out["cohorts"]}
    assert set(want) <= set(got)
    for lab, (size, retained) in got.items():
        if lab not in want:
            assert size == 0 and all(x in (0, None) for x in retained)
            continue
        assert (size, retained) == want[lab], lab
    for c in out["cohorts"]:
        assert c["percent"] == [None if x is None or not c["size"] else 100.0 * x / c["size"]
                                for x in c["retained"]]
    assert out["total"]["size"] == sum(s for s, _ in want.values())


# -- against the reference ----------------------------------------------------------------------
@pytest.mark.parametrize("interval,periods", [("day", 10), ("week", 8), ("month", 3)])
@pytest.mark.parametrize("cohort", ["first_time", "any"])
@pytest.mark.parametrize("mode", ["bracketed", "unbounded"])
def test_matches_reference(srv: NudgeServer, data: list[Ev], interval: str, periods: int,
                           cohort: str, mode: str) -> None:
    body = {"start": {"event": "Open"}, "interval": interval, "periods": periods,
            "cohort": cohort, "mode": mode, "from": LO, "to": HI}
    out = post(srv, "retention", body)
    assert (out["interval"], out["periods"], out["cohort"], out["mode"]) == \
        (interval, periods, cohort, mode)
    check(out, expected(data, body))


@pytest.mark.parametrize("mode", ["bracketed", "unbounded"])
def test_different_return_event_with_filter(srv: NudgeServer, data: list[Ev], mode: str) -> None:
    body = {"start": {"event": "Open"}, "cohort": "any", "interval": "week", "periods": 6,
            "mode": mode, "from": LO, "to": HI,
            "return": {"event": "Buy", "where": [{"property": "p", "op": "gte", "value": 1}]}}
    out = post(srv, "retention", body)
    assert out["return"] == {"event": "Buy"}
    check(out, expected(data, body))
    assert any(c["retained"][0] not in (0, c["size"]) for c in out["cohorts"])


def test_days_across_dst_change(srv: NudgeServer, data: list[Ev]) -> None:
    lo, hi = local(2026, 10, 30), local(2026, 11, 4)
    body = {"start": {"event": "Open"}, "cohort": "any", "interval": "day", "periods": 3,
            "from": lo, "to": hi}
    out = post(srv, "retention", body)
    assert [c["start"] for c in out["cohorts"]] == [
        "2026-10-30T00:00:00-04:00", "2026-10-31T00:00:00-04:00", "2026-11-01T00:00:00-04:00",
        "2026-11-02T00:00:00-05:00", "2026-11-03T00:00:00-05:00"]
    check(out, expected(data, body))


def test_segment_filter(srv: NudgeServer, data: list[Ev]) -> None:
    body = {"start": {"event": "Open"}, "cohort": "first_time", "interval": "week",
            "periods": 4, "from": LO, "to": HI,
            "segment": {"profile": {"property": "Plan", "op": "eq", "value": "pro"}}}
    out = post(srv, "retention", body)
    check(out, expected(data, body, keep=lambda e: PLANS[e.user] == "pro"))


def test_future_periods_are_null(srv: NudgeServer) -> None:
    out = post(srv, "retention", {"start": {"event": "Open"}, "interval": "week",
                                  "periods": 12, "from": LO, "to": HI})
    last = out["cohorts"][-1]
    assert last["retained"][-1] is None and last["percent"][-1] is None
    assert out["cohorts"][0]["retained"][0] == out["cohorts"][0]["size"]


# -- ClickHouse ---------------------------------------------------------------------------------
RELATIVE = {"day": "toRelativeDayNum", "week": "toRelativeWeekNum",
            "month": "toRelativeMonthNum"}


def clickhouse(data: list[Ev], tmp: Path, body: dict[str, Any], cohort_dates: list[dt.date]
               ) -> dict[str, list[int]]:
    """Per cohort, ``sumForEach(retention(start in C, return in C + k …))`` per user."""
    path = to_parquet(data, tmp / "retention.parquet", ("p",))
    rel = RELATIVE[body["interval"]]
    period = f"{rel}(fromUnixTimestamp64Micro(ts, '{TZ_NAME}'), '{TZ_NAME}')"
    lo, hi = body["from"] * US, body["to"] * US
    start = f"event = 'Open' AND ts >= {lo} AND ts < {hi}"
    if body["cohort"] == "first_time":
        start += " AND ts = first"
    back = "event = 'Buy' AND p >= 1" if body.get("return") else "event = 'Open'"
    cmp = "=" if body.get("mode", "bracketed") == "bracketed" else ">="
    cohorts = ", ".join(f"{rel}(toDateTime('{d} 12:00:00', '{TZ_NAME}'), '{TZ_NAME}')"
                        for d in cohort_dates)
    conds = [f"{start} AND {period} = c"] + [
        f"{back} AND {period} {cmp} c + {k}" for k in range(body["periods"] + 1)]
    # Every user once per cohort (ARRAY JOIN): one query for all cohorts.
    rows = chdb_rows(f"""
        SELECT c, sumForEach(r) AS cells FROM (
          SELECT user, c, retention({', '.join(f'ifNull({x}, 0)' for x in conds)}) AS r
          FROM file('{path}', Parquet) AS e
          LEFT JOIN (SELECT user, min(ts) AS first FROM file('{path}', Parquet)
                     WHERE event = 'Open' GROUP BY user) f USING user
          ARRAY JOIN [{cohorts}] AS c
          GROUP BY user, c) GROUP BY c""")
    by_number = {int(r["c"]): [int(x) for x in r["cells"]] for r in rows}
    numbers = chdb_rows(f"SELECT [{cohorts}] AS n")[0]["n"]
    return {label(d): by_number[int(n)] for d, n in zip(cohort_dates, numbers, strict=True)}


@pytest.mark.parametrize(("interval", "cohort", "mode", "ret"), [
    ("week", "any", "bracketed", False), ("day", "first_time", "bracketed", True),
    ("week", "first_time", "unbounded", False), ("month", "any", "unbounded", True)])
def test_agrees_with_clickhouse_retention(srv: NudgeServer, data: list[Ev], tmp_path: Path,
                                          interval: str, cohort: str, mode: str,
                                          ret: bool) -> None:
    body: dict[str, Any] = {"start": {"event": "Open"}, "interval": interval,
                            "periods": {"day": 12, "week": 6, "month": 2}[interval],
                            "cohort": cohort, "mode": mode, "from": LO, "to": HI}
    if ret:
        body["return"] = {"event": "Buy", "where": [{"property": "p", "op": "gte", "value": 1}]}
    out = post(srv, "retention", body)
    dates = [dt.date.fromisoformat(c["start"][:10]) for c in out["cohorts"]]
    ch = clickhouse(data, tmp_path, body, dates)
    for c in out["cohorts"]:
        want = ch[c["start"]]
        assert c["size"] == want[0]
        # ClickHouse counts every period; ours leaves periods that have not begun empty.
        assert [x for x in c["retained"] if x is not None] == \
            want[1:1 + sum(x is not None for x in c["retained"])]
    assert sum(c["size"] for c in out["cohorts"]) > 20


def test_period_index_matches_calendar() -> None:
    assert period_index(dt.date(2026, 10, 26), dt.date(2026, 11, 2), "week") == 1
    assert period_index(dt.date(2026, 11, 1), dt.date(2027, 1, 1), "month") == 2


# -- edges and bad requests ---------------------------------------------------------------------
def test_empty(srv: NudgeServer) -> None:
    out = post(srv, "retention", {"start": {"event": "Nothing"}, "interval": "week",
                                  "periods": 2, "from": LO, "to": HI})
    assert out["cohorts"] and all(c["size"] == 0 and c["percent"][0] is None
                                  for c in out["cohorts"])
    assert out["total"]["size"] == 0 and out["total"]["percent"] == [None, None, None]


@pytest.mark.parametrize(("body", "field"), [
    ({"interval": "hour"}, "interval"), ({"interval": "fortnight"}, "interval"),
    ({"periods": 0}, "periods"), ({"periods": 500}, "periods"),
    ({"from": HI, "to": LO}, "from"), ({"start": None}, "start"),
    ({"start": {"event": ""}}, "start.event"), ({"return": {"where": []}}, "return.event"),
    ({"cohort": "every"}, "cohort"), ({"mode": "loose"}, "mode"), ({"window": 3}, "window"),
])
def test_bad_requests_name_the_field(srv: NudgeServer, body: dict[str, Any], field: str) -> None:
    full = {"start": {"event": "Open"}, "from": LO, "to": HI, **body}
    assert rejected(srv, "retention", full) == field
