"""In-app / app inbox: "sending" stores the message in the user's inbox (see
:mod:`nudge.engage.inbox`), where the SDKs read it (``GET /1/inbox``, the
``/1/inbox/stream`` Server-Sent Events stream) and mark it read or dismissed.

Configuration (``PUT /1/channels/inapp``, optional; defaults apply without it)::

    {"provider": "inbox", "identity_secret": "<HMAC key for user_hash; generated and shown
     once when omitted>", "ttl_days": 30}

``Message.to`` is ignored: the inbox belongs to ``Message.user_id``. Content (``title``,
``body``, ``layout``, ``image``, ``buttons``, ``data``...) is stored as given; ``ttl_s`` in
the content overrides the configured lifetime.

Interface note: this channel needs the control store, which ``from_config`` cannot receive,
so :class:`~nudge.engage.channel_config.ChannelDirectory` calls :meth:`InAppChannel.bind`
after building it. An unbound channel answers ``retry``.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from nudge.engage.inbox import Inbox
from nudge.errors import ValidationError

from .base import Channel, Message, SendResult
from .provider import ProviderConfig, short

_FIELDS = {"provider", "identity_secret", "ttl_days"}


class InAppChannel(Channel):
    name: ClassVar[str] = "inapp"
    secret_fields: ClassVar[tuple[str, ...]] = ("identity_secret",)

    def __init__(self, *, identity_secret: str | None, ttl_s: float) -> None:
        self.identity_secret = identity_secret
        self.ttl_s = ttl_s
        self._inbox: Inbox | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> InAppChannel:
        cfg = ProviderConfig(config, _FIELDS)
        cfg.choice("provider", "inbox", ("inbox",))
        secret = cfg.text("identity_secret", required=False, max_len=500)
        if secret is not None and len(secret) < 16:
            raise ValidationError("config.identity_secret must be at least 16 characters",
                                  field="config.identity_secret")
        return cls(identity_secret=secret,
                   ttl_s=cfg.number("ttl_days", 30, 0, 3650) * 86400)

    def bind(self, inbox: Inbox) -> InAppChannel:
        self._inbox = inbox
        return self

    async def send(self, message: Message) -> SendResult:
        if self._inbox is None:
            return SendResult("retry", error="in-app channel is not bound to an inbox")
        content = dict(message.content)
        ttl = content.pop("ttl_s", self.ttl_s)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl < 0:
            return SendResult("rejected", error="content.ttl_s must be a number of seconds")
        try:
            await asyncio.to_thread(self._inbox.add, message.account_id, message.user_id,
                                    message.id, content, dict(message.meta), ttl)
        except (TypeError, ValueError) as exc:
            return SendResult("rejected", error=f"bad content: {short(exc)}")
        except Exception as exc:  # noqa: BLE001 - the control store is briefly unavailable
            return SendResult("retry", error=f"inbox write failed: {type(exc).__name__}")
        return SendResult("sent", provider_id=message.id)
