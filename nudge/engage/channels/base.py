"""The one interface every channel implements.

The delivery service (outbox workers) hands a channel one fully rendered :class:`Message`
at a time and gets back a :class:`SendResult`. Channels know their provider's protocol and
nothing about campaigns, policy or the outbox; the service knows nothing about protocols.

Outcomes the service acts on:

- ``sent``: the provider accepted the message (``provider_id`` is its id, for callbacks).
- ``retry``: a transient failure (429, 5xx, timeout, connection error); the service retries
  with backoff, no sooner than ``retry_after`` seconds, up to its attempt limit, then
  dead-letters it. The channel must be safe to call again with the same message: providers
  that accept an idempotency key get ``Message.idempotency_key``.
- ``rejected``: the provider refused this message for good (bad request, blocked number):
  not retried; the service may fall back to the next channel.
- ``unreachable``: the address is invalid or expired (FCM ``UNREGISTERED``, APNs 410,
  web push 404/410): not retried; the service removes ``Message.to`` from the profile and
  may fall back.

A channel is built from its provider configuration (already decrypted by the caller) with
:meth:`Channel.from_config`, which validates it and raises ``nudge.errors.ValidationError``
naming the bad field. Configuration holds secrets; never log it or put it in errors.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

Outcome = Literal["sent", "retry", "rejected", "unreachable"]

CHANNELS = ("email", "push", "webpush", "sms", "whatsapp", "webhook", "inapp")


@dataclass(frozen=True)
class Message:
    """One rendered message to one address on one channel."""

    id: str  # the outbox message id
    idempotency_key: str  # stable across retries and restarts (campaign, occurrence, user, variant)
    account_id: str
    user_id: int  # internal profile id
    channel: str
    to: str  # email address, push token, web push subscription JSON, phone, URL, user id
    # Channel-specific rendered content, e.g. email: subject, html, text, from_, reply_to,
    # headers; push: title, body, data, image, deep_link; sms: body; whatsapp: template name,
    # language, components; webhook: body (JSON-able); inapp: title, body, layout, data.
    content: dict[str, Any]
    # campaign_id, variant, journey ids, tracking ids: echoed to providers that carry
    # custom data and to tracking links; never secrets.
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    provider_id: str | None = None
    retry_after: float | None = None  # seconds, from the provider's Retry-After if any
    error: str | None = None  # short reason for the record (never contains secrets)
    status_code: int | None = None


class Channel(abc.ABC):
    """A configured provider connection for one account and one channel."""

    name: ClassVar[str]
    # Provider send-rate limit (messages per second, from the optional ``rate_per_second``
    # config field every provider accepts), honored by the delivery service; None: no limit.
    rate_per_second: float | None = None

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: dict[str, Any]) -> Channel:
        """Validate provider configuration (base URL, credentials, timeouts) and build."""

    @abc.abstractmethod
    async def send(self, message: Message) -> SendResult:
        """Send one message. Must not raise for provider or network failures: map them to
        ``retry`` / ``rejected`` / ``unreachable``."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (HTTP clients, SMTP sessions)."""
