"""Day-parting (``POST /1/analytics/dayparting``): hour × weekday heatmaps in the account's
timezone or each user's own, against a plain-Python reference and ClickHouse."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest
from analytics_reference import (
    TZ,
    Data,
    Event,
    generate,
    local,
    post,
    rejected,
    start_server,
    upload,
)

from conftest import NudgeServer

RANGE = (local(2026, 2, 26), local(2026, 11, 9))  # both DST changes inside


@pytest.fixture(scope="module")
def data() -> Data:
    return generate(seed=21)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, data: Data) -> Iterator[NudgeServer]:
    server = start_server(tmp_path_factory.mktemp("dayparting"))
    try:
        upload(server, data)
        yield server
    finally:
        server.stop()


def zone_of(data: Data, user: str, mode: str) -> ZoneInfo:
    name = data.people[user].props.get("Timezone")
    if mode == "account" or not name:
        return TZ
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return TZ


def reference(data: Data, rows: list[Event], mode: str, measure: str) -> dict[str, Any]:
    cells: dict[tuple[int | None, int | None], list[Event]] = {}
    for e in rows:
        t = dt.datetime.fromtimestamp(e.ts, zone_of(data, e.user, mode))
        for key in ((t.weekday(), t.hour), (t.weekday(), None), (None, t.hour), (None, None)):
            cells.setdefault(key, []).append(e)

    def at(d: int | None, h: int | None) -> int:
        got = cells.get((d, h), [])
        return len({e.user for e in got}) if measure == "unique_users" else len(got)

    return {"values": [[at(d, h) for h in range(24)] for d in range(7)],
            "day_totals": [at(d, None) for d in range(7)],
            "hour_totals": [at(None, h) for h in range(24)], "total": at(None, None)}


@pytest.mark.parametrize("mode", ["account", "user"])
@pytest.mark.parametrize("measure", ["total", "unique_users"])
def test_heatmap_matches_reference(srv: NudgeServer, data: Data, mode: str,
                                   measure: str) -> None:
    out = post(srv, "dayparting", {"event": "View", "from": RANGE[0], "to": RANGE[1],
                                   "measure": measure, "timezone": mode})
    assert (out["timezone"], out["account_timezone"]) == (mode, "America/New_York")
    assert out["days"][0] == "Monday" and out["hours"] == list(range(24))
    want = reference(data, data.rows("View", *RANGE), mode, measure)
    assert {k: out[k] for k in want} == want


def test_users_zones_move_events(srv: NudgeServer, data: Data) -> None:
    """A user in Asia/Kolkata (+05:30) and one in Los Angeles see different hours."""
    account = post(srv, "dayparting", {"event": "View", "from": RANGE[0], "to": RANGE[1]})
    users = post(srv, "dayparting", {"event": "View", "from": RANGE[0], "to": RANGE[1],
                                     "timezone": "user"})
    assert account["total"] == users["total"]
    assert account["hour_totals"] != users["hour_totals"]


def test_filters_and_segment(srv: NudgeServer, data: Data) -> None:
    body = {"event": "Purchase", "from": RANGE[0], "to": RANGE[1], "measure": "unique_users",
            "where": [{"property": "Paid", "op": "eq", "value": True}],
            "profile_where": [{"property": "Plan", "op": "eq", "value": "pro"}],
            "segment": {"profile": {"property": "Age", "op": "gte", "value": 30}}}
    out = post(srv, "dayparting", body)
    rows = data.rows("Purchase", *RANGE, lambda e: e.props["Paid"] is True
                     and data.people[e.user].props["Plan"] == "pro"
                     and data.people[e.user].props["Age"] >= 30)
    want = reference(data, rows, "account", "unique_users")
    assert {k: out[k] for k in want} == want


def test_unique_users_agree_with_clickhouse(srv: NudgeServer, data: Data,
                                            tmp_path: Path) -> None:
    chdb = pytest.importorskip("chdb")
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = data.rows("View", *RANGE)
    path = tmp_path / "views.parquet"
    pq.write_table(pa.table({"user": [e.user for e in rows], "ts": pa.array(
        [e.ts * 1_000_000 for e in rows], pa.timestamp("us", "UTC"))}), path)
    result = json.loads(str(chdb.query(
        "SELECT toDayOfWeek(ts, 0, 'America/New_York') AS d, toHour(ts, 'America/New_York') "
        f"AS h, uniqExact(user) AS users FROM file('{path}', Parquet) GROUP BY d, h", "JSON")))
    clickhouse = {(int(r["d"]) - 1, int(r["h"])): int(r["users"]) for r in result["data"]}
    out = post(srv, "dayparting", {"event": "View", "from": RANGE[0], "to": RANGE[1],
                                   "measure": "unique_users"})
    ours = {(d, h): v for d, row in enumerate(out["values"]) for h, v in enumerate(row) if v}
    assert ours == clickhouse


def test_empty(srv: NudgeServer) -> None:
    out = post(srv, "dayparting", {"event": "Nothing", "from": RANGE[0], "to": RANGE[1],
                                   "timezone": "user"})
    assert out["values"] == [[0] * 24] * 7 and out["total"] == 0


@pytest.mark.parametrize(("change", "field"), [
    ({"timezone": "Europe/Paris"}, "timezone"), ({"measure": "sum"}, "measure"),
    ({"event": None}, "event"), ({"from": RANGE[1], "to": RANGE[0]}, "from"),
    ({"where": [{"property": "Page"}]}, "where[0].op")])
def test_bad_requests_name_the_field(srv: NudgeServer, change: dict[str, Any],
                                     field: str) -> None:
    body = {"event": "View", "from": RANGE[0], "to": RANGE[1], **change}
    assert rejected(srv, "dayparting", body) == field
