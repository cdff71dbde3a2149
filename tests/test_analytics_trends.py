"""Trends (``POST /1/analytics/trends``) against a plain-Python reference and ClickHouse.

One server for the module (account in America/New_York); the data (tests/analytics_reference)
are uploaded out of time order through ``/1/upload`` and straddle both 2026 DST changes.
Every figure is compared exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from analytics_reference import (
    Data,
    Event,
    bucket_label,
    by_bucket,
    generate,
    local,
    measure,
    post,
    ranked,
    rejected,
    start_server,
    upload,
)

from conftest import NudgeServer

MARCH = (local(2026, 3, 1), local(2026, 3, 15))  # 14 local days, DST starts on the 8th
NOVEMBER = (local(2026, 10, 26), local(2026, 11, 9))  # DST ends on the 1st


@pytest.fixture(scope="module")
def data() -> Data:
    return generate()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, data: Data) -> Iterator[NudgeServer]:
    server = start_server(tmp_path_factory.mktemp("trends"))
    try:
        upload(server, data)
        yield server
    finally:
        server.stop()


def trend(srv: NudgeServer, series: list[dict[str, Any]], lo: float, hi: float,
          interval: str = "day", **extra: Any) -> dict[str, Any]:
    return post(srv, "trends", {"series": series, "interval": interval, "from": lo, "to": hi,
                                **extra})


def expected(rows: list[Event], labels: list[str], interval: str, name: str,
             prop: str | None = None) -> tuple[list[Any], Any]:
    """Reference values per bucket label, and the total over all rows."""
    per = by_bucket(rows, interval)
    assert set(per) <= set(labels), "an event fell outside every bucket"
    return [measure(per.get(b, []), name, prop) for b in labels], measure(rows, name, prop)


# -- measures and buckets ------------------------------------------------------------------------
MEASURES = [("total", None), ("unique_users", None), ("per_user_avg", None), ("sum", "Amount"),
            ("avg", "Amount"), ("min", "Amount"), ("max", "Amount"), ("median", "Amount"),
            ("p90", "Amount")]


def test_every_measure_per_day_across_spring_forward(srv: NudgeServer, data: Data) -> None:
    series = [{"event": "Purchase", "measure": m, **({"property": p} if p else {})}
              for m, p in MEASURES]
    out = trend(srv, series, *MARCH)
    assert out["timezone"] == "America/New_York"
    assert out["buckets"] == [f"2026-03-{d:02d}T00:00:00-0{5 if d <= 8 else 4}:00"
                              for d in range(1, 15)]
    rows = data.rows("Purchase", *MARCH)
    for s, (m, p) in zip(out["series"], MEASURES, strict=True):
        values, total = expected(rows, out["buckets"], "day", m, p)
        assert (s["measure"], s["values"], s["total"]) == (m, values, total)
    # The 8th is 23 hours long: its events end at local midnight of the 9th (-04:00).
    assert sum(out["series"][0]["values"]) == len(rows)


@pytest.mark.parametrize(("interval", "lo", "hi"), [
    ("minute", local(2026, 3, 8, 1, 50), local(2026, 3, 8, 3, 10)),
    ("hour", local(2026, 10, 31, 20), local(2026, 11, 1, 4)),
    ("day", *NOVEMBER),
    ("week", local(2026, 2, 23), local(2026, 3, 23)),
    ("month", local(2026, 1, 1), local(2026, 12, 1)),
])
def test_every_interval(srv: NudgeServer, data: Data, interval: str, lo: int, hi: int) -> None:
    out = trend(srv, [{"event": "View"}, {"event": "View", "measure": "unique_users"}],
                lo, hi, interval)
    rows = data.rows("View", lo, hi)
    for s, m in zip(out["series"], ("total", "unique_users"), strict=True):
        assert (s["values"], s["total"]) == expected(rows, out["buckets"], interval, m)
    assert len(set(out["buckets"])) == len(out["buckets"])


def test_fall_back_hour_is_two_buckets(srv: NudgeServer) -> None:
    out = trend(srv, [{"event": "View"}], local(2026, 11, 1, 0), local(2026, 11, 1, 3), "hour")
    assert out["buckets"] == ["2026-11-01T00:00:00-04:00", "2026-11-01T01:00:00-04:00",
                              "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"]


def test_spring_forward_skips_an_hour(srv: NudgeServer) -> None:
    out = trend(srv, [{"event": "View"}], local(2026, 3, 8, 0), local(2026, 3, 8, 4), "hour")
    assert out["buckets"] == ["2026-03-08T00:00:00-05:00", "2026-03-08T01:00:00-05:00",
                              "2026-03-08T03:00:00-04:00"]


# -- breakdown, compare, formulas, filters -------------------------------------------------------
@pytest.mark.parametrize(("scope", "prop", "limit"), [
    ("event", "Category", 3), ("event", "Paid", 5), ("profile", "City", 2),
    ("profile", "Plan", 10)])
def test_breakdown_top_values_and_other(srv: NudgeServer, data: Data, scope: str, prop: str,
                                        limit: int) -> None:
    series = [{"event": "Purchase"}, {"event": "Purchase", "measure": "unique_users"},
              {"event": "Purchase", "measure": "sum", "property": "Amount"}]
    out = trend(srv, series, *NOVEMBER, breakdown={"scope": scope, "property": prop,
                                                  "limit": limit})
    rows = data.rows("Purchase", *NOVEMBER)

    def value(e: Event) -> Any:
        return e.props.get(prop) if scope == "event" else data.people[e.user].props.get(prop)

    top, other = ranked((value(e) for e in rows), limit)
    groups = out["breakdown"]["groups"]
    assert groups == [{"value": v} for v in top] + ([{"other": True}] if other else [])
    members: list[Callable[[Event], bool]] = [lambda e, v=v: value(e) == v for v in top]
    if other:
        members.append(lambda e: value(e) not in top)
    for s in out["series"]:
        overall = expected(rows, out["buckets"], "day", s["measure"], s["property"])
        assert (s["values"], s["total"]) == overall
        for got, member in zip(s["groups"], members, strict=True):
            want = expected([e for e in rows if member(e)], out["buckets"], "day",
                            s["measure"], s["property"])
            assert (got["values"], got["total"]) == want


def test_compare_with_previous_period(srv: NudgeServer, data: Data) -> None:
    lo, hi = local(2026, 11, 2), local(2026, 11, 9)
    series = [{"event": "View", "measure": "unique_users"}, {"event": "View"}]
    out = trend(srv, series, lo, hi, compare=True, formulas=["B / A"])
    prev = out["previous"]
    assert (prev["from"], prev["to"]) == ("2026-10-26T00:00:00-04:00",
                                          "2026-11-02T00:00:00-05:00")
    assert prev["buckets"][0] == "2026-10-26T00:00:00-04:00"
    rows = data.rows("View", local(2026, 10, 26), lo)
    for s, m in zip(out["series"], ("unique_users", "total"), strict=True):
        assert (s["previous"]["values"], s["previous"]["total"]) == expected(
            rows, prev["buckets"], "day", m)
    a, b = (s["previous"]["values"] for s in out["series"])
    assert out["formulas"][0]["previous"]["values"] == [y / x if x else None
                                                        for x, y in zip(a, b, strict=True)]


def test_formulas(srv: NudgeServer, data: Data) -> None:
    series = [{"event": "Purchase"}, {"event": "View"},
              {"event": "Signup", "measure": "unique_users"}]
    formulas = [{"expression": "A / B", "name": "purchases per view"},
                "(A - B) * 100 / (A + 0.5)", "-C + 2 * 3", "A / (C - C)"]
    out = trend(srv, series, *MARCH, formulas=formulas)
    a, b, c = (s["values"] for s in out["series"])
    f = out["formulas"]
    assert (f[0]["key"], f[0]["name"], f[0]["expression"]) == ("F1", "purchases per view",
                                                                "A / B")
    assert f[0]["values"] == [x / y if y else None for x, y in zip(a, b, strict=True)]
    assert f[1]["values"] == [(x - y) * 100 / (x + 0.5) for x, y in zip(a, b, strict=True)]
    assert f[2]["values"] == [-z + 2.0 * 3.0 for z in c]
    assert f[3]["values"] == [None] * len(a)  # division by zero is undefined, not an error
    ta, tb = (s["total"] for s in out["series"][:2])
    assert f[0]["total"] == ta / tb


def test_event_and_profile_filters(srv: NudgeServer, data: Data) -> None:
    series = [{"event": "Purchase", "measure": "unique_users",
               "where": [{"property": "Amount", "op": "gte", "value": 50},
                         {"property": "Category", "op": "in", "value": ["books", "toys"]}]},
              {"event": "Purchase", "where": [{"property": "Category", "op": "not_exists"}]}]
    out = trend(srv, series, *MARCH, profile_where=[{"property": "Plan", "op": "eq",
                                                     "value": "pro"}])

    def pro(e: Event) -> bool:
        return data.people[e.user].props["Plan"] == "pro"

    first = data.rows("Purchase", *MARCH, lambda e: pro(e) and e.props.get("Amount", 0) >= 50
                      and e.props.get("Category") in ("books", "toys"))
    second = data.rows("Purchase", *MARCH, lambda e: pro(e) and "Category" not in e.props)
    assert (out["series"][0]["values"], out["series"][0]["total"]) == expected(
        first, out["buckets"], "day", "unique_users")
    assert (out["series"][1]["values"], out["series"][1]["total"]) == expected(
        second, out["buckets"], "day", "total")


def test_profile_breakdown_with_profile_filter_and_segment(srv: NudgeServer, data: Data) -> None:
    out = trend(srv, [{"event": "View", "measure": "unique_users"}], *MARCH,
                breakdown={"scope": "profile", "property": "Plan"},
                profile_where=[{"property": "Plan", "op": "eq", "value": "pro"}],
                segment={"profile": {"property": "Age", "op": "lt", "value": 40}})
    rows = data.rows("View", *MARCH, lambda e: data.people[e.user].props["Plan"] == "pro"
                     and data.people[e.user].props["Age"] < 40)
    assert out["breakdown"]["groups"] == [{"value": "pro"}]
    s = out["series"][0]
    want = expected(rows, out["buckets"], "day", "unique_users")
    assert (s["values"], s["total"]) == want
    assert (s["groups"][0]["values"], s["groups"][0]["total"]) == want


SEGMENT = {"profile": {"property": "City", "op": "in", "value": ["Paris", "Oslo"]}}


def _segment_trend(srv: NudgeServer, data: Data, segment: dict[str, Any]) -> None:
    members = {p.identity for p in data.people.values()
               if p.props.get("City") in ("Paris", "Oslo")}
    rows = data.rows("View", *MARCH, lambda e: e.user in members)
    out = trend(srv, [{"event": "View", "measure": "unique_users"}], *MARCH, segment=segment)
    s = out["series"][0]
    assert (s["values"], s["total"]) == expected(rows, out["buckets"], "day", "unique_users")
    assert 0 < s["total"] < len({e.user for e in data.rows("View", *MARCH)})


def test_segment_filter(srv: NudgeServer, data: Data) -> None:
    _segment_trend(srv, data, SEGMENT)


def test_saved_segment_filter(srv: NudgeServer, data: Data) -> None:
    r = httpx.post(srv.url + "/1/segments", headers=srv.headers,
                   json={"name": "paris or oslo", "definition": SEGMENT})
    assert r.status_code == 201, r.text
    _segment_trend(srv, data, {"id": r.json()["id"]})


# -- empty results and late events ----------------------------------------------------------------
def test_empty_results(srv: NudgeServer) -> None:
    series = [{"event": "Never Happened"}, {"event": "Never Happened", "measure": "unique_users"},
              {"event": "Never Happened", "measure": "per_user_avg"},
              {"event": "Purchase", "measure": "sum", "property": "Amount"},
              {"event": "Purchase", "measure": "median", "property": "Amount"}]
    lo = local(2025, 6, 1)
    out = trend(srv, series, lo, lo + 3 * 86400, breakdown={"property": "Category"},
                compare=True, formulas=["A / B"])
    assert out["breakdown"]["groups"] == []
    assert [s["values"] for s in out["series"]] == [[0] * 3, [0] * 3, [None] * 3,
                                                    [0.0] * 3, [None] * 3]
    assert [s["total"] for s in out["series"]] == [0, 0, None, 0.0, None]
    assert out["formulas"][0]["values"] == [None] * 3
    assert all(s["groups"] == [] for s in out["series"])


def test_late_events_count_in_their_own_bucket(srv: NudgeServer) -> None:
    lo, hi = local(2026, 4, 1), local(2026, 4, 4)
    body = [{"event": "Late"}]
    srv.upload([{"type": "event", "identity": "late-1", "ts": lo + 2 * 86400 + 7200,
                 "evtName": "Late"}])
    before = trend(srv, body, lo, hi)["series"][0]["values"]
    # An event of two days earlier arrives after a newer one (and after a query).
    srv.upload([{"type": "event", "identity": "late-2", "ts": lo + 60, "evtName": "Late"}])
    after = trend(srv, body, lo, hi)["series"][0]["values"]
    assert (before, after) == ([0, 0, 1], [1, 0, 1])


# -- ClickHouse agrees on unique counts ------------------------------------------------------------
@pytest.mark.parametrize("interval", ["day", "week", "hour"])
def test_unique_users_agree_with_clickhouse_uniq_exact(srv: NudgeServer, data: Data,
                                                        tmp_path: Path, interval: str) -> None:
    chdb = pytest.importorskip("chdb")
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "events.parquet"
    pq.write_table(pa.table({
        "user": [e.user for e in data.events], "event": [e.name for e in data.events],
        "ts": pa.array([e.ts * 1_000_000 for e in data.events], pa.timestamp("us", "UTC"))}),
        path)
    lo, hi = local(2026, 10, 28), local(2026, 11, 4)
    start = {"day": "toStartOfDay", "week": "toMonday", "hour": "toStartOfHour"}[interval]
    sql = f"""
        SELECT toUnixTimestamp(toDateTime({start}(toDateTime(ts, 'America/New_York')),
                                           'America/New_York')) AS b,
               uniqExact(user) AS users
        FROM file('{path}', Parquet)
        WHERE event = 'View' AND ts >= toDateTime64({lo}, 6, 'UTC')
          AND ts < toDateTime64({hi}, 6, 'UTC')
        GROUP BY b WITH TOTALS ORDER BY b"""
    result = json.loads(str(chdb.query(sql, "JSON")))
    clickhouse = {bucket_label(int(r["b"]), interval): int(r["users"]) for r in result["data"]}
    out = trend(srv, [{"event": "View", "measure": "unique_users"}], lo, hi, interval)
    s = out["series"][0]
    ours = {b: v for b, v in zip(out["buckets"], s["values"], strict=True) if v}
    assert ours == clickhouse
    assert s["total"] == int(result["totals"]["users"])


# -- bad requests ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("change", "field"), [
    ({"interval": "fortnight"}, "interval"),
    ({"from": local(2026, 3, 2), "to": local(2026, 3, 1)}, "from"),
    ({"from": "yesterday"}, "from"),
    ({"from": None}, "from"),
    ({"series": [{"event": "View", "measure": "mode"}]}, "series[0].measure"),
    ({"series": [{"event": "View", "measure": "sum"}]}, "series[0].property"),
    ({"series": [{"event": "View", "measure": "sum", "property": "Page"}]}, "series[0].property"),
    ({"series": [{"event": "View", "measure": "sum", "property": "Nope"}]}, "series[0].property"),
    ({"series": [{"event": "View", "property": "Seconds"}]}, "series[0].property"),
    ({"series": [{"event": ""}]}, "series[0].event"),
    ({"series": []}, "series"),
    ({"series": [{"event": "View"}] * 11}, "series"),
    ({"series": [{"event": "View", "where": [{"property": "Page", "op": "like",
                                              "value": "x"}]}]}, "series[0].where[0].op"),
    ({"formulas": ["A / "]}, "formulas[0].expression"),
    ({"formulas": ["A / B"]}, "formulas[0].expression"),
    ({"formulas": ["__import__('os')"]}, "formulas[0].expression"),
    ({"formulas": [{"name": "x"}]}, "formulas[0].expression"),
    ({"breakdown": {"property": "Nope"}}, "breakdown.property"),
    ({"breakdown": {"property": "Category", "limit": 0}}, "breakdown.limit"),
    ({"breakdown": {"property": "City", "scope": "account"}}, "breakdown.scope"),
    ({"compare": "yes"}, "compare"),
    ({"profile_where": [{"property": "Plan", "op": "eq"}]}, "profile_where[0].value"),
    ({"interval": "minute", "from": local(2025, 1, 1)}, "interval"),
])
def test_bad_requests_name_the_field(srv: NudgeServer, change: dict[str, Any],
                                     field: str) -> None:
    body = {"series": [{"event": "View"}], "interval": "day", "from": MARCH[0], "to": MARCH[1]}
    body.update(change)
    assert rejected(srv, "trends", body) == field


def test_body_must_be_an_object(srv: NudgeServer) -> None:
    assert rejected(srv, "trends", [1, 2]) == "body"
