"""Which provider modules serve which channel, and the push router.

``PROVIDERS[channel]`` lists the channel's providers, the first being its default; each
provider's :class:`Channel` class is imported on first use (:func:`channel_class`), so the
server does not load every provider's client library (aiohttp via pywebpush, h2, SMTP...)
at start. Push has two providers (FCM for Android/web apps, APNs for iOS), and an account
usually configures both: :class:`PushRouter` sends each message through the one its token
belongs to.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, ClassVar

from nudge.errors import ValidationError

from .base import CHANNELS, Channel, Message, SendResult

# channel -> provider -> "module:Class" (modules of this package)
PROVIDERS: dict[str, dict[str, str]] = {
    "email": {"smtp": "email:EmailChannel"},
    "push": {"fcm": "fcm:FcmChannel", "apns": "apns:ApnsChannel"},
    "webpush": {"vapid": "webpush:WebPushChannel"},
    "sms": {"twilio": "sms:SmsChannel"},
    "whatsapp": {"cloud_api": "whatsapp:WhatsAppChannel"},
    "webhook": {"http": "webhook:WebhookChannel"},
    "inapp": {"inbox": "inapp:InAppChannel"},
}
assert set(PROVIDERS) == set(CHANNELS)


def channel_class(channel: str, provider: str | None) -> tuple[str, type[Channel]]:
    """``(provider, class)``; ValidationError naming ``channel`` / ``provider``."""
    providers = PROVIDERS.get(channel)
    if providers is None:
        raise ValidationError(f"unknown channel {channel!r}; channels: {list(CHANNELS)}",
                              field="channel")
    if provider is None:
        provider = next(iter(providers))
    path = providers.get(provider)
    if path is None:
        raise ValidationError(f"channel {channel} has no provider {provider!r}; "
                              f"providers: {list(providers)}", field="provider")
    module, cls = path.split(":")
    found: type[Channel] = getattr(importlib.import_module(f"{__package__}.{module}"), cls)
    return provider, found


_APNS_TOKEN = re.compile(r"^[0-9a-fA-F]{64,200}$")


def push_provider(message: Message) -> str:
    """``"apns"`` or ``"fcm"``: ``meta["token_kind"]`` when the sender knows it (tokens are
    stored as identities of kind fcm/apns), else by shape (APNs tokens are hex)."""
    kind = message.meta.get("token_kind")
    if kind in ("fcm", "apns"):
        return str(kind)
    return "apns" if _APNS_TOKEN.match(message.to or "") else "fcm"


def unreachable_identifier(message: Message) -> tuple[str, str] | None:
    """The profile identifier ``(kind, value)`` an ``unreachable`` result condemns, for the
    delivery service to remove: push tokens and web push subscriptions. Emails and phone
    numbers are identities, not just addresses, so they are not removed (``None``); the
    service may mark them undeliverable instead."""
    if message.channel == "push":
        return push_provider(message), message.to
    if message.channel == "webpush":
        return "webpush", message.to
    return None


class PushRouter(Channel):
    """Push through FCM or APNs by token, for accounts with both configured."""

    name: ClassVar[str] = "push"

    def __init__(self, providers: dict[str, Channel]) -> None:
        self.providers = providers

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PushRouter:
        raise NotImplementedError("PushRouter is built by ChannelDirectory")

    async def send(self, message: Message) -> SendResult:
        provider = push_provider(message)
        channel = self.providers.get(provider)
        if channel is None:
            return SendResult("rejected", error=f"push provider {provider} is not configured")
        return await channel.send(message)

    async def close(self) -> None:
        for ch in self.providers.values():
            await ch.close()
