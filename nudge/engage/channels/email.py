"""Email over SMTP (aiosmtplib): STARTTLS or implicit TLS, AUTH, multipart HTML + text.

Configuration (``PUT /1/channels/email``)::

    {"provider": "smtp", "host": "smtp.example.com", "port": 587,
     "security": "starttls" | "tls" | "none", "username": "...", "password": "...",
     "from": "Shop <news@shop.example>", "reply_to": "help@shop.example",
     "timeout_s": 10, "ca_pem": "<PEM to trust instead of the system store>",
     "connections": 2}

Message content: ``subject``, ``html`` and/or ``text`` (a text part is derived from the HTML
when absent), or ``mjml`` (MJML source, rendered with :func:`render_mjml`), optional
``from_``, ``reply_to``, ``headers`` and ``unsubscribe_url`` (one-click, RFC 8058) /
``unsubscribe_mailto``. The Message-ID is derived from the idempotency key, so a retried
message keeps its id and receivers can drop the duplicate.

Sessions are kept open and shared by concurrent sends through a small pool
(``connections``, default 2). SMTP replies map to outcomes: 5xx to ``RCPT`` → unreachable
(no such mailbox), other 5xx → rejected, 4xx, timeouts and dropped connections → retry.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from html.parser import HTMLParser
from typing import Any, ClassVar

import aiosmtplib
import httpcore

from nudge.errors import ValidationError

from . import netguard
from .base import Channel, Message, SendResult
from .provider import ProviderConfig, short

_FIELDS = {"provider", "host", "port", "security", "username", "password", "from",
           "reply_to", "timeout_s", "ca_pem", "validate_certs", "helo", "connections"}
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,76}$")
# Headers the channel owns; a template may not override them.
_RESERVED = {"from", "to", "subject", "message-id", "date", "list-unsubscribe",
             "list-unsubscribe-post", "content-type", "mime-version",
             "content-transfer-encoding", "reply-to"}


def render_mjml(source: str) -> str:
    """Render MJML to responsive HTML (mjml-python, a binding of the Rust MRML port).

    Raises ``ValidationError`` (field ``mjml``) for invalid MJML, so a template with broken
    markup is refused when saved rather than at send time.

    >>> "<html" in render_mjml("<mjml><mj-body><mj-text>Hi</mj-text></mj-body></mjml>")
    True
    """
    import mjml

    try:
        return str(mjml.mjml2html(source))
    except (ValueError, RuntimeError) as exc:
        raise ValidationError(f"invalid MJML: {short(exc)}", field="mjml") from None


class _TextOf(HTMLParser):
    """Plain text of an HTML body for the text/plain part (links kept as 'text (url)')."""

    _BLOCK = {"p", "div", "br", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "li", "table"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._href: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "head", "title"):
            self._skip += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")
        if tag == "a":
            self._href.append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head", "title"):
            self._skip = max(0, self._skip - 1)
        elif tag == "a" and self._href:
            href = self._href.pop()
            if href and href.startswith(("http://", "https://")):
                self.parts.append(f" ({href})")
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    p = _TextOf()
    p.feed(html)
    text = "".join(p.parts)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _address(value: Any, field: str) -> str:
    if not isinstance(value, str) or "\n" in value or "\r" in value:
        raise ValidationError(f"{field} must be an email address", field=field)
    name, addr = parseaddr(value)
    if "@" not in addr or addr.startswith("@") or addr.endswith("@"):
        raise ValidationError(f"{field} must be an email address", field=field)
    return value


class _Session:
    """One SMTP connection slot of the pool (connected lazily, reconnected when closed)."""

    smtp: aiosmtplib.SMTP | None = None


class EmailChannel(Channel):
    name: ClassVar[str] = "email"
    secret_fields: ClassVar[tuple[str, ...]] = ("password",)

    def __init__(self, *, host: str, port: int, security: str, username: str | None,
                 password: str | None, sender: str, reply_to: str | None, timeout: float,
                 tls_context: Any, validate_certs: bool, helo: str | None,
                 connections: int = 2) -> None:
        self.host, self.port, self.security = host, port, security
        self.username, self.password = username, password
        self.sender, self.reply_to = sender, reply_to
        self.timeout = timeout
        self.tls_context = tls_context if not isinstance(tls_context, bool) else None
        self.validate_certs = validate_certs
        self.helo = helo
        # A small pool: an SMTP session carries one transaction at a time, so concurrent
        # sends take turns on ``connections`` kept-open sessions.
        self._sessions = [_Session() for _ in range(connections)]
        self._idle: asyncio.Queue[_Session] = asyncio.Queue()
        for session in self._sessions:
            self._idle.put_nowait(session)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EmailChannel:
        cfg = ProviderConfig(config, _FIELDS)
        cfg.choice("provider", "smtp", ("smtp",))
        security = cfg.choice("security", "starttls", ("starttls", "tls", "none"))
        default_port = {"starttls": 587, "tls": 465, "none": 25}[security]
        username = cfg.text("username", required=False, max_len=500)
        password = cfg.text("password", required=False, max_len=500)
        if bool(username) != bool(password):
            raise ValidationError("config.username and config.password go together",
                                  field="config.password" if username else "config.username")
        reply_to = cfg.text("reply_to", required=False, max_len=500)
        return cls(
            host=cfg.req("host", 255), port=cfg.integer("port", default_port, 1, 65535),
            security=security, username=username, password=password,
            sender=_address(cfg.req("from", 500), "config.from"),
            reply_to=_address(reply_to, "config.reply_to") if reply_to else None,
            timeout=cfg.timeout(), tls_context=cfg.tls_context(),
            validate_certs=cfg.flag("validate_certs", True),
            helo=cfg.text("helo", required=False, max_len=255),
            connections=cfg.integer("connections", 2, 1, 50))

    # -- building the email --------------------------------------------------------------
    def compose(self, message: Message) -> EmailMessage:
        """The MIME message for ``message`` (raises ValidationError for bad content)."""
        c = message.content
        subject = c.get("subject")
        if not isinstance(subject, str) or not subject.strip():
            raise ValidationError("content.subject is required", field="content.subject")
        html = c.get("html")
        if isinstance(c.get("mjml"), str):
            html = render_mjml(c["mjml"])
        elif isinstance(html, str) and html.lstrip().startswith("<mjml"):
            html = render_mjml(html)
        text = c.get("text")
        if html is None and text is None:
            raise ValidationError("content needs html, mjml or text", field="content.html")
        if text is None:
            text = html_to_text(str(html))
        sender = _address(c.get("from_") or self.sender, "content.from_")
        reply_to = c.get("reply_to") or self.reply_to
        msg = EmailMessage()
        msg["From"] = sender
        msg["To"] = _address(message.to, "to")
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = self.message_id(message, sender)
        if reply_to:
            msg["Reply-To"] = _address(reply_to, "content.reply_to")
        self._unsubscribe_headers(msg, c)
        for name, value in (c.get("headers") or {}).items():
            if (not isinstance(name, str) or not _HEADER_NAME.match(name)
                    or name.lower() in _RESERVED or not isinstance(value, str)
                    or "\n" in value or "\r" in value):
                raise ValidationError(f"content.headers.{name} is not an allowed header",
                                      field="content.headers")
            msg[name] = value
        msg.set_content(str(text))
        if html is not None:
            msg.add_alternative(str(html), subtype="html")
        return msg

    @staticmethod
    def message_id(message: Message, sender: str) -> str:
        domain = parseaddr(sender)[1].rpartition("@")[2] or "nudge.invalid"
        digest = hashlib.sha256(message.idempotency_key.encode()).hexdigest()[:32]
        return f"<{digest}@{domain}>"

    @staticmethod
    def _unsubscribe_headers(msg: EmailMessage, c: dict[str, Any]) -> None:
        targets = []
        url, mailto = c.get("unsubscribe_url"), c.get("unsubscribe_mailto")
        for value, field, prefix in ((url, "unsubscribe_url", "https://"),
                                     (mailto, "unsubscribe_mailto", "mailto:")):
            if value is None:
                continue
            if (not isinstance(value, str) or not value.startswith((prefix, "http://"))
                    or any(ch in value for ch in "<>\r\n ")):
                raise ValidationError(f"content.{field} must be a {prefix.rstrip(':/')} URI",
                                      field=f"content.{field}")
            targets.append(f"<{value}>")
        if targets:
            msg["List-Unsubscribe"] = ", ".join(targets)
        if url:  # RFC 8058: one-click needs an HTTPS URI that accepts a POST
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"

    # -- SMTP ----------------------------------------------------------------------------
    def _client(self, sock: socket.socket) -> aiosmtplib.SMTP:
        # Connected by us to an address the SSRF guard checked (netguard.py); aiosmtplib
        # keeps ``hostname`` for TLS.
        kw: dict[str, Any] = {"hostname": self.host, "sock": sock, "timeout": self.timeout,
                              "use_tls": self.security == "tls",
                              "start_tls": self.security == "starttls",
                              "validate_certs": self.validate_certs,
                              "local_hostname": self.helo}
        if self.tls_context is not None:
            kw["tls_context"] = self.tls_context
        if self.username:
            kw["username"], kw["password"] = self.username, self.password
        return aiosmtplib.SMTP(**kw)

    async def _connected(self, session: _Session) -> aiosmtplib.SMTP:
        if session.smtp is None or not session.smtp.is_connected:
            sock = await netguard.connect_socket(self.host, self.port, self.timeout)
            session.smtp = self._client(sock)
            await session.smtp.connect()
        return session.smtp

    async def send(self, message: Message) -> SendResult:
        try:
            msg = self.compose(message)
        except ValidationError as exc:
            return SendResult("rejected", error=exc.message)
        session = await self._idle.get()
        try:
            for attempt in (1, 2):
                try:
                    smtp = await self._connected(session)
                    await smtp.send_message(msg)
                    return SendResult("sent", provider_id=str(msg["Message-ID"]))
                except aiosmtplib.SMTPServerDisconnected:
                    session.smtp = None  # an idle session the server closed: reconnect once
                    if attempt == 2:
                        return SendResult("retry", error="SMTP server disconnected")
                except aiosmtplib.SMTPException as exc:
                    await self._drop(session)
                    return self._map(exc)
                except netguard.AddressRefused as exc:
                    return SendResult("rejected", error=str(exc)[:300])
                except (OSError, httpcore.ConnectError) as exc:
                    await self._drop(session)
                    return SendResult("retry", error=f"connection error: {type(exc).__name__}")
            return SendResult("retry", error="SMTP send failed")  # pragma: no cover
        finally:
            self._idle.put_nowait(session)

    @staticmethod
    def _map(exc: aiosmtplib.SMTPException) -> SendResult:
        if isinstance(exc, aiosmtplib.SMTPTimeoutError | aiosmtplib.SMTPConnectError):
            return SendResult("retry", error=f"SMTP {type(exc).__name__}")
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            # A configuration problem, not this message's: retry (and dead-letter) instead
            # of falling back to another channel.
            return SendResult("retry", error=f"SMTP authentication failed ({exc.code})")
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            first = exc.recipients[0] if exc.recipients else None
            rcpt_code = first.code if first is not None else 550
            why = f"recipient refused {rcpt_code}: {short(first.message if first else '')}"
            return SendResult("unreachable" if rcpt_code >= 500 else "retry", error=why,
                              status_code=rcpt_code)
        code = getattr(exc, "code", None)
        why = f"SMTP {code}: {short(getattr(exc, 'message', exc))}"
        if isinstance(code, int) and 500 <= code < 600:
            return SendResult("rejected", error=why, status_code=code)
        return SendResult("retry", error=why, status_code=code if isinstance(code, int) else None)

    @staticmethod
    async def _drop(session: _Session) -> None:
        smtp, session.smtp = session.smtp, None
        if smtp is not None and smtp.is_connected:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()

    async def close(self) -> None:
        for session in self._sessions:
            await self._drop(session)

