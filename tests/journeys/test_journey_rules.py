"""Journey rules through the real API on an in-process server with a moved clock:
validation, re-entry, exit criteria, A/B split proportions, DST-aware delays, versions,
pause/stop, GDPR erasure of journey state."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from scipy.stats import chisquare

from nudge.clock import clock
from nudge.journeys.model import JourneyBuilder
from nudge.journeys.timers import add_days, next_local_time
from tests.engage import engage_helpers as h
from tests.journeys.journey_helpers import LocalServer, advance, event

FAST = {"NUDGE_JOURNEY_POLL_MS": "50"}
NY = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    s = LocalServer(tmp_path_factory.mktemp("nudge"), FAST)
    try:
        yield s
    finally:
        s.stop()


def create(srv: LocalServer, body: dict[str, Any], publish: bool = True) -> int:
    jid = int(h.api(srv, "POST", "/1/journeys", body, ok=201).json()["id"])
    if publish:
        h.api(srv, "POST", f"/1/journeys/{jid}/publish", ok=200)
    return jid


def enter(srv: LocalServer, jid: int, ids: list[str], rid: str | None = None) -> int:
    body: dict[str, Any] = {"to": [{"identity": i} for i in ids]}
    if rid:
        body["request_id"] = rid
    return int(h.api(srv, "POST", f"/1/journeys/{jid}/enter", body, ok=202).json()["entered"])


def report(srv: LocalServer, jid: int) -> dict[str, Any]:
    return h.api(srv, "GET", f"/1/journeys/{jid}/report", ok=200).json()


def entries(srv: LocalServer, jid: int, identity: str) -> list[dict[str, Any]]:
    return h.api(srv, "GET", f"/1/journeys/{jid}/users", params={"identity": identity},
                 ok=200).json()["entries"]


def people(srv: LocalServer, prefix: str, n: int, **props: Any) -> list[str]:
    ids = [f"{prefix}{i}" for i in range(n)]
    h.profiles(srv, [{"identity": i, **props} for i in ids])
    return ids


# -- validation ------------------------------------------------------------------------------
def base() -> JourneyBuilder:
    return JourneyBuilder("v").on_api().start("a")


@pytest.mark.parametrize(("body", "node", "reason"), [
    (base().delay("a", "b", duration={"hours": 1}).exit("b").exit("lost").to_json(),
     "lost", "unreachable from start"),
    (base().split("a", [(50, "b"), (50, "x")]).update_profile("b", {"k": 1}, "a")
     .exit("x").to_json(), "a", "cycle without a delay"),
    (base().condition("a", yes="x", no="nowhere", did={"event": "E"}).exit("x").to_json(),
     "a", "points to no node 'nowhere'"),
    ({**base().exit("x").to_json(), "nodes": [
        {"id": "a", "type": "wait_event", "event": "E", "timeout": {"hours": 1},
         "on_event": "x"}, {"id": "x", "type": "exit"}]}, "a", "missing branch 'on_timeout'"),
])
def test_invalid_graphs_are_rejected_with_node_and_reason(srv: LocalServer, body: Any,
                                                          node: str, reason: str) -> None:
    before = len(h.api(srv, "GET", "/1/journeys", ok=200).json()["journeys"])
    for path in ("/1/journeys/validate", "/1/journeys"):
        r = h.api(srv, "POST", path, body)
        assert r.status_code == 400, r.text
        e = r.json()
        assert e["error"] == "invalid_journey" and e["node"] == node
        assert reason in e["message"] and e["field"].startswith("nodes[")
    assert len(h.api(srv, "GET", "/1/journeys", ok=200).json()["journeys"]) == before


def test_a_loop_through_a_delay_is_valid(srv: LocalServer) -> None:
    body = (base().delay("a", "b", duration={"days": 1}).update_profile("b", {"k": 1}, "a")
            .to_json())
    assert h.api(srv, "POST", "/1/journeys/validate", body, ok=200).json()["valid"] is True


@pytest.mark.parametrize(("patch", "field"), [
    ({"entry": {"event": "E", "segment_id": 1}}, "entry"),
    ({"nodes": [{"id": "a", "type": "split", "branches": [{"percent": 60, "next": "x"},
                                                          {"percent": 60, "next": "x"}]},
                {"id": "x", "type": "exit"}]}, "nodes[0].branches"),
    ({"nodes": [{"id": "a", "type": "teleport"}]}, "nodes[0].type"),
    ({"reentry": {"mode": "sometimes"}}, "reentry.mode"),
    ({"nodes": [{"id": "a", "type": "send", "campaign_id": "seven", "next": "a"}]},
     "nodes[0].campaign_id"),
])
def test_bad_fields_are_named(srv: LocalServer, patch: dict[str, Any], field: str) -> None:
    body = {**base().exit("a").to_json(), **patch}
    r = h.api(srv, "POST", "/1/journeys", body)
    assert r.status_code == 400 and r.json()["field"] == field, r.text


def test_schema_is_published_and_the_builder_output_fits_it(srv: LocalServer) -> None:
    import jsonschema

    schema = h.api(srv, "GET", "/1/journeys/schema", ok=200).json()
    body = (JourneyBuilder("all").on_event("Added To Cart").start("w")
            .wait_event("w", "Charged", {"minutes": 30}, "x", "c", match=["cart_id"])
            .condition("c", yes="s", no="x", did={"event": "Viewed"})
            .split("s", [(50, "d"), (50, "u")])
            .delay("d", "x", until_time="09:00").update_profile("u", {"seen": True}, "wh")
            .webhook("wh", "https://hooks.example/j", "x").exit("x").goal("Charged")
            .reentry("after", after={"days": 7}, max_entries=3).to_json())
    jsonschema.validate(body, schema)
    assert h.api(srv, "POST", "/1/journeys/validate", body, ok=200).json()["nodes"] == 7


# -- re-entry, exit criteria ------------------------------------------------------------------
def test_reentry_rules(srv: LocalServer) -> None:
    [u] = people(srv, "re", 1)
    never = create(srv, base().exit("a").to_json())
    after_exit = create(srv, base().exit("a").reentry("after_exit", max_entries=2).to_json())
    later = create(srv, base().exit("a").reentry("after", after={"days": 1}).to_json())
    for jid in (never, after_exit, later):
        assert enter(srv, jid, [u]) == 1
    h.wait_for(lambda: all(report(srv, j)["active"] == 0 for j in (never, after_exit, later)))
    assert enter(srv, never, [u]) == 0
    assert enter(srv, after_exit, [u]) == 1
    h.wait_for(lambda: report(srv, after_exit)["active"] == 0)
    assert enter(srv, after_exit, [u]) == 0  # max_entries 2
    assert enter(srv, later, [u]) == 0
    advance(86400 + 1)
    assert enter(srv, later, [u]) == 1
    # the same request id never enters twice
    busy = create(srv, base().delay("a", "x", duration={"days": 3}).exit("x")
                  .reentry("after_exit").to_json())
    assert enter(srv, busy, [u], rid="r1") == 1
    assert enter(srv, busy, [u], rid="r1") == 0
    assert enter(srv, busy, [u], rid="r2") == 0  # already in it: one entry at a time
    assert len(entries(srv, busy, u)) == 1


def test_exit_criteria_and_goal(srv: LocalServer) -> None:
    ids = people(srv, "ex", 3)
    jid = create(srv, base().delay("a", "x", duration={"days": 2}).exit("x")
                 .exit_when("Uninstalled").goal("Charged").to_json())
    assert enter(srv, jid, ids) == 3
    h.wait_for(lambda: report(srv, jid)["at_node"].get("a") == 3)
    srv.upload([event(ids[0], "Uninstalled"), event(ids[1], "Charged", {"Amount": 5})])
    h.wait_for(lambda: report(srv, jid)["active"] == 1, what="two exits")
    assert entries(srv, jid, ids[0])[0]["exit_reason"] == "exit criteria"
    assert entries(srv, jid, ids[1])[0]["exit_reason"] == "converted"
    advance(2 * 86400 + 1)
    h.wait_for(lambda: report(srv, jid)["active"] == 0)
    rep = report(srv, jid)
    assert rep["exited"] == {"exit criteria": 1, "converted": 1, "completed": 1}
    assert rep["converted"] == 1 and rep["steps"]["a"] == {"elapsed": 1}


# -- A/B split --------------------------------------------------------------------------------
def test_split_proportions(srv: LocalServer) -> None:
    n = 3000
    ids = people(srv, "ab", n)
    jid = create(srv, base().split("a", [(20, "x"), (30, "y"), (50, "z")])
                 .exit("x").exit("y").exit("z").to_json())
    for i in range(0, n, 1000):
        assert enter(srv, jid, ids[i:i + 1000]) == 1000
    h.wait_for(lambda: report(srv, jid)["exited"].get("completed") == n, what="all split")
    got = report(srv, jid)["steps"]["a"]
    observed = [got.get(f"branch {i}", 0) for i in range(3)]
    assert sum(observed) == n
    # Chi-square goodness of fit against 20/30/50: a fair split fails this 1 time in 1000.
    assert chisquare(observed, [0.2 * n, 0.3 * n, 0.5 * n]).pvalue > 0.001, observed
    # and it is not trivially even either: each branch is within 4 sigma of its share
    for obs, p in zip(observed, (0.2, 0.3, 0.5), strict=True):
        assert abs(obs - p * n) < 4 * (n * p * (1 - p)) ** 0.5


# -- timezones and DST --------------------------------------------------------------------------
def at(y: int, mo: int, d: int, hh: int, mm: int = 0, tz: ZoneInfo = NY) -> float:
    return dt.datetime(y, mo, d, hh, mm, tzinfo=tz).timestamp()


def test_timer_functions_across_dst() -> None:
    tz = "America/New_York"
    assert add_days(at(2026, 3, 7, 10), 1, tz) - at(2026, 3, 7, 10) == 23 * 3600
    assert add_days(at(2026, 10, 31, 10), 1, tz) - at(2026, 10, 31, 10) == 25 * 3600
    assert add_days(at(2026, 3, 7, 10), 1, "UTC") - at(2026, 3, 7, 10) == 24 * 3600
    # 02:30 does not exist on 2026-03-08 in New York: the instant after the gap (03:00 EDT)
    assert next_local_time(at(2026, 3, 7, 22), 150, tz) == at(2026, 3, 8, 3)
    # 09:00 the day after the fall-back change is 25 h after 08:00 the day before... + 1h
    assert next_local_time(at(2026, 10, 31, 10), 9 * 60, tz) == at(2026, 11, 1, 9)
    assert (at(2026, 11, 1, 9) - at(2026, 10, 31, 9)) == 25 * 3600


def test_delays_in_the_users_timezone_across_dst(srv: LocalServer) -> None:
    ids = people(srv, "tz", 2, timezone="America/New_York")
    h.profiles(srv, [{"identity": ids[1], "timezone": "Asia/Tokyo"}])
    saved = clock.offset
    clock.offset = at(2026, 3, 7, 10) - (clock.now() - clock.offset)  # Sat 10:00 in NY
    try:
        _dst_journey(srv, ids)
    finally:
        clock.offset = saved


def _dst_journey(srv: LocalServer, ids: list[str]) -> None:
    jid = create(srv, base().delay("a", "t", duration={"days": 1})
                 .delay("t", "x", until_time="09:00").exit("x").to_json())
    assert enter(srv, jid, ids) == 2
    h.wait_for(lambda: report(srv, jid)["at_node"].get("a") == 2)
    ny, tokyo = (entries(srv, jid, i)[0] for i in ids)
    assert round(ny["due_at"] - ny["entered_at"]) == 23 * 3600  # spring forward
    assert round(tokyo["due_at"] - tokyo["entered_at"]) == 24 * 3600  # no DST in Tokyo
    advance(24 * 3600)
    h.wait_for(lambda: report(srv, jid)["at_node"].get("t") == 2)
    ny = entries(srv, jid, ids[0])[0]
    assert dt.datetime.fromtimestamp(ny["due_at"], NY).replace(tzinfo=None) == \
        dt.datetime(2026, 3, 9, 9, 0)
    tokyo = entries(srv, jid, ids[1])[0]
    local = dt.datetime.fromtimestamp(tokyo["due_at"], ZoneInfo("Asia/Tokyo"))
    assert (local.hour, local.minute) == (9, 0)


# -- versions, pause, stop -------------------------------------------------------------------
def test_versions_pause_and_stop(srv: LocalServer) -> None:
    ids = people(srv, "ver", 3)
    v1 = base().delay("a", "x", duration={"hours": 1}).exit("x").reentry("after_exit")
    jid = create(srv, v1.to_json())
    assert enter(srv, jid, [ids[0]]) == 1
    v2 = base().delay("a", "b", duration={"hours": 1}).update_profile("b", {"v": 2}, "x") \
        .exit("x").reentry("after_exit")
    assert h.api(srv, "PUT", f"/1/journeys/{jid}", v2.to_json(), ok=200).json()["version"] == 1
    assert h.api(srv, "POST", f"/1/journeys/{jid}/publish", ok=200).json()["version"] == 2
    assert enter(srv, jid, [ids[1]]) == 1
    h.wait_for(lambda: report(srv, jid)["active"] == 2)
    assert [e["version"] for e in (entries(srv, jid, ids[0])[0], entries(srv, jid, ids[1])[0])
            ] == [1, 2]
    assert h.api(srv, "GET", f"/1/journeys/{jid}/versions/1", ok=200).json()["definition"] \
        == v1.to_json()
    h.api(srv, "POST", f"/1/journeys/{jid}/pause", ok=200)
    assert h.api(srv, "POST", f"/1/journeys/{jid}/enter",
                 {"to": [{"identity": ids[2]}]}).status_code == 409
    advance(3601)
    import time

    time.sleep(1)  # paused: the due timers are held
    assert report(srv, jid)["active"] == 2
    h.api(srv, "POST", f"/1/journeys/{jid}/resume", ok=200)
    h.wait_for(lambda: report(srv, jid)["active"] == 0, what="both finish after resume")
    assert [s["node"] for s in entries(srv, jid, ids[0])[0]["steps"]] == ["a", "x"]
    assert [s["node"] for s in entries(srv, jid, ids[1])[0]["steps"]] == ["a", "b", "x"]
    assert enter(srv, jid, [ids[0], ids[2]]) == 2
    h.api(srv, "POST", f"/1/journeys/{jid}/stop", ok=200)
    rep = report(srv, jid)
    assert rep["active"] == 0 and rep["exited"]["journey stopped"] == 2
    assert h.api(srv, "POST", f"/1/journeys/{jid}/publish").status_code == 409


def test_erasure_removes_journey_state(srv: LocalServer) -> None:
    [u] = people(srv, "gone", 1)
    jid = create(srv, base().delay("a", "x", duration={"days": 1}).exit("x").to_json())
    assert enter(srv, jid, [u]) == 1
    h.wait_for(lambda: report(srv, jid)["at_node"].get("a") == 1)
    h.api(srv, "POST", "/1/gdpr/erase", {"subjects": [{"identity": u}]}, ok=200)
    assert report(srv, jid)["entered"] == 0
