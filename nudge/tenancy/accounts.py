"""Accounts (tenants) and their keys.

An account has an id, a server-side *passcode* (full API access), a public *write key*
(ingest only, safe to ship in a web page), a timezone and its own DuckDB file.
Keys are shown once at creation/rotation; only their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.clock import clock
from nudge.errors import AuthError, NotFound, ValidationError
from nudge.store.control import accounts, api_keys

KEY_KINDS = ("passcode", "write")
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    timezone: str
    created_at: float


@dataclass(frozen=True)
class NewAccount:
    account: Account
    passcode: str
    write_key: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _new_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(12))


def _new_key(kind: str) -> str:
    prefix = "np_" if kind == "passcode" else "nw_"
    return prefix + secrets.token_urlsafe(24)


def _check_timezone(tz: str) -> str:
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"unknown timezone {tz!r}", field="timezone") from None
    return tz


class AccountDirectory:
    """Reads and writes accounts and keys in the control store; authenticates requests."""

    # Authentication results are cached briefly so the ingest path does not hit the control
    # store per request; revocation takes effect within this many seconds in every process
    # (immediately in the process that revoked).
    CACHE_TTL_S = 5.0

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cache: dict[tuple[str, str, str], tuple[float, bool]] = {}
        self._write_keys: dict[tuple[str, str, str], tuple[float, str | None]] = {}
        self._lock = threading.Lock()

    def create(self, name: str, timezone: str = "UTC") -> NewAccount:
        if not name.strip() or len(name) > 200:
            raise ValidationError("name must be 1-200 characters", field="name")
        acct = Account(_new_id(), name.strip(), _check_timezone(timezone), clock.now())
        keys = {kind: _new_key(kind) for kind in KEY_KINDS}
        with self.engine.begin() as conn:
            conn.execute(accounts.insert().values(
                id=acct.id, name=acct.name, timezone=acct.timezone, created_at=acct.created_at))
            for kind, key in keys.items():
                self._insert_key(conn, acct.id, kind, key)
        return NewAccount(acct, keys["passcode"], keys["write"])

    def _insert_key(self, conn: sa.Connection, account_id: str, kind: str, key: str) -> None:
        conn.execute(api_keys.insert().values(
            account_id=account_id, kind=kind, key_hash=hash_key(key), prefix=key[:8],
            created_at=clock.now()))

    def list(self) -> list[Account]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(accounts).order_by(accounts.c.created_at)).all()
        return [Account(r.id, r.name, r.timezone, r.created_at) for r in rows]

    def get(self, account_id: str) -> Account:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(accounts).where(accounts.c.id == account_id)).first()
        if r is None:
            raise NotFound(f"no account {account_id!r}")
        return Account(r.id, r.name, r.timezone, r.created_at)

    def set_timezone(self, account_id: str, timezone: str) -> Account:
        """Change the account's timezone (reports, segments' relative dates and quiet hours
        read it per request). ValidationError naming ``timezone`` for an unknown zone."""
        tz = _check_timezone(timezone.strip() if isinstance(timezone, str) else "")
        self.get(account_id)
        with self.engine.begin() as conn:
            conn.execute(accounts.update().where(accounts.c.id == account_id)
                         .values(timezone=tz))
        return self.get(account_id)

    def rotate_key(self, account_id: str, kind: str = "passcode") -> str:
        """Issue a new key of ``kind`` and revoke the previous ones at once."""
        if kind not in KEY_KINDS:
            raise ValidationError(f"kind must be one of {KEY_KINDS}", field="kind")
        self.get(account_id)
        key = _new_key(kind)
        with self.engine.begin() as conn:
            conn.execute(api_keys.update()
                         .where(api_keys.c.account_id == account_id, api_keys.c.kind == kind,
                                api_keys.c.revoked_at.is_(None))
                         .values(revoked_at=clock.now()))
            self._insert_key(conn, account_id, kind, key)
        with self._lock:
            self._cache.clear()
            self._write_keys.clear()
        return key

    def authenticate(self, account_id: str, key: str, kinds: tuple[str, ...]) -> None:
        """Raise AuthError unless ``key`` is a live key of one of ``kinds`` for the account.

        The error never says whether the account exists.
        """
        cache_key = (account_id, hash_key(key), ",".join(kinds))
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(cache_key)
        if hit is None or now - hit[0] > self.CACHE_TTL_S:
            with self.engine.connect() as conn:
                ok = conn.execute(sa.select(api_keys.c.id).where(
                    api_keys.c.account_id == account_id,
                    api_keys.c.key_hash == cache_key[1],
                    api_keys.c.kind.in_(kinds),
                    api_keys.c.revoked_at.is_(None))).first() is not None
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[cache_key] = (now, ok)
        else:
            ok = hit[1]
        if not ok:
            raise AuthError("unknown account or wrong key")

    def forget_cached_keys(self) -> None:
        """Drop cached key lookups (after a key is revoked elsewhere in this process)."""
        with self._lock:
            self._cache.clear()
            self._write_keys.clear()

    def account_for_write_key(self, key: str) -> str:
        """The account a public write key belongs to (Segment-spec auth has only the key)."""
        cache_key = ("", hash_key(key), "write")
        now = time.monotonic()
        with self._lock:
            hit = self._write_keys.get(cache_key)
        if hit is None or now - hit[0] > self.CACHE_TTL_S:
            with self.engine.connect() as conn:
                r = conn.execute(sa.select(api_keys.c.account_id).where(
                    api_keys.c.key_hash == cache_key[1], api_keys.c.kind == "write",
                    api_keys.c.revoked_at.is_(None))).first()
            hit = (now, None if r is None else str(r.account_id))
            with self._lock:
                if len(self._write_keys) > 10_000:
                    self._write_keys.clear()
                self._write_keys[cache_key] = hit
        if hit[1] is None:
            raise AuthError("unknown write key")
        return hit[1]
