"""Messages are sealed in the control store (nudge/engage/sealing.py): after real sends on
email (aiosmtpd), SMS (a Twilio-protocol server), the in-app inbox and a triggered webhook
carrying event properties, no byte of the data directory — control.db, its WAL, the account
store, the log — holds a message body, an email address, a phone number or an event
property in plaintext. The GDPR access export still shows them opened, and erasure deletes
the sealed rows."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.engage import engage_helpers as h
from tests.engage.providers import SmtpServer, TwilioServer, WebhookReceiver, tls_pair
from tests.privacy.test_encryption import scan

SECRET = "sealed-webhook-secret-0123"  # noqa: S105 - a test receiver's secret
PEOPLE = [{"identity": f"sealed-person-{i}-qx", "Email": f"ottilie{i}.brandauer@sealed-pii.org",
           "Phone": f"+4917612{i:05d}", "Name": f"Ottilie Brandauer {i}",
           "Code": f"KESTREL-{i}-4471"} for i in range(4)]
# In every rendered body, from the profile: the templates (campaign definitions, business
# copy, not personal) do not contain it, so finding it means a rendered message leaked.
BODY_MARK = "KESTREL-"
EVENT_MARK = "ship-to-Vogelweide-Gasse"  # an event property copied into the message context


def needles() -> list[bytes]:
    out = [BODY_MARK, EVENT_MARK, "sealed-pii.org", "Brandauer"]
    for p in PEOPLE:
        out += [p["Email"], p["Phone"], p["Name"], p["Code"]]
    return [s.encode() for s in out]


@pytest.fixture(scope="module")
def providers(tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[SmtpServer, TwilioServer, WebhookReceiver]]:
    with SmtpServer(tls_pair(tmp_path_factory.mktemp("tls"))) as smtp, TwilioServer() as tw, \
            WebhookReceiver(SECRET) as hook:
        yield smtp, tw, hook


def statuses(srv: h.PatientServer, cid: int) -> list[str]:
    return [m["status"] for m in h.outbox(srv, campaign_id=cid)]


def test_sent_messages_leave_no_plaintext_and_gdpr_still_works(
        tmp_path: Path, providers: tuple[SmtpServer, TwilioServer, WebhookReceiver]) -> None:
    smtp, twilio, hook = providers
    srv = h.start_server(tmp_path, {"NUDGE_ENGAGE_POLL_MS": "50"})
    try:
        h.configure(srv, "email", smtp.channel_config())
        h.configure(srv, "sms", twilio.channel_config())
        h.configure(srv, "inapp", {"ttl_days": 7})
        h.configure(srv, "webhook", hook.channel_config())
        h.profiles(srv, PEOPLE)
        body = "Coupon {{ profile.Code }} for {{ profile.Name }} at {{ profile.Email }}"
        ids = []
        for ch, content in (("email", {"subject": "Hello {{ profile.Name }}", "text": body}),
                            ("sms", {"body": body}),
                            ("inapp", {"title": "{{ profile.Name }}", "body": body})):
            c = h.campaign(srv, {"name": ch, "channels": [ch], "audience": h.everyone(),
                                 "content": {ch: content}})
            ids.append(c["id"])
        trig = h.campaign(srv, {
            "name": "shipped", "kind": "trigger", "channels": ["webhook"],
            "webhook_url": f"{hook.url}/hook", "trigger": {"event": "Shipped"},
            "content": {"webhook": {"body": '{"m": "{{ event.address }} {{ profile.Phone }}"}'}}})
        ids.append(trig["id"])
        r = srv.upload([{"type": "event", "identity": p["identity"], "ts": int(time.time()),
                         "evtName": "Shipped", "evtData": {"address": EVENT_MARK}}
                        for p in PEOPLE])
        assert r.status_code == 200, r.text
        for cid in ids:
            h.wait_for(lambda cid=cid: statuses(srv, cid) == ["sent"] * len(PEOPLE),
                       what=f"campaign {cid} sent")
        # The providers got the real content: sealing is at rest only.
        h.wait_for(lambda: len(smtp.messages) >= len(PEOPLE), what="emails")
        assert any(BODY_MARK in m.get_body(("plain",)).get_content() for m in smtp.messages)
        assert any(EVENT_MARK in str(x.parsed) for x in hook.received)
        with sqlite3.connect(tmp_path / "control.db") as con:
            assert con.execute("SELECT count(*) FROM outbox WHERE to_addr IS NOT NULL "
                               "OR meta IS NOT NULL").fetchone()[0] == 0
            assert con.execute("SELECT count(*) FROM inbox_messages").fetchone()[0] == len(PEOPLE)
        assert scan(tmp_path, needles()) == {}
        # GDPR access: the person's messages, opened.
        who = PEOPLE[1]
        r = httpx.post(srv.url + "/1/gdpr/access", headers=srv.headers, timeout=60,
                       json={"subjects": [{"identity": who["identity"]}]})
        assert r.status_code == 200, r.text
        (person,) = r.json()["people"]
        assert sorted(m["to_addr"] for m in person["outbox"] if m["channel"] != "inapp") == \
            sorted([who["Email"], who["Phone"], f"{hook.url}/hook"])
        assert all(BODY_MARK in (m["content"] or "") for m in person["outbox"]
                   if m["channel"] != "webhook")
        (inbox,) = person["inbox_messages"]
        assert who["Name"] in inbox["content"] and BODY_MARK in inbox["content"]
        # Erasure deletes the sealed rows.
        r = httpx.post(srv.url + "/1/gdpr/erase", headers=srv.headers, timeout=60,
                       json={"subjects": [{"identity": who["identity"]}]})
        assert r.status_code == 200, r.text
        assert r.json()["deleted"]["outbox"] == len(ids)
        assert r.json()["deleted"]["inbox_messages"] == 1
    finally:
        srv.stop()
    assert scan(tmp_path, needles()) == {}
