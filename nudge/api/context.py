"""What every route needs: settings, the account directory, the stores, auth, limits."""

from __future__ import annotations

import base64
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from fastapi import Request

from nudge.config import Settings
from nudge.errors import AuthError, TooManyRequests
from nudge.privacy.keys import Keyring
from nudge.store.account import AccountStore
from nudge.store.registry import StoreRegistry
from nudge.tenancy.accounts import AccountDirectory, hash_key

from .authz import Caller, auth_of, authorize  # noqa: F401 - one authorization path

ACCOUNT_HEADERS = ("x-nudge-account-id", "x-clevertap-account-id")
PASSCODE_HEADERS = ("x-nudge-passcode", "x-clevertap-passcode")


@dataclass
class Nudge:
    """The application's shared state (one per server process)."""

    settings: Settings
    accounts: AccountDirectory
    stores: StoreRegistry
    keyring: Keyring
    inflight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lock: threading.Lock = field(default_factory=threading.Lock)
    ready: bool = False

    @contextmanager
    def admit(self, account_id: str) -> Iterator[None]:
        """Bound concurrent requests per account; beyond the bound answer 429."""
        limit = self.settings.limits.max_inflight_per_account
        with self.lock:
            if self.inflight[account_id] >= limit:
                raise TooManyRequests(f"more than {limit} concurrent requests for this account",
                                      retry_after=1)
            self.inflight[account_id] += 1
        try:
            yield
        finally:
            with self.lock:
                self.inflight[account_id] -= 1


def nudge_of(request: Request) -> Nudge:
    return request.app.state.nudge  # type: ignore[no-any-return]


def _header(request: Request, names: tuple[str, ...]) -> str | None:
    for name in names:
        v = request.headers.get(name)
        if v:
            return v
    return None


def passcode_account(request: Request) -> tuple[Nudge, str, AccountStore]:
    """Authorize a call to an account's API and return (nudge, account id, store).

    The caller is an API key (account id + key headers) or a signed-in dashboard user; the
    route's permission comes from ``ROUTE_PERMISSIONS`` (nudge/tenancy/roles.py). The
    resolved :class:`~nudge.api.authz.Caller` is left in ``request.state.caller``.
    """
    nudge = nudge_of(request)
    caller = authorize(request)
    return nudge, caller.account_id, nudge.stores.get(caller.account_id)


def write_key_account(request: Request,
                      body_key: str | None = None) -> tuple[Nudge, str, AccountStore]:
    """Authenticate a Segment-spec call: write key as HTTP basic auth user (or in the body)."""
    nudge = nudge_of(request)
    key = body_key
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        try:
            key = base64.b64decode(auth[6:].strip()).decode().split(":", 1)[0] or key
        except (ValueError, UnicodeDecodeError):
            raise AuthError("malformed Authorization header") from None
    if not key:
        raise AuthError("write key required (HTTP basic auth user)")
    account_id = nudge.accounts.account_for_write_key(key)
    auth_of(request).limit(account_id, "write-key:" + hash_key(key))
    return nudge, account_id, nudge.stores.get(account_id)
