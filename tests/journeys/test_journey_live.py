"""Live segment entry, condition splits, and several engines on one control store, on an
in-process server (real HTTP, real DuckDB and SQLite files).

- a person whose event or profile change puts them in a journey's entry segment enters
  at once: the reconciliation poll is set to an hour, so only the live path can enter them;
- condition splits on a profile property and on "did E (with property filters, at least N
  times) since entry";
- engines sharing the control store claim disjoint entries: every step is planned by
  exactly one of them.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from nudge.clock import clock
from nudge.journeys import leases
from nudge.journeys.engine import JourneyEngine
from nudge.journeys.model import JourneyBuilder
from nudge.store import account as account_store
from nudge.store import control
from tests.engage import engage_helpers as h
from tests.journeys.journey_helpers import LocalServer, advance, event

ENV = {"NUDGE_JOURNEY_POLL_MS": "50", "NUDGE_JOURNEY_SEGMENT_POLL_S": "3600",
       "NUDGE_JOURNEY_STEP_BATCH": "100"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    s = LocalServer(tmp_path_factory.mktemp("nudge"), ENV)
    try:
        yield s
    finally:
        s.stop()


def publish(srv: LocalServer, body: dict[str, Any]) -> int:
    jid = int(h.api(srv, "POST", "/1/journeys", body, ok=201).json()["id"])
    h.api(srv, "POST", f"/1/journeys/{jid}/publish", ok=200)
    return jid


def entries(srv: LocalServer, jid: int, identity: str) -> list[dict[str, Any]]:
    return h.api(srv, "GET", f"/1/journeys/{jid}/users", params={"identity": identity},
                 ok=200).json()["entries"]


def holding(segment: dict[str, Any], name: str) -> dict[str, Any]:
    """A segment-entry journey that keeps people at a long delay (so they stay visible)."""
    return (JourneyBuilder(name).start("hold").delay("hold", "x", duration={"days": 7})
            .exit("x").to_json() | {"entry": {"segment": segment}})


def test_an_event_that_qualifies_a_person_enters_them_live(srv: LocalServer) -> None:
    h.profiles(srv, [{"identity": i} for i in ("big", "small", "other")])
    jid = publish(srv, holding({"did": {"event": "Purchased", "where": [
        {"property": "amount", "op": "gte", "value": 100}]}}, "Big spenders"))
    # Nobody qualifies yet; the hourly reconciliation has run once at most (at start).
    assert srv.upload([event("big", "Purchased", {"amount": 250}),
                       event("small", "Purchased", {"amount": 20}),
                       event("other", "Viewed", {"amount": 500})]).status_code == 200
    got = h.wait_for(lambda: entries(srv, jid, "big"), timeout=30,
                     what="the qualifying event enters its person")
    assert len(got) == 1 and got[0]["node"] == "hold"
    assert entries(srv, jid, "small") == [] and entries(srv, jid, "other") == []
    # A second qualifying event does not enter again (one entry at a time, never re-enter).
    assert srv.upload([event("big", "Purchased", {"amount": 300}),
                       event("small", "Purchased", {"amount": 120})]).status_code == 200
    h.wait_for(lambda: entries(srv, jid, "small"), timeout=30, what="small now qualifies")
    assert len(entries(srv, jid, "big")) == 1


def test_a_profile_change_that_qualifies_a_person_enters_them_live(srv: LocalServer) -> None:
    h.profiles(srv, [{"identity": "p1", "plan": "free"}, {"identity": "p2", "plan": "free"}])
    jid = publish(srv, holding({"profile": {"property": "plan", "op": "eq", "value": "gold"}},
                               "Gold onboarding"))
    h.profiles(srv, [{"identity": "p1", "plan": "gold"}])
    h.wait_for(lambda: entries(srv, jid, "p1"), timeout=30,
               what="the profile change enters its person")
    assert entries(srv, jid, "p2") == []


def test_many_people_changed_at_once_use_one_set_query(srv: LocalServer) -> None:
    ids = [f"bulk{i}" for i in range(300)]  # more than the single-user test threshold
    jid = publish(srv, holding({"profile": {"property": "tier", "op": "eq", "value": "vip"}},
                               "Bulk VIP"))
    h.profiles(srv, [{"identity": p, "tier": "vip" if i % 3 == 0 else "std"}
                     for i, p in enumerate(ids)])

    def count() -> int:
        return int(h.api(srv, "GET", f"/1/journeys/{jid}/report", ok=200).json()["entered"])

    h.wait_for(lambda: count() == 100, timeout=60, what="the 100 VIPs entered")
    assert all(len(entries(srv, jid, p)) == (1 if i % 3 == 0 else 0)
               for i, p in enumerate(ids) if i < 30)


def branch_journey() -> dict[str, Any]:
    return (JourneyBuilder("Conditions").on_api().start("wait")
            .delay("wait", "big", duration={"hours": 1})
            .condition("big", yes="gold", no="gold", did={
                "event": "Purchased", "count": 2,
                "where": [{"property": "amount", "op": "gte", "value": 100}]})
            .condition("gold", yes="x", no="x",
                       profile={"property": "plan", "op": "eq", "value": "gold"})
            .exit("x").to_json())


def test_condition_splits_on_did_with_filters_and_on_a_profile_property(
        srv: LocalServer) -> None:
    people = {"twice_big": "gold", "once_big": "free", "twice_small": "gold", "none": "free"}
    h.profiles(srv, [{"identity": p, "plan": plan} for p, plan in people.items()])
    # Purchases before the entry do not count ("since entry").
    assert srv.upload([event("once_big", "Purchased", {"amount": 500})]).status_code == 200
    advance(5)
    jid = publish(srv, branch_journey())
    r = h.api(srv, "POST", f"/1/journeys/{jid}/enter",
              {"to": [{"identity": p} for p in people]}, ok=202)
    assert r.json()["entered"] == 4
    advance(5)
    evs = [event("twice_big", "Purchased", {"amount": 150}),
           event("twice_big", "Purchased", {"amount": 900}),
           event("once_big", "Purchased", {"amount": 700}),
           event("twice_small", "Purchased", {"amount": 5}),
           event("twice_small", "Purchased", {"amount": 9}),
           event("none", "Viewed", {"amount": 1000})]
    for i, e in enumerate(evs):
        e["ts"] += i  # distinct events
    assert srv.upload(evs).status_code == 200
    advance(3601)
    srv.journeys.wake()

    def outcomes(p: str) -> dict[str, str]:
        es = entries(srv, jid, p)
        if not es or es[0]["status"] != "exited":
            return {}
        return {s["node"]: s["outcome"] for s in es[0]["steps"]}

    got = {p: h.wait_for(lambda p=p: outcomes(p), timeout=60, what=f"{p} finished")  # type: ignore[misc]
           for p in people}
    assert {p: (o["big"], o["gold"]) for p, o in got.items()} == {
        "twice_big": ("yes", "yes"), "once_big": ("no", "no"),
        "twice_small": ("no", "yes"), "none": ("no", "no")}


def test_bad_conditions_are_rejected_with_the_field(srv: LocalServer) -> None:
    def body(cond: dict[str, Any]) -> dict[str, Any]:
        return {**JourneyBuilder("c").on_api().start("c").exit("x").to_json(),
                "nodes": [{"id": "c", "type": "condition", "yes": "x", "no": "x", **cond},
                          {"id": "x", "type": "exit"}]}

    for cond, field in [({"did": {"event": "E", "count": 0}}, "nodes[0].did.count"),
                        ({"did": {"event": "E", "where": [{"property": "a", "op": "zz"}]}},
                         "nodes[0].did.where[0].op"),
                        ({"profile": {"property": "plan", "op": "nope"}},
                         "nodes[0].profile.op"),
                        ({"profile": {"property": "p", "op": "eq", "value": 1},
                          "did": {"event": "E"}}, "nodes[0]")]:
        r = h.api(srv, "POST", "/1/journeys/validate", body(cond))
        assert r.status_code == 400 and r.json()["field"] == field, (cond, r.text)


# -- several engines on one control store ----------------------------------------------------
def test_claims_are_disjoint_and_lapse(srv: LocalServer) -> None:
    jid = publish(srv, JourneyBuilder("claims").on_api().start("d")
                  .delay("d", "x", duration={"minutes": 10}).exit("x").to_json())
    ids = [f"cl{i}" for i in range(30)]
    h.profiles(srv, [{"identity": p} for p in ids])
    h.api(srv, "POST", f"/1/journeys/{jid}/enter", {"to": [{"identity": p} for p in ids]},
          ok=202)
    eng = srv.journeys.engine
    E = control.journey_entries

    def waiting() -> int:
        with eng.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).where(
                E.c.journey_id == jid, E.c.state == "delay")).scalar_one())

    h.wait_for(lambda: waiting() == 30, what="everyone at the delay")
    now = clock.now() + 601  # due for us, not yet for the server's own engine
    a = leases.claim(eng, "engine-a", {jid}, now, 20, lease_s=30)
    b = leases.claim(eng, "engine-b", {jid}, now, 20, lease_s=30)
    assert len(a) == 20 and len(b) == 10
    assert not {r.id for r in a} & {r.id for r in b}
    assert leases.claim(eng, "engine-c", {jid}, now + 10, 50, lease_s=30) == []
    # a's claims lapse (a crashed process): c takes them over; b's are still held.
    c = leases.claim(eng, "engine-c", {jid}, now + 31, 50, lease_s=30)
    assert {r.id for r in c} == {r.id for r in a} | {r.id for r in b}
    with eng.begin() as conn:
        leases.release(conn, "engine-c", [r.id for r in c])
    h.api(srv, "POST", f"/1/journeys/{jid}/stop", ok=200)  # nobody left due for later tests


def test_two_engines_never_run_the_same_step(srv: LocalServer) -> None:
    n = 600
    jid = publish(srv, JourneyBuilder("two engines").on_api().start("d")
                  .delay("d", "s", duration={"minutes": 30})
                  .split("s", [(50, "x"), (50, "y")]).exit("x").exit("y").to_json())
    ids = [f"te{i}" for i in range(n)]
    h.profiles(srv, [{"identity": p} for p in ids])
    for i in range(0, n, 200):
        h.api(srv, "POST", f"/1/journeys/{jid}/enter",
              {"to": [{"identity": p} for p in ids[i:i + 200]]}, ok=202)
    eng = srv.journeys.engine
    E, S = control.journey_entries, control.journey_steps

    def q(stmt: Any) -> int:
        with eng.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    steps = sa.select(sa.func.count()).select_from(S)  # every journey's: planned counts all
    h.wait_for(lambda: q(sa.select(sa.func.count()).where(
        E.c.journey_id == jid, E.c.state == "delay")) == n, what="everyone at the delay")
    # Nothing is due now: each engine's planned-step counter only moves after the clock does.
    others = [JourneyEngine(srv.app.state.engage) for _ in range(2)]
    engines = [srv.journeys, *others]
    before, steps_before = [e.steps_planned for e in engines], q(steps)
    advance(1801)
    srv.journeys.wake()
    done = threading.Event()

    errors: list[BaseException] = []

    def run(e: JourneyEngine) -> None:
        while not done.is_set():
            try:
                e.tick()
            except Exception as exc:  # like the server's loop: a failed batch is retried
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in others]
    for t in threads:
        t.start()
    try:
        h.wait_for(lambda: q(sa.select(sa.func.count()).where(
            E.c.journey_id == jid, E.c.status == "exited")) == n, timeout=120,
            what="everyone through")
    finally:
        done.set()
        for t in threads:
            t.join(60)
    planned = [e.steps_planned - b for e, b in zip(engines, before, strict=True)]
    # Every entry ran "elapsed" at d, a branch at s and the exit: 3 steps, each once, and
    # each planned by exactly one engine (no engine planned a step another ran).
    assert q(steps) - steps_before == 3 * n
    assert sum(planned) == 3 * n, (planned, errors[:3])
    assert q(sa.select(sa.func.count()).select_from(control.journey_leases)) == 0, errors[:3]


# -- durable event feed ----------------------------------------------------------------------
def test_events_committed_before_a_crash_advance_waiting_users_after_restart(
        tmp_path: Path) -> None:
    """The process dies after the events are committed but before the journey engine saw
    them (its feed subscriber is taken away, so it never does): the next process replays
    them from the store past the journeys' watermark, and the waiting users move on."""
    srv = LocalServer(tmp_path, ENV)
    try:
        jid = publish(srv, JourneyBuilder("replay").on_api().start("w")
                      .wait_event("w", "Paid", {"hours": 1}, on_event="paid", on_timeout="late")
                      .exit("paid").exit("late").goal("Upgraded").to_json())
        ids = [f"rp{i}" for i in range(20)]
        h.profiles(srv, [{"identity": p} for p in ids])
        h.api(srv, "POST", f"/1/journeys/{jid}/enter", {"to": [{"identity": p} for p in ids]},
              ok=202)
        h.wait_for(lambda: all(entries(srv, jid, p)[0]["state"] == "wait" for p in ids),
                   what="everyone waiting for Paid")
        # One live event first, so the journeys' watermark is past everything before.
        assert srv.upload([event("rp0", "Paid")]).status_code == 200
        h.wait_for(lambda: entries(srv, jid, "rp0")[0]["status"] == "exited", what="rp0")
        feed = srv.journeys.feed
        h.wait_for(lambda: (feed.flush(), feed._stored)[1], what="the watermark stored")
        account_store.commit_subscribers.remove(feed._on_commit)  # the crash, for journeys
        assert srv.upload([event(p, "Paid") for p in ids[1:10]]
                          + [event(p, "Upgraded") for p in ids[10:15]]).status_code == 200
        assert all(entries(srv, jid, p)[0]["status"] == "active" for p in ids[1:])
        account = (srv.account_id, srv.passcode)
    finally:
        srv.stop(keep_clock=True)
    srv = LocalServer(tmp_path, ENV, account=account)
    try:
        def reasons() -> dict[str, str | None]:
            return {p: entries(srv, jid, p)[0]["exit_reason"] for p in ids}

        h.wait_for(lambda: sum(r is not None for r in reasons().values()) == 15, timeout=60,
                   what="the replayed events acted on")
        got = reasons()
        assert all(got[p] == "completed" for p in ids[:10])  # via on_event -> exit "paid"
        assert all(got[p] == "converted" for p in ids[10:15])
        assert all(got[p] is None for p in ids[15:])  # still waiting: no event for them
        assert all([s["outcome"] for s in entries(srv, jid, p)[0]["steps"]] == ["event", "exit"]
                   for p in ids[:10])
        assert srv.journeys.feed.replayed >= 14
    finally:
        srv.stop(keep_clock=True)  # the module's server runs on: time must not go back


# -- journey-level quiet hours and caps ------------------------------------------------------
def journey_outbox(srv: LocalServer, jid: int) -> list[tuple[int, str, str | None]]:
    o = control.outbox
    with srv.journeys.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            sa.select(o.c.user_id, o.c.status, o.c.reason)
            .where(o.c.occurrence.like(f"j{jid}.%")).order_by(o.c.id))]


def test_journey_caps_and_quiet_hours_go_through_the_policy(srv: LocalServer) -> None:
    h.profiles(srv, [{"identity": p, "Email": f"{p}@example.com", "timezone": "UTC"}
                     for p in ("cap1", "quiet1")])
    c = h.campaign(srv, {"name": "journey mail", "kind": "api", "channels": ["email"],
                         "content": {"email": {"subject": "Hi", "text": "x"}}}, send=False)
    capped = publish(srv, JourneyBuilder("capped").on_api().start("s1")
                     .send("s1", c["id"], "d1").delay("d1", "s2", duration={"hours": 1})
                     .send("s2", c["id"], "d2").delay("d2", "s3", duration={"hours": 1})
                     .send("s3", c["id"], "x").exit("x").cap(2, {"days": 1}).to_json())
    h.api(srv, "POST", f"/1/journeys/{capped}/enter", {"to": [{"identity": "cap1"}]}, ok=202)
    for _ in range(2):
        h.wait_for(lambda: entries(srv, capped, "cap1")[0]["state"] == "delay"
                   or entries(srv, capped, "cap1")[0]["status"] == "exited", what="next hold")
        advance(3601)
        srv.journeys.wake()
    h.wait_for(lambda: entries(srv, capped, "cap1")[0]["status"] == "exited", what="cap1 done")
    steps = [(s["node"], s["outcome"]) for s in entries(srv, capped, "cap1")[0]["steps"]]
    assert [o for n, o in steps if n.startswith("s")] == [
        f"send c{c['id']}", f"send c{c['id']}", f"capped c{c['id']}"]
    assert len(journey_outbox(srv, capped)) == 2
    # Quiet hours of the journey (the campaign has none) drop a send inside the window in
    # the person's zone.
    now = dt.datetime.fromtimestamp(clock.now(), dt.UTC)
    start, end = ((now + dt.timedelta(hours=k)).strftime("%H:%M") for k in (-1, 2))
    quiet = publish(srv, JourneyBuilder("quiet").on_api().start("s").send("s", c["id"], "x")
                    .exit("x").quiet_hours(start, end, "drop").to_json())
    h.api(srv, "POST", f"/1/journeys/{quiet}/enter", {"to": [{"identity": "quiet1"}]}, ok=202)
    h.wait_for(lambda: journey_outbox(srv, quiet), what="the quiet-hours decision")
    [(_, status, reason)] = journey_outbox(srv, quiet)
    assert (status, reason) == ("skipped", "quiet_hours")
