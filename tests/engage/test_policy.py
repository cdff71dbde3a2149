"""Policy with real channel servers: frequency caps, quiet hours in the user's timezone,
one-click unsubscribe, GDPR suppression; outbound event webhooks and delivery callbacks."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest

from conftest import NudgeServer
from tests.engage import engage_helpers as h
from tests.engage.providers import (
    SmtpServer,
    TwilioServer,
    WebhookReceiver,
    WhatsAppServer,
    tls_pair,
)

SECRET = "policy-webhook-secret-0123"  # noqa: S105 - a test receiver's secret


@pytest.fixture(scope="module")
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(SECRET) as r:
        yield r


@pytest.fixture(scope="module")
def smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    with SmtpServer(tls_pair(tmp_path_factory.mktemp("tls"))) as s:
        yield s


@pytest.fixture(scope="module")
def twilio() -> Iterator[TwilioServer]:
    with TwilioServer() as t:
        yield t


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, hook: WebhookReceiver,
        smtp: SmtpServer, twilio: TwilioServer) -> Iterator[NudgeServer]:
    s = h.start_server(tmp_path_factory.mktemp("nudge"), {"NUDGE_ENGAGE_POLL_MS": "50"})
    try:
        h.configure(s, "webhook", hook.channel_config())
        h.configure(s, "email", smtp.channel_config())
        h.configure(s, "sms", twilio.channel_config())
        yield s
    finally:
        s.stop()


def seg(group: str) -> dict[str, Any]:
    return {"definition": {"profile": {"property": "grp", "op": "eq", "value": group}}}


def hook_campaign(hook: WebhookReceiver, group: str, tag: str, **extra: Any) -> dict[str, Any]:
    return {"name": tag, "channels": ["webhook"], "webhook_url": f"{hook.url}/hook",
            "audience": seg(group),
            "content": {"webhook": {"body": '{"to": "{{ profile.identity }}", "c": "'
                                            + tag + '"}'}}, **extra}


def got(hook: WebhookReceiver, tag: str) -> list[str]:
    return sorted(r.parsed["to"] for r in hook.accepted
                  if isinstance(r.parsed, dict) and r.parsed.get("c") == tag)


def settled(srv: NudgeServer, cid: int, n: int) -> list[dict[str, Any]]:
    return h.wait_for(lambda: (ms := h.outbox(srv, campaign_id=cid)) and len(ms) == n and all(
        m["status"] not in ("pending", "sending") for m in ms) and ms, what="settled")


def test_global_frequency_cap_per_channel_and_transactional_exemption(
        srv: NudgeServer, hook: WebhookReceiver, smtp: SmtpServer) -> None:
    h.profiles(srv, [{"identity": f"fc{i}", "grp": "fc", "Email": f"fc{i}@example.com"}
                     for i in range(3)])
    h.api(srv, "PUT", "/1/engage/policy", {"caps": [
        {"max": 1, "per": {"hours": 1}, "channel": "webhook"},
        {"max": 2, "per": {"days": 1}}]}, ok=200)
    try:
        c1 = h.campaign(srv, hook_campaign(hook, "fc", "fc1"))
        assert [m["status"] for m in settled(srv, c1["id"], 3)] == ["sent"] * 3
        # The webhook cap is reached: the second campaign falls back to email.
        before = len(smtp.messages)
        c2 = h.campaign(srv, {**hook_campaign(hook, "fc", "fc2"),
                              "channels": ["webhook", "email"],
                              "content": {"webhook": {"body": "{}"},
                                          "email": {"subject": "capped {{ profile.identity }}",
                                                    "text": "x"}}})
        ms = settled(srv, c2["id"], 3)
        assert {(m["channel"], m["status"]) for m in ms} == {("email", "sent")}
        h.wait_for(lambda: len(smtp.messages) - before == 3, what="3 emails")
        # Two messages today across channels: a third campaign is capped for everyone.
        c3 = h.campaign(srv, hook_campaign(hook, "fc", "fc3"))
        ms = settled(srv, c3["id"], 3)
        assert {(m["status"], m["reason"]) for m in ms} == {("skipped", "capped")}
        assert got(hook, "fc3") == []
        # Transactional messages are exempt from frequency caps.
        api = h.campaign(srv, {**hook_campaign(hook, "fc", "fc4"), "kind": "api",
                               "audience": None})
        h.api(srv, "POST", "/1/send", {"campaign_id": api["id"], "to": [{"identity": "fc0"}]},
              ok=202)
        h.wait_for(lambda: got(hook, "fc4") == ["fc0"], what="transactional sent")
        rep = h.api(srv, "GET", f"/1/campaigns/{c3['id']}/report", ok=200).json()
        assert rep["by_variant_channel"][0]["skipped"] == {"capped": 3}
    finally:
        h.api(srv, "PUT", "/1/engage/policy", {}, ok=200)


def test_quiet_hours_in_each_users_timezone(srv: NudgeServer, hook: WebhookReceiver) -> None:
    now = dt.datetime.now(dt.UTC)
    # A window that is now in UTC+6 but not in UTC.
    start, end = (now.hour + 5) % 24, (now.hour + 7) % 24
    far, home = "Etc/GMT-6", "UTC"
    h.profiles(srv, [{"identity": "qh-far", "grp": "qh", "timezone": far},
                     {"identity": "qh-home", "grp": "qh", "timezone": home},
                     {"identity": "qh-far2", "grp": "qh2", "timezone": far}])
    quiet = {"start": f"{start:02d}:00", "end": f"{end:02d}:00"}
    c = h.campaign(srv, hook_campaign(hook, "qh", "qh", quiet_hours={**quiet,
                                                                     "action": "drop"}))
    ms = {m["user_id"]: m for m in settled(srv, c["id"], 2)}
    assert h.wait_for(lambda: got(hook, "qh") == ["qh-home"], what="home user only")
    assert sorted((m["status"], m["reason"]) for m in ms.values()) == [
        ("sent", None), ("skipped", "quiet_hours")]
    # "delay": the message waits for the end of the window in the user's timezone.
    c2 = h.campaign(srv, hook_campaign(hook, "qh2", "qh2", quiet_hours={**quiet,
                                                                        "action": "delay"}))
    (m,) = h.wait_for(lambda: h.outbox(srv, campaign_id=c2["id"]), what="queued")
    local = now.astimezone(ZoneInfo(far))
    want = local.replace(hour=end, minute=0, second=0, microsecond=0)
    if want <= local:
        want += dt.timedelta(days=1)
    assert m["status"] == "pending"
    assert abs(m["next_attempt_at"] - want.timestamp()) < 1
    time.sleep(1)
    assert got(hook, "qh2") == []


def test_one_click_unsubscribe_and_preference_page(srv: NudgeServer, smtp: SmtpServer) -> None:
    h.profiles(srv, [{"identity": "un1", "grp": "un", "Email": "un1@example.com"}])

    def mail(tag: str, category: str) -> dict[str, Any]:
        return {"name": tag, "channels": ["email"], "audience": seg("un"),
                "category": category,
                "content": {"email": {"subject": tag, "html": "<p>Hi</p>"}}}

    for key in ("news", "offers"):  # the account's subscription categories
        h.api(srv, "POST", "/1/subscription-categories", {"name": key.title(), "key": key},
              ok=201)
    before = len(smtp.messages)
    h.campaign(srv, mail("news-1", "news"))
    h.wait_for(lambda: len(smtp.messages) > before, what="first email")
    msg = smtp.messages[before]
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = str(msg["List-Unsubscribe"]).strip("<>")
    path = urlsplit(url).path
    page = httpx.get(srv.url + path)
    assert page.status_code == 200 and "subscribed</b>" in page.text
    forged = path[:-3] + ("aaa" if not path.endswith("aaa") else "bbb")
    assert httpx.post(srv.url + forged, content="List-Unsubscribe=One-Click").status_code == 400
    r = httpx.post(srv.url + path, content="List-Unsubscribe=One-Click",
                   headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200
    assert "unsubscribed</b>" in httpx.get(srv.url + path).text
    c2 = h.campaign(srv, mail("news-2", "news"))
    c3 = h.campaign(srv, mail("offers-1", "offers"))
    assert [(m["status"], m["reason"]) for m in settled(srv, c2["id"], 1)] == [
        ("skipped", "unsubscribed")]
    assert [m["status"] for m in settled(srv, c3["id"], 1)] == ["sent"]
    subjects = [str(m["subject"]) for m in smtp.messages[before:]]
    assert "news-2" not in subjects and "offers-1" in subjects
    subs = h.api(srv, "GET", "/1/subscriptions", params={"identity": "un1"}, ok=200).json()
    assert subs["subscriptions"] == [{"channel": "email", "category": "news",
                                      "subscribed": False}]
    h.wait_for(lambda: "Unsubscribed" in [e["evtName"] for e in h.api(
        srv, "GET", "/1/profile/events", params={"identity": "un1"}).json()["events"]],
        what="Unsubscribed event")


def test_suppressed_people_get_nothing(srv: NudgeServer, hook: WebhookReceiver) -> None:
    h.profiles(srv, [{"identity": "sp1", "grp": "sp"}, {"identity": "sp2", "grp": "sp"}])
    r = h.api(srv, "POST", "/1/gdpr/suppress", {"subjects": [{"identity": "sp1"}]})
    assert r.status_code == 200, r.text
    c = h.campaign(srv, hook_campaign(hook, "sp", "sp"))
    ms = sorted((m["status"], m["reason"]) for m in settled(srv, c["id"], 2))
    assert ms == [("sent", None), ("skipped", "suppressed")]
    assert h.wait_for(lambda: got(hook, "sp") == ["sp2"], what="sp2 only")


def test_outbound_event_webhooks_and_delivery_callbacks(srv: NudgeServer,
                                                        hook: WebhookReceiver,
                                                        twilio: TwilioServer) -> None:
    h.api(srv, "POST", "/1/webhooks", {"url": f"{hook.url}/hook", "event": "Big Purchase",
                                       "where": [{"property": "amount", "op": "gt",
                                                  "value": 100}]}, ok=201)
    bad = h.api(srv, "POST", "/1/webhooks", {"url": "ftp://x", "event": "A"})
    assert bad.status_code == 400 and bad.json()["field"] == "url"
    h.profiles(srv, [{"identity": "wh1", "grp": "wh"}])
    now = int(time.time())
    srv.upload([{"type": "event", "identity": "wh1", "ts": now, "evtName": "Big Purchase",
                 "evtData": {"amount": a}} for a in (50, 150, 250)])
    events = h.wait_for(lambda: [r for r in hook.accepted if isinstance(r.parsed, dict)
                                 and r.parsed.get("event") == "Big Purchase"] or None,
                        what="event webhooks")
    time.sleep(1)
    events = [r for r in hook.accepted if isinstance(r.parsed, dict)
              and r.parsed.get("event") == "Big Purchase"]
    assert sorted(r.parsed["properties"]["amount"] for r in events) == [150, 250]
    # Delivery receipts: Twilio's status callback (form fields) on the signed URL.
    h.profiles(srv, [{"identity": "cb1", "grp": "cb", "Phone": "+15550001111"}])
    c = h.campaign(srv, {"name": "sms", "channels": ["sms"], "audience": seg("cb"),
                         "content": {"sms": {"body": "hello"}}})
    (m,) = settled(srv, c["id"], 1)
    assert m["status"] == "sent" and m["provider_id"].startswith("SM")
    sid = twilio.accepted[-1].json["sid"] if twilio.accepted[-1].json else m["provider_id"]
    assert sid == m["provider_id"]
    urls = h.api(srv, "GET", "/1/engage/callbacks", ok=200).json()
    path = urlsplit(urls["twilio"]).path
    form = {"MessageSid": sid, "MessageStatus": "delivered"}
    assert httpx.post(srv.url + path[:-4] + "0000", data=form).status_code == 401
    r = httpx.post(srv.url + path, data=form)
    assert r.status_code == 200 and r.json()["applied"] == 1
    assert h.outbox(srv, campaign_id=c["id"])[0]["status"] == "delivered"
    rep = h.api(srv, "GET", f"/1/campaigns/{c['id']}/report", ok=200).json()
    assert rep["by_variant_channel"][0]["delivered"] == 1


def test_whatsapp_status_webhooks_mark_delivered_and_read(srv: NudgeServer) -> None:
    """A template message through the WhatsApp Cloud API server, then the Cloud API's own
    status webhooks (entry[].changes[].value.statuses[]) on the signed callback URL."""
    with WhatsAppServer() as wa:
        h.configure(srv, "whatsapp", wa.channel_config())
        h.profiles(srv, [{"identity": "wa1", "grp": "wa", "Phone": "+15550002222"}])
        c = h.campaign(srv, {"name": "wa", "channels": ["whatsapp"], "audience": seg("wa"),
                             "content": {"whatsapp": {"template": "order_update",
                                                      "language": "en_US",
                                                      "params": ["{{ profile.identity }}"]}}})
        (m,) = settled(srv, c["id"], 1)
        assert m["status"] == "sent" and m["provider_id"].startswith("wamid.")
        assert wa.accepted[-1].json["template"]["name"] == "order_update"
    path = urlsplit(h.api(srv, "GET", "/1/engage/callbacks", ok=200).json()["whatsapp"]).path

    def status(st: str) -> dict[str, Any]:
        return {"object": "whatsapp_business_account", "entry": [{
            "id": "WABA-1", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"phone_number_id": "106540352242922"},
                "statuses": [{"id": m["provider_id"], "status": st,
                              "timestamp": str(int(time.time())),
                              "recipient_id": "15550002222"}]}}]}]}

    assert httpx.post(srv.url + path[:-4] + "0000", json=status("read")).status_code == 401
    for st in ("sent", "delivered", "read", "read"):  # "sent" is not a stage; repeats are no-ops
        r = httpx.post(srv.url + path, json=status(st))
        assert r.status_code == 200, r.text
    (after,) = h.outbox(srv, campaign_id=c["id"])
    assert after["status"] == "delivered" and after["opened_at"] is not None
    cell = h.api(srv, "GET", f"/1/campaigns/{c['id']}/report", ok=200).json()[
        "by_variant_channel"][0]
    assert (cell["delivered"], cell["opened"]) == (1, 1)
