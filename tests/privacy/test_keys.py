"""Envelope keys: data keys wrapped by the master key, fields bound to account and purpose."""

import base64
import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from nudge.errors import ConfigError
from nudge.privacy.keys import (
    KeyError_,
    Keyring,
    load_master_key,
    new_master_key_text,
    parse_master_key,
    rewrap_all,
)
from nudge.store import control


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    eng = control.connect(f"sqlite:///{tmp_path / 'control.db'}")
    with eng.begin() as c:
        for acct in ("a1", "a2"):
            c.execute(control.accounts.insert().values(id=acct, name=acct, created_at=0.0))
    return eng


def test_master_key_file_is_created_once_with_owner_only_mode(tmp_path: Path) -> None:
    path = tmp_path / "data.master-key"
    k1 = load_master_key("", path)
    assert len(k1) == 32 and (path.stat().st_mode & 0o777) == 0o600
    assert load_master_key("", path) == k1
    with pytest.raises(ConfigError, match="no master key"):
        load_master_key("", tmp_path / "missing", create=False)


def test_master_key_from_environment_must_be_32_bytes_of_base64() -> None:
    key = new_master_key_text()
    assert load_master_key(key, Path("/nonexistent")) == base64.b64decode(key)
    with pytest.raises(ConfigError, match="32 bytes"):
        parse_master_key(base64.b64encode(b"short").decode(), "NUDGE_MASTER_KEY")
    with pytest.raises(ConfigError, match="base64"):
        parse_master_key("not base64!!", "NUDGE_MASTER_KEY")


def test_data_key_is_stored_only_wrapped_and_survives_restart(engine: sa.Engine) -> None:
    master = os.urandom(32)
    dk = Keyring(engine, master).data_key("a1")
    with engine.connect() as c:
        wrapped = c.execute(sa.select(control.account_keys.c.wrapped_key)).scalar_one()
    assert dk not in bytes(wrapped)
    assert Keyring(engine, master).data_key("a1") == dk
    assert Keyring(engine, master).data_key("a2") != dk


def test_wrong_master_key_fails_loudly(engine: sa.Engine) -> None:
    Keyring(engine, os.urandom(32)).data_key("a1")
    with pytest.raises(KeyError_, match="another master key"):
        Keyring(engine, os.urandom(32)).data_key("a1")


def test_sealed_field_is_bound_to_account_and_purpose(engine: sa.Engine) -> None:
    ring = Keyring(engine, os.urandom(32))
    sealed = ring.seal("a1", "channel:sms", b"twilio-auth-token")
    assert b"twilio" not in sealed.encode()
    assert ring.open("a1", "channel:sms", sealed) == b"twilio-auth-token"
    with pytest.raises(KeyError_):
        ring.open("a1", "channel:email", sealed)
    with pytest.raises(KeyError_):
        ring.open("a2", "channel:sms", sealed)


def test_rotating_the_master_key_rewraps_without_changing_data_keys(engine: sa.Engine) -> None:
    old, new = os.urandom(32), os.urandom(32)
    ring = Keyring(engine, old)
    sealed = ring.seal("a2", "webhook", b"s3cret")
    before = ring.data_key("a1")
    assert rewrap_all(engine, old, new) == 2
    after = Keyring(engine, new)
    assert after.data_key("a1") == before
    assert after.open("a2", "webhook", sealed) == b"s3cret"
    with pytest.raises(KeyError_):
        Keyring(engine, old).data_key("a1")
