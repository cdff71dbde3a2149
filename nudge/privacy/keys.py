"""Envelope encryption: a master key wraps one random data key per account.

- The **master key** (32 bytes) comes from ``NUDGE_MASTER_KEY`` (base64) or a key file outside
  the data directory (``NUDGE_MASTER_KEY_FILE``; created once, mode 0600, if missing). It is
  never stored in the control store or an account store.
- Each account's **data key** (32 random bytes) is stored only wrapped with AES-256-GCM under
  the master key, with the account id as associated data (a wrapped key copied to another
  account's row does not unwrap). Rotating the master key re-wraps data keys; no data is
  rewritten.
- **Field encryption** (:meth:`Keyring.seal` / :meth:`Keyring.open`): secrets in the control
  store (provider credentials, webhook secrets, TOTP seeds) are AES-256-GCM under the
  account's data key, bound by associated data to the account and the field's *purpose*
  (e.g. ``"channel:email"``), so a value moved to another field or account fails to decrypt.
- The account's database **file** has a key of its own (``account_file_keys``, wrapped the
  same way), so that rewriting the file under a new key and destroying the old one
  crypto-shreds what was erased (nudge/privacy/shred.py). Files from before per-file keys
  use a key derived from the data key until their first rewrite (:meth:`Keyring.duckdb_key`).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.engine import Engine

from nudge.errors import ConfigError, NudgeError
from nudge.store import control

if TYPE_CHECKING:
    from nudge.config import Settings

log = logging.getLogger("nudge.privacy")
_NONCE = 12
_SEALED_PREFIX = "v1:"


class KeyError_(NudgeError):
    """A key is missing, or a ciphertext does not open with the key given (wrong key,
    tampered data, or data bound to another account or field)."""


def parse_master_key(text: str, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise ConfigError(f"{source}: the master key must be base64 of 32 bytes") from None
    if len(key) != 32:
        raise ConfigError(f"{source}: the master key must be 32 bytes, got {len(key)}")
    return key


def new_master_key_text() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def load_master_key(env_value: str, path: Path, create: bool = True) -> bytes:
    """The master key from the environment value, else from ``path`` (created if asked)."""
    if env_value:
        return parse_master_key(env_value, "NUDGE_MASTER_KEY")
    if not path.exists():
        if not create:
            raise ConfigError(f"no master key: set NUDGE_MASTER_KEY or create {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_master_key_text() + "\n")
            f.flush()
            os.fsync(f.fileno())
    return parse_master_key(path.read_text(), str(path))


def master_key_id(master: bytes) -> str:
    return hashlib.sha256(b"nudge-master-key-id" + master).hexdigest()[:16]


def _wrap(master: bytes, account_id: str, data_key: bytes) -> bytes:
    nonce = secrets.token_bytes(_NONCE)
    return nonce + AESGCM(master).encrypt(nonce, data_key, b"nudge-dk:" + account_id.encode())


def _unwrap(master: bytes, account_id: str, wrapped: bytes) -> bytes:
    try:
        return AESGCM(master).decrypt(wrapped[:_NONCE], wrapped[_NONCE:],
                                      b"nudge-dk:" + account_id.encode())
    except InvalidTag:
        raise KeyError_(f"the data key of account {account_id} does not unwrap with this "
                        "master key") from None


class Keyring:
    """Data keys of all accounts, unwrapped on first use and cached in memory."""

    def __init__(self, engine: Engine, master: bytes) -> None:
        self._engine = engine
        self._master = master
        self._id = master_key_id(master)
        self._keys: dict[str, bytes] = {}
        self._file_keys: dict[str, str] = {}  # account -> its file's current key (hex)
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The control store the wrapped keys live in."""
        return self._engine

    @property
    def master(self) -> bytes:
        return self._master

    def data_key(self, account_id: str) -> bytes:
        """The account's data key; created (and stored wrapped) on first use."""
        key = self._keys.get(account_id)
        if key is not None:
            return key
        with self._lock:
            key = self._keys.get(account_id)
            if key is None:
                key = self._load_or_create(account_id)
                self._keys[account_id] = key
        return key

    def _load_or_create(self, account_id: str) -> bytes:
        t = control.account_keys
        with self._engine.begin() as conn:
            row = conn.execute(sa.select(t.c.wrapped_key, t.c.master_key_id)
                               .where(t.c.account_id == account_id)).first()
            if row is None:
                key = secrets.token_bytes(32)
                conn.execute(t.insert().values(account_id=account_id,
                                               wrapped_key=_wrap(self._master, account_id, key),
                                               master_key_id=self._id, created_at=time.time()))
                return key
        if row.master_key_id != self._id:
            raise KeyError_(f"account {account_id}'s data key was wrapped by another master "
                            f"key (id {row.master_key_id}, this one is {self._id})")
        return _unwrap(self._master, account_id, bytes(row.wrapped_key))

    def forget(self, account_id: str) -> None:
        with self._lock:
            self._keys.pop(account_id, None)
            self._file_keys.pop(account_id, None)

    def duckdb_key(self, account_id: str, path: Path | None = None) -> str:
        """The ``ENCRYPTION_KEY`` of the account's database file (hex).

        Each file has its own random key (``account_file_keys``), replaced whenever the file
        is rewritten after an erasure (nudge/privacy/shred.py). ``path``: the file, when the
        caller is about to open it — a missing file gets a fresh key, and a rewrite cut
        short by a crash is settled first (:meth:`settle_file_key`). Files from before
        per-file keys (no row) keep the key derived from the data key until their first
        rewrite.
        """
        if path is not None:
            self.settle_file_key(account_id, path)
        cached = self._file_keys.get(account_id)
        if cached is not None:
            return cached
        self.data_key(account_id)  # every account has one (sealed fields, GDPR trail HMACs)
        t = control.account_file_keys
        with self._engine.begin() as conn:
            row = conn.execute(sa.select(t).where(t.c.account_id == account_id,
                                                  t.c.state == "active")).first()
            if row is None and path is not None and not path.exists():
                key = secrets.token_bytes(32)
                conn.execute(t.insert().values(
                    account_id=account_id, generation=1, state="active",
                    wrapped_key=self._wrap_file_key(account_id, 1, key),
                    master_key_id=self._id, created_at=time.time()))
                return self._cache_file_key(account_id, key)
        if row is None:
            return hashlib.sha256(b"nudge-duckdb" + self.data_key(account_id)).hexdigest()
        return self._cache_file_key(account_id, self._unwrap_file_key(row))

    # -- per-file keys (crypto-shredding) -------------------------------------------------
    def _wrap_file_key(self, account_id: str, generation: int, key: bytes) -> bytes:
        return _wrap(self._master, f"{account_id}:file:{generation}", key)

    def _unwrap_file_key(self, row: Any) -> bytes:
        if row.master_key_id != self._id:
            raise KeyError_(f"account {row.account_id}'s file key was wrapped by another "
                            f"master key (id {row.master_key_id}, this one is {self._id})")
        return _unwrap(self._master, f"{row.account_id}:file:{row.generation}",
                       bytes(row.wrapped_key))

    def _cache_file_key(self, account_id: str, key: bytes) -> str:
        text = key.hex()
        with self._lock:
            self._file_keys[account_id] = text
        return text

    def begin_file_key(self, account_id: str) -> tuple[int, str]:
        """A new random file key, stored wrapped as *pending* (the next generation)."""
        t = control.account_file_keys
        key = secrets.token_bytes(32)
        with self._engine.begin() as conn:
            conn.execute(t.delete().where(t.c.account_id == account_id,
                                          t.c.state == "pending"))
            top = conn.execute(sa.select(sa.func.max(t.c.generation))
                               .where(t.c.account_id == account_id)).scalar()
            generation = int(top or 0) + 1
            conn.execute(t.insert().values(
                account_id=account_id, generation=generation, state="pending",
                wrapped_key=self._wrap_file_key(account_id, generation, key),
                master_key_id=self._id, created_at=time.time()))
        return generation, key.hex()

    def commit_file_key(self, account_id: str, generation: int) -> None:
        """Make the pending key active and destroy every other key of the account's file
        (one transaction): whatever only the old file held is unreadable from now on."""
        t = control.account_file_keys
        with self._engine.begin() as conn:
            row = conn.execute(sa.select(t).where(t.c.account_id == account_id,
                                                  t.c.generation == generation)).first()
            if row is None:
                raise KeyError_(f"no file key generation {generation} for {account_id}")
            self._delete_secure(conn)
            conn.execute(t.delete().where(t.c.account_id == account_id,
                                          t.c.generation != generation))
            conn.execute(t.update().where(t.c.account_id == account_id,
                                          t.c.generation == generation).values(state="active"))
        self._cache_file_key(account_id, self._unwrap_file_key(row))
        purge_deleted(self._engine, t.name)

    def _delete_secure(self, conn: sa.Connection) -> None:
        if conn.dialect.name == "sqlite":  # deleted cells are zeroed, not left in free space
            conn.exec_driver_sql("PRAGMA secure_delete = ON")

    def abandon_file_key(self, account_id: str, generation: int) -> None:
        t = control.account_file_keys
        with self._engine.begin() as conn:
            conn.execute(t.delete().where(t.c.account_id == account_id,
                                          t.c.generation == generation, t.c.state == "pending"))

    def settle_file_key(self, account_id: str, path: Path) -> None:
        """Finish or undo a rewrite that a crash cut short: a pending key either opens the
        file at ``path`` (the new file was already in place: make the key active) or not
        (the old file is still there: drop the pending key and the partial copy)."""
        from nudge.privacy import storage

        t = control.account_file_keys
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.account_id == account_id,
                                                  t.c.state == "pending")).first()
        if row is None:
            return
        key = self._unwrap_file_key(row).hex()
        if path.exists() and storage.key_opens(path, key):
            self.commit_file_key(account_id, row.generation)
        else:
            self.abandon_file_key(account_id, row.generation)
        storage.remove_partial_rewrite(path)

    def file_key_info(self, account_id: str) -> dict[str, Any]:
        """Generation and creation time of the account file's key (receipts, tests)."""
        t = control.account_file_keys
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(t.c.generation, t.c.created_at).where(
                t.c.account_id == account_id, t.c.state == "active")).first()
        return {"generation": 0, "created_at": None} if row is None else {
            "generation": row.generation, "created_at": row.created_at}

    def seal(self, account_id: str, purpose: str, plaintext: bytes) -> str:
        """AES-256-GCM under the account's data key, bound to (account, purpose)."""
        nonce = secrets.token_bytes(_NONCE)
        ct = AESGCM(self.data_key(account_id)).encrypt(nonce, plaintext,
                                                       _aad(account_id, purpose))
        return _SEALED_PREFIX + base64.b64encode(nonce + ct).decode()

    def seal_many(self, account_id: str, purposes: list[str],
                  plaintexts: list[bytes]) -> list[str]:
        """``seal`` of each (purpose, plaintext) pair, for a batch: one cipher object and one
        ``os.urandom`` call for all the nonces (each value still has its own random nonce and
        its own associated data, so it opens with ``open`` like any sealed value)."""
        aead = AESGCM(self.data_key(account_id))
        nonces = os.urandom(_NONCE * len(plaintexts))
        aad = _aad(account_id, "").decode()
        b64 = base64.b64encode
        out = []
        for i, (purpose, plaintext) in enumerate(zip(purposes, plaintexts, strict=True)):
            nonce = nonces[i * _NONCE:(i + 1) * _NONCE]
            ct = aead.encrypt(nonce, plaintext, (aad + purpose).encode())
            out.append(_SEALED_PREFIX + b64(nonce + ct).decode())
        return out

    def open(self, account_id: str, purpose: str, sealed: str) -> bytes:
        if not sealed.startswith(_SEALED_PREFIX):
            raise KeyError_("not a sealed value")
        raw = base64.b64decode(sealed[len(_SEALED_PREFIX):])
        try:
            return AESGCM(self.data_key(account_id)).decrypt(raw[:_NONCE], raw[_NONCE:],
                                                             _aad(account_id, purpose))
        except InvalidTag:
            raise KeyError_(f"sealed value does not open for account {account_id}, "
                            f"field {purpose!r}") from None


def purge_deleted(engine: Engine, table: str) -> None:
    """Make deleted rows of ``table`` (destroyed keys) physically gone, as far as the
    database allows: on SQLite, deletes run with ``secure_delete`` (zeroed) and the WAL,
    which still holds the pages as they were written, is checkpointed and truncated; on
    PostgreSQL, the table is vacuumed (dead tuples reclaimed). Best effort: a busy WAL is
    truncated by a later checkpoint."""
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            elif conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.exec_driver_sql(f"VACUUM {table}")  # our table name
    except sa.exc.SQLAlchemyError as e:
        log.warning("could not purge deleted rows of %s: %s", table, e)


def _aad(account_id: str, purpose: str) -> bytes:
    return f"nudge-field:{account_id}:{purpose}".encode()


def keyring_for(settings: Settings, engine: Engine | None = None) -> Keyring:
    """The keyring of a data directory: its control store and its master key."""
    if engine is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = control.connect(settings.control_database_url)
    return Keyring(engine, load_master_key(settings.master_key, settings.master_key_path))


def rewrap_all(engine: Engine, old_master: bytes, new_master: bytes) -> int:
    """Re-wrap every data key from ``old_master`` to ``new_master`` in one transaction."""
    t = control.account_keys
    new_id, n = master_key_id(new_master), 0
    with engine.begin() as conn:
        for row in conn.execute(sa.select(t.c.account_id, t.c.wrapped_key)).all():
            key = _unwrap(old_master, row.account_id, bytes(row.wrapped_key))
            conn.execute(t.update().where(t.c.account_id == row.account_id).values(
                wrapped_key=_wrap(new_master, row.account_id, key), master_key_id=new_id,
                rewrapped_at=time.time()))
            n += 1
        f = control.account_file_keys
        for row in conn.execute(sa.select(f)).all():
            purpose = f"{row.account_id}:file:{row.generation}"
            key = _unwrap(old_master, purpose, bytes(row.wrapped_key))
            conn.execute(f.update().where(f.c.account_id == row.account_id,
                                          f.c.generation == row.generation).values(
                wrapped_key=_wrap(new_master, purpose, key), master_key_id=new_id,
                rewrapped_at=time.time()))
    return n
