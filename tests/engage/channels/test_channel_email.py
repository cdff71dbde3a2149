"""Email over SMTP against aiosmtpd: STARTTLS + AUTH, implicit TLS, real MIME parsing."""

from __future__ import annotations

import asyncio

import pytest

from nudge.engage.channels.email import EmailChannel, html_to_text, render_mjml
from nudge.errors import ValidationError
from tests.engage.providers import (
    SilentServer,
    SmtpServer,
    allow_private_networks,  # noqa: F401 - autouse
    message,
    tls_pair,
)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory):
    return tls_pair(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def smtp(tls):
    with SmtpServer(tls) as server:
        yield server


def send_all(config, *messages):
    async def go():
        ch = EmailChannel.from_config(config)
        try:
            return [await ch.send(m) for m in messages]
        finally:
            await ch.close()
    return asyncio.run(go())


CONTENT = {"subject": "Your cart misses you, Ada", "html":
           "<html><body><p>Hi <b>Ada</b>,</p><p><a href='https://shop.example/cart'>"
           "Back to cart</a></p></body></html>",
           "unsubscribe_url": "https://nudge.example/u/abc123",
           "unsubscribe_mailto": "mailto:unsubscribe@shop.example?subject=abc123"}


def test_starttls_auth_multipart_and_one_click_headers(smtp: SmtpServer) -> None:
    m = message("email", "ada@example.org", CONTENT)
    [result] = send_all(smtp.channel_config(), m)
    assert result.outcome == "sent", result
    assert smtp.auth_attempts and all(ok for _, ok in smtp.auth_attempts)
    assert smtp.tls_sessions == [True]  # the server requires STARTTLS before AUTH/MAIL
    [mail] = smtp.messages
    assert smtp.envelopes == [("news@shop.example", ["ada@example.org"])]
    assert mail["From"] == "Shop <news@shop.example>"
    assert mail["To"] == "ada@example.org"
    assert mail["Reply-To"] == "help@shop.example"
    assert mail["Subject"] == "Your cart misses you, Ada"
    assert mail["List-Unsubscribe"] == ("<https://nudge.example/u/abc123>, "
                                        "<mailto:unsubscribe@shop.example?subject=abc123>")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["Message-ID"] == result.provider_id
    assert mail["Message-ID"].endswith("@shop.example>")
    assert mail.get_content_type() == "multipart/alternative"
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert "<b>Ada</b>" in html
    assert "Hi Ada," in text and "Back to cart (https://shop.example/cart)" in text


def test_message_id_is_stable_across_retries(smtp: SmtpServer) -> None:
    a = message("email", "ada@example.org", CONTENT, key="camp:1:42:A")
    b = message("email", "ada@example.org", CONTENT, key="camp:1:42:A")
    c = message("email", "ada@example.org", CONTENT, key="camp:1:43:A")
    send_all(smtp.channel_config(), a, b, c)
    ids = [m["Message-ID"] for m in smtp.messages]
    assert ids[0] == ids[1] != ids[2]


def test_mjml_is_rendered_to_responsive_html(smtp: SmtpServer) -> None:
    mjml = ("<mjml><mj-body><mj-section><mj-column><mj-text>Spring sale</mj-text>"
            "<mj-button href='https://shop.example/sale'>Shop now</mj-button>"
            "</mj-column></mj-section></mj-body></mjml>")
    [r] = send_all(smtp.channel_config(),
                   message("email", "bo@example.org", {"subject": "Sale", "mjml": mjml}))
    assert r.outcome == "sent"
    html = smtp.messages[0].get_body(("html",)).get_content()
    assert "<mj-" not in html and "Spring sale" in html
    assert "@media" in html  # responsive column styles
    assert "Shop now (https://shop.example/sale)" in \
        smtp.messages[0].get_body(("plain",)).get_content()
    with pytest.raises(ValidationError) as e:
        render_mjml("<mjml><mj-body><mj-section>")
    assert e.value.field == "mjml"


def test_implicit_tls(tls) -> None:
    with SmtpServer(tls, implicit_tls=True) as server:
        [r] = send_all(server.channel_config(),
                       message("email", "cy@example.org", {"subject": "Hi", "text": "plain"}))
        assert r.outcome == "sent"
        assert server.tls_sessions == [True]
        assert server.messages[0].get_content_type() == "text/plain"
        assert server.messages[0]["List-Unsubscribe"] is None


def test_recipient_refused_is_unreachable_and_transient_codes_retry(smtp: SmtpServer) -> None:
    smtp.unknown.add("ghost@example.org")
    smtp.fail_next("data", "451 4.3.0 Try again later")
    results = send_all(smtp.channel_config(),
                       message("email", "ghost@example.org", CONTENT),
                       message("email", "ada@example.org", CONTENT),
                       message("email", "ada@example.org", CONTENT))
    assert [r.outcome for r in results] == ["unreachable", "retry", "sent"]
    assert results[0].status_code == 550
    smtp.fail_next("data", "554 5.7.1 Message rejected as spam")
    smtp.fail_next("rcpt", "452 4.2.2 Mailbox full")
    results = send_all(smtp.channel_config(), message("email", "ada@example.org", CONTENT),
                       message("email", "ada@example.org", CONTENT))
    assert [r.outcome for r in results] == ["rejected", "retry"]
    assert len(smtp.messages) == 1


def test_wrong_password_retries_without_sending(smtp: SmtpServer) -> None:
    config = {**smtp.channel_config(), "password": "wrong-password"}
    [r] = send_all(config, message("email", "ada@example.org", CONTENT))
    assert r.outcome == "retry" and "authentication" in (r.error or "")
    assert "wrong-password" not in (r.error or "")
    assert smtp.messages == []


def test_hanging_server_times_out_as_retry(tls) -> None:
    silent = SilentServer()
    try:
        config = {"provider": "smtp", "host": "127.0.0.1", "port": silent.port,
                  "from": "news@shop.example", "timeout_s": 0.5, "security": "none"}
        [r] = send_all(config, message("email", "ada@example.org", CONTENT))
        assert r.outcome == "retry"
    finally:
        silent.close()


def test_bad_content_is_rejected_not_sent(smtp: SmtpServer) -> None:
    results = send_all(smtp.channel_config(),
                       message("email", "ada@example.org", {"html": "<p>no subject</p>"}),
                       message("email", "ada@example.org",
                               {**CONTENT, "headers": {"Bcc": "x@y.z\r\nX-Evil: 1"}}),
                       message("email", "not-an-address", CONTENT))
    assert [r.outcome for r in results] == ["rejected"] * 3
    assert smtp.messages == []


@pytest.mark.parametrize("config,field", [
    ({"host": "h"}, "config.from"),
    ({"from": "a@b.c"}, "config.host"),
    ({"host": "h", "from": "a@b.c", "security": "ssl3"}, "config.security"),
    ({"host": "h", "from": "a@b.c", "port": 0}, "config.port"),
    ({"host": "h", "from": "a@b.c", "username": "u"}, "config.password"),
    ({"host": "h", "from": "not an address"}, "config.from"),
    ({"host": "h", "from": "a@b.c", "colour": "red"}, "config.colour"),
])
def test_config_errors_name_the_field(config, field) -> None:
    with pytest.raises(ValidationError) as e:
        EmailChannel.from_config({"provider": "smtp", **config})
    assert e.value.field == field


def test_html_to_text() -> None:
    assert html_to_text("<style>p{}</style><h1>Title</h1><p>A &amp; B</p>") == "Title\n\nA & B"




def test_concurrent_sends_share_a_pool_of_sessions(smtp: SmtpServer) -> None:
    async def go():
        ch = EmailChannel.from_config({**smtp.channel_config(), "connections": 3})
        try:
            msgs = [message("email", f"user{i}@example.org", CONTENT) for i in range(12)]
            return await asyncio.gather(*(ch.send(m) for m in msgs))
        finally:
            await ch.close()
    results = asyncio.run(go())
    assert [r.outcome for r in results] == ["sent"] * 12
    assert sorted(rcpt[0] for _, rcpt in smtp.envelopes) == sorted(
        f"user{i}@example.org" for i in range(12))
    # at most 3 sessions were opened (each authenticates once), however many sends
    assert 1 <= len(smtp.auth_attempts) <= 3
