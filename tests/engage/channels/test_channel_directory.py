"""ChannelDirectory (sealed configs, instance cache, push routing) and the Inbox store, on a
real SQLite control store in a temp dir."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from nudge.clock import clock
from nudge.engage.channel_config import ChannelDirectory, user_hash
from nudge.engage.channels.apns import ApnsChannel
from nudge.engage.channels.fcm import FcmChannel
from nudge.engage.channels.inapp import InAppChannel
from nudge.engage.channels.registry import PushRouter
from nudge.engage.inbox import Inbox
from nudge.errors import NotFound, ValidationError
from nudge.privacy.keys import Keyring, new_master_key_text, parse_master_key
from nudge.store import control
from nudge.tenancy.accounts import AccountDirectory
from tests.engage.providers import (
    ApnsServer,
    FcmServer,
    allow_private_networks,  # noqa: F401 - autouse
    message,
    tls_pair,
)


@pytest.fixture
def env(tmp_path: Path):
    engine = control.connect(f"sqlite:///{tmp_path / 'control.db'}")
    accounts = AccountDirectory(engine)
    a, b = accounts.create("a").account.id, accounts.create("b").account.id
    keyring = Keyring(engine, parse_master_key(new_master_key_text(), "test"))
    yield ChannelDirectory(engine, keyring), a, b, engine
    engine.dispose()


def test_sealed_at_rest_and_bound_to_account(env) -> None:
    directory, a, b, engine = env
    fcm = FcmServer()
    view = directory.put(a, "push", {**fcm.channel_config(), "rate_per_second": 50})
    assert view["secrets_set"] == ["service_account"] and "service_account" not in view["config"]
    with engine.connect() as conn:
        row = conn.execute(sa.select(control.channel_configs)).one()
    assert row.config.startswith("v1:") and "PRIVATE" not in row.config
    assert fcm.client_email not in row.config
    # the sealed value copied to account b does not open there
    with engine.begin() as conn:
        conn.execute(control.channel_configs.insert().values(
            account_id=b, channel="push", provider="fcm", config=row.config, version=1,
            created_at=0, updated_at=0))
    with pytest.raises(Exception, match="does not open"):
        directory.build(b, "push")
    assert directory.config(a, "push", "fcm")["service_account"]["client_email"] == \
        fcm.client_email
    ch = directory.build(a, "push")
    assert isinstance(ch, FcmChannel) and ch.rate_per_second == 50
    with pytest.raises(NotFound):
        directory.build(a, "sms")


def test_push_with_both_providers_is_a_router(env, tmp_path: Path) -> None:
    directory, a, _, _ = env
    directory.put(a, "push", {**FcmServer().channel_config(), "rate_per_second": 500})
    apns = ApnsServer(tls_pair(tmp_path / "tls"))
    directory.put(a, "push", {**apns.channel_config(), "rate_per_second": 200})
    ch = directory.build(a, "push")
    assert isinstance(ch, PushRouter) and ch.rate_per_second == 200
    assert isinstance(ch.providers["apns"], ApnsChannel)
    assert [v["provider"] for v in directory.views(a, "push")] == ["apns", "fcm"]
    assert directory.delete(a, "push", "apns") == 1
    # the cache is dropped on change: now plain FCM again
    assert isinstance(directory.build(a, "push"), FcmChannel)


def test_invalid_config_changes_nothing(env) -> None:
    directory, a, _, engine = env
    with pytest.raises(ValidationError) as e:
        directory.put(a, "whatsapp", {"access_token": "t", "phone_number_id": "abc"})
    assert e.value.field == "config.phone_number_id"
    with pytest.raises(ValidationError) as e:
        directory.put(a, "email", ["not", "an", "object"])
    assert e.value.field == "body"
    with pytest.raises(ValidationError) as e:
        directory.put(a, "sms", {"provider": "twilio", "account_sid": "AC1",
                                 "auth_token": "x", "from": "+1", "rate_per_second": -3})
    assert e.value.field == "config.rate_per_second"
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(
            control.channel_configs)).scalar() == 0


def test_inapp_works_unconfigured_and_identity_secret(env) -> None:
    directory, a, _, _ = env
    assert directory.identity_secret(a) is None
    ch = directory.build(a, "inapp")
    assert isinstance(ch, InAppChannel)
    view = directory.put(a, "inapp", {"ttl_days": 1})
    secret = view["generated"]["identity_secret"]
    assert directory.identity_secret(a) == secret
    assert user_hash(secret, "ada") != user_hash(secret, "bo")
    assert secret not in json.dumps(directory.views(a))


def test_inbox_send_is_idempotent_expires_and_wakes_listeners(env) -> None:
    directory, a, b, engine = env
    inbox = directory.inbox
    ch = directory.build(a, "inapp")

    async def go():
        with inbox.listen(a, 7) as wake, inbox.listen(b, 7) as other:
            m = message("inapp", "", {"title": "hi", "ttl_s": 60}, account_id=a, user_id=7)
            r1 = await ch.send(m)
            await asyncio.wait_for(wake.wait(), 5)  # woken by this process's write
            r2 = await ch.send(m)  # a retry of the same outbox message
            return r1, r2, other.is_set()
    r1, r2, other_woken = asyncio.run(go())
    assert (r1.outcome, r2.outcome) == ("sent", "sent")
    assert not other_woken  # account b's user 7 is someone else
    page = inbox.page(a, 7)
    assert len(page.messages) == 1 and page.unread == 1
    assert inbox.page(b, 7).messages == []
    clock.offset = 120  # past the message's ttl_s
    try:
        assert inbox.page(a, 7).messages == [] and inbox.unread(a, 7) == 0
        assert inbox.purge_expired() == 1
    finally:
        clock.offset = 0


def test_inbox_watcher_sees_rows_written_by_another_process(env) -> None:
    directory, a, _, engine = env
    other_process = Inbox(engine, directory.keyring)  # another writer: no notify reaches us

    async def go():
        with directory.inbox.listen(a, 9) as wake:
            await asyncio.sleep(0.1)  # the watcher has read the current max seq
            await asyncio.to_thread(other_process.add, a, 9, "m-1", {"title": "x"}, {})
            await asyncio.wait_for(wake.wait(), 10)
    asyncio.run(go())
    assert [m["id"] for m in directory.inbox.since(a, 9, 0)] == ["m-1"]
