"""WhatsApp through the WhatsApp Business Cloud API.

Configuration (``PUT /1/channels/whatsapp``)::

    {"provider": "cloud_api", "access_token": "EAAG...", "phone_number_id": "1234567890",
     "api_version": "v21.0", "base_url": "https://graph.facebook.com", "timeout_s": 10}

Each message is ``POST {base}/{api_version}/{phone_number_id}/messages`` with ``Authorization:
Bearer <access token>`` and the Cloud API JSON. Content is either a template message —
``{"template": "order_shipped", "language": "en_US", "components": [{"type": "body",
"parameters": [{"type": "text", "text": "A-1001"}]}]}`` (the only kind allowed outside the
24-hour customer service window) — or a text message ``{"text": "...", "preview_url": true}``.
The answer's ``messages[0].id`` (``wamid...``) is the provider id.

Graph API error codes: 131026 (not a WhatsApp user / undeliverable) → unreachable;
4, 80007, 130429, 131048, 131056 (rate limits), 131000, 133004 and 5xx → retry; other
errors (131047 outside the window, 132000/132001 template mismatch, 131051) → rejected.
"""

from __future__ import annotations

import re
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

_FIELDS = {"provider", "access_token", "phone_number_id", "api_version", "base_url",
           "timeout_s", "ca_pem"}
UNREACHABLE_CODES = {131026}
RETRY_CODES = {4, 80007, 130429, 131000, 131048, 131056, 133004}
_VERSION = re.compile(r"^v\d{1,3}\.\d{1,2}$")


class WhatsAppChannel(Channel):
    name: ClassVar[str] = "whatsapp"
    secret_fields: ClassVar[tuple[str, ...]] = ("access_token",)

    def __init__(self, *, access_token: str, phone_number_id: str, api_version: str,
                 base_url: str, timeout: float, verify: Any) -> None:
        self.url = f"{base_url}/{api_version}/{phone_number_id}/messages"
        self._http = netguard.client(timeout=timeout, verify=verify,
                                     headers={"Authorization": f"Bearer {access_token}"})

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> WhatsAppChannel:
        cfg = ProviderConfig(config, _FIELDS)
        cfg.choice("provider", "cloud_api", ("cloud_api",))
        phone_id = cfg.req("phone_number_id", 64)
        if not phone_id.isdigit():
            raise ValidationError("config.phone_number_id must be digits",
                                  field="config.phone_number_id")
        version = str(cfg.text("api_version", "v21.0"))
        if not _VERSION.match(version):
            raise ValidationError("config.api_version must look like v21.0",
                                  field="config.api_version")
        return cls(access_token=cfg.req("access_token", 1000), phone_number_id=phone_id,
                   api_version=version,
                   base_url=str(cfg.url("base_url", "https://graph.facebook.com")),
                   timeout=cfg.timeout(), verify=cfg.tls_context())

    @staticmethod
    def payload(message: Message) -> dict[str, Any]:
        c = message.content
        to = message.to.lstrip("+")
        out: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual",
                               "to": to}
        if c.get("template"):
            language = c.get("language") or "en_US"
            template: dict[str, Any] = {"name": str(c["template"]),
                                        "language": {"code": str(language)}}
            components = c.get("components")
            if components is not None:
                if not isinstance(components, list):
                    raise ValueError("content.components must be a list")
                template["components"] = components
            out.update(type="template", template=template)
        elif isinstance(c.get("text"), str) and c["text"]:
            out.update(type="text", text={"body": c["text"],
                                          "preview_url": bool(c.get("preview_url", False))})
        else:
            raise ValueError("content needs template or text")
        return out

    async def send(self, message: Message) -> SendResult:
        try:
            payload = self.payload(message)
        except ValueError as exc:
            return SendResult("rejected", error=str(exc))
        try:
            resp = await self._http.post(self.url, json=payload)
        except httpx.HTTPError as exc:
            return transport_failure(exc)
        body = json_or_empty(resp)
        if 200 <= resp.status_code < 300:
            msgs = body.get("messages") or [{}]
            return SendResult("sent", provider_id=msgs[0].get("id"),
                              status_code=resp.status_code)
        raw_err = body.get("error")
        err: dict[str, Any] = raw_err if isinstance(raw_err, dict) else {}
        code = err.get("code")
        why = f"WhatsApp {resp.status_code} {code or ''} {short(err.get('message', ''), 120)}"
        why = why.strip()
        if code in UNREACHABLE_CODES:
            return SendResult("unreachable", error=why, status_code=resp.status_code)
        if code in RETRY_CODES:
            return SendResult("retry", retry_after=retry_after(resp.headers.get("retry-after")),
                              error=why, status_code=resp.status_code)
        return by_status(resp, why)

    async def close(self) -> None:
        await self._http.aclose()
