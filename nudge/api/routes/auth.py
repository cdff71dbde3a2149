"""Dashboard sign-in (``/auth/*``) and account administration: users, API keys, audit log.

Sign-in is password → (TOTP code | MFA enrollment) → full session. Each step answers with
fresh cookies: ``nudge_session`` (HttpOnly, SameSite=Lax, Secure under TLS) and
``nudge_csrf`` (readable by the page, which echoes it in ``X-CSRF-Token`` on every unsafe
request). See docs/security.md.
"""

from __future__ import annotations

from typing import Any

import pydantic
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from nudge.errors import AuthError, ValidationError
from nudge.tenancy import audit, members
from nudge.tenancy.roles import MFA_REQUIRED_ROLES, ROLES
from nudge.tenancy.sessions import COOKIE, CSRF_COOKIE, NewSession
from nudge.tenancy.throttle import email_key, ip_key
from nudge.tenancy.users import (
    User,
    burn_password_check,
    consume_password_reset,
    issue_password_reset,
    verify_password,
)

from ..authz import Auth, auth_of, authorize, current_session
from .ingest import read_body

router = APIRouter(tags=["auth"])


class Login(pydantic.BaseModel):
    email: str = pydantic.Field(max_length=320)
    password: str = pydantic.Field(max_length=1024)


class Code(pydantic.BaseModel):
    code: str = pydantic.Field(max_length=64, description="TOTP code or a recovery code")


class PasswordChange(pydantic.BaseModel):
    current_password: str = pydantic.Field(max_length=1024)
    new_password: str = pydantic.Field(max_length=1024)


class PasswordReset(pydantic.BaseModel):
    token: str = pydantic.Field(max_length=200)
    new_password: str = pydantic.Field(max_length=1024)


class NewMember(pydantic.BaseModel):
    email: str = pydantic.Field(max_length=320)
    role: str = pydantic.Field(json_schema_extra={"enum": list(ROLES)})
    password: str | None = pydantic.Field(default=None, max_length=1024)


class RoleChange(pydantic.BaseModel):
    role: str = pydantic.Field(json_schema_extra={"enum": list(ROLES)})


class NewKey(pydantic.BaseModel):
    kind: str = pydantic.Field(json_schema_extra={"enum": ["passcode", "write", "read"]})


def _body_doc(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": model.model_json_schema()}}}}


async def _body(request: Request, model: type[pydantic.BaseModel]) -> Any:
    """The JSON body (size- and depth-limited by read_body) validated against ``model``."""
    data = await read_body(request)
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise ValidationError(f"{field}: {first.get('msg', 'invalid')}", field=field) from None


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _with_session(body: dict[str, Any], new: NewSession, request: Request) -> Response:
    tls = auth_of(request).settings.tls
    resp = JSONResponse({**body, "csrf_token": new.csrf})
    resp.set_cookie(COOKIE, new.token, httponly=True, samesite="lax", secure=tls, path="/")
    resp.set_cookie(CSRF_COOKIE, new.csrf, httponly=False, samesite="lax", secure=tls,
                    path="/")
    resp.headers["cache-control"] = "no-store"
    return resp


def _signed_out(body: dict[str, Any]) -> Response:
    resp = JSONResponse(body)
    resp.delete_cookie(COOKIE, path="/")
    resp.delete_cookie(CSRF_COOKIE, path="/")
    return resp


def _stage_after_password(auth: Auth, user: User) -> str:
    if user.mfa_enabled:
        return "mfa"
    roles = set(auth.users.memberships(user.id).values())
    return "enroll" if roles & MFA_REQUIRED_ROLES else "full"


def _me(auth: Auth, user: User) -> dict[str, Any]:
    return {**user.public(), "accounts": auth.users.memberships(user.id)}


# -- sign-in -----------------------------------------------------------------------------------

@router.post("/auth/login", openapi_extra=_body_doc(Login))
async def login(request: Request) -> Response:
    """Check email and password. The answer for an unknown email is the same, takes the same
    work, and is throttled the same as for a wrong password."""
    auth, body = auth_of(request), await _body(request, Login)
    keys = (email_key(body.email), ip_key(_client(request)))

    def check() -> User | None:
        auth.throttle.check(*keys)
        user = auth.users.by_email(body.email)
        if user is None or user.disabled:
            burn_password_check(body.password)
            auth.throttle.fail(*keys)
            return None
        ok, upgraded = verify_password(user.password_hash, body.password)
        if not ok:
            auth.throttle.fail(*keys)
            return None
        auth.throttle.succeed(keys[0])
        if upgraded:
            auth.users.store_upgraded_hash(user.id, user.password_hash, upgraded)
        return user

    user = await run_in_threadpool(check)
    if user is None:
        raise AuthError("wrong email or password")
    stage = _stage_after_password(auth, user)
    new = auth.sessions.create(user.id, stage, _client(request), request.headers.get("user-agent"))
    if stage == "full":
        auth.users.touch_login(user.id)
    return _with_session({"status": "success", "stage": stage,
                          **({"user": _me(auth, user)} if stage == "full" else {})},
                         new, request)


@router.post("/auth/mfa/verify", openapi_extra=_body_doc(Code))
async def mfa_verify(request: Request) -> Response:
    """Second step of sign-in: a TOTP code (each code works once) or a recovery code."""
    auth, body = auth_of(request), await _body(request, Code)
    session = current_session(request, auth, ("mfa",))
    user = auth.users.get(session.user_id)
    key = email_key(user.email)
    auth.throttle.check(key)
    if not await run_in_threadpool(auth.mfa.verify, user.id, body.code):
        auth.throttle.fail(key)
        raise AuthError("wrong, expired or already used code")
    auth.throttle.succeed(key)
    new = auth.sessions.promote(session, "full", _client(request),
                                request.headers.get("user-agent"))
    auth.users.touch_login(user.id)
    return _with_session({"status": "success", "stage": "full", "user": _me(auth, user),
                          "recovery_codes_left": auth.mfa.recovery_codes_left(user.id)},
                         new, request)


@router.post("/auth/mfa/enroll")
async def mfa_enroll(request: Request) -> Response:
    """Start TOTP enrollment: a secret and an ``otpauth://`` URI for the authenticator app."""
    auth = auth_of(request)
    session = current_session(request, auth, ("enroll", "full"))
    out = auth.mfa.start(session.user_id)
    resp = JSONResponse({"status": "success", **out})
    resp.headers["cache-control"] = "no-store"
    return resp


@router.post("/auth/mfa/confirm", openapi_extra=_body_doc(Code))
async def mfa_confirm(request: Request) -> Response:
    """Finish enrollment with a code; returns ten recovery codes (shown only now)."""
    auth, body = auth_of(request), await _body(request, Code)
    session = current_session(request, auth, ("enroll", "full"))
    codes = auth.mfa.confirm(session.user_id, body.code)
    user = auth.users.get(session.user_id)
    for account_id in auth.users.memberships(user.id):
        audit.record_request(request, account_id=account_id, actor=f"user:{user.email}",
                             action="user.mfa_enrolled", target=f"user:{user.id}")
    new = auth.sessions.promote(session, "full", _client(request),
                                request.headers.get("user-agent"))
    return _with_session({"status": "success", "stage": "full", "recovery_codes": codes,
                          "user": _me(auth, user)}, new, request)


@router.post("/auth/mfa/recovery-codes")
async def mfa_recovery_codes(request: Request) -> Response:
    """Replace your recovery codes with ten new ones."""
    auth = auth_of(request)
    session = current_session(request, auth, ("full",))
    if not auth.users.get(session.user_id).mfa_enabled:
        raise ValidationError("enroll MFA first", field="mfa")
    return JSONResponse({"status": "success",
                         "recovery_codes": auth.mfa.new_recovery_codes(session.user_id)})


@router.get("/auth/me")
async def me(request: Request) -> Response:
    """The signed-in user and their accounts and roles."""
    auth = auth_of(request)
    session = current_session(request, auth, ("full",))
    return JSONResponse({"status": "success", "user": _me(auth, auth.users.get(session.user_id))})


@router.post("/auth/logout")
async def logout(request: Request) -> Response:
    """End this session (a request without a live session just clears the cookies)."""
    auth = auth_of(request)
    session = auth.sessions.resolve(request.cookies.get(COOKIE))
    if session is not None:
        current_session(request, auth, ("mfa", "enroll", "full"))  # CSRF check
        auth.sessions.revoke(session.id)
    return _signed_out({"status": "success"})


@router.post("/auth/logout-all")
async def logout_all(request: Request) -> Response:
    """Log out everywhere: every session of this user ends now."""
    auth = auth_of(request)
    session = current_session(request, auth, ("full",))
    n = auth.sessions.revoke_all(session.user_id)
    return _signed_out({"status": "success", "sessions_ended": n})


@router.post("/auth/password", openapi_extra=_body_doc(PasswordChange))
async def change_password(request: Request) -> Response:
    """Change your password; every other session ends."""
    auth, body = auth_of(request), await _body(request, PasswordChange)
    session = current_session(request, auth, ("full",))
    user = auth.users.get(session.user_id)
    ok, _ = await run_in_threadpool(verify_password, user.password_hash, body.current_password)
    if not ok:
        auth.throttle.fail(email_key(user.email))
        raise AuthError("current password is wrong")
    try:
        await run_in_threadpool(auth.users.set_password, user.id, body.new_password)
    except ValidationError as exc:
        raise ValidationError(exc.message, field="new_password") from None
    auth.sessions.revoke_all(user.id)
    new = auth.sessions.create(user.id, "full", _client(request),
                               request.headers.get("user-agent"))
    return _with_session({"status": "success"}, new, request)


@router.post("/auth/password-reset", openapi_extra=_body_doc(PasswordReset))
async def password_reset(request: Request) -> Response:
    """Set a new password with a one-time reset token. Every session ends; this does not sign
    you in, and MFA stays on: the next sign-in still asks for a TOTP code."""
    auth, body = auth_of(request), await _body(request, PasswordReset)
    key = ip_key(_client(request))
    auth.throttle.check(key)
    try:
        user_id = await run_in_threadpool(consume_password_reset, auth.users, body.token,
                                          body.new_password)
    except ValidationError as exc:
        if exc.field == "token":
            auth.throttle.fail(key)
        raise
    auth.sessions.revoke_all(user_id)
    for account_id in auth.users.memberships(user_id):
        audit.record_request(request, account_id=account_id, actor=f"user:{user_id}",
                             action="user.password_reset_done", target=f"user:{user_id}")
    return _signed_out({"status": "success", "signed_in": False})


# -- users of an account -----------------------------------------------------------------------

@router.get("/1/users")
async def list_users(request: Request) -> Response:
    """The account's dashboard users and their roles."""
    auth, caller = auth_of(request), authorize(request)
    rows = auth.users.list(caller.account_id)
    return JSONResponse({"status": "success",
                         "users": [{**u.public(), "role": role} for u, role in rows]})


@router.post("/1/users", status_code=201, openapi_extra=_body_doc(NewMember))
async def add_user(request: Request) -> Response:
    """Add a user to the account with a role (creating the user if new). A new user without
    a password gets a one-time ``reset_token`` to choose one."""
    auth, caller = auth_of(request), authorize(request)
    body = await _body(request, NewMember)
    user, role, token = await run_in_threadpool(
        members.add, auth, request, caller, body.email, body.role, body.password)
    out: dict[str, Any] = {"status": "success"}
    if token is not None:
        out["reset_token"] = token
    return JSONResponse({**out, "user": {**user.public(), "role": role}}, status_code=201)


@router.patch("/1/users/{user_id}", openapi_extra=_body_doc(RoleChange))
async def change_role(request: Request, user_id: int) -> Response:
    """Change a member's role."""
    auth, caller = auth_of(request), authorize(request)
    body = await _body(request, RoleChange)
    user, role = members.change_role(auth, request, caller, user_id, body.role)
    return JSONResponse({"status": "success", "user": {**user.public(), "role": role}})


@router.delete("/1/users/{user_id}")
async def remove_user(request: Request, user_id: int) -> Response:
    """Remove a member from the account (their access ends with their next request)."""
    members.remove(auth_of(request), request, authorize(request), user_id)
    return JSONResponse({"status": "success"})


@router.post("/1/users/{user_id}/password-reset")
async def start_password_reset(request: Request, user_id: int) -> Response:
    """A one-time password-reset token for a member (valid one hour; hand it over out of
    band). It does not switch off MFA."""
    auth, caller = auth_of(request), authorize(request)
    user, role = members.member(auth, caller, user_id)
    members.may_touch(caller, role)
    token = issue_password_reset(auth.users.engine, user.id)
    audit.record_request(request, account_id=caller.account_id, actor=caller.principal,
                         action="user.password_reset_issued", target=f"user:{user.id}")
    resp = JSONResponse({"status": "success", "reset_token": token, "expires_in_s": 3600})
    resp.headers["cache-control"] = "no-store"
    return resp


@router.post("/1/users/{user_id}/reset-mfa")
async def reset_mfa(request: Request, user_id: int) -> Response:
    """Switch off a member's MFA (lost device); they must enroll again at next sign-in if
    their role requires it. Their sessions end."""
    members.reset_mfa(auth_of(request), request, authorize(request), user_id)
    return JSONResponse({"status": "success"})


# -- API keys ----------------------------------------------------------------------------------

@router.get("/1/keys")
async def list_keys(request: Request) -> Response:
    """The account's live API keys (prefixes only; a key is shown once)."""
    auth, caller = auth_of(request), authorize(request)
    return JSONResponse({"status": "success",
                         "keys": [k.public() for k in auth.keys.list(caller.account_id)]})


@router.post("/1/keys", status_code=201, openapi_extra=_body_doc(NewKey))
async def create_key(request: Request) -> Response:
    """A new key: ``passcode`` (server), ``write`` (ingest only) or ``read`` (read-only)."""
    auth, caller = auth_of(request), authorize(request)
    body = await _body(request, NewKey)
    key, secret = auth.keys.create(caller.account_id, body.kind)
    audit.record_request(request, account_id=caller.account_id, actor=caller.principal,
                         action="key.created", target=f"key:{key.id}",
                         detail={"kind": key.kind, "prefix": key.prefix})
    resp = JSONResponse({"status": "success", "key": {**key.public(), "secret": secret}},
                        status_code=201)
    resp.headers["cache-control"] = "no-store"
    return resp


@router.post("/1/keys/{key_id}/rotate")
async def rotate_key(request: Request, key_id: int) -> Response:
    """Revoke a key and issue a new one of the same kind."""
    auth, caller = auth_of(request), authorize(request)
    key, secret = auth.keys.rotate(caller.account_id, key_id)
    audit.record_request(request, account_id=caller.account_id, actor=caller.principal,
                         action="key.rotated", target=f"key:{key_id}",
                         detail={"kind": key.kind, "new_key": key.id, "prefix": key.prefix})
    resp = JSONResponse({"status": "success", "key": {**key.public(), "secret": secret}})
    resp.headers["cache-control"] = "no-store"
    return resp


@router.delete("/1/keys/{key_id}")
async def revoke_key(request: Request, key_id: int) -> Response:
    """Revoke a key now."""
    auth, caller = auth_of(request), authorize(request)
    key = auth.keys.revoke(caller.account_id, key_id)
    audit.record_request(request, account_id=caller.account_id, actor=caller.principal,
                         action="key.revoked", target=f"key:{key_id}",
                         detail={"kind": key.kind, "prefix": key.prefix})
    return JSONResponse({"status": "success", "key": key.public()})


# -- audit log ---------------------------------------------------------------------------------

@router.get("/1/audit")
async def read_audit(request: Request, since: float | None = None, action: str | None = None,
                     limit: int = 100, before_id: int | None = None) -> Response:
    """Administrative actions in this account, newest first (owners only)."""
    auth, caller = auth_of(request), authorize(request)
    if not 1 <= limit <= 1000:
        raise ValidationError("limit must be 1-1000", field="limit")
    rows = audit.entries(auth.users.engine, caller.account_id, since=since, action=action,
                         limit=limit, before_id=before_id)
    return JSONResponse({"status": "success", "entries": [e.to_dict() for e in rows]})
