"""Provider configuration per account and channel, stored sealed, and the channel instances
built from it.

Rows live in ``channel_configs`` (account, channel, provider); the configuration JSON is
sealed with the account's data key (``Keyring.seal(account_id, "channel:<name>", ...)``), so
the control store never holds a provider secret in the clear. ``PUT`` validates by building
the channel (``Channel.from_config``) before anything is stored.

The delivery service calls :meth:`ChannelDirectory.build` per message; instances are cached
per (account, channel) and rebuilt when the stored ``version`` changes (checked at most every
``RECHECK_S`` seconds, immediately after a change made through this process). Replaced
instances are closed on :meth:`ChannelDirectory.close`, not at once, because a send may still
be using them.

Example::

    channels = channel_directory(nudge)          # one per server process
    channel = channels.build(account_id, "email")
    result = await channel.send(message)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.clock import clock
from nudge.engage.channels.base import Channel
from nudge.engage.channels.inapp import InAppChannel
from nudge.engage.channels.registry import PushRouter, channel_class
from nudge.engage.inbox import Inbox
from nudge.errors import NotFound, ValidationError
from nudge.privacy.keys import Keyring
from nudge.store.control import channel_configs as t

RECHECK_S = 2.0
# Secrets the server creates when a PUT leaves them out; shown once in the PUT response
# (except the VAPID private key, which never leaves the server: browsers need its public key).
_GENERATED = {("webhook", "secret"), ("inapp", "identity_secret"),
              ("webpush", "vapid_private_key")}


@dataclass
class _Cached:
    versions: tuple[tuple[str, int], ...]
    channel: Channel
    checked: float


def _new_vapid_key() -> str:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    raw = key.private_numbers().private_value.to_bytes(32, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def user_hash(identity_secret: str, identity: str) -> str:
    """What the customer's server computes for identity verification of inbox reads:
    hex HMAC-SHA256(identity secret, identity)."""
    return hmac.new(identity_secret.encode(), identity.encode(), hashlib.sha256).hexdigest()


class ChannelDirectory:
    def __init__(self, engine: Engine, keyring: Keyring) -> None:
        self.engine = engine
        self.keyring = keyring
        self.inbox = Inbox(engine, keyring)
        self._cache: dict[tuple[str, str], _Cached] = {}
        self._retired: list[Channel] = []
        self._lock = threading.Lock()

    # -- stored configuration ------------------------------------------------------------
    def put(self, account_id: str, channel: str, config: Any) -> dict[str, Any]:
        """Validate and store; returns the public view, plus ``generated`` secrets (once)."""
        if not isinstance(config, dict):
            raise ValidationError("body must be an object", field="body")
        provider = config.get("provider")
        if provider is not None and not isinstance(provider, str):
            raise ValidationError("provider must be a string", field="provider")
        provider, cls = channel_class(channel, provider)
        config = {**config, "provider": provider}
        generated = {}
        for ch, name in _GENERATED:
            if ch == channel and not config.get(name):
                value = (_new_vapid_key() if name == "vapid_private_key"
                         else secrets.token_urlsafe(32))
                config[name] = value
                if name != "vapid_private_key":  # only its public key is ever needed
                    generated[name] = value
        instance = cls.from_config(config)  # raises ValidationError naming the field
        _close_soon(instance)
        sealed = self.keyring.seal(account_id, f"channel:{channel}", json.dumps(config).encode())
        now = clock.now()
        key = dict(account_id=account_id, channel=channel, provider=provider)
        with self.engine.begin() as conn:
            version = conn.execute(sa.select(t.c.version).where(
                *(t.c[k] == v for k, v in key.items()))).scalar()
            if version is None:
                conn.execute(t.insert().values(**key, config=sealed, version=1,
                                               created_at=now, updated_at=now))
            else:
                conn.execute(t.update().where(*(t.c[k] == v for k, v in key.items()))
                             .values(config=sealed, version=version + 1, updated_at=now))
        self._invalidate(account_id, channel)
        view = self._view(channel, provider, config, now)
        if generated:
            view["generated"] = generated
        return view

    def _rows(self, account_id: str, channel: str | None = None) -> list[Any]:
        q = sa.select(t).where(t.c.account_id == account_id)
        if channel is not None:
            q = q.where(t.c.channel == channel)
        with self.engine.connect() as conn:
            return list(conn.execute(q.order_by(t.c.channel, t.c.provider)).all())

    def _open(self, row: Any) -> dict[str, Any]:
        raw = self.keyring.open(row.account_id, f"channel:{row.channel}", row.config)
        return json.loads(raw)  # type: ignore[no-any-return]

    def config(self, account_id: str, channel: str,
               provider: str | None = None) -> dict[str, Any] | None:
        """The decrypted configuration (for the server's own use; never returned by the API)."""
        for row in self._rows(account_id, channel):
            if provider is None or row.provider == provider:
                return self._open(row)
        return None

    def views(self, account_id: str, channel: str | None = None) -> list[dict[str, Any]]:
        """What ``GET`` shows: non-secret fields, and only *which* secret fields are set."""
        if channel is not None:
            channel_class(channel, None)
        return [self._view(r.channel, r.provider, self._open(r), r.updated_at)
                for r in self._rows(account_id, channel)]

    @staticmethod
    def _view(channel: str, provider: str, config: dict[str, Any],
              updated_at: float) -> dict[str, Any]:
        _, cls = channel_class(channel, provider)
        hidden = set(getattr(cls, "secret_fields", ())) | {"ca_pem"}
        view: dict[str, Any] = {
            "channel": channel, "provider": provider,
            "config": {k: v for k, v in config.items() if k not in hidden and k != "provider"},
            "secrets_set": sorted(k for k in hidden if config.get(k)),
            "updated_at": updated_at,
        }
        if channel == "webpush":
            from nudge.engage.channels.webpush import vapid_public_key

            view["vapid_public_key"] = vapid_public_key(config["vapid_private_key"])
        return view

    def delete(self, account_id: str, channel: str, provider: str | None = None) -> int:
        channel_class(channel, provider)
        where = [t.c.account_id == account_id, t.c.channel == channel]
        if provider is not None:
            where.append(t.c.provider == provider)
        with self.engine.begin() as conn:
            n = conn.execute(t.delete().where(*where)).rowcount or 0
        self._invalidate(account_id, channel)
        if not n:
            raise NotFound(f"channel {channel} is not configured")
        return n

    # -- instances for the delivery service -------------------------------------------
    def build(self, account_id: str, channel: str) -> Channel:
        """The account's configured channel (cached; rebuilt after a configuration change).

        ``inapp`` works without configuration; push with both FCM and APNs configured is a
        :class:`PushRouter`. Raises NotFound when the channel is not configured.
        """
        channel_class(channel, None)
        key = (account_id, channel)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now - hit.checked < RECHECK_S:
            return hit.channel
        rows = self._rows(account_id, channel)
        versions = tuple((r.provider, int(r.version)) for r in rows)
        if hit is not None and hit.versions == versions:
            hit.checked = now
            return hit.channel
        built = self._construct(channel, rows)
        with self._lock:
            old = self._cache.get(key)
            if old is not None:
                self._retired.append(old.channel)
            self._cache[key] = _Cached(versions, built, now)
        return built

    def _construct(self, channel: str, rows: list[Any]) -> Channel:
        if not rows:
            if channel == "inapp":
                return InAppChannel.from_config({}).bind(self.inbox)
            raise NotFound(f"channel {channel} is not configured for this account")
        built: dict[str, Channel] = {}
        for row in rows:
            _, cls = channel_class(channel, row.provider)
            config = self._open(row)
            ch = cls.from_config(config)
            rate = config.get("rate_per_second")
            ch.rate_per_second = float(rate) if rate else None
            if isinstance(ch, InAppChannel):
                ch.bind(self.inbox)
            built[row.provider] = ch
        if channel == "push" and len(built) > 1:
            router = PushRouter(built)
            rates = [c.rate_per_second for c in built.values() if c.rate_per_second]
            router.rate_per_second = min(rates) if rates else None  # the stricter provider
            return router
        return next(iter(built.values()))

    def _invalidate(self, account_id: str, channel: str) -> None:
        with self._lock:
            hit = self._cache.pop((account_id, channel), None)
            if hit is not None:
                self._retired.append(hit.channel)

    def identity_secret(self, account_id: str) -> str | None:
        """The inbox identity-verification secret, if the account set up ``inapp``."""
        ch = self.build(account_id, "inapp")
        return ch.identity_secret if isinstance(ch, InAppChannel) else None

    async def close(self) -> None:
        with self._lock:
            channels = [c.channel for c in self._cache.values()] + self._retired
            self._cache.clear()
            self._retired = []
        for ch in channels:
            await ch.close()


def _close_soon(channel: Channel) -> None:
    """Close a channel built only to validate a config (its HTTP client holds no
    connection yet, so dropping it is enough when no event loop runs)."""
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    task = loop.create_task(channel.close())
    _pending.add(task)
    task.add_done_callback(_pending.discard)


_pending: set[Any] = set()
_dir_lock = threading.Lock()


def channel_directory(nudge: Any) -> ChannelDirectory:
    """The process's ChannelDirectory for a ``nudge.api.context.Nudge`` (created once and
    kept on it)."""
    with _dir_lock:
        d = getattr(nudge, "_channel_directory", None)
        if d is None:
            d = ChannelDirectory(nudge.accounts.engine, nudge.keyring)
            nudge._channel_directory = d
        return d
