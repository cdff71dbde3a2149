"""Web push: VAPID (RFC 8292) and RFC 8291 payload encryption (``aes128gcm``).

Configuration (``PUT /1/channels/webpush``)::

    {"provider": "vapid", "vapid_private_key": "<base64url raw P-256 key or PEM>",
     "subscriber": "mailto:ops@shop.example", "ttl_s": 86400, "timeout_s": 10,
     "allow_http": false}

``Message.to`` is the browser's ``PushSubscription`` JSON (``{"endpoint": ..., "keys":
{"p256dh": ..., "auth": ...}}``) as the web SDK registered it. The payload (JSON of
``title``, ``body``, ``icon``, ``image``, ``url``, ``data``, plus ``nudge`` meta) is encrypted
for the subscription's keys with pywebpush/http_ece and POSTed to the endpoint with
``TTL``, ``Urgency``, optional ``Topic`` and ``Authorization: vapid t=<ES256 JWT>, k=<public
key>``; the JWT's ``aud`` is the endpoint's origin. The VAPID public key for the browser's
``applicationServerKey`` is :meth:`WebPushChannel.public_key`.

Answers: 201/2xx sent, 404/410 unreachable (subscription gone), 429/5xx retry, other 4xx
rejected. Endpoints must be https unless ``allow_http`` (tests, private push services).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid

from nudge.errors import ValidationError

from . import netguard
from .base import Channel, Message, SendResult
from .provider import ProviderConfig, by_status, short, transport_failure

_FIELDS = {"provider", "vapid_private_key", "subscriber", "ttl_s", "timeout_s", "ca_pem",
           "allow_http"}
_URGENCY = ("very-low", "low", "normal", "high")


def parse_subscription(to: str) -> dict[str, Any]:
    """The subscription JSON as a dict; ValueError when it is not one."""
    sub = json.loads(to)
    if (not isinstance(sub, dict) or not isinstance(sub.get("endpoint"), str)
            or not isinstance(sub.get("keys"), dict)
            or not all(isinstance(sub["keys"].get(k), str) for k in ("p256dh", "auth"))):
        raise ValueError("a push subscription needs endpoint and keys.p256dh / keys.auth")
    return sub


def _load_vapid(raw: str) -> Vapid:
    raw = raw.strip()
    try:
        return Vapid.from_pem(raw.encode()) if raw.startswith("-----") else Vapid.from_string(raw)
    except Exception:  # noqa: BLE001 - py_vapid raises assorted errors for bad keys
        raise ValidationError("config.vapid_private_key is not a P-256 private key",
                              field="config.vapid_private_key") from None


def _public_key(vapid: Vapid) -> str:
    raw = vapid.public_key.public_bytes(serialization.Encoding.X962,
                                        serialization.PublicFormat.UncompressedPoint)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def vapid_public_key(vapid_private_key: str) -> str:
    """The base64url public key (``applicationServerKey``) of a configured private key."""
    return _public_key(_load_vapid(vapid_private_key))


class WebPushChannel(Channel):
    name: ClassVar[str] = "webpush"
    secret_fields: ClassVar[tuple[str, ...]] = ("vapid_private_key",)

    def __init__(self, *, vapid: Vapid, subscriber: str, ttl: int, timeout: float,
                 verify: Any, allow_http: bool) -> None:
        self._vapid = vapid
        self.subscriber = subscriber
        self.ttl = ttl
        self.allow_http = allow_http
        self._http = netguard.client(timeout=timeout, verify=verify)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> WebPushChannel:
        cfg = ProviderConfig(config, _FIELDS)
        cfg.choice("provider", "vapid", ("vapid",))
        vapid = _load_vapid(cfg.req("vapid_private_key"))
        subscriber = cfg.req("subscriber", 500)
        if not subscriber.startswith(("mailto:", "https://")):
            raise ValidationError("config.subscriber must be a mailto: or https: URI",
                                  field="config.subscriber")
        return cls(vapid=vapid, subscriber=subscriber,
                   ttl=cfg.integer("ttl_s", 86400, 0, 28 * 86400), timeout=cfg.timeout(),
                   verify=cfg.tls_context(), allow_http=cfg.flag("allow_http", False))

    def public_key(self) -> str:
        """The VAPID public key, base64url (uncompressed point): the browser's
        ``applicationServerKey``."""
        return _public_key(self._vapid)

    def payload(self, message: Message) -> bytes:
        c = message.content
        body = {k: c[k] for k in ("title", "body", "icon", "image", "badge", "url", "data",
                                  "tag", "actions") if c.get(k) is not None}
        body["nudge"] = {"message_id": message.id, **message.meta}
        if c.get("open_url"):  # the service worker requests it when the user clicks
            body["nudge"]["open_url"] = c["open_url"]
        return json.dumps(body, separators=(",", ":")).encode()

    def request(self, message: Message) -> tuple[str, dict[str, str], bytes]:
        sub = parse_subscription(message.to)
        endpoint = sub["endpoint"]
        parts = urlsplit(endpoint)
        if parts.scheme != "https" and not (self.allow_http and parts.scheme == "http"):
            raise ValueError("subscription endpoint must be https")
        # pywebpush imports aiohttp: loaded with the first web push, not at server start
        from pywebpush import WebPusher, WebPushException

        try:
            encrypted = WebPusher(sub).encode(self.payload(message), "aes128gcm")["body"]
        except WebPushException as exc:
            raise ValueError(str(exc)) from None
        claims = {"aud": f"{parts.scheme}://{parts.netloc}", "sub": self.subscriber,
                  "exp": int(time.time()) + 12 * 3600}
        headers = {k: v for k, v in self._vapid.sign(claims).items()}
        headers.update({"TTL": str(int(message.content.get("ttl_s", self.ttl))),
                        "Content-Encoding": "aes128gcm",
                        "Content-Type": "application/octet-stream"})
        urgency = message.content.get("urgency")
        if urgency in _URGENCY:
            headers["Urgency"] = urgency
        if message.content.get("topic"):
            headers["Topic"] = str(message.content["topic"])[:32]
        return endpoint, headers, encrypted

    async def send(self, message: Message) -> SendResult:
        try:
            endpoint, headers, body = self.request(message)
        except (ValueError, TypeError) as exc:
            # An unparsable subscription cannot be fixed by retrying: the address is bad.
            return SendResult("unreachable", error=f"bad subscription: {short(exc)}")
        try:
            resp = await self._http.post(endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return transport_failure(exc)
        code = resp.status_code
        if code in (404, 410):
            return SendResult("unreachable", error=f"push service {code}: subscription gone",
                              status_code=code)
        result = by_status(resp, f"push service {code}")
        if result.outcome == "sent":
            return SendResult("sent", provider_id=resp.headers.get("location"), status_code=code)
        return result

    async def close(self) -> None:
        await self._http.aclose()
