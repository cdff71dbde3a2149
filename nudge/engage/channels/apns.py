"""Mobile push through Apple Push Notification service: HTTP/2, token-based (JWT) auth.

Configuration (``PUT /1/channels/push`` with ``"provider": "apns"``)::

    {"provider": "apns", "key_p8": "-----BEGIN PRIVATE KEY-----...", "key_id": "ABC123DEFG",
     "team_id": "DEF123GHIJ", "topic": "com.example.app",
     "base_url": "https://api.push.apple.com"   (sandbox: https://api.sandbox.push.apple.com),
     "timeout_s": 10, "ca_pem": "<PEM to trust, for a private relay>"}

Each request is ``POST {base}/3/device/{token}`` over one HTTP/2 connection (httpx with
``http2=True``) with ``authorization: bearer <ES256 JWT {iss: team_id, iat} kid=key_id>``;
the JWT is reused and re-signed every 50 minutes (Apple refuses tokens older than an hour and
throttles ones refreshed more often than every 20 minutes) and at once on
``ExpiredProviderToken``. Headers: ``apns-topic``, ``apns-push-type``, ``apns-priority``,
``apns-expiration``, ``apns-collapse-id`` and ``apns-id`` (a UUID derived from the
idempotency key, so a retried message keeps its id).

Message content: ``title``, ``subtitle``, ``body``, ``badge``, ``sound``, ``image``,
``data``, ``deep_link``, ``push_type`` (``alert``/``background``), ``priority`` (10/5),
``ttl_s``, ``collapse_id``, ``thread_id``, ``category``.

Answers: 410 and ``BadDeviceToken`` / ``Unregistered`` / ``DeviceTokenNotForTopic`` →
unreachable; 429 and 5xx → retry; other 4xx → rejected.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from typing import Any, ClassVar

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from nudge.errors import ValidationError

from . import netguard
from .base import Channel, Message, SendResult
from .provider import ProviderConfig, by_status, json_or_empty, short, transport_failure

TOKEN_REFRESH_S = 50 * 60
_FIELDS = {"provider", "key_p8", "key_id", "team_id", "topic", "base_url", "timeout_s",
           "ca_pem"}
_UNREACHABLE = {"BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic"}
_TOKEN_REASONS = {"ExpiredProviderToken", "InvalidProviderToken"}


class ApnsChannel(Channel):
    name: ClassVar[str] = "push"
    provider: ClassVar[str] = "apns"
    secret_fields: ClassVar[tuple[str, ...]] = ("key_p8",)

    def __init__(self, *, key: EllipticCurvePrivateKey, key_id: str, team_id: str, topic: str,
                 base_url: str, timeout: float, verify: Any) -> None:
        self._key = key
        self.key_id, self.team_id, self.topic = key_id, team_id, topic
        self.base_url = base_url
        self._http = netguard.client(http2=True, timeout=timeout, verify=verify)
        self._jwt: tuple[str, float] | None = None  # (token, signed at, monotonic)
        self._lock = asyncio.Lock()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ApnsChannel:
        cfg = ProviderConfig(config, _FIELDS)
        cfg.choice("provider", "apns", ("apns",))
        try:
            key = load_pem_private_key(cfg.req("key_p8").encode(), password=None)
            if not isinstance(key, EllipticCurvePrivateKey):
                raise ValueError
        except (ValueError, TypeError):
            raise ValidationError("config.key_p8 must be the .p8 (EC P-256 PEM) signing key",
                                  field="config.key_p8") from None
        for name in ("key_id", "team_id"):
            if not cfg.req(name, 20).isalnum():
                raise ValidationError(f"config.{name} must be alphanumeric",
                                      field=f"config.{name}")
        return cls(key=key, key_id=cfg.req("key_id"), team_id=cfg.req("team_id"),
                   topic=cfg.req("topic", 255),
                   base_url=str(cfg.url("base_url", "https://api.push.apple.com")),
                   timeout=cfg.timeout(), verify=cfg.tls_context())

    def provider_token(self, now: float | None = None) -> str:
        """The cached ES256 JWT, re-signed after ``TOKEN_REFRESH_S``."""
        mono = time.monotonic()
        if self._jwt is None or mono - self._jwt[1] >= TOKEN_REFRESH_S:
            iat = int(time.time() if now is None else now)
            token = jwt.encode({"iss": self.team_id, "iat": iat}, self._key, algorithm="ES256",
                               headers={"kid": self.key_id})
            self._jwt = (token, mono)
        return self._jwt[0]

    def request(self, message: Message) -> tuple[dict[str, str], dict[str, Any]]:
        c = message.content
        push_type = c.get("push_type") or ("alert" if c.get("title") or c.get("body")
                                           else "background")
        if push_type not in ("alert", "background"):
            raise ValueError("push_type must be alert or background")
        aps: dict[str, Any] = {}
        if push_type == "alert":
            alert = {k: str(c[k]) for k in ("title", "subtitle", "body") if c.get(k)}
            aps["alert"] = alert
            aps["sound"] = c.get("sound", "default")
        else:
            aps["content-available"] = 1
        if c.get("badge") is not None:
            aps["badge"] = int(c["badge"])
        if c.get("image"):
            aps["mutable-content"] = 1
        for key, apns_key in (("thread_id", "thread-id"), ("category", "category")):
            if c.get(key):
                aps[apns_key] = str(c[key])
        body: dict[str, Any] = {"aps": aps, **(c.get("data") or {})}
        if c.get("image"):
            body["image"] = str(c["image"])
        if c.get("deep_link"):
            body["deep_link"] = str(c["deep_link"])
        body["nudge"] = {"message_id": message.id, **message.meta}
        priority = int(c.get("priority") or (10 if push_type == "alert" else 5))
        if priority not in (5, 10):
            raise ValueError("priority must be 5 or 10")
        ttl = int(c.get("ttl_s", 86400))
        digest = hashlib.sha256(message.idempotency_key.encode()).digest()[:16]
        headers = {
            "authorization": f"bearer {self.provider_token()}",
            "apns-topic": self.topic,
            "apns-push-type": push_type,
            "apns-priority": str(priority),
            # 0 = deliver now or never; default: keep trying for a day.
            "apns-expiration": str(int(time.time()) + ttl if ttl > 0 else 0),
            "apns-id": str(uuid.UUID(bytes=digest)),
        }
        if c.get("collapse_id"):
            headers["apns-collapse-id"] = str(c["collapse_id"])[:64]
        return headers, body

    async def send(self, message: Message) -> SendResult:
        if not message.to or not all(ch in "0123456789abcdefABCDEF" for ch in message.to):
            return SendResult("unreachable", error="not an APNs device token (hex)")
        url = f"{self.base_url}/3/device/{message.to}"
        for attempt in (1, 2):
            try:
                headers, body = self.request(message)
            except (TypeError, ValueError) as exc:
                return SendResult("rejected", error=f"bad content: {short(exc)}")
            try:
                resp = await self._http.post(url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                return transport_failure(exc)
            reason = str(json_or_empty(resp).get("reason") or "")
            if resp.status_code == 403 and reason in _TOKEN_REASONS and attempt == 1:
                self._jwt = None
                continue
            return self._map(resp, reason)
        return SendResult("retry", error="APNs refused the provider token", status_code=403)

    @staticmethod
    def _map(resp: httpx.Response, reason: str) -> SendResult:
        code = resp.status_code
        if code == 200:
            return SendResult("sent", provider_id=resp.headers.get("apns-id"), status_code=200)
        why = f"APNs {code} {reason}".strip()
        if code == 410 or reason in _UNREACHABLE:
            return SendResult("unreachable", error=why, status_code=code)
        if code == 403:  # key / team / topic misconfigured: not this message's fault
            return SendResult("retry", error=why, status_code=code)
        return by_status(resp, why)

    async def close(self) -> None:
        await self._http.aclose()
