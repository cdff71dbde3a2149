"""SMS through a Twilio-compatible Messages API.

Configuration (``PUT /1/channels/sms``)::

    {"provider": "twilio", "account_sid": "AC...", "auth_token": "...",
     "from": "+15005550006"  or  "messaging_service_sid": "MG...",
     "status_callback": "https://nudge.example/1/providers/twilio/status",
     "base_url": "https://api.twilio.com", "timeout_s": 10}

Each message is ``POST {base}/2010-04-01/Accounts/{sid}/Messages.json`` with HTTP basic auth
(account SID, auth token) and form fields ``To``, ``From`` or ``MessagingServiceSid``,
``Body`` and ``StatusCallback``; the answer's ``sid`` is the provider id.

Twilio error codes: 21211 (invalid To), 21614 (not a mobile number), 21217, 21401, 21612
(cannot route to this number) → unreachable; 21610 (recipient replied STOP) and other 4xx →
rejected; 429 / 20429 and 5xx → retry with Retry-After.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

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

_FIELDS = {"provider", "account_sid", "auth_token", "from", "messaging_service_sid",
           "status_callback", "base_url", "timeout_s", "ca_pem"}
UNREACHABLE_CODES = {21211, 21214, 21217, 21401, 21612, 21614}
RETRY_CODES = {20429, 30001}


class SmsChannel(Channel):
    name: ClassVar[str] = "sms"
    secret_fields: ClassVar[tuple[str, ...]] = ("auth_token",)

    def __init__(self, *, account_sid: str, auth_token: str, sender: str | None,
                 service_sid: str | None, status_callback: str | None, base_url: str,
                 timeout: float, verify: Any) -> None:
        self.account_sid = account_sid
        self.sender, self.service_sid = sender, service_sid
        self.status_callback = status_callback
        self.url = f"{base_url}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self._http = netguard.client(timeout=timeout, verify=verify,
                                     auth=httpx.BasicAuth(account_sid, auth_token))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SmsChannel:
        cfg = ProviderConfig(config, _FIELDS)
        cfg.choice("provider", "twilio", ("twilio",))
        sid = cfg.req("account_sid", 64)
        if not sid.isalnum():
            raise ValidationError("config.account_sid must be alphanumeric",
                                  field="config.account_sid")
        sender = cfg.text("from", required=False, max_len=64)
        service = cfg.text("messaging_service_sid", required=False, max_len=64)
        if not sender and not service:
            raise ValidationError("config.from or config.messaging_service_sid is required",
                                  field="config.from")
        return cls(account_sid=sid, auth_token=cfg.req("auth_token", 256), sender=sender,
                   service_sid=service,
                   status_callback=cfg.url("status_callback", required=False),
                   base_url=str(cfg.url("base_url", "https://api.twilio.com")),
                   timeout=cfg.timeout(), verify=cfg.tls_context())

    def form(self, message: Message) -> dict[str, str]:
        body = message.content.get("body")
        if not isinstance(body, str) or not body:
            raise ValueError("content.body is required")
        form = {"To": message.to, "Body": body}
        if self.service_sid:
            form["MessagingServiceSid"] = self.service_sid
        if self.sender and not self.service_sid:
            form["From"] = self.sender
        if self.status_callback:
            form["StatusCallback"] = self.status_callback
        return form

    async def send(self, message: Message) -> SendResult:
        try:
            form = self.form(message)
        except ValueError as exc:
            return SendResult("rejected", error=str(exc))
        try:
            resp = await self._http.post(self.url, data=form)
        except httpx.HTTPError as exc:
            return transport_failure(exc)
        body = json_or_empty(resp)
        if 200 <= resp.status_code < 300:
            return SendResult("sent", provider_id=body.get("sid"), status_code=resp.status_code)
        code = body.get("code")
        why = f"Twilio {resp.status_code} {code or ''} {short(body.get('message', ''), 120)}"
        why = why.strip()
        if code in UNREACHABLE_CODES:
            return SendResult("unreachable", error=why, status_code=resp.status_code)
        if code in RETRY_CODES:
            return SendResult("retry", retry_after=retry_after(resp.headers.get("retry-after")),
                              error=why, status_code=resp.status_code)
        return by_status(resp, why)

    async def close(self) -> None:
        await self._http.aclose()
