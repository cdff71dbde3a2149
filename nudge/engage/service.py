"""The message delivery service of one server process: workers, scheduler, live bus.

Started and stopped by the app's lifespan (``start_engage``). Everything durable lives in
the control store (campaigns, runs, outbox, subscriptions, send rates, event-feed
watermarks) and the account stores (events written back); the in-memory parts (queues,
caches) are rebuilt at start, and runs, messages and live-bus events interrupted by a crash
are resumed from the tables.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.config import Settings
from nudge.privacy.keys import Keyring
from nudge.store import control
from nudge.store.registry import StoreRegistry
from nudge.tenancy.accounts import AccountDirectory

from . import outbox, sealing
from .channels import netguard
from .channels.base import Channel
from .policy import PolicyStore
from .ratelimit import SendRateLimiter
from .tracking import Signer

log = logging.getLogger("nudge.engage")
ChannelBuilder = Callable[[str, str], Channel]


def default_channel_builder(nudge: Any) -> ChannelBuilder:
    """Channels from each account's provider configuration (channel_config.py), which
    caches instances and rebuilds them when a configuration changes."""
    from .channel_config import channel_directory

    return channel_directory(nudge).build


class Engage:
    def __init__(self, settings: Settings, accounts: AccountDirectory, stores: StoreRegistry,
                 keyring: Keyring, channel_builder: ChannelBuilder | None = None) -> None:
        self.settings = settings
        self.accounts = accounts
        self.engine: Engine = accounts.engine
        self.stores = stores
        self.keyring = keyring
        sealing.register(self.engine, keyring)  # outbox rows are sealed with it
        outbox.upgrade_indexes(self.engine)
        netguard.configure(settings.engage_allow_private_networks)
        self.signer = Signer(keyring, settings.public_url)
        self.policies = PolicyStore(self.engine)
        self.channel_builder = channel_builder or default_channel_builder(self)
        self.owner: Any = self  # whose channel directory to close at stop
        self.channels: dict[tuple[str, str], Channel] = {}
        self.limiter = SendRateLimiter(self.engine)  # shared with other processes
        self.wake: asyncio.Event | None = None
        self.tasks: list[asyncio.Task[Any]] = []
        self.stopping = False
        self._inactive: tuple[float, set[int]] = (0.0, set())
        self._slots: dict[tuple[str, str], asyncio.Semaphore] = {}

    # -- channels ----------------------------------------------------------------------------
    def channel(self, account_id: str, name: str) -> Channel:
        """The configured channel (the builder caches and rebuilds on config change)."""
        ch = self.channel_builder(account_id, name)
        key = (account_id, name)
        if self.channels.get(key) is not ch:
            self.channels[key] = ch
            self.limiter.set_rate(key, getattr(ch, "rate_per_second", None))
        return ch

    def slots(self, account_id: str, name: str) -> asyncio.Semaphore:
        """Concurrent sends per (account, channel), shared by this process's workers: kept
        below the channels' HTTP connection pools (100), since requests queued on an
        exhausted httpx pool and then cancelled by our timeout were seen to stall it."""
        key = (account_id, name)
        sem = self._slots.get(key)
        if sem is None:
            sem = self._slots[key] = asyncio.Semaphore(self.settings.engage_channel_concurrency)
        return sem

    def timezone(self, account_id: str) -> str:
        return self.accounts.get(account_id).timezone

    def inactive_campaigns(self) -> set[int]:
        """Paused and stopped campaigns (their pending messages are held), cached 0.5 s."""
        at, ids = self._inactive
        if time.monotonic() - at < 0.5:
            return ids
        c = control.campaigns
        with self.engine.connect() as conn:
            ids = {r[0] for r in conn.execute(sa.select(c.c.id).where(
                c.c.status.in_(("paused", "stopped"))))}
        self._inactive = (time.monotonic(), ids)
        return ids

    def notify(self) -> None:
        """New due messages: wake idle workers (thread-safe)."""
        loop, wake = getattr(self, "loop", None), self.wake
        if loop is not None and wake is not None:
            loop.call_soon_threadsafe(wake.set)

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        from .bus import LiveBus
        from .scheduler import Scheduler
        from .worker import DeliveryWorker

        self.loop = asyncio.get_running_loop()
        # httpx logs every request at INFO with its full URL: one line per message sent (a
        # measurable cost at volume) and provider URLs can carry credentials.
        logging.getLogger("httpx").setLevel(max(logging.WARNING,
                                                logging.getLogger("httpx").level))
        self.wake = asyncio.Event()
        self.bus = LiveBus(self)
        self.scheduler = Scheduler(self)
        self.bus.attach()
        self.tasks.append(asyncio.create_task(self.bus.run(), name="engage-bus"))
        self.tasks.append(asyncio.create_task(self.scheduler.run(), name="engage-scheduler"))
        for i in range(self.settings.engage_workers):
            w = DeliveryWorker(self, i)
            self.tasks.append(asyncio.create_task(w.run(), name=f"engage-worker-{i}"))
        log.info("engage started", extra={"workers": self.settings.engage_workers})

    async def stop(self) -> None:
        self.stopping = True
        if getattr(self, "bus", None) is not None:
            self.bus.detach()
        if self.wake is not None:
            self.wake.set()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        if getattr(self, "scheduler", None) is not None:
            self.scheduler.close()
        directory = getattr(self.owner, "_channel_directory", None)
        if directory is not None:
            await directory.close()
        self.channels.clear()


async def start_engage(app: Any, nudge: Any) -> Engage:
    """Create the process's delivery service, keep it on ``app.state.engage``, start it."""
    builder = getattr(app.state, "channel_builder", None) or default_channel_builder(nudge)
    engage = Engage(nudge.settings, nudge.accounts, nudge.stores, nudge.keyring, builder)
    engage.owner = nudge  # one channel directory per process, shared with /1/channels
    app.state.engage = engage
    await engage.start()
    return engage
