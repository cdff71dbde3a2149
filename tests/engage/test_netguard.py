"""The SSRF guard (nudge/engage/channels/netguard.py): by default a channel refuses to
connect to loopback, private, link-local (cloud metadata) and other non-public addresses —
decided on the resolved addresses at connect time, not on the URL's text — with a clear
error; ``NUDGE_ENGAGE_ALLOW_PRIVATE_NETWORKS`` lets them through. Real channels, a real
local receiver and a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from nudge.engage.channels import netguard
from nudge.engage.channels.email import EmailChannel
from nudge.engage.channels.webhook import WebhookChannel
from tests.engage import engage_helpers as h
from tests.engage.providers import SmtpServer, WebhookReceiver, message, tls_pair

SECRET = "netguard-webhook-secret-0123"  # noqa: S105 - a test receiver's secret


@pytest.fixture
def default_guard() -> Iterator[None]:
    netguard.configure(False)  # the default; other tests in this process may opt in
    yield
    netguard.configure(False)


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(SECRET) as r:
        yield r


def send_webhook(url: str, receiver: WebhookReceiver):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        ch = WebhookChannel.from_config({**receiver.channel_config(), "timeout_s": 3})
        try:
            return await ch.send(message("webhook", url, {"body": {"x": 1}}))
        finally:
            await ch.close()
    return asyncio.run(go())


@pytest.mark.parametrize(("ip", "kind"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("10.1.2.3", "private"), ("192.168.0.10", "private"), ("fd00:ec2::254", "private"),
    ("100.64.0.1", "non-public"), ("0.0.0.0", "unspecified"),  # noqa: S104
    ("224.0.0.1", "multicast"),
])
def test_non_public_addresses_are_refused(ip: str, kind: str) -> None:
    why = netguard.refusal(ip)
    assert why is not None and kind in why


@pytest.mark.parametrize("ip", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(ip: str) -> None:
    assert netguard.refusal(ip) is None


@pytest.mark.parametrize(("url", "kind"), [
    ("http://127.0.0.1:{port}/hook", "loopback"),
    ("http://localhost:{port}/hook", "loopback"),  # a name: refused after resolving it
    ("http://[::1]:{port}/hook", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://10.0.0.7:8080/hook", "private"),
])
def test_webhook_to_a_non_public_address_is_rejected_by_default(
        default_guard: None, receiver: WebhookReceiver, url: str, kind: str) -> None:
    before = len(receiver.received)
    res = send_webhook(url.format(port=receiver.port), receiver)
    assert res.outcome == "rejected"  # for good: retrying cannot change the address
    assert kind in (res.error or "") and "NUDGE_ENGAGE_ALLOW_PRIVATE_NETWORKS" in res.error
    assert len(receiver.received) == before  # nothing reached the receiver


def test_allowing_private_networks_lets_the_same_webhook_through(
        default_guard: None, receiver: WebhookReceiver) -> None:
    netguard.configure(True)
    res = send_webhook(f"http://127.0.0.1:{receiver.port}/hook", receiver)
    assert res.outcome == "sent", res.error
    assert receiver.received[-1].parsed == {"x": 1}


def test_smtp_to_a_loopback_relay_is_rejected_by_default(default_guard: None,
                                                        tmp_path: Path) -> None:
    with SmtpServer(tls_pair(tmp_path)) as smtp:
        async def go():  # type: ignore[no-untyped-def]
            ch = EmailChannel.from_config(smtp.channel_config())
            try:
                return await ch.send(message("email", "ada@example.com",
                                             {"subject": "s", "text": "t"}))
            finally:
                await ch.close()
        res = asyncio.run(go())
        assert res.outcome == "rejected" and "loopback" in (res.error or "")
        assert smtp.messages == []


def test_a_server_with_default_settings_refuses_a_loopback_webhook(
        tmp_path: Path, receiver: WebhookReceiver) -> None:
    srv = h.start_server(tmp_path, {"NUDGE_ENGAGE_ALLOW_PRIVATE_NETWORKS": "false",
                                    "NUDGE_ENGAGE_POLL_MS": "50"})
    try:
        h.configure(srv, "webhook", receiver.channel_config())
        before = len(receiver.received)
        h.profiles(srv, [{"identity": "ssrf-1"}])
        c = h.campaign(srv, {"name": "ssrf", "channels": ["webhook"],
                             "webhook_url": f"http://127.0.0.1:{receiver.port}/hook",
                             "audience": h.everyone(),
                             "content": {"webhook": {"body": '{"x": 1}'}}})
        (msg,) = h.wait_for(lambda: [m for m in h.outbox(srv, campaign_id=c["id"])
                                     if m["status"] not in ("pending", "sending")],
                            what="the message's outcome")
    finally:
        srv.stop()
    assert msg["status"] == "rejected" and "loopback" in msg["reason"], msg
    assert len(receiver.received) == before
