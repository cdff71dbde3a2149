"""Web push, Twilio SMS, WhatsApp Cloud API and signed webhooks, each against a local server
speaking the provider's protocol (web push payloads decrypted with http_ece, webhook
signatures verified by the receiver)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from nudge.engage import signing
from nudge.engage.channels.registry import unreachable_identifier
from nudge.engage.channels.sms import SmsChannel
from nudge.engage.channels.webhook import WebhookChannel
from nudge.engage.channels.webpush import WebPushChannel
from nudge.engage.channels.whatsapp import WhatsAppChannel
from nudge.errors import ValidationError
from tests.engage.providers import (
    SilentServer,
    TwilioServer,
    WebhookReceiver,
    WebPushServer,
    WhatsAppServer,
    allow_private_networks,  # noqa: F401 - autouse
    message,
)


def run(channel, *messages):
    async def go():
        try:
            return [await channel.send(m) for m in messages]
        finally:
            await channel.close()
    return asyncio.run(go())


def hang_result(cls, config, to, content):
    silent = SilentServer()
    try:
        cfg = {**config, "timeout_s": 0.3}
        for key in ("base_url", "url"):
            if key in cfg:
                cfg[key] = silent.url
        target = silent.url if to == "URL" else to
        [r] = run(cls.from_config(cfg), message(cls.name, target, content))
        return r
    finally:
        silent.close()


# -- web push ----------------------------------------------------------------------------------
@pytest.fixture
def push():
    with WebPushServer() as server:
        yield server


def test_webpush_payload_is_encrypted_for_the_subscriber(push: WebPushServer) -> None:
    sub = push.subscribe()
    content = {"title": "Flash sale", "body": "2 hours left", "url": "https://shop/sale",
               "icon": "https://shop/i.png", "urgency": "high", "topic": "sale",
               "open_url": "https://nudge.example/1/t/o/a1/7.gif?s=abc"}
    ch = WebPushChannel.from_config(push.channel_config())
    public = ch.public_key()
    [r] = run(ch, message("webpush", json.dumps(sub.subscription), content))
    assert r.outcome == "sent" and r.provider_id.startswith(push.url + "/message/")
    [req] = push.accepted
    assert b"Flash sale" not in req.body  # encrypted on the wire
    payload = req.parsed["payload"]
    assert payload["title"] == "Flash sale" and payload["url"] == "https://shop/sale"
    assert payload["nudge"]["campaign_id"] == "7"
    # the signed open URL rides in the encrypted payload for the service worker
    assert payload["nudge"]["open_url"] == "https://nudge.example/1/t/o/a1/7.gif?s=abc"
    assert req.parsed["vapid"]["sub"] == "mailto:ops@shop.example"
    assert req.headers["urgency"] == "high" and req.headers["topic"] == "sale"
    assert req.headers["ttl"] == "86400"
    assert f"k={public}" in req.headers["authorization"]


def test_webpush_failure_mapping(push: WebPushServer) -> None:
    live, gone = push.subscribe(), push.subscribe()
    push.gone.add(gone.endpoint.rsplit("/", 1)[1])
    missing = {**live.subscription, "endpoint": push.url + "/push/unknown"}
    push.fail_next(429, None, {"Retry-After": "5"})
    push.fail_next(502)
    results = run(WebPushChannel.from_config(push.channel_config()),
                  message("webpush", json.dumps(live.subscription), {"title": "a"}),
                  message("webpush", json.dumps(live.subscription), {"title": "b"}),
                  message("webpush", json.dumps(gone.subscription), {"title": "c"}),
                  message("webpush", json.dumps(missing), {"title": "d"}),
                  message("webpush", "{not json", {"title": "e"}),
                  message("webpush", json.dumps({"endpoint": "x"}), {"title": "f"}))
    assert [(r.outcome, r.status_code) for r in results] == [
        ("retry", 429), ("retry", 502), ("unreachable", 410), ("unreachable", 404),
        ("unreachable", None), ("unreachable", None)]
    assert results[0].retry_after == 5
    m = message("webpush", json.dumps(gone.subscription), {})
    assert unreachable_identifier(m) == ("webpush", m.to)


def test_webpush_wrong_vapid_key_is_refused(push: WebPushServer) -> None:
    other = WebPushServer()  # a different VAPID key than the subscription expects
    sub = push.subscribe()
    [r] = run(WebPushChannel.from_config(other.channel_config()),
              message("webpush", json.dumps(sub.subscription), {"title": "x"}))
    assert r.outcome == "rejected" and r.status_code == 403


def test_webpush_https_required_and_hang(push: WebPushServer) -> None:
    sub = push.subscribe()
    config = {**push.channel_config(), "allow_http": False}
    [r] = run(WebPushChannel.from_config(config),
              message("webpush", json.dumps(sub.subscription), {"title": "x"}))
    assert r.outcome == "unreachable" and push.received == []
    silent = SilentServer()
    try:
        s = {**sub.subscription, "endpoint": silent.url + "/push/1"}
        [r] = run(WebPushChannel.from_config({**push.channel_config(), "timeout_s": 0.3}),
                  message("webpush", json.dumps(s), {"title": "x"}))
        assert r.outcome == "retry" and r.error.startswith("timeout")
    finally:
        silent.close()


def test_webpush_config_errors() -> None:
    for config, field in (({"subscriber": "mailto:a@b"}, "config.vapid_private_key"),
                          ({"vapid_private_key": "abc", "subscriber": "mailto:a@b"},
                           "config.vapid_private_key"),
                          ({"vapid_private_key": WebPushServer().channel_config()[
                              "vapid_private_key"], "subscriber": "ops"},
                           "config.subscriber")):
        with pytest.raises(ValidationError) as e:
            WebPushChannel.from_config({"provider": "vapid", **config})
        assert e.value.field == field


# -- SMS (Twilio) ------------------------------------------------------------------------------
@pytest.fixture
def twilio():
    with TwilioServer() as server:
        yield server


def test_sms_twilio_form_fields_and_basic_auth(twilio: TwilioServer) -> None:
    [r] = run(SmsChannel.from_config(twilio.channel_config()),
              message("sms", "+14155550123", {"body": "Your code is 123456"}))
    assert r.outcome == "sent" and r.provider_id.startswith("SM")
    [req] = twilio.accepted
    assert req.form == {"To": "+14155550123", "From": "+15005550006",
                        "Body": "Your code is 123456",
                        "StatusCallback": "https://nudge.example/1/providers/twilio/status"}
    service = {**twilio.channel_config(), "messaging_service_sid": "MG" + "1" * 32}
    [r] = run(SmsChannel.from_config(service), message("sms", "+14155550123", {"body": "x"}))
    assert r.outcome == "sent"
    assert twilio.accepted[1].form["MessagingServiceSid"] == "MG" + "1" * 32
    assert "From" not in twilio.accepted[1].form


def test_sms_error_codes(twilio: TwilioServer) -> None:
    twilio.invalid.add("+10000000000")
    twilio.stopped.add("+14155550199")
    twilio.fail_next(429, {"code": 20429, "message": "Too Many Requests", "status": 429},
                     {"Retry-After": "3"})
    twilio.fail_next(503, {"code": 20500, "message": "Service unavailable", "status": 503})
    sms = lambda to: message("sms", to, {"body": "hi"})  # noqa: E731
    results = run(SmsChannel.from_config(twilio.channel_config()),
                  sms("+14155550123"), sms("+14155550123"), sms("+10000000000"),
                  sms("+14155550199"), message("sms", "+14155550123", {}))
    assert [r.outcome for r in results] == ["retry", "retry", "unreachable", "rejected",
                                           "rejected"]
    assert results[0].retry_after == 3
    assert "21211" in results[2].error and "21610" in results[3].error
    bad = {**twilio.channel_config(), "auth_token": "wrong"}
    [r] = run(SmsChannel.from_config(bad), sms("+14155550123"))
    assert r.outcome == "rejected" and r.status_code == 401 and "wrong" not in r.error
    assert hang_result(SmsChannel, twilio.channel_config(), "+14155550123",
                       {"body": "x"}).outcome == "retry"


def test_sms_config_errors(twilio: TwilioServer) -> None:
    config = twilio.channel_config()
    del config["from"]
    with pytest.raises(ValidationError) as e:
        SmsChannel.from_config(config)
    assert e.value.field == "config.from"


# -- WhatsApp ----------------------------------------------------------------------------------
@pytest.fixture
def whatsapp():
    with WhatsAppServer() as server:
        yield server


TEMPLATE = {"template": "order_shipped", "language": "en_US", "components": [
    {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://x/p.png"}}]},
    {"type": "body", "parameters": [{"type": "text", "text": "Ada"},
                                    {"type": "text", "text": "A-1001"}]}]}


def test_whatsapp_template_and_text(whatsapp: WhatsAppServer) -> None:
    results = run(WhatsAppChannel.from_config(whatsapp.channel_config()),
                  message("whatsapp", "+4915112345678", TEMPLATE),
                  message("whatsapp", "4915112345678", {"text": "Hi https://x",
                                                        "preview_url": True}))
    assert [r.outcome for r in results] == ["sent", "sent"]
    assert results[0].provider_id.startswith("wamid.")
    t, x = (r.parsed for r in whatsapp.accepted)
    assert t == {"messaging_product": "whatsapp", "recipient_type": "individual",
                 "to": "4915112345678", "type": "template",
                 "template": {"name": "order_shipped", "language": {"code": "en_US"},
                              "components": TEMPLATE["components"]}}
    assert x["type"] == "text" and x["text"] == {"body": "Hi https://x", "preview_url": True}


def test_whatsapp_error_codes(whatsapp: WhatsAppServer) -> None:
    whatsapp.not_on_whatsapp.add("4900000000")
    whatsapp.fail_next(429, {"error": {"code": 130429, "message": "Rate limit hit"}},
                       {"Retry-After": "60"})
    whatsapp.fail_next(500, {"error": {"code": 1, "message": "unknown"}})
    whatsapp.fail_next(400, {"error": {"code": 131047, "message": "Re-engagement message"}})
    results = run(WhatsAppChannel.from_config(whatsapp.channel_config()),
                  *[message("whatsapp", "+4915112345678", TEMPLATE) for _ in range(3)],
                  message("whatsapp", "+4900000000", TEMPLATE),
                  message("whatsapp", "+4915112345678", {}))
    assert [r.outcome for r in results] == ["retry", "retry", "rejected", "unreachable",
                                           "rejected"]
    assert results[0].retry_after == 60
    bad = {**whatsapp.channel_config(), "access_token": "EAAGwrong"}
    [r] = run(WhatsAppChannel.from_config(bad), message("whatsapp", "+49151", TEMPLATE))
    assert r.outcome == "rejected" and r.status_code == 401
    assert hang_result(WhatsAppChannel, whatsapp.channel_config(), "+49151",
                       TEMPLATE).outcome == "retry"
    with pytest.raises(ValidationError) as e:
        WhatsAppChannel.from_config({**whatsapp.channel_config(), "api_version": "21"})
    assert e.value.field == "config.api_version"


# -- webhook -----------------------------------------------------------------------------------
SECRET = "whsec_" + "k" * 32


@pytest.fixture
def hook():
    with WebhookReceiver(SECRET) as server:
        yield server


def test_webhook_is_signed_and_receiver_verifies(hook: WebhookReceiver) -> None:
    body = {"event": "cart_reminder", "user": {"id": "u1"}, "items": [1, 2]}
    m = message("webhook", "", {"body": body}, key="c:o:1:A")
    [r] = run(WebhookChannel.from_config(hook.channel_config()), m)
    assert r.outcome == "sent"
    [req] = hook.accepted
    assert req.parsed == body and req.path == "/hook"
    assert req.headers["x-nudge-idempotency-key"] == "c:o:1:A"
    assert req.headers["x-nudge-message-id"] == m.id
    # signed with another secret: the receiver refuses it, and we treat 401 as rejected
    [r] = run(WebhookChannel.from_config({**hook.channel_config(), "secret": "x" * 20}), m)
    assert r.outcome == "rejected" and r.status_code == 401


def test_webhook_status_mapping(hook: WebhookReceiver) -> None:
    hook.fail_next(500)
    hook.fail_next(429, None, {"Retry-After": "2"})
    hook.fail_next(408)
    hook.fail_next(404)
    hook.fail_next(302, None, {"Location": "https://elsewhere.example/"})
    results = run(WebhookChannel.from_config(hook.channel_config()),
                  *[message("webhook", "", {"body": {"n": i}}) for i in range(6)])
    assert [(r.outcome, r.status_code) for r in results] == [
        ("retry", 500), ("retry", 429), ("retry", 408), ("rejected", 404), ("rejected", 302),
        ("sent", 200)]
    assert results[1].retry_after == 2
    assert hang_result(WebhookChannel, hook.channel_config(), "URL",
                       {"body": {}}).outcome == "retry"
    [r] = run(WebhookChannel.from_config({**hook.channel_config(), "url": None}),
              message("webhook", "", {"body": {}}))
    assert r.outcome == "unreachable"


def test_signing_verify_replay_window_and_rotation() -> None:
    body = b'{"a":1}'
    now = time.time()
    h = signing.sign(SECRET, body, now=now)
    ts, sig = h[signing.TIMESTAMP_HEADER], h[signing.SIGNATURE_HEADER]
    signing.verify(SECRET, ts, sig, body, now=now + 10)
    signing.verify(SECRET, ts, f"v1={'0' * 64}, {sig}", body, now=now)  # rotation: any matches
    for args, why in (((SECRET, ts, sig, body + b" "), "does not match"),
                      (("other-secret-123456", ts, sig, body), "does not match"),
                      ((SECRET, ts, sig, body), "replay window"),
                      ((SECRET, None, sig, body), "missing"),
                      ((SECRET, "x", sig, body), "integer")):
        with pytest.raises(signing.SignatureError, match=why):
            signing.verify(*args, now=now + (400 if why == "replay window" else 0))
    assert sig == "v1=" + signing.signature(SECRET, ts, body)


@pytest.mark.parametrize("config,field", [
    ({"secret": "short"}, "config.secret"),
    ({"secret": SECRET, "url": "file:///etc/passwd"}, "config.url"),
    ({"secret": SECRET, "headers": {"X-Nudge-Signature": "x"}}, "config.headers"),
    ({"secret": SECRET, "headers": {"X-A": "1\r\nX-B: 2"}}, "config.headers"),
])
def test_webhook_config_errors(config, field) -> None:
    with pytest.raises(ValidationError) as e:
        WebhookChannel.from_config({"provider": "http", **config})
    assert e.value.field == field


def test_retry_after_header_forms() -> None:
    import datetime as dt
    from email.utils import format_datetime

    from nudge.engage.channels.provider import retry_after

    now = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
    later = format_datetime(now + dt.timedelta(seconds=90), usegmt=True)
    assert retry_after("120") == 120
    assert retry_after(later, now=now.timestamp()) == 90
    assert retry_after(format_datetime(now - dt.timedelta(hours=1), usegmt=True),
                       now=now.timestamp()) == 0
    assert retry_after("10000000") == 24 * 3600  # capped
    assert retry_after("soon") is None and retry_after(None) is None


def test_webhook_retry_after_as_http_date(hook: WebhookReceiver) -> None:
    from email.utils import formatdate

    hook.fail_next(503, None, {"Retry-After": formatdate(time.time() + 60, usegmt=True)})
    [r] = run(WebhookChannel.from_config(hook.channel_config()),
              message("webhook", "", {"body": {}}))
    assert r.outcome == "retry" and 50 <= r.retry_after <= 60
