"""Mobile push through Firebase Cloud Messaging, HTTP v1 API.

Configuration (``PUT /1/channels/push`` with ``"provider": "fcm"``)::

    {"provider": "fcm", "service_account": {<the service-account JSON from the Firebase
     console: project_id, client_email, private_key, token_uri>},
     "base_url": "https://fcm.googleapis.com", "timeout_s": 10}

Authentication is OAuth 2.0 for service accounts: a JWT (RS256, signed with the service
account's private key, ``scope`` = firebase.messaging, ``aud`` = the token URI) is exchanged at
``token_uri`` (grant ``urn:ietf:params:oauth:grant-type:jwt-bearer``) for an access token,
which is cached until a minute before it expires and dropped on a 401.

Message content: ``title``, ``body``, ``image``, ``data`` (string values), ``deep_link``,
``ttl_s``, ``priority`` (``high``/``normal``), ``collapse_key``. ``Message.meta`` is echoed
in ``data`` as ``nudge_<key>`` so the app can report opens per campaign.

Errors (FCM v1 ``FcmError.errorCode``): ``UNREGISTERED``/404 and ``SENDER_ID_MISMATCH`` →
unreachable; ``QUOTA_EXCEEDED``/429, ``UNAVAILABLE``, ``INTERNAL``/5xx → retry (honoring
Retry-After); other 4xx (``INVALID_ARGUMENT``) → rejected.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, ClassVar

import httpx
import jwt

from nudge.errors import ValidationError

from . import netguard
from .base import Channel, Message, SendResult
from .provider import (
    ProviderConfig,
    by_status,
    json_or_empty,
    retry_after,
    short,
    transport_failure,
)

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL
_FIELDS = {"provider", "service_account", "base_url", "token_uri", "timeout_s", "ca_pem"}
_UNREACHABLE = {"UNREGISTERED", "SENDER_ID_MISMATCH"}


def fcm_error_code(body: dict[str, Any]) -> str | None:
    """``errorCode`` of the ``google.firebase.fcm.v1.FcmError`` detail, else the status."""
    raw = body.get("error")
    err: dict[str, Any] = raw if isinstance(raw, dict) else {}
    for detail in err.get("details") or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    status = err.get("status")
    return str(status) if status else None


class FcmChannel(Channel):
    name: ClassVar[str] = "push"
    provider: ClassVar[str] = "fcm"
    secret_fields: ClassVar[tuple[str, ...]] = ("service_account",)

    def __init__(self, *, project_id: str, client_email: str, private_key: Any,
                 token_uri: str, base_url: str, timeout: float, verify: Any) -> None:
        self.project_id = project_id
        self.client_email = client_email
        self._key = private_key
        self.token_uri = token_uri
        self.base_url = base_url
        self._http = netguard.client(timeout=timeout, verify=verify)
        self._token: tuple[str, float] | None = None  # (access token, expires at, monotonic)
        self._token_lock = asyncio.Lock()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FcmChannel:
        cfg = ProviderConfig(config, _FIELDS)
        cfg.choice("provider", "fcm", ("fcm",))
        sa = cfg.raw.get("service_account")
        if isinstance(sa, str):
            try:
                sa = json.loads(sa)
            except ValueError:
                sa = None
        if not isinstance(sa, dict):
            raise ValidationError("config.service_account must be the service-account JSON",
                                  field="config.service_account")
        for name in ("project_id", "client_email", "private_key"):
            if not isinstance(sa.get(name), str) or not sa[name]:
                raise ValidationError(f"config.service_account.{name} is required",
                                      field=f"config.service_account.{name}")
        try:
            from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
            from cryptography.hazmat.primitives.serialization import load_pem_private_key

            key = load_pem_private_key(sa["private_key"].encode(), password=None)
            if not isinstance(key, RSAPrivateKey):
                raise ValueError
        except (ValueError, TypeError):
            raise ValidationError("config.service_account.private_key is not an RSA PEM key",
                                  field="config.service_account.private_key") from None
        token_uri = cfg.url("token_uri", sa.get("token_uri") or GOOGLE_TOKEN_URI)
        return cls(project_id=sa["project_id"], client_email=sa["client_email"],
                   private_key=key, token_uri=str(token_uri),
                   base_url=str(cfg.url("base_url", "https://fcm.googleapis.com")),
                   timeout=cfg.timeout(), verify=cfg.tls_context())

    # -- OAuth2 --------------------------------------------------------------------------
    def assertion(self, now: float | None = None) -> str:
        iat = int(time.time() if now is None else now)
        claims = {"iss": self.client_email, "scope": SCOPE, "aud": self.token_uri,
                  "iat": iat, "exp": iat + 3600}
        return jwt.encode(claims, self._key, algorithm="RS256")

    async def access_token(self) -> str:
        async with self._token_lock:
            if self._token and time.monotonic() < self._token[1]:
                return self._token[0]
            resp = await self._http.post(self.token_uri, data={
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "assertion": self.assertion()})
            body = json_or_empty(resp)
            if resp.status_code != 200 or not isinstance(body.get("access_token"), str):
                raise _TokenError(resp)
            ttl = float(body.get("expires_in") or 3600)
            self._token = (body["access_token"], time.monotonic() + max(0.0, ttl - 60))
            return self._token[0]

    # -- send ----------------------------------------------------------------------------
    def payload(self, message: Message) -> dict[str, Any]:
        c = message.content
        data = {str(k): v if isinstance(v, str) else json.dumps(v)
                for k, v in (c.get("data") or {}).items()}
        data.update({f"nudge_{k}": str(v) for k, v in message.meta.items()})
        data["nudge_message_id"] = message.id
        if c.get("deep_link"):
            data["deep_link"] = str(c["deep_link"])
        notification = {k: str(c[k]) for k in ("title", "body", "image") if c.get(k)}
        android: dict[str, Any] = {"priority": "HIGH" if c.get("priority", "high") == "high"
                                   else "NORMAL"}
        if c.get("ttl_s") is not None:
            android["ttl"] = f"{int(c['ttl_s'])}s"
        if c.get("collapse_key"):
            android["collapse_key"] = str(c["collapse_key"])
        msg: dict[str, Any] = {"token": message.to, "data": data, "android": android}
        if notification:
            msg["notification"] = notification
        return {"message": msg}

    async def send(self, message: Message) -> SendResult:
        url = f"{self.base_url}/v1/projects/{self.project_id}/messages:send"
        try:
            payload = self.payload(message)
        except (TypeError, ValueError) as exc:
            return SendResult("rejected", error=f"bad content: {short(exc)}")
        for attempt in (1, 2):
            try:
                token = await self.access_token()
                resp = await self._http.post(url, json=payload,
                                             headers={"Authorization": f"Bearer {token}"})
            except _TokenError as exc:
                return exc.result
            except httpx.HTTPError as exc:
                return transport_failure(exc)
            if resp.status_code == 401 and attempt == 1:
                self._token = None  # revoked or expired early: get a new one once
                continue
            return self._map(resp)
        return SendResult("retry", error="FCM refused the access token", status_code=401)

    @staticmethod
    def _map(resp: httpx.Response) -> SendResult:
        body = json_or_empty(resp)
        if resp.status_code == 200:
            return SendResult("sent", provider_id=str(body.get("name") or ""), status_code=200)
        code = fcm_error_code(body)
        why = f"FCM {resp.status_code} {code or ''}".strip()
        if code in _UNREACHABLE or resp.status_code == 404:
            return SendResult("unreachable", error=why, status_code=resp.status_code)
        if code in ("QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"):
            return SendResult("retry", retry_after=retry_after(resp.headers.get("retry-after")),
                              error=why, status_code=resp.status_code)
        return by_status(resp, why)

    async def close(self) -> None:
        await self._http.aclose()


class _TokenError(Exception):
    """The token endpoint did not issue a token."""

    def __init__(self, resp: httpx.Response) -> None:
        super().__init__(resp.status_code)
        why = f"OAuth token endpoint answered {resp.status_code}"
        if resp.status_code in (400, 401, 403):
            # Bad credentials: a configuration problem; retry (then dead-letter), no fallback.
            self.result = SendResult("retry", error=why, status_code=resp.status_code)
        else:
            self.result = by_status(resp, why)
            if self.result.outcome == "rejected":
                self.result = SendResult("retry", error=why, status_code=resp.status_code)
