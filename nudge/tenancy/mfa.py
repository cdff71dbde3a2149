"""TOTP multi-factor authentication (RFC 6238, pyotp) and recovery codes.

- The TOTP seed is stored only sealed (``Keyring.seal``) under the data key of the user's
  home account, bound to the purpose ``totp:<user id>``.
- Enrollment is two steps: :meth:`Mfa.start` makes a pending seed; :meth:`Mfa.confirm` with a
  valid code turns it on and returns ten recovery codes (shown once, stored as SHA-256 —
  they are 80-bit random values, so a slow hash adds nothing).
- One-time use: a code is accepted for its 30 s step and one step either side (clock skew),
  and only if its step is later than the last step accepted for the user. The check and the
  update are one conditional UPDATE, so two concurrent uses of a code cannot both pass.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import pyotp
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.clock import clock
from nudge.errors import Conflict, ValidationError
from nudge.privacy.keys import Keyring
from nudge.store.control import recovery_codes, users

STEP_S = 30
RECOVERY_CODES = 10
ISSUER = "Nudge"


def _purpose(user_id: int) -> str:
    return f"totp:{user_id}"


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.strip().lower().replace("-", "").encode()).hexdigest()


def _new_recovery_code() -> str:
    raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()  # 80 bits, 16 chars
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:12]}-{raw[12:]}"


class Mfa:
    def __init__(self, engine: Engine, keyring: Keyring) -> None:
        self.engine = engine
        self.keyring = keyring

    def _row(self, user_id: int) -> sa.Row:  # type: ignore[type-arg]
        with self.engine.connect() as conn:
            return conn.execute(sa.select(users).where(users.c.id == user_id)).one()

    def start(self, user_id: int) -> dict[str, str]:
        """A new pending seed: ``secret`` and ``otpauth_uri`` for the authenticator app."""
        row = self._row(user_id)
        if row.mfa_enabled_at is not None:
            raise Conflict("MFA is already enabled; ask an owner to reset it", field="mfa")
        secret = pyotp.random_base32(32)
        sealed = self.keyring.seal(row.home_account_id, _purpose(user_id), secret.encode())
        with self.engine.begin() as conn:
            conn.execute(users.update().where(users.c.id == user_id)
                         .values(totp_pending=sealed))
        uri = pyotp.TOTP(secret).provisioning_uri(name=row.email, issuer_name=ISSUER)
        return {"secret": secret, "otpauth_uri": uri}

    def confirm(self, user_id: int, code: str) -> list[str]:
        """Turn MFA on with a code from the pending seed; returns the recovery codes."""
        row = self._row(user_id)
        if row.totp_pending is None:
            raise ValidationError("start enrollment first", field="code")
        secret = self.keyring.open(row.home_account_id, _purpose(user_id), row.totp_pending)
        step = _matching_step(secret.decode(), code)
        if step is None:
            raise ValidationError("wrong or expired code", field="code")
        with self.engine.begin() as conn:
            conn.execute(users.update().where(users.c.id == user_id).values(
                totp_secret=row.totp_pending, totp_pending=None, totp_last_step=step,
                mfa_enabled_at=clock.now()))
        return self.new_recovery_codes(user_id)

    def new_recovery_codes(self, user_id: int) -> list[str]:
        """Replace the user's recovery codes with ten new ones (shown once)."""
        codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
        with self.engine.begin() as conn:
            conn.execute(recovery_codes.delete().where(recovery_codes.c.user_id == user_id))
            conn.execute(recovery_codes.insert(), [
                {"user_id": user_id, "code_hash": _code_hash(c)} for c in codes])
        return codes

    def verify(self, user_id: int, code: str) -> bool:
        """True once per valid TOTP code (or unused recovery code) of an enrolled user."""
        if not isinstance(code, str) or not code.strip() or len(code) > 64:
            return False
        row = self._row(user_id)
        if row.totp_secret is None:
            return False
        digits = code.strip().replace(" ", "")
        if digits.isdigit():
            secret = self.keyring.open(row.home_account_id, _purpose(user_id), row.totp_secret)
            step = _matching_step(secret.decode(), digits)
            if step is None:
                return False
            with self.engine.begin() as conn:
                return bool(conn.execute(users.update().where(
                    users.c.id == user_id,
                    sa.or_(users.c.totp_last_step.is_(None), users.c.totp_last_step < step))
                    .values(totp_last_step=step)).rowcount)
        with self.engine.begin() as conn:
            return bool(conn.execute(recovery_codes.update().where(
                recovery_codes.c.user_id == user_id,
                recovery_codes.c.code_hash == _code_hash(code),
                recovery_codes.c.used_at.is_(None)).values(used_at=clock.now())).rowcount)

    def reset(self, user_id: int) -> None:
        """Turn MFA off (an owner's or the CLI's decision); the user must enroll again."""
        with self.engine.begin() as conn:
            conn.execute(users.update().where(users.c.id == user_id).values(
                totp_secret=None, totp_pending=None, totp_last_step=None, mfa_enabled_at=None))
            conn.execute(recovery_codes.delete().where(recovery_codes.c.user_id == user_id))

    def recovery_codes_left(self, user_id: int) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).where(
                recovery_codes.c.user_id == user_id, recovery_codes.c.used_at.is_(None))
            ).scalar_one())


def _matching_step(secret: str, code: str) -> int | None:
    """The 30 s step (now, or one either side) whose code is ``code``."""
    code = code.strip()
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    now_step = int(clock.now() // STEP_S)
    for step in (now_step, now_step - 1, now_step + 1):
        if hmac.compare_digest(totp.at(step * STEP_S), code):
            return step
    return None


def current_code(secret: str) -> str:
    """The code an authenticator app shows now (for tests and the CLI's self-check)."""
    return pyotp.TOTP(secret).at(clock.now())
