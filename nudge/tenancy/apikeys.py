"""Scoped API keys: create, list, rotate, revoke; resolve a presented key to its scope.

Kinds (scopes, see :data:`nudge.tenancy.roles.KEY_SCOPES`): ``passcode`` (server-side, the
full account API), ``write`` (public, ingest only), ``read`` (read-only analytics). A key is
shown once, when created or rotated; only its SHA-256 and an 8-character prefix are stored.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.clock import clock
from nudge.errors import NotFound, ValidationError
from nudge.store.control import api_keys
from nudge.tenancy.accounts import hash_key
from nudge.tenancy.roles import KEY_KINDS

_PREFIX = {"passcode": "np_", "write": "nw_", "read": "nr_"}


@dataclass(frozen=True)
class ApiKey:
    id: int
    account_id: str
    kind: str
    prefix: str
    created_at: float
    revoked_at: float | None

    def public(self) -> dict[str, object]:
        return {"id": self.id, "kind": self.kind, "prefix": self.prefix,
                "created_at": self.created_at, "revoked_at": self.revoked_at}


def _key(r: sa.Row) -> ApiKey:  # type: ignore[type-arg]
    return ApiKey(r.id, r.account_id, r.kind, r.prefix, r.created_at, r.revoked_at)


class ApiKeys:
    """Keys of every account. Lookups are cached for ``CACHE_TTL_S`` (revocation is
    immediate in this process and takes at most that long in others)."""

    CACHE_TTL_S = 5.0

    def __init__(self, engine: Engine, on_change: object = None) -> None:
        self.engine = engine
        self._on_change = on_change
        self._cache: dict[tuple[str, str], tuple[float, ApiKey | None]] = {}
        self._lock = threading.Lock()

    def lookup(self, account_id: str, key: str) -> ApiKey | None:
        """The live key ``key`` of ``account_id`` (None for a wrong, revoked or foreign key)."""
        ck = (account_id, hash_key(key))
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(ck)
        if hit is not None and now - hit[0] <= self.CACHE_TTL_S:
            return hit[1]
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(api_keys).where(
                api_keys.c.account_id == account_id, api_keys.c.key_hash == ck[1],
                api_keys.c.revoked_at.is_(None))).first()
        found = None if r is None else _key(r)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[ck] = (now, found)
        return found

    def create(self, account_id: str, kind: str) -> tuple[ApiKey, str]:
        if kind not in KEY_KINDS:
            raise ValidationError(f"kind must be one of {', '.join(KEY_KINDS)}", field="kind")
        secret = _PREFIX[kind] + secrets.token_urlsafe(24)
        with self.engine.begin() as conn:
            kid = conn.execute(api_keys.insert().values(
                account_id=account_id, kind=kind, key_hash=hash_key(secret), prefix=secret[:8],
                created_at=clock.now())).inserted_primary_key[0]
        return self.get(account_id, int(kid)), secret

    def get(self, account_id: str, key_id: int) -> ApiKey:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(api_keys).where(
                api_keys.c.id == key_id, api_keys.c.account_id == account_id)).first()
        if r is None:
            raise NotFound("no such key")
        return _key(r)

    def list(self, account_id: str, include_revoked: bool = False) -> list[ApiKey]:
        q = sa.select(api_keys).where(api_keys.c.account_id == account_id)
        if not include_revoked:
            q = q.where(api_keys.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [_key(r) for r in conn.execute(q.order_by(api_keys.c.id)).all()]

    def revoke(self, account_id: str, key_id: int) -> ApiKey:
        with self.engine.begin() as conn:
            n = conn.execute(api_keys.update().where(
                api_keys.c.id == key_id, api_keys.c.account_id == account_id,
                api_keys.c.revoked_at.is_(None)).values(revoked_at=clock.now())).rowcount
        if not n:
            raise NotFound("no such key")
        self._forget()
        return self.get(account_id, key_id)

    def rotate(self, account_id: str, key_id: int) -> tuple[ApiKey, str]:
        """A new key of the same kind; the old one is revoked at once."""
        old = self.revoke(account_id, key_id)
        return self.create(account_id, old.kind)

    def _forget(self) -> None:
        with self._lock:
            self._cache.clear()
        if callable(self._on_change):
            self._on_change()
