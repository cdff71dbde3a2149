"""The abandoned-cart journey end to end, with a controllable clock and real providers:

entry on Added To Cart → wait 30 min for Charged with the same cart id → if not: push with
email fallback → wait 1 day → discount email → exit; Charged (the goal) exits at any step.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nudge.journeys.model import JourneyBuilder
from tests.engage import engage_helpers as h
from tests.engage.providers import FcmServer, SmtpServer, tls_pair
from tests.journeys.journey_helpers import LocalServer, advance, event

FAST = {"NUDGE_ENGAGE_POLL_MS": "50", "NUDGE_JOURNEY_POLL_MS": "50"}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[LocalServer, FcmServer, SmtpServer]]:
    with FcmServer() as fcm, SmtpServer(tls_pair(tmp_path / "tls")) as smtp:
        srv = LocalServer(tmp_path / "data", FAST)
        try:
            h.configure(srv, "push", fcm.channel_config())
            h.configure(srv, "email", smtp.channel_config())
            yield srv, fcm, smtp
        finally:
            srv.stop()


def cart_journey(push_id: int, discount_id: int) -> dict[str, Any]:
    return (JourneyBuilder("Abandoned cart").on_event("Added To Cart").start("wait")
            .wait_event("wait", "Charged", timeout={"minutes": 30}, match=["cart_id"],
                        on_event="bought", on_timeout="push")
            .send("push", campaign_id=push_id, next="day")
            .delay("day", duration={"days": 1}, next="discount")
            .send("discount", campaign_id=discount_id, next="done")
            .exit("bought").exit("done").goal("Charged").to_json())


def pushes(fcm: FcmServer) -> list[Any]:
    """Accepted FCM send requests (not the OAuth token requests)."""
    return [r for r in fcm.accepted if isinstance(r.parsed, dict) and "token" in r.parsed]


def subjects(smtp: SmtpServer) -> list[tuple[str, str]]:
    return sorted((str(m["to"]), str(m["subject"])) for m in smtp.messages)


def path(srv: LocalServer, jid: int, identity: str) -> list[dict[str, Any]]:
    r = h.api(srv, "GET", f"/1/journeys/{jid}/users", params={"identity": identity}, ok=200)
    return r.json()["entries"]


def test_abandoned_cart(world: tuple[LocalServer, FcmServer, SmtpServer]) -> None:
    srv, fcm, smtp = world
    people = [{"identity": f"u{i}", "Email": f"u{i}@example.com", "timezone": "UTC"}
              for i in range(1, 5)]
    h.profiles(srv, people)
    # u2 and u4 have an FCM token (push works); u1 and u3 have none (email fallback).
    tokens = [{"type": "token", "identity": u, "tokenData": {"type": "fcm", "id": f"tok-{u}"}}
              for u in ("u2", "u4")]
    assert srv.upload(tokens).json()["status"] == "success"
    push = h.campaign(srv, {
        "name": "cart push", "kind": "api", "channels": ["push", "email"],
        "content": {"push": {"title": "Your cart", "body": "Cart {{ event.cart_id }} waits"},
                    "email": {"subject": "Your cart {{ event.cart_id }}", "html": "<p>x</p>",
                              "text": "x"}}}, send=False)
    discount = h.campaign(srv, {
        "name": "cart discount", "kind": "api", "channels": ["email"],
        "content": {"email": {"subject": "10% off cart {{ event.cart_id }}",
                              "html": "<p>y</p>", "text": "y"}}}, send=False)
    j = h.api(srv, "POST", "/1/journeys", cart_journey(push["id"], discount["id"]), ok=201).json()
    assert j["status"] == "draft" and j["version"] is None
    j = h.api(srv, "POST", f"/1/journeys/{j['id']}/publish", ok=200).json()
    jid = j["id"]
    assert j["status"] == "published" and j["version"] == 1

    srv.upload([event(f"u{i}", "Added To Cart", {"cart_id": f"c{i}"}) for i in range(1, 5)])
    h.wait_for(lambda: h.api(srv, "GET", f"/1/journeys/{jid}/report").json()["at_node"]
               .get("wait") == 4, what="4 users waiting")

    # +10 min: u1 buys the same cart: leaves at the wait, converted (the goal).
    advance(600)
    srv.upload([event("u1", "Charged", {"cart_id": "c1", "Amount": 30})])
    h.wait_for(lambda: path(srv, jid, "u1")[0]["status"] == "exited", what="u1 exits")
    [e1] = path(srv, jid, "u1")
    assert e1["exit_reason"] == "converted" and e1["converted_at"] is not None
    assert [s["node"] for s in e1["steps"]] == []  # left while waiting: no step ran

    # +31 min: the wait times out for u2, u3, u4: push to u2/u4 (FCM), email to u3.
    advance(21 * 60)
    h.wait_for(lambda: len(pushes(fcm)) >= 2, what="2 pushes")
    h.wait_for(lambda: len(smtp.messages) >= 1, what="fallback email to u3")
    tokens_sent = sorted(r.parsed["token"] for r in pushes(fcm))
    assert tokens_sent == ["tok-u2", "tok-u4"]
    assert subjects(smtp) == [("u3@example.com", "Your cart c3")]
    for u in ("u2", "u3", "u4"):
        [e] = path(srv, jid, u)
        assert e["node"] == "day" and e["state"] == "delay"
        assert [(s["node"], s["outcome"]) for s in e["steps"]] == [
            ("wait", "timeout"), ("push", f"send c{push['id']}")]

    # +12 h: u4 buys: converted during the delay, gets no discount.
    advance(11.5 * 3600)
    srv.upload([event("u4", "Charged", {"cart_id": "c4", "Amount": 12})])
    h.wait_for(lambda: path(srv, jid, "u4")[0]["status"] == "exited", what="u4 converts")
    assert path(srv, jid, "u4")[0]["exit_reason"] == "converted"

    # +1 day after the push: the discount email to u2 and u3, then they exit.
    advance(12.5 * 3600)
    h.wait_for(lambda: len(smtp.messages) >= 3, what="2 discount emails")
    assert subjects(smtp) == [("u2@example.com", "10% off cart c2"),
                              ("u3@example.com", "10% off cart c3"),
                              ("u3@example.com", "Your cart c3")]
    for u in ("u2", "u3"):
        h.wait_for(lambda u=u: path(srv, jid, u)[0]["status"] == "exited", what=f"{u} done")
        [e] = path(srv, jid, u)
        assert e["exit_reason"] == "completed"
        assert [s["node"] for s in e["steps"]] == ["wait", "push", "day", "discount", "done"]

    rep = h.api(srv, "GET", f"/1/journeys/{jid}/report", ok=200).json()
    assert rep["entered"] == 4 and rep["active"] == 0 and rep["converted"] == 2
    assert rep["exited"] == {"converted": 2, "completed": 2}
    # Every journey message went through the outbox once, keyed by journey/version/entry/node.
    msgs = h.outbox(srv)
    keys = [m["idempotency_key"] for m in msgs]
    assert len(keys) == len(set(keys))
    assert all(f".{1}." in k.split(":")[1] and k.split(":")[1].startswith(f"j{jid}.")
               for k in keys if not k.endswith(":fb1"))
    # nothing more happens later
    advance(3 * 86400)
    assert len(smtp.messages) == 3 and len(pushes(fcm)) == 2
