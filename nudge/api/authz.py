"""Who is calling, for which account, and may they do this: the one authorization path.

Every authenticated route goes through :func:`authorize` (``passcode_account`` in
``context.py`` calls it), which resolves the caller to a :class:`Caller` — the account, the
principal (a dashboard user's session or an API key) and its permissions — then checks the
permission the route declares in ``nudge.tenancy.roles.ROUTE_PERMISSIONS`` and the rate
limits. Credentials, in order:

1. ``X-Nudge-Account-Id`` + ``X-Nudge-Passcode`` (any key kind: passcode, write, read);
2. the ``nudge_session`` cookie of a fully signed-in user, plus ``X-Nudge-Account-Id`` when
   the user belongs to several accounts; unsafe methods also need ``X-CSRF-Token``.

Refusals never tell whether an account or object exists: a key of account A presented for
account B is "unknown account or wrong key", exactly as for an account that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi import routing as fastapi_routing
from sqlalchemy.engine import Engine

from nudge.config import Settings
from nudge.errors import AuthError, Forbidden, ValidationError
from nudge.privacy.keys import Keyring
from nudge.tenancy.apikeys import ApiKey, ApiKeys
from nudge.tenancy.mfa import Mfa
from nudge.tenancy.ratelimit import RateLimiter
from nudge.tenancy.roles import (
    MFA_REQUIRED_ROLES,
    is_declared,
    permissions_of_key,
    permissions_of_role,
    route_permission,
)
from nudge.tenancy.sessions import COOKIE, CSRF_HEADER, Session, SessionStore
from nudge.tenancy.throttle import LoginThrottle
from nudge.tenancy.users import UserDirectory

ACCOUNT_HEADERS = ("x-nudge-account-id", "x-clevertap-account-id")
KEY_HEADERS = ("x-nudge-passcode", "x-clevertap-passcode")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class Auth:
    """The auth services of one server process (``app.state.auth``)."""

    settings: Settings
    users: UserDirectory
    sessions: SessionStore
    mfa: Mfa
    throttle: LoginThrottle
    keys: ApiKeys
    limiter: RateLimiter

    @classmethod
    def build(cls, settings: Settings, engine: Engine, keyring: Keyring,
              on_key_change: Any = None) -> Auth:
        return cls(settings, UserDirectory(engine),
                   SessionStore(engine, settings.session_idle_s, settings.session_absolute_s),
                   Mfa(engine, keyring), LoginThrottle(engine), ApiKeys(engine, on_key_change),
                   RateLimiter(engine))

    def limit(self, account_id: str, principal_key: str) -> None:
        """Per key (or session) first, so one key over its limit does not use up the
        account's budget for the account's other keys. Shared by every process on the
        control store (nudge/tenancy/ratelimit.py)."""
        self.limiter.take(principal_key, self.settings.rate_limit_key_per_minute)
        self.limiter.take("account:" + account_id, self.settings.rate_limit_account_per_minute)


@dataclass(frozen=True)
class Caller:
    account_id: str
    principal: str  # "user:<email>" or "key:<prefix>": for the audit log, never a secret
    permissions: frozenset[str]
    role: str | None = None  # dashboard users
    user_id: int | None = None
    session: Session | None = None
    key: ApiKey | None = None

    @property
    def is_owner_like(self) -> bool:
        """Passcode keys and owners may call routes that declare no permission yet."""
        return self.role == "owner" or (self.key is not None and self.key.kind == "passcode")


def auth_of(request: Request) -> Auth:
    return request.app.state.auth  # type: ignore[no-any-return]


def _header(request: Request, names: tuple[str, ...]) -> str | None:
    for name in names:
        v = request.headers.get(name)
        if v:
            return v
    return None


ROUTE = "<the route's declared permission>"


def app_routes(app: Any) -> list[tuple[str, str, Any]]:
    """Every (method, full path template, route object) of the app, routers flattened."""
    contexts = getattr(fastapi_routing, "iter_route_contexts", None)
    out = []
    for rc in (contexts(app.routes) if contexts else app.routes):
        path = getattr(rc, "path_format", None) or getattr(rc, "path", None)
        route = getattr(rc, "original_route", rc)
        for method in sorted(getattr(rc, "methods", None) or ()):
            if method != "HEAD" and path:
                out.append((method, path, route))
    return out


def _route_path(request: Request) -> str:
    """The full path template of the matched route (routers' prefixes included)."""
    route = request.scope.get("route")
    paths: dict[int, str] | None = getattr(request.app.state, "route_paths", None)
    if paths is None:
        paths = {id(r): path for _, path, r in app_routes(request.app)}
        request.app.state.route_paths = paths
    return paths.get(id(route)) or getattr(route, "path", request.url.path)


def authorize(request: Request, permission: str | None = ROUTE) -> Caller:
    """Resolve the caller and check ``permission`` (by default the one the matched route
    declares in ``ROUTE_PERMISSIONS``). 401 without valid credentials, 403 without the
    permission, 429 over a rate limit."""
    auth = auth_of(request)
    caller = _resolve(request, auth)
    if permission == ROUTE:
        path = _route_path(request)
        method = "GET" if request.method == "HEAD" else request.method
        permission = route_permission(method, path)
        if permission is None and not is_declared(method, path) and not caller.is_owner_like:
            # Fail closed: a route nobody declared is for passcode keys and owners only.
            raise Forbidden(f"{method} {path} declares no permission yet; only passcode "
                            "keys and owners may call it")
    if permission is not None and permission not in caller.permissions:
        who = (f"role {caller.role}" if caller.role
               else f"a {caller.key.kind if caller.key else ''} key")
        raise Forbidden(f"{who} may not do this (needs {permission})")
    auth.limit(caller.account_id, f"key:{caller.key.id}" if caller.key
               else f"session:{caller.session.id if caller.session else ''}")
    request.state.caller = caller
    return caller


def _resolve(request: Request, auth: Auth) -> Caller:
    account_id = _header(request, ACCOUNT_HEADERS)
    key = _header(request, KEY_HEADERS)
    if key is not None:
        if not account_id:
            raise AuthError("X-Nudge-Account-Id and X-Nudge-Passcode headers are required")
        found = auth.keys.lookup(account_id, key)
        # The public write key works only where Segment-style clients send it (basic auth on
        # /v1/*, the inbox's user_hash path): in these headers it is refused like a wrong key,
        # so a leaked page key never opens the server API (docs/api.md: not interchangeable).
        if found is None or found.kind == "write":
            raise AuthError("unknown account or wrong key")
        return Caller(account_id, f"key:{found.prefix}", permissions_of_key(found.kind),
                      key=found)
    session = signed_in(request, auth)
    memberships = auth.users.memberships(session.user_id)
    if not account_id:
        if len(memberships) != 1:
            raise ValidationError("X-Nudge-Account-Id is required: you belong to "
                                  f"{len(memberships)} accounts", field="X-Nudge-Account-Id")
        account_id = next(iter(memberships))
    role = memberships.get(account_id)
    if role is None:
        raise Forbidden("no access to this account")
    user = auth.users.get(session.user_id)
    if role in MFA_REQUIRED_ROLES and not user.mfa_enabled:
        raise Forbidden(f"the {role} role requires MFA: enroll at /auth/mfa/enroll")
    return Caller(account_id, f"user:{user.email}", permissions_of_role(role), role=role,
                  user_id=user.id, session=session)


def current_session(request: Request, auth: Auth, stages: tuple[str, ...] = ("full",),
                    ) -> Session:
    """The caller's session at one of ``stages``, CSRF-checked for unsafe methods."""
    session = auth.sessions.resolve(request.cookies.get(COOKIE))
    if session is None:
        raise AuthError("sign in first (no session, or it expired)")
    if session.stage not in stages:
        raise AuthError("finish signing in first: " + {
            "mfa": "POST /auth/mfa/verify", "enroll": "enroll MFA at /auth/mfa/enroll",
            "full": "you are signed in"}[session.stage])
    if request.method not in SAFE_METHODS and not session.csrf_ok(
            request.headers.get(CSRF_HEADER)):
        raise Forbidden("missing or wrong X-CSRF-Token header")
    return session


def signed_in(request: Request, auth: Auth) -> Session:
    return current_session(request, auth, ("full",))
