"""A campaign send queued for a person is not sent once they are erased (issue 6).

The server runs in process (tests/journeys/journey_helpers.py) so that the test can move the
one clock past the quiet hours that hold the messages back; the channel is a real webhook
receiver that verifies signatures.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.engage import engage_helpers as h
from tests.engage.providers import WebhookReceiver
from tests.journeys.journey_helpers import LocalServer, advance

SECRET = "erase-queued-webhook-secret-01"  # noqa: S105 - a test receiver's secret


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(SECRET) as r:
        yield r


@pytest.fixture
def srv(tmp_path: Path, hook: WebhookReceiver) -> Iterator[LocalServer]:
    s = LocalServer(tmp_path, {"NUDGE_ENGAGE_POLL_MS": "50"})
    try:
        h.configure(s, "webhook", hook.channel_config())
        yield s
    finally:
        s.stop()


def sent_to(hook: WebhookReceiver) -> list[str]:
    return sorted(r.parsed["to"] for r in hook.accepted
                  if isinstance(r.parsed, dict) and r.parsed.get("c") == "erase-q")


def test_a_queued_send_to_an_erased_person_does_not_happen(srv: LocalServer,
                                                           hook: WebhookReceiver) -> None:
    h.profiles(srv, [{"identity": "keep-me", "grp": "eq", "timezone": "UTC"},
                     {"identity": "erase-me", "grp": "eq", "timezone": "UTC"}])
    now = dt.datetime.now(dt.UTC)
    # Quiet hours from this hour to two hours later, in UTC: both messages wait.
    quiet = {"start": f"{now.hour:02d}:00", "end": f"{(now.hour + 2) % 24:02d}:00",
             "action": "delay"}
    body: dict[str, Any] = {
        "name": "erase-q", "channels": ["webhook"], "webhook_url": f"{hook.url}/hook",
        "audience": {"definition": {"profile": {"property": "grp", "op": "eq",
                                                "value": "eq"}}},
        "content": {"webhook": {"body": '{"to": "{{ profile.identity }}", "c": "erase-q"}'}},
        "quiet_hours": quiet}
    c = h.campaign(srv, body)
    queued = h.wait_for(lambda: (ms := h.outbox(srv, campaign_id=c["id"])) and len(ms) == 2
                        and ms, what="two queued messages")
    assert {m["status"] for m in queued} == {"pending"}
    r = httpx.post(srv.url + "/1/gdpr/erase", headers=srv.headers, timeout=60,
                   json={"subjects": [{"identity": "erase-me"}]})
    assert r.status_code == 200, r.text
    assert r.json()["deleted"]["outbox"] == 1
    # Past the quiet hours: the queued message of the person kept goes out, the other does not.
    advance(3 * 3600)
    h.wait_for(lambda: sent_to(hook) == ["keep-me"], what="the kept person's message")
    time.sleep(1.5)  # dozens of worker polls
    assert sent_to(hook) == ["keep-me"]
    left = h.outbox(srv, campaign_id=c["id"])
    assert len(left) == 1 and left[0]["status"] in ("sent", "delivered")
