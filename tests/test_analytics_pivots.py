"""Pivots (``POST /1/analytics/pivot``) and histograms (``POST /1/analytics/histogram``)
against plain-Python references on data uploaded through ``/1/upload``."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from analytics_reference import (
    Data,
    Event,
    generate,
    local,
    post,
    ranked,
    rejected,
    start_server,
    upload,
)

from conftest import NudgeServer

RANGE = (local(2026, 2, 26), local(2026, 11, 9))


@pytest.fixture(scope="module")
def data() -> Data:
    return generate(seed=11)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, data: Data) -> Iterator[NudgeServer]:
    server = start_server(tmp_path_factory.mktemp("pivots"))
    try:
        upload(server, data)
        yield server
    finally:
        server.stop()


def dim_value(data: Data, scope: str, prop: str) -> Callable[[Event], Any]:
    if scope == "event":
        return lambda e: e.props.get(prop)
    return lambda e: data.people[e.user].props.get(prop)


def groups(values: list[Any], limit: int) -> tuple[list[dict[str, Any]], list[Any], bool]:
    top, other = ranked(values, limit)
    return [{"value": v} for v in top] + ([{"other": True}] if other else []), top, other


def members(top: list[Any], other: bool) -> list[Callable[[Any], bool]]:
    out: list[Callable[[Any], bool]] = [lambda v, t=t: v == t for t in top]
    if other:
        out.append(lambda v: v not in top)
    return out


def count(rows: list[Any], measure: str) -> int:
    return len({e.user for e in rows}) if measure == "unique_users" else len(rows)


# -- pivots ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("measure", "scope", "prop", "limit"), [
    ("total", "event", "Category", 4), ("unique_users", "event", "Category", 10),
    ("total", "profile", "City", 10), ("unique_users", "event", "Paid", 10)])
def test_pivot_one_dimension(srv: NudgeServer, data: Data, measure: str, scope: str,
                             prop: str, limit: int) -> None:
    out = post(srv, "pivot", {"event": "Purchase", "from": RANGE[0], "to": RANGE[1],
                              "measure": measure,
                              "rows": {"scope": scope, "property": prop, "limit": limit}})
    rows = data.rows("Purchase", *RANGE)
    value = dim_value(data, scope, prop)
    labels, top, other = groups([value(e) for e in rows], limit)
    assert out["rows"] == {"scope": scope, "property": prop, "groups": labels}
    assert out["columns"] is None
    assert out["values"] == [count([e for e in rows if m(value(e))], measure)
                             for m in members(top, other)]
    assert out["total"] == count(rows, measure)


@pytest.mark.parametrize("measure", ["total", "unique_users"])
def test_pivot_two_dimensions_with_filters(srv: NudgeServer, data: Data, measure: str) -> None:
    body = {"event": "Purchase", "from": RANGE[0], "to": RANGE[1], "measure": measure,
            "where": [{"property": "Amount", "op": "lt", "value": 80}],
            "profile_where": [{"property": "Age", "op": "gte", "value": 30}],
            "rows": {"property": "Category", "limit": 3},
            "columns": {"scope": "profile", "property": "City"}}
    out = post(srv, "pivot", body)
    rows = data.rows("Purchase", *RANGE, lambda e: e.props.get("Amount", 1e9) < 80
                     and data.people[e.user].props["Age"] >= 30)
    rv, cv = dim_value(data, "event", "Category"), dim_value(data, "profile", "City")
    rlabels, rtop, rother = groups([rv(e) for e in rows], 3)
    clabels, ctop, cother = groups([cv(e) for e in rows], 20)
    assert (out["rows"]["groups"], out["columns"]["groups"]) == (rlabels, clabels)
    rm, cm = members(rtop, rother), members(ctop, cother)
    assert out["values"] == [[count([e for e in rows if r(rv(e)) and c(cv(e))], measure)
                              for c in cm] for r in rm]
    assert out["row_totals"] == [count([e for e in rows if r(rv(e))], measure) for r in rm]
    assert out["column_totals"] == [count([e for e in rows if c(cv(e))], measure) for c in cm]
    assert out["total"] == count(rows, measure)


def test_pivot_of_profiles(srv: NudgeServer, data: Data) -> None:
    segment = {"profile": {"property": "Age", "op": "lt", "value": 50}}
    out = post(srv, "pivot", {"source": "profiles", "rows": {"property": "City"},
                              "columns": {"property": "Plan"}, "segment": segment,
                              "profile_where": [{"property": "Timezone", "op": "exists"}]})
    people = [p for p in data.people.values() if p.props["Age"] < 50 and "Timezone" in p.props]
    cities = groups([p.props.get("City") for p in people], 20)
    plans = groups([p.props["Plan"] for p in people], 20)
    assert (out["rows"]["groups"], out["columns"]["groups"]) == (cities[0], plans[0])
    assert out["values"] == [[sum(1 for p in people if r(p.props.get("City"))
                                  and c(p.props["Plan"])) for c in members(*plans[1:])]
                             for r in members(*cities[1:])]
    assert out["total"] == len(people)


def test_pivot_unique_users_agree_with_clickhouse(srv: NudgeServer, data: Data,
                                                   tmp_path: Path) -> None:
    chdb = pytest.importorskip("chdb")
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = data.rows("Purchase", *RANGE)
    path = tmp_path / "purchases.parquet"
    pq.write_table(pa.table({"user": [e.user for e in rows],
                             "category": [e.props.get("Category") for e in rows]}), path)
    result = json.loads(str(chdb.query(
        f"SELECT category, uniqExact(user) AS users FROM file('{path}', Parquet) "
        "GROUP BY category WITH TOTALS", "JSON")))
    clickhouse = {r["category"]: int(r["users"]) for r in result["data"]}
    out = post(srv, "pivot", {"event": "Purchase", "from": RANGE[0], "to": RANGE[1],
                              "measure": "unique_users", "rows": {"property": "Category"}})
    ours = {g["value"]: v for g, v in zip(out["rows"]["groups"], out["values"], strict=True)}
    assert ours == clickhouse
    assert out["total"] == int(result["totals"]["users"])


def test_pivot_empty(srv: NudgeServer) -> None:
    out = post(srv, "pivot", {"event": "Nothing", "from": RANGE[0], "to": RANGE[1],
                              "rows": {"property": "Category"},
                              "columns": {"property": "City", "scope": "profile"}})
    assert (out["rows"]["groups"], out["values"], out["total"]) == ([], [], 0)


# -- histograms ----------------------------------------------------------------------------------
def reference_bins(values: list[float], lo: float, hi: float, bins: int) -> list[int]:
    width = (hi - lo) / bins if hi > lo else 1.0
    out = [0] * bins
    for v in values:
        if lo <= v <= hi:
            out[min(math.floor((v - lo) / width), bins - 1)] += 1
    return out


def test_histogram_of_an_event_property(srv: NudgeServer, data: Data) -> None:
    out = post(srv, "histogram", {"event": "Purchase", "from": RANGE[0], "to": RANGE[1],
                                  "property": "Amount", "bins": 7})
    rows = data.rows("Purchase", *RANGE)
    values = [e.props["Amount"] for e in rows if "Amount" in e.props]
    lo, hi = min(values), max(values)
    assert (out["count"], out["missing"], out["min"], out["max"]) == (
        len(values), len(rows) - len(values), lo, hi)
    assert [b["count"] for b in out["bins"]] == reference_bins(values, lo, hi, 7)
    assert (out["bins"][0]["from"], out["bins"][-1]["to"]) == (lo, hi)
    assert (out["below"], out["above"]) == (0, 0)


def test_histogram_with_bounds_and_filters(srv: NudgeServer, data: Data) -> None:
    body = {"event": "View", "from": RANGE[0], "to": RANGE[1], "property": "Seconds",
            "bins": 4, "min": 10, "max": 90, "where": [{"property": "Page", "op": "eq",
                                                         "value": "cart"}]}
    out = post(srv, "histogram", body)
    values = [e.props["Seconds"] for e in data.rows("View", *RANGE)
              if e.props["Page"] == "cart"]
    assert [b["count"] for b in out["bins"]] == reference_bins(values, 10, 90, 4)
    assert [(b["from"], b["to"]) for b in out["bins"]] == [(10, 30), (30, 50), (50, 70),
                                                           (70, 90)]
    assert out["below"] == sum(v < 10 for v in values)
    assert out["above"] == sum(v > 90 for v in values)


def test_histogram_of_a_profile_property(srv: NudgeServer, data: Data) -> None:
    out = post(srv, "histogram", {"source": "profiles", "property": "Age", "bins": 5})
    ages = [p.props["Age"] for p in data.people.values()]
    assert [b["count"] for b in out["bins"]] == reference_bins(ages, min(ages), max(ages), 5)
    assert out["count"] == len(ages)


def test_histogram_empty(srv: NudgeServer) -> None:
    out = post(srv, "histogram", {"event": "Nothing", "from": RANGE[0], "to": RANGE[1],
                                  "property": "Amount"})
    assert (out["count"], out["bins"], out["min"]) == (0, [], None)


# -- bad requests ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("report", "body", "field"), [
    ("pivot", {"event": "Purchase", "from": RANGE[0]}, "rows"),
    ("pivot", {"event": "Purchase", "from": RANGE[0], "rows": {"property": "Nope"}},
     "rows.property"),
    ("pivot", {"event": "Purchase", "from": RANGE[0], "rows": {"property": "Category"},
               "measure": "sum"}, "measure"),
    ("pivot", {"source": "profiles", "rows": {"property": "Category", "scope": "event"}},
     "rows.scope"),
    ("pivot", {"source": "profiles", "event": "Purchase", "rows": {"property": "City"}},
     "event"),
    ("pivot", {"source": "warehouse", "rows": {"property": "City"}}, "source"),
    ("pivot", {"event": "Purchase", "rows": {"property": "Category"}}, "from"),
    ("pivot", {"event": "Purchase", "from": RANGE[1], "to": RANGE[0],
               "rows": {"property": "Category"}}, "from"),
    ("histogram", {"event": "Purchase", "from": RANGE[0], "property": "Category"}, "property"),
    ("histogram", {"event": "Purchase", "from": RANGE[0], "property": "Amount", "bins": 0},
     "bins"),
    ("histogram", {"event": "Purchase", "from": RANGE[0], "property": "Amount", "min": 5,
                   "max": 1}, "min"),
])
def test_bad_requests_name_the_field(srv: NudgeServer, report: str, body: dict[str, Any],
                                     field: str) -> None:
    assert rejected(srv, report, body) == field
