"""Dashboard users and their memberships (user ↔ account, with a role).

Passwords are hashed with Argon2id (argon2-cffi's RFC 9106 low-memory profile). Hashes
imported from the platform customers migrate from are PBKDF2-HMAC-SHA1 — in Django's
``pbkdf2_sha1$<iterations>$<salt>$<base64 hash>`` or passlib's
``$pbkdf2$<iterations>$<ab64 salt>$<ab64 hash>`` form; they are accepted as they are and
replaced by an Argon2id hash at the next successful login.

A new password must have at least 12 characters and must not be (a common password), nor be
a common password with digits or symbols appended; the list is
``data/common-passwords.txt`` (zxcvbn's 30,000 most common passwords, MIT License).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.engine import Engine

from nudge.clock import clock
from nudge.errors import Conflict, NotFound, ValidationError
from nudge.store.control import accounts, memberships, users
from nudge.tenancy.roles import ROLES

MIN_PASSWORD_LEN = 12
MAX_PASSWORD_LEN = 1024  # Argon2 takes any length; this bounds the work a request can ask for
_HASHER = PasswordHasher()  # Argon2id, t=3, m=64 MiB, p=4
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_COMMON = Path(__file__).parent / "data" / "common-passwords.txt"


@cache
def common_passwords() -> frozenset[str]:
    lines = _COMMON.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line and not line.startswith("#"))


def check_password_policy(password: str, email: str = "") -> None:
    """Raise ValidationError (field ``password``) unless the password is acceptable."""
    if not isinstance(password, str):
        raise ValidationError("password must be a string", field="password")
    if len(password) < MIN_PASSWORD_LEN:
        raise ValidationError(f"password must have at least {MIN_PASSWORD_LEN} characters",
                              field="password")
    if len(password) > MAX_PASSWORD_LEN:
        raise ValidationError(f"password must have at most {MAX_PASSWORD_LEN} characters",
                              field="password")
    lowered = password.lower()
    stem = lowered.rstrip("0123456789!@#$%^&*.?-_ ")
    common = common_passwords()
    repeated = any(len(lowered) % k == 0 and lowered == lowered[:k] * (len(lowered) // k)
                   for k in range(1, len(lowered) // 2 + 1))
    if lowered in common or (stem and stem in common) or len(set(lowered)) < 4 or repeated:
        raise ValidationError("password is too common; choose a longer, less predictable one",
                              field="password")
    local = email.split("@", 1)[0].lower()
    if local and len(local) >= 4 and local in lowered:
        raise ValidationError("password must not contain the email address", field="password")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def _ab64(text: str) -> bytes:
    """passlib's "adapted base64" (``.`` for ``+``, no padding)."""
    text = text.replace(".", "+")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _parse_pbkdf2_sha1(stored: str) -> tuple[int, bytes, bytes] | None:
    parts = stored.split("$")
    try:
        if parts[0] == "pbkdf2_sha1" and len(parts) == 4:  # Django
            return int(parts[1]), parts[2].encode(), base64.b64decode(parts[3])
        if stored.startswith("$pbkdf2$") and len(parts) == 5:  # passlib
            return int(parts[2]), _ab64(parts[3]), _ab64(parts[4])
    except ValueError:
        return None
    return None


def is_legacy_hash(stored: str) -> bool:
    return _parse_pbkdf2_sha1(stored) is not None


def check_imported_hash(stored: str) -> str:
    """Accept an Argon2id PHC string or a PBKDF2-HMAC-SHA1 hash (see module doc) on import."""
    if stored.startswith("$argon2id$"):
        try:
            _HASHER.check_needs_rehash(stored)
        except (InvalidHashError, ValueError):
            raise ValidationError("not a valid Argon2id hash", field="password_hash") from None
        return stored
    parsed = _parse_pbkdf2_sha1(stored)
    if parsed is None or parsed[0] < 1000 or parsed[0] > 10_000_000 or len(parsed[2]) < 16:
        raise ValidationError("password_hash must be Argon2id, or PBKDF2-HMAC-SHA1 as "
                              "pbkdf2_sha1$<iterations>$<salt>$<base64 hash> (>= 1000 "
                              "iterations)", field="password_hash")
    return stored


def verify_password(stored: str, password: str) -> tuple[bool, str | None]:
    """(matches, new hash to store or None). A legacy or outdated hash is upgraded."""
    legacy = _parse_pbkdf2_sha1(stored)
    if legacy is not None:
        iterations, salt, expected = legacy
        got = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iterations, len(expected))
        ok = hmac.compare_digest(got, expected)
        return ok, (hash_password(password) if ok else None)
    try:
        _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, None
    return True, (hash_password(password) if _HASHER.check_needs_rehash(stored) else None)


@cache
def _dummy_hash() -> str:
    return hash_password("nudge-dummy-password-for-unknown-users")


def burn_password_check(password: str) -> None:
    """The same work as checking a real user's password, for an unknown email: the response
    time then does not tell whether the user exists."""
    verify_password(_dummy_hash(), password)


def normalize_email(email: object) -> str:
    if not isinstance(email, str) or not _EMAIL.match(email.strip()) or len(email) > 320:
        raise ValidationError("email must be an email address", field="email")
    return email.strip().lower()


@dataclass(frozen=True)
class User:
    id: int
    email: str
    password_hash: str
    home_account_id: str
    mfa_enabled: bool
    created_at: float
    last_login_at: float | None
    disabled: bool

    def public(self) -> dict[str, object]:
        return {"id": self.id, "email": self.email, "mfa_enabled": self.mfa_enabled,
                "created_at": self.created_at, "last_login_at": self.last_login_at}


def _user(r: sa.Row) -> User:  # type: ignore[type-arg]
    return User(r.id, r.email, r.password_hash, r.home_account_id, r.mfa_enabled_at is not None,
                r.created_at, r.last_login_at, r.disabled_at is not None)


def check_role(role: object) -> str:
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}", field="role")
    return str(role)


class UserDirectory:
    """Users and memberships in the control store."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, email: str, account_id: str, role: str, *, password: str | None = None,
               password_hash: str | None = None) -> User:
        """A new user who is a member of ``account_id`` with ``role``.

        Give ``password`` (checked against the policy) or an imported ``password_hash``.
        """
        email, role = normalize_email(email), check_role(role)
        if (password is None) == (password_hash is None):
            raise ValidationError("give a password or a password_hash", field="password")
        stored = (check_imported_hash(password_hash) if password_hash is not None
                  else _checked_hash(password or "", email))
        now = clock.now()
        with self.engine.begin() as conn:
            if conn.execute(sa.select(accounts.c.id).where(accounts.c.id == account_id)
                            ).first() is None:
                raise NotFound(f"no account {account_id!r}")
            if conn.execute(sa.select(users.c.id).where(users.c.email == email)).first():
                raise Conflict("a user with this email exists; add a membership instead",
                               field="email")
            uid = conn.execute(users.insert().values(
                email=email, password_hash=stored, home_account_id=account_id, created_at=now,
                password_changed_at=now)).inserted_primary_key[0]
            conn.execute(memberships.insert().values(user_id=uid, account_id=account_id,
                                                     role=role, created_at=now))
        return self.get(int(uid))

    def get(self, user_id: int) -> User:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(users).where(users.c.id == user_id)).first()
        if r is None:
            raise NotFound("no such user")
        return _user(r)

    def by_email(self, email: str) -> User | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(users).where(users.c.email == email.strip().lower())
                             ).first()
        return None if r is None else _user(r)

    def list(self, account_id: str | None = None) -> list[tuple[User, str | None]]:
        """Users with their role in ``account_id`` (all users, role None, when not given)."""
        with self.engine.connect() as conn:
            if account_id is None:
                rows = conn.execute(sa.select(users).order_by(users.c.id)).all()
                return [(_user(r), None) for r in rows]
            rows = conn.execute(
                sa.select(users, memberships.c.role)
                .join(memberships, memberships.c.user_id == users.c.id)
                .where(memberships.c.account_id == account_id).order_by(users.c.id)).all()
        return [(_user(r), r.role) for r in rows]

    def memberships(self, user_id: int) -> dict[str, str]:
        """account id -> role."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(memberships.c.account_id, memberships.c.role)
                                .where(memberships.c.user_id == user_id)).all()
        return {r.account_id: r.role for r in rows}

    def role_in(self, user_id: int, account_id: str) -> str | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(memberships.c.role).where(
                memberships.c.user_id == user_id,
                memberships.c.account_id == account_id)).first()
        return None if r is None else str(r.role)

    def set_membership(self, user_id: int, account_id: str, role: str) -> None:
        role = check_role(role)
        with self.engine.begin() as conn:
            done = conn.execute(memberships.update().where(
                memberships.c.user_id == user_id, memberships.c.account_id == account_id)
                .values(role=role)).rowcount
            if not done:
                conn.execute(memberships.insert().values(user_id=user_id, account_id=account_id,
                                                         role=role, created_at=clock.now()))

    def remove_membership(self, user_id: int, account_id: str) -> bool:
        with self.engine.begin() as conn:
            return bool(conn.execute(memberships.delete().where(
                memberships.c.user_id == user_id,
                memberships.c.account_id == account_id)).rowcount)

    def owners(self, account_id: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).where(
                memberships.c.account_id == account_id, memberships.c.role == "owner")
            ).scalar_one())

    def set_password(self, user_id: int, password: str) -> None:
        user = self.get(user_id)
        stored = _checked_hash(password, user.email)
        with self.engine.begin() as conn:
            conn.execute(users.update().where(users.c.id == user_id).values(
                password_hash=stored, password_changed_at=clock.now()))

    def store_upgraded_hash(self, user_id: int, old_hash: str, new_hash: str) -> None:
        """Replace the hash after a successful login (only if nobody changed it meanwhile)."""
        with self.engine.begin() as conn:
            conn.execute(users.update().where(users.c.id == user_id,
                                              users.c.password_hash == old_hash)
                         .values(password_hash=new_hash))

    def touch_login(self, user_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(users.update().where(users.c.id == user_id)
                         .values(last_login_at=clock.now()))


def _checked_hash(password: str, email: str) -> str:
    check_password_policy(password, email)
    return hash_password(password)


RESET_TTL_S = 3600.0


def issue_password_reset(engine: Engine, user_id: int, ttl_s: float = RESET_TTL_S) -> str:
    """A one-time password-reset token (shown once; stored as SHA-256). Resetting the
    password does not touch MFA: the next sign-in still asks for the TOTP code."""
    import secrets

    from nudge.store.control import password_resets

    token = secrets.token_urlsafe(32)
    now = clock.now()
    with engine.begin() as conn:
        conn.execute(password_resets.insert().values(
            token_hash=hashlib.sha256(token.encode()).hexdigest(), user_id=user_id,
            created_at=now, expires_at=now + ttl_s))
    return token


def consume_password_reset(directory: UserDirectory, token: object, new_password: object,
                           ) -> int:
    """Set a new password with a reset token; returns the user id. The token is spent only
    when the new password is accepted."""
    from nudge.store.control import password_resets

    if not isinstance(token, str) or not token or len(token) > 200:
        raise ValidationError("token is missing or invalid", field="token")
    if not isinstance(new_password, str):
        raise ValidationError("new_password must be a string", field="new_password")
    h = hashlib.sha256(token.encode()).hexdigest()
    with directory.engine.connect() as conn:
        r = conn.execute(sa.select(password_resets).where(password_resets.c.token_hash == h)
                         ).first()
    if r is None or r.used_at is not None or r.expires_at < clock.now():
        raise ValidationError("token is missing, used or expired", field="token")
    user = directory.get(r.user_id)
    try:
        check_password_policy(new_password, user.email)
    except ValidationError as exc:
        raise ValidationError(exc.message, field="new_password") from None
    with directory.engine.begin() as conn:
        spent = conn.execute(password_resets.update().where(
            password_resets.c.token_hash == h, password_resets.c.used_at.is_(None))
            .values(used_at=clock.now())).rowcount
    if not spent:
        raise ValidationError("token is missing, used or expired", field="token")
    directory.set_password(user.id, new_password)
    return user.id
