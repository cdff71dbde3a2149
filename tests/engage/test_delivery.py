"""End-to-end delivery through the real server and real provider servers: campaigns,
API sends, retries and dead letters, fallbacks, triggers, conversions, reports."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import NudgeServer
from tests.engage import engage_helpers as h
from tests.engage.providers import SmtpServer, TwilioServer, WebhookReceiver, tls_pair

SECRET = "webhook-signing-secret-0123"  # noqa: S105 - a test receiver's secret
FAST = {"NUDGE_ENGAGE_POLL_MS": "50", "NUDGE_ENGAGE_BACKOFF_MS": "300",
        "NUDGE_ENGAGE_MAX_ATTEMPTS": "4", "NUDGE_ENGAGE_SEND_TIMEOUT_MS": "4000"}


@pytest.fixture(scope="module")
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(SECRET) as r:
        yield r


@pytest.fixture(scope="module")
def twilio() -> Iterator[TwilioServer]:
    with TwilioServer() as t:
        yield t


@pytest.fixture(scope="module")
def smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    with SmtpServer(tls_pair(tmp_path_factory.mktemp("tls"))) as s:
        yield s


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, hook: WebhookReceiver, twilio: TwilioServer,
        smtp: SmtpServer) -> Iterator[NudgeServer]:
    s = h.start_server(tmp_path_factory.mktemp("nudge"), FAST)
    try:
        h.configure(s, "webhook", hook.channel_config())
        h.configure(s, "sms", twilio.channel_config())
        h.configure(s, "email", smtp.channel_config())
        yield s
    finally:
        s.stop()


def hook_body(name: str, extra: str = "") -> dict[str, Any]:
    return {"body": '{"to": "{{ profile.identity }}", "c": "' + name + '"' + extra + "}"}


def received(hook: WebhookReceiver, c: str) -> list[Any]:
    return [r for r in hook.received if isinstance(r.parsed, dict) and r.parsed.get("c") == c]


def test_one_time_campaign_reaches_every_member_once(srv: NudgeServer,
                                                     hook: WebhookReceiver) -> None:
    h.profiles(srv, [{"identity": f"ot{i}", "first_name": f"N{i % 3}", "grp": "ot"}
                     for i in range(20)])
    c = h.campaign(srv, {
        "name": "hello", "channels": ["webhook"], "webhook_url": f"{hook.url}/hook",
        "audience": {"definition": {"profile": {"property": "grp", "op": "eq",
                                                "value": "ot"}}},
        "content": {"webhook": {"body": '{"c": "ot", "text": "Hi {{ profile.first_name }}"}'}}})
    got = h.wait_for(lambda: len(received(hook, "ot")) >= 20 and received(hook, "ot"),
                     what="20 webhook posts")
    time.sleep(0.5)
    got = received(hook, "ot")
    assert len(got) == 20
    assert sorted(r.parsed["text"] for r in got).count("Hi N0") == 7
    assert len({r.headers["x-nudge-idempotency-key"] for r in got}) == 20
    report = h.wait_for(lambda: (r := h.api(srv, "GET", f"/1/campaigns/{c['id']}/report",
                                            ok=200).json())["status"] == "completed" and r,
                        what="campaign completed")
    (cell,) = report["by_variant_channel"]
    assert (cell["variant"], cell["channel"], cell["sent"], cell["queued"]) == (
        "A", "webhook", 20, 20)
    # Sends are written back as events on each profile.
    h.wait_for(lambda: "Message Sent" in profile_events(srv, "ot3"), what="Message Sent event")
    ev = h.api(srv, "GET", "/1/profile/events", params={"identity": "ot3",
                                                        "event": "Message Sent"}).json()
    assert ev["events"][0]["evtData"]["campaign_id"] == c["id"]
    assert ev["events"][0]["evtData"]["channel"] == "webhook"


def profile_events(srv: NudgeServer, identity: str) -> list[str]:
    ev = h.api(srv, "GET", "/1/profile/events", params={"identity": identity}, ok=200).json()
    return [e["evtName"] for e in ev["events"]]


def test_api_send_personalizes_and_request_id_is_idempotent(srv: NudgeServer,
                                                            hook: WebhookReceiver) -> None:
    h.profiles(srv, [{"identity": "api1"}, {"identity": "api2"}])
    c = h.campaign(srv, {"name": "receipt", "kind": "api", "channels": ["webhook"],
                         "webhook_url": f"{hook.url}/hook",
                         "content": {"webhook": hook_body("api", ', "n": "{{ data.order }}"')}})
    body = {"campaign_id": c["id"], "to": [{"identity": "api1"}, {"identity": "api2"}],
            "data": {"order": "A-17"}, "request_id": "order-17"}
    first = h.api(srv, "POST", "/1/send", body, ok=202).json()["messages"]
    again = h.api(srv, "POST", "/1/send", body, ok=202).json()["messages"]
    assert [m["id"] for m in first] == [m["id"] for m in again]
    h.wait_for(lambda: len(received(hook, "api")) >= 2, what="2 receipts")
    time.sleep(0.5)
    got = received(hook, "api")
    assert sorted((r.parsed["to"], r.parsed["n"]) for r in got) == [("api1", "A-17"),
                                                                    ("api2", "A-17")]
    bad = h.api(srv, "POST", "/1/send", {**body, "to": [{"nickname": "x"}]})
    assert bad.status_code == 400 and bad.json()["field"] == "to[0]"
    assert h.api(srv, "POST", "/1/send", {**body, "to": "api1"}).json()["field"] == "to"


def test_retry_after_500_hang_then_dead_letter_without_duplicates(
        srv: NudgeServer, hook: WebhookReceiver) -> None:
    h.profiles(srv, [{"identity": "rt1"}])
    c = h.campaign(srv, {"name": "flaky", "kind": "api", "channels": ["webhook"],
                         "webhook_url": f"{hook.url}/hook",
                         "content": {"webhook": hook_body("rt")}})
    hook.fail_next(429, {"error": "slow down"}, {"Retry-After": "2"})
    hook.fail_next(500)
    hook.hang_next(10.0)
    h.api(srv, "POST", "/1/send", {"campaign_id": c["id"], "to": [{"identity": "rt1"}]},
          ok=202)
    # attempt 1: 429 · 2: 500 · 3: hangs past our 4 s timeout · 4: accepted
    h.wait_for(lambda: len([r for r in received(hook, "rt") if r.status == 200]) >= 1
               and any(m["status"] == "sent" for m in h.outbox(srv, campaign_id=c["id"])),
               timeout=90, what="accepted after retries")
    time.sleep(7)  # let the hung request finish too
    (msg,) = h.outbox(srv, campaign_id=c["id"])
    assert msg["status"] == "sent" and msg["attempts"] == 4
    keys = {r.headers["x-nudge-idempotency-key"] for r in hook.received
            if r.headers.get("x-nudge-idempotency-key", "").startswith(f"c{c['id']}:")}
    assert keys == {msg["idempotency_key"]}  # every attempt carried the same key

    # Retry-After was honored: the second attempt came ≥ 2 s after the 429.
    attempts = [r for r in hook.received
                if r.headers.get("x-nudge-idempotency-key") == msg["idempotency_key"]]
    stamps = [int(r.headers["x-nudge-timestamp"]) for r in attempts]
    assert len(attempts) == 4
    assert stamps[1] - stamps[0] >= 2

    # A provider that keeps failing: dead letter after 4 attempts, visible, retryable.
    h.profiles(srv, [{"identity": "rt2"}])
    hook.fail_next(500, times=4)
    h.api(srv, "POST", "/1/send", {"campaign_id": c["id"], "to": [{"identity": "rt2"}]},
          ok=202)
    dead = h.wait_for(lambda: [m for m in h.outbox(srv, status="dead")
                               if m["campaign_id"] == c["id"]], timeout=90, what="dead letter")
    assert dead[0]["attempts"] == 4 and "500" in (dead[0]["reason"] or "")
    h.api(srv, "POST", f"/1/outbox/{dead[0]['id']}/retry", ok=200)
    h.wait_for(lambda: any(m["id"] == dead[0]["id"] and m["status"] == "sent"
                           for m in h.outbox(srv, campaign_id=c["id"])), what="resent")
    accepted = [r for r in hook.received if r.status == 200
                and r.headers.get("x-nudge-idempotency-key") == dead[0]["idempotency_key"]]
    assert len(accepted) == 1


def test_fallback_when_unreachable_and_when_provider_rejects(
        srv: NudgeServer, twilio: TwilioServer, smtp: SmtpServer) -> None:
    h.profiles(srv, [
        {"identity": "fb1", "Email": "fb1@example.com", "grp": "fb"},  # no phone
        {"identity": "fb2", "Email": "fb2@example.com", "Phone": "+15550000002", "grp": "fb"},
        {"identity": "fb3", "Email": "fb3@example.com", "Phone": "+15550000003", "grp": "fb"},
    ])
    twilio.invalid.add("+15550000003")
    before = len(smtp.messages)
    c = h.campaign(srv, {
        "name": "sms first", "channels": ["sms", "email"],
        "audience": {"definition": {"profile": {"property": "grp", "op": "eq", "value": "fb"}}},
        "content": {"sms": {"body": "sms {{ profile.identity }}"},
                    "email": {"subject": "mail {{ profile.identity }}",
                              "html": "<p>Hi</p>", "text": "Hi"}}})
    h.wait_for(lambda: len(smtp.messages) - before >= 2, what="2 fallback emails")
    sms_to = [r.form.get("To") for r in twilio.received]
    assert "+15550000002" in sms_to and "+15550000003" in sms_to
    subjects = sorted(str(m["subject"]) for m in smtp.messages[before:])
    assert subjects == ["mail fb1", "mail fb3"]
    msgs = h.wait_for(lambda: (ms := h.outbox(srv, campaign_id=c["id"])) and all(
        m["status"] not in ("pending", "sending") for m in ms) and len(ms) == 4 and ms,
        what="final states")
    by = {(m["user_id"], m["channel"]): m for m in msgs}
    states = sorted((m["channel"], m["status"]) for m in by.values())
    assert states == [("email", "sent"), ("email", "sent"), ("sms", "rejected"),
                      ("sms", "sent")] or states == [("email", "sent"), ("email", "sent"),
                                                     ("sms", "sent"), ("sms", "unreachable")]
    fallback = [m for m in msgs if m["parent_id"] is not None]
    assert len(fallback) == 1 and fallback[0]["channel"] == "email"


def test_fallback_when_not_engaged_in_time(srv: NudgeServer, hook: WebhookReceiver,
                                           smtp: SmtpServer) -> None:
    h.profiles(srv, [{"identity": f"ne{i}", "Email": f"ne{i}@example.com", "grp": "ne"}
                     for i in range(2)])
    before = len(smtp.messages)
    h.campaign(srv, {
        "name": "nudge then mail", "channels": ["webhook", "email"],
        "webhook_url": f"{hook.url}/hook", "fallback_after": {"minutes": 0.05},
        "audience": {"definition": {"profile": {"property": "grp", "op": "eq", "value": "ne"}}},
        "content": {"webhook": hook_body("ne", ', "link": "{{ \'https://shop.example/x\' | '
                                                'track }}"'),
                    "email": {"subject": "reminder {{ profile.identity }}", "text": "t"}}})
    got = h.wait_for(lambda: len(received(hook, "ne")) >= 2 and received(hook, "ne"),
                     what="2 webhook posts")
    clicker = next(r for r in got if r.parsed["to"] == "ne0")
    link = clicker.parsed["link"]
    assert link.startswith(srv.url.replace("127.0.0.1", "127.0.0.1")) or "/1/t/c/" in link
    r = httpx.get(srv.url + link[link.index("/1/t/c/"):], follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "https://shop.example/x"
    # A forged destination does not redirect.
    forged = link[link.index("/1/t/c/"):].replace("shop.example", "evil.example")
    assert httpx.get(srv.url + forged, follow_redirects=False).status_code == 400
    h.wait_for(lambda: len(smtp.messages) - before >= 1, what="fallback email")
    time.sleep(4)  # past the fallback delay of both
    subjects = [str(m["subject"]) for m in smtp.messages[before:]]
    assert subjects == ["reminder ne1"]


def test_trigger_with_inaction_check_and_conversion_report(srv: NudgeServer,
                                                           hook: WebhookReceiver) -> None:
    h.profiles(srv, [{"identity": f"tr{i}"} for i in range(4)])
    c = h.campaign(srv, {
        "name": "cart", "kind": "trigger", "channels": ["webhook"],
        "webhook_url": f"{hook.url}/hook",
        "trigger": {"event": "Added To Cart", "where": [{"property": "value", "op": "gte",
                                                         "value": 10}],
                    "unless": {"event": "Charged", "within": {"minutes": 0.34}}},
        "conversion": {"event": "Charged", "within": {"hours": 1},
                       "revenue_property": "Amount"},
        "content": {"webhook": hook_body("tr", ', "item": "{{ event.item }}"')}})
    now = int(time.time())

    def ev(who: str, name: str, ts: int = now, **props: Any) -> dict[str, Any]:
        return {"type": "event", "identity": who, "ts": ts, "evtName": name, "evtData": props}

    now = int(time.time())  # the window (20 s) starts at the cart events' time
    r = srv.upload([ev("tr0", "Added To Cart", now, value=20, item="shoes"),
                    ev("tr1", "Added To Cart", now, value=5, item="socks"),  # filtered out
                    ev("tr2", "Added To Cart", now, value=30, item="hat")])
    assert r.status_code == 200
    time.sleep(0.5)
    srv.upload([ev("tr2", "Charged", int(time.time()), Amount=30)])  # within the window
    h.wait_for(lambda: received(hook, "tr"), timeout=90, what="abandoned-cart message")
    time.sleep(4)
    got = received(hook, "tr")
    assert [(g.parsed["to"], g.parsed["item"]) for g in got] == [("tr0", "shoes")]
    msgs = h.outbox(srv, campaign_id=c["id"])
    assert sorted(m["status"] for m in msgs) == ["sent", "skipped"]
    assert next(m for m in msgs if m["status"] == "skipped")["reason"] == "did Charged"
    # tr0 converts after the message.
    srv.upload([ev("tr0", "Charged", int(time.time()) + 1, Amount=99.5)])
    rep = h.wait_for(lambda: (x := h.api(srv, "GET", f"/1/campaigns/{c['id']}/report",
                                         ok=200).json())["variants"][0]["converted"] == 1 and x,
                     what="conversion")
    v = rep["variants"][0]
    assert v["users"] == 1 and v["revenue"] == 99.5 and v["conversion_rate"] == 1.0
    assert rep["by_variant_channel"][0]["skipped"] == {"did Charged": 1}
    h.wait_for(lambda: "Campaign Converted" in profile_events(srv, "tr0"),
               what="Campaign Converted event")


def test_estimate_preview_and_lifecycle(srv: NudgeServer, hook: WebhookReceiver) -> None:
    h.profiles(srv, [{"identity": f"es{i}", "grp": "es", **(
        {"Email": f"es{i}@example.com"} if i % 2 else {})} for i in range(6)])
    body = {"name": "later", "channels": ["email", "webhook"],
            "webhook_url": f"{hook.url}/hook", "control_percent": 50,
            "audience": {"definition": {"profile": {"property": "grp", "op": "eq",
                                                    "value": "es"}}},
            "schedule": {"at": time.time() + 3600},
            "content": {"email": {"subject": "Hi {{ profile.identity }}",
                                  "html": "<p>{{ 'https://a.example' | track }}</p>"},
                        "webhook": hook_body("es")}}
    est = h.api(srv, "POST", "/1/campaigns/estimate", body, ok=200).json()
    assert est["audience"] == 6
    assert est["reachable"] == {"email": 3, "webhook": 6}
    assert est["first_channel"] == {"email": 3, "webhook": 3}
    c = h.campaign(srv, body)
    assert c["status"] == "scheduled"
    pv = h.api(srv, "POST", f"/1/campaigns/{c['id']}/preview",
               {"user": {"identity": "es1"}}, ok=200).json()
    email = next(p for p in pv["previews"] if p["channel"] == "email")
    assert email["content"]["subject"] == "Hi es1" and email["to"] == "es1@example.com"
    assert "/1/t/c/" in email["content"]["html"] and "/1/t/o/" in email["content"]["html"]
    assert "/1/t/u/" in email["content"]["unsubscribe_url"]
    assert h.api(srv, "POST", f"/1/campaigns/{c['id']}/pause", ok=200).json()["status"] == "paused"
    assert h.api(srv, "POST", f"/1/campaigns/{c['id']}/send", ok=200).json()["status"] == \
        "scheduled"
    assert h.api(srv, "PUT", f"/1/campaigns/{c['id']}", {**body, "name": ""}).json()["field"] \
        == "name"
    assert h.api(srv, "POST", f"/1/campaigns/{c['id']}/stop", ok=200).json()["status"] == \
        "stopped"
    assert h.api(srv, "POST", f"/1/campaigns/{c['id']}/send").status_code == 409
    assert h.api(srv, "GET", "/1/campaigns/999999").status_code == 404


def test_scheduled_in_each_users_timezone(srv: NudgeServer, hook: WebhookReceiver) -> None:
    h.profiles(srv, [{"identity": "tz-east", "grp": "tz", "timezone": "Etc/GMT-6"},
                     {"identity": "tz-west", "grp": "tz", "timezone": "Etc/GMT+6"}])
    # "At <now + 2 h> wall-clock time, in each user's zone": already past in UTC+6 (sent
    # now), still 8 h away in UTC-6 (queued for then).
    at = time.time() + 2 * 3600
    c = h.campaign(srv, {"name": "local 9am", "channels": ["webhook"],
                         "webhook_url": f"{hook.url}/hook",
                         "audience": {"definition": {"profile": {"property": "grp", "op": "eq",
                                                                 "value": "tz"}}},
                         "schedule": {"at": at, "user_timezone": True},
                         "content": {"webhook": hook_body("tz")}})
    h.wait_for(lambda: [r.parsed["to"] for r in received(hook, "tz")] == ["tz-east"],
               what="east user now")
    west = next(m for m in h.outbox(srv, campaign_id=c["id"]) if m["status"] == "pending")
    assert abs(west["next_attempt_at"] - (at + 6 * 3600)) < 1


def test_ab_variants_control_group_and_report(srv: NudgeServer, hook: WebhookReceiver) -> None:
    n = 60
    h.profiles(srv, [{"identity": f"ab{i}", "grp": "ab"} for i in range(n)])
    c = h.campaign(srv, {
        "name": "ab", "channels": ["webhook"], "webhook_url": f"{hook.url}/hook",
        "audience": {"definition": {"profile": {"property": "grp", "op": "eq", "value": "ab"}}},
        "control_percent": 20,
        "variants": [{"name": "A", "percent": 40},
                     {"name": "B", "percent": 40,
                      "content": {"webhook": hook_body("ab", ', "v": "B"')}}],
        "content": {"webhook": hook_body("ab", ', "v": "A"')},
        "conversion": {"event": "Bought", "within": {"hours": 1}}})
    msgs = h.wait_for(lambda: (ms := h.outbox(srv, campaign_id=c["id"])) and len(ms) == n and all(
        m["status"] in ("sent", "control") for m in ms) and ms, what="all decided")
    by_user = {m["user_id"]: m["variant"] for m in msgs}
    counts = {v: list(by_user.values()).count(v) for v in ("A", "B", "control")}
    assert sum(counts.values()) == n and all(counts.values())
    h.wait_for(lambda: len(received(hook, "ab")) >= counts["A"] + counts["B"], what="sends")
    bodies = {r.parsed["to"]: r.parsed["v"] for r in received(hook, "ab")}
    assert len(bodies) == counts["A"] + counts["B"]  # the control group got nothing
    # Everyone converts: variants' and control's rates are all 1.
    later = int(time.time()) + 1
    srv.upload([{"type": "event", "identity": f"ab{i}", "ts": later, "evtName": "Bought",
                 "evtData": {}} for i in range(n)])
    rep = h.wait_for(lambda: (r := h.api(srv, "GET", f"/1/campaigns/{c['id']}/report",
                                         ok=200).json()) and sum(
        v["converted"] for v in r["variants"]) == n and r, what="conversions")
    got = {v["variant"]: v for v in rep["variants"]}
    for name in ("A", "B", "control"):
        assert got[name]["users"] == counts[name] and got[name]["converted"] == counts[name]
    assert got["A"]["lift_vs_control"]["difference"] == 0.0
    assert got["A"]["conversion_ci95"][1] == 1.0


def test_provider_send_rate_is_honored(srv: NudgeServer, hook: WebhookReceiver) -> None:
    h.configure(srv, "webhook", {**hook.channel_config(), "rate_per_second": 2})
    try:
        time.sleep(2.5)  # configurations are re-read within 2 s
        h.profiles(srv, [{"identity": f"rl{i}", "grp": "rl"} for i in range(8)])
        h.campaign(srv, {"name": "rl", "channels": ["webhook"],
                         "webhook_url": f"{hook.url}/hook",
                         "audience": {"definition": {"profile": {"property": "grp", "op": "eq",
                                                                 "value": "rl"}}},
                         "content": {"webhook": hook_body("rl")}})
        got = h.wait_for(lambda: len(received(hook, "rl")) >= 8 and received(hook, "rl"),
                         what="8 sends")
        stamps = sorted(int(r.headers["x-nudge-timestamp"]) for r in got)
        # 2 per second with a burst of 2: 8 messages need at least 3 s.
        assert stamps[-1] - stamps[0] >= 2, stamps
    finally:
        h.configure(srv, "webhook", hook.channel_config())


def test_no_provider_secret_in_the_server_log(srv: NudgeServer, twilio: TwilioServer,
                                              smtp: SmtpServer) -> None:
    log = (srv.data_dir / "server.log").read_text()
    assert "engage started" in log
    for secret in (SECRET, twilio.auth_token, smtp.password):
        assert secret not in log
