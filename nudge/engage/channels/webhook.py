"""Webhook: POST a signed JSON body to any URL.

Configuration (``PUT /1/channels/webhook``)::

    {"provider": "http", "url": "https://hooks.example/nudge"   (when Message.to is empty),
     "secret": "<signing secret; generated and shown once when omitted>",
     "headers": {"X-Team": "growth"}, "timeout_s": 10}

The body is ``content["body"]`` when given (any JSON), else the whole content, as compact
JSON. Headers: ``Content-Type: application/json``, ``X-Nudge-Message-Id``,
``X-Nudge-Idempotency-Key`` (stable across retries: receivers drop repeats),
``X-Nudge-Timestamp`` and ``X-Nudge-Signature: v1=<hex HMAC-SHA256(secret, timestamp + "." +
body)>`` — see :mod:`nudge.engage.signing` for how receivers verify, with a replay window.

Answers: 2xx sent; 408, 425, 429 and 5xx retry (Retry-After honored); other 4xx and redirects
rejected (a redirect could point the signed body elsewhere); timeouts retry.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from nudge.engage import signing
from nudge.errors import ValidationError

from . import netguard
from .base import Channel, Message, SendResult
from .provider import ProviderConfig, by_status, short, transport_failure

_FIELDS = {"provider", "url", "secret", "headers", "timeout_s", "ca_pem"}
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_OWN_HEADERS = {"content-type", "content-length", "host", "x-nudge-message-id",
                "x-nudge-idempotency-key", signing.TIMESTAMP_HEADER.lower(),
                signing.SIGNATURE_HEADER.lower()}


class WebhookChannel(Channel):
    name: ClassVar[str] = "webhook"
    secret_fields: ClassVar[tuple[str, ...]] = ("secret",)

    def __init__(self, *, url: str | None, secret: str, headers: dict[str, str],
                 timeout: float, verify: Any) -> None:
        self.url = url
        self._secret = secret
        self._http = netguard.client(timeout=timeout, verify=verify, headers=headers,
                                     follow_redirects=False)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> WebhookChannel:
        cfg = ProviderConfig(config, _FIELDS)
        cfg.choice("provider", "http", ("http",))
        secret = cfg.req("secret", 500)
        if len(secret) < 16:
            raise ValidationError("config.secret must be at least 16 characters",
                                  field="config.secret")
        headers = cfg.raw.get("headers") or {}
        if not isinstance(headers, dict):
            raise ValidationError("config.headers must be an object", field="config.headers")
        for k, v in headers.items():
            if (not _HEADER_NAME.match(k) or k.lower() in _OWN_HEADERS
                    or not isinstance(v, str) or "\n" in v or "\r" in v):
                raise ValidationError(f"config.headers.{k} is not an allowed header",
                                      field="config.headers")
        return cls(url=cfg.url("url", required=False), secret=secret, headers=headers,
                   timeout=cfg.timeout(), verify=cfg.tls_context())

    def request(self, message: Message) -> tuple[str, dict[str, str], bytes]:
        url = message.to or self.url
        parts = urlsplit(url or "")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("the webhook URL must be http(s)")
        payload = message.content.get("body", message.content)
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        headers = {"Content-Type": "application/json", "X-Nudge-Message-Id": message.id,
                   "X-Nudge-Idempotency-Key": message.idempotency_key,
                   **signing.sign(self._secret, body)}
        return str(url), headers, body

    async def send(self, message: Message) -> SendResult:
        try:
            url, headers, body = self.request(message)
        except (TypeError, ValueError) as exc:
            return SendResult("unreachable" if "URL" in str(exc) else "rejected",
                              error=short(exc))
        try:
            resp = await self._http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return transport_failure(exc)
        result = by_status(resp, f"webhook answered {resp.status_code}")
        if result.outcome == "sent":
            return SendResult("sent", provider_id=resp.headers.get("x-request-id"),
                              status_code=resp.status_code)
        return result

    async def close(self) -> None:
        await self._http.aclose()
