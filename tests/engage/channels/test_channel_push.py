"""Mobile push: FCM HTTP v1 (OAuth2 service-account tokens) and APNs (HTTP/2, ES256 JWT),
each against a local server that verifies the provider's documented request."""

from __future__ import annotations

import asyncio

import pytest

import nudge.engage.channels.apns as apns_module
from nudge.engage.channels.apns import ApnsChannel
from nudge.engage.channels.fcm import FcmChannel
from nudge.engage.channels.registry import PushRouter, unreachable_identifier
from nudge.errors import ValidationError
from tests.engage.providers import (
    ApnsServer,
    FcmServer,
    SilentServer,
    allow_private_networks,  # noqa: F401 - autouse
    message,
    tls_pair,
)

FCM_TOKEN = "fGcm:APA91b" + "x" * 140
APNS_TOKEN = "a1" * 32


def run(channel, *messages):
    async def go():
        try:
            return [await channel.send(m) for m in messages]
        finally:
            await channel.close()
    return asyncio.run(go())


@pytest.fixture
def fcm():
    with FcmServer() as server:
        yield server


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return tls_pair(tmp_path_factory.mktemp("apns-tls"))


@pytest.fixture
def apns(tls):
    with ApnsServer(tls) as server:
        yield server


PUSH = {"title": "Back in stock", "body": "Your size is back", "image": "https://cdn/x.png",
        "data": {"sku": "A-1", "qty": 2}, "deep_link": "shop://p/A-1", "ttl_s": 3600,
        "collapse_key": "stock"}


# -- FCM ---------------------------------------------------------------------------------------
def test_fcm_v1_request_and_cached_oauth_token(fcm: FcmServer) -> None:
    ch = FcmChannel.from_config(fcm.channel_config())
    results = run(ch, *[message("push", FCM_TOKEN, PUSH, meta={"campaign_id": "9"})
                        for _ in range(3)])
    assert [r.outcome for r in results] == ["sent"] * 3
    assert results[0].provider_id == "projects/demo-project/messages/1"
    assert len(fcm.token_requests) == 1  # one token, reused until it expires
    claims = fcm.token_requests[0]
    assert claims["iss"] == fcm.client_email and claims["exp"] - claims["iat"] == 3600
    sends = [r for r in fcm.accepted if r.path.endswith("messages:send")]
    assert len(sends) == 3
    msg = sends[0].parsed
    assert msg["token"] == FCM_TOKEN
    assert msg["notification"] == {"title": "Back in stock", "body": "Your size is back",
                                   "image": "https://cdn/x.png"}
    assert msg["data"]["sku"] == "A-1" and msg["data"]["qty"] == "2"
    assert msg["data"]["nudge_campaign_id"] == "9" and msg["data"]["deep_link"] == "shop://p/A-1"
    assert msg["android"] == {"priority": "HIGH", "ttl": "3600s", "collapse_key": "stock"}


def test_fcm_token_refreshed_after_401(fcm: FcmServer) -> None:
    async def go():
        ch = FcmChannel.from_config(fcm.channel_config())
        try:
            first = await ch.send(message("push", FCM_TOKEN, PUSH))
            fcm.revoke_tokens()
            second = await ch.send(message("push", FCM_TOKEN, PUSH))
            return first, second
        finally:
            await ch.close()
    first, second = asyncio.run(go())
    assert (first.outcome, second.outcome) == ("sent", "sent")
    assert len(fcm.token_requests) == 2


def test_fcm_failure_mapping(fcm: FcmServer) -> None:
    fcm.unregistered.add("dead-token")
    quota = {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
         "errorCode": "QUOTA_EXCEEDED"}]}}
    ch = FcmChannel.from_config(fcm.channel_config())

    async def go():
        try:
            await ch.access_token()  # so the scripted answers hit messages:send
            fcm.fail_next(429, quota, {"Retry-After": "17"})
            fcm.fail_next(500, {"error": {"code": 500, "status": "INTERNAL"}})
            fcm.fail_next(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT"}})
            out = [await ch.send(message("push", FCM_TOKEN, PUSH)) for _ in range(3)]
            return out + [await ch.send(message("push", "dead-token", PUSH))]
        finally:
            await ch.close()
    r429, r500, r400, dead = asyncio.run(go())
    assert r429.outcome == "retry" and r429.retry_after == 17
    assert r500.outcome == "retry" and r500.status_code == 500
    assert r400.outcome == "rejected"
    assert dead.outcome == "unreachable" and "UNREGISTERED" in dead.error
    sent = [r for r in fcm.received if r.path.endswith("messages:send")]
    assert [r.status for r in sent] == [429, 500, 400, 404]


def test_fcm_token_endpoint_refusal_and_hang() -> None:
    with FcmServer() as fcm:
        config = fcm.channel_config()
        fcm.fail_next(400, {"error": "invalid_grant"})
        [r] = run(FcmChannel.from_config(config), message("push", FCM_TOKEN, PUSH))
        assert r.outcome == "retry" and "token endpoint" in r.error
        fcm.hang_next(5)
        [r] = run(FcmChannel.from_config({**config, "timeout_s": 0.3}),
                  message("push", FCM_TOKEN, PUSH))
        assert r.outcome == "retry" and r.error.startswith("timeout")
    silent = SilentServer()
    try:
        cfg = {**config, "base_url": silent.url, "timeout_s": 0.3}
        cfg["service_account"] = {**cfg["service_account"], "token_uri": silent.url + "/token"}
        [r] = run(FcmChannel.from_config(cfg), message("push", FCM_TOKEN, PUSH))
        assert r.outcome == "retry" and r.error.startswith("timeout")
    finally:
        silent.close()


@pytest.mark.parametrize("mutate,field", [
    (lambda c: c.pop("service_account"), "config.service_account"),
    (lambda c: c["service_account"].pop("project_id"), "config.service_account.project_id"),
    (lambda c: c["service_account"].update(private_key="-----BEGIN nonsense"),
     "config.service_account.private_key"),
    (lambda c: c.update(base_url="ftp://x"), "config.base_url"),
    (lambda c: c.update(timeout_s=-1), "config.timeout_s"),
])
def test_fcm_config_errors(fcm: FcmServer, mutate, field) -> None:
    config = fcm.channel_config()
    mutate(config)
    with pytest.raises(ValidationError) as e:
        FcmChannel.from_config(config)
    assert e.value.field == field
    assert "BEGIN" not in e.value.message


# -- APNs --------------------------------------------------------------------------------------
def test_apns_http2_headers_and_jwt(apns: ApnsServer) -> None:
    ch = ApnsChannel.from_config(apns.channel_config())
    m1 = message("push", APNS_TOKEN, {**PUSH, "badge": 3, "collapse_id": "stock"},
                 key="c:o:1:A")
    m2 = message("push", APNS_TOKEN, {"data": {"sync": True}})
    r1, r2 = run(ch, m1, m2)
    assert (r1.outcome, r2.outcome) == ("sent", "sent"), (r1, r2)
    a, b = apns.accepted
    assert a.http_version == "2" and a.path == f"/3/device/{APNS_TOKEN}"
    h = a.headers
    assert h["apns-topic"] == "com.example.app" and h["apns-push-type"] == "alert"
    assert h["apns-priority"] == "10" and h["apns-collapse-id"] == "stock"
    assert int(h["apns-expiration"]) > 0
    assert r1.provider_id == h["apns-id"]
    assert a.parsed["aps"] == {"alert": {"title": "Back in stock", "body": "Your size is back"},
                               "sound": "default", "badge": 3, "mutable-content": 1}
    assert a.parsed["sku"] == "A-1" and a.parsed["nudge"]["campaign_id"] == "7"
    assert b.headers["apns-push-type"] == "background" and b.headers["apns-priority"] == "5"
    assert b.parsed["aps"] == {"content-available": 1}
    assert apns.jwt_iats[0] == apns.jwt_iats[1]  # the provider token is reused
    # the same idempotency key gives the same apns-id on a retry
    r3, = run(ApnsChannel.from_config(apns.channel_config()),
              message("push", APNS_TOKEN, PUSH, key="c:o:1:A"))
    assert r3.provider_id == r1.provider_id


def test_apns_token_is_resigned_when_old_or_expired(apns: ApnsServer, monkeypatch) -> None:
    monkeypatch.setattr(apns_module, "TOKEN_REFRESH_S", 0)
    ch = ApnsChannel.from_config(apns.channel_config())
    assert ch.provider_token(now=1_000) != ch.provider_token(now=2_000)
    monkeypatch.setattr(apns_module, "TOKEN_REFRESH_S", 3000)
    ch2 = ApnsChannel.from_config(apns.channel_config())
    apns.fail_next(403, {"reason": "ExpiredProviderToken"})
    [r] = run(ch2, message("push", APNS_TOKEN, PUSH))
    assert r.outcome == "sent"
    assert [x.status for x in apns.received] == [403, 200]


def test_apns_failure_mapping(apns: ApnsServer) -> None:
    gone = "b2" * 32
    apns.unregistered.add(gone)
    apns.fail_next(429, {"reason": "TooManyRequests"}, {"Retry-After": "30"})
    apns.fail_next(500, {"reason": "InternalServerError"})
    apns.fail_next(503, {"reason": "ServiceUnavailable"})
    results = run(ApnsChannel.from_config(apns.channel_config()),
                  *[message("push", APNS_TOKEN, PUSH) for _ in range(3)],
                  message("push", gone, PUSH), message("push", "ab" * 20, PUSH),
                  message("push", APNS_TOKEN, {**PUSH, "priority": 7}))
    outcomes = [(r.outcome, r.status_code) for r in results]
    assert outcomes == [("retry", 429), ("retry", 500), ("retry", 503), ("unreachable", 410),
                        ("unreachable", 400), ("rejected", None)]
    assert results[0].retry_after == 30
    assert "BadDeviceToken" in results[4].error


def test_apns_hang_is_a_timeout(apns: ApnsServer) -> None:
    apns.hang_next(5)
    [r] = run(ApnsChannel.from_config({**apns.channel_config(), "timeout_s": 0.3}),
              message("push", APNS_TOKEN, PUSH))
    assert r.outcome == "retry" and r.error.startswith("timeout")


def test_apns_refuses_untrusted_certificate(apns: ApnsServer) -> None:
    config = apns.channel_config()
    del config["ca_pem"]  # system trust store: the self-signed test cert is not trusted
    [r] = run(ApnsChannel.from_config(config), message("push", APNS_TOKEN, PUSH))
    assert r.outcome == "retry" and apns.received == []


@pytest.mark.parametrize("mutate,field", [
    (lambda c: c.update(key_p8="not a key"), "config.key_p8"),
    (lambda c: c.update(key_id="bad id!"), "config.key_id"),
    (lambda c: c.pop("topic"), "config.topic"),
])
def test_apns_config_errors(apns: ApnsServer, mutate, field) -> None:
    config = apns.channel_config()
    mutate(config)
    with pytest.raises(ValidationError) as e:
        ApnsChannel.from_config(config)
    assert e.value.field == field


def test_push_router_picks_provider_by_token(fcm: FcmServer, apns: ApnsServer) -> None:
    router = PushRouter({"fcm": FcmChannel.from_config(fcm.channel_config()),
                         "apns": ApnsChannel.from_config(apns.channel_config())})
    m_fcm, m_apns = message("push", FCM_TOKEN, PUSH), message("push", APNS_TOKEN, PUSH)
    m_hint = message("push", APNS_TOKEN, PUSH, meta={"token_kind": "fcm"})
    results = run(router, m_fcm, m_apns, m_hint)
    assert [r.outcome for r in results] == ["sent"] * 3
    assert len(apns.accepted) == 1
    assert len([r for r in fcm.accepted if r.path.endswith(":send")]) == 2
    assert unreachable_identifier(m_apns) == ("apns", APNS_TOKEN)
    assert unreachable_identifier(m_hint) == ("fcm", APNS_TOKEN)
