"""Managing an account's dashboard users: the one implementation of the rules behind
``/1/users`` and the dashboard's users-and-roles settings (nudge/web/settings.py).

Rules: a member is only visible to callers of the same account (anyone else: 404, no hint
they exist); only owners act on owners or grant the owner role; the account's last owner
can be neither demoted nor removed. Every change is audited. Functions are synchronous (they
hash passwords and write the control store): call them from a thread pool.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from nudge.errors import Conflict, Forbidden, NotFound, ValidationError
from nudge.tenancy import audit
from nudge.tenancy.users import User, check_role, issue_password_reset, normalize_email

if TYPE_CHECKING:
    from starlette.requests import Request

    from nudge.api.authz import Auth, Caller


def member(auth: Auth, caller: Caller, user_id: int) -> tuple[User, str]:
    """A member of the caller's account and their role; 404 for anyone else."""
    role = auth.users.role_in(user_id, caller.account_id)
    if role is None:
        raise NotFound("no such user")
    return auth.users.get(user_id), role


def may_touch(caller: Caller, target_role: str, new_role: str | None = None) -> None:
    """Only owners may act on owners or make someone an owner."""
    if caller.role != "owner" and "owner" in (target_role, new_role):
        raise Forbidden("only an owner may change an owner or grant the owner role")


def _audit(request: Request, caller: Caller, action: str, user: User,
           detail: dict[str, Any] | None = None) -> None:
    audit.record_request(request, account_id=caller.account_id, actor=caller.principal,
                         action=action, target=f"user:{user.id}", detail=detail)


def add(auth: Auth, request: Request, caller: Caller, email: str, role: str,
        password: str | None = None) -> tuple[User, str, str | None]:
    """Add a user to the account with a role, creating the user if new. Returns the user,
    the role and, for a new user without a password, a one-time password-reset token."""
    role, email = check_role(role), normalize_email(email)
    may_touch(caller, role)
    token = None
    user = auth.users.by_email(email)
    if user is not None:
        if auth.users.role_in(user.id, caller.account_id) is not None:
            raise Conflict("already a member; change their role instead", field="email")
        auth.users.set_membership(user.id, caller.account_id, role)
    else:
        user = auth.users.create(email, caller.account_id, role,
                                 password=password or secrets.token_urlsafe(32))
        if password is None:
            token = issue_password_reset(auth.users.engine, user.id)
    _audit(request, caller, "user.added", user, {"email": user.email, "role": role})
    return user, role, token


def change_role(auth: Auth, request: Request, caller: Caller, user_id: int,
                role: str) -> tuple[User, str]:
    """Give a member another role; returns the user and the (checked) role."""
    role = check_role(role)
    user, old = member(auth, caller, user_id)
    may_touch(caller, old, role)
    if old == "owner" and role != "owner" and auth.users.owners(caller.account_id) == 1:
        raise ValidationError("the account's last owner cannot be demoted", field="role")
    auth.users.set_membership(user.id, caller.account_id, role)
    _audit(request, caller, "user.role_changed", user,
           {"email": user.email, "from": old, "to": role})
    return user, role


def remove(auth: Auth, request: Request, caller: Caller, user_id: int) -> User:
    """Remove a member (their access ends with their next request)."""
    user, old = member(auth, caller, user_id)
    may_touch(caller, old)
    if old == "owner" and auth.users.owners(caller.account_id) == 1:
        raise ValidationError("the account's last owner cannot be removed", field="user_id")
    auth.users.remove_membership(user.id, caller.account_id)
    _audit(request, caller, "user.removed", user, {"email": user.email, "role": old})
    return user


def reset_mfa(auth: Auth, request: Request, caller: Caller, user_id: int) -> User:
    """Switch off a member's MFA (lost device) and end their sessions."""
    user, role = member(auth, caller, user_id)
    may_touch(caller, role)
    auth.mfa.reset(user.id)
    auth.sessions.revoke_all(user.id)
    _audit(request, caller, "user.mfa_reset", user)
    return user
