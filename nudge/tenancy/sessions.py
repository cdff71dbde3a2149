"""Dashboard sessions: opaque cookie tokens, stored as SHA-256, with a CSRF token each.

A session has a *stage*: ``mfa`` (password checked, TOTP code pending), ``enroll`` (a user
whose role requires MFA must enroll before anything else) or ``full``. Moving to ``full``
issues a new token (no session fixation). A session ends at its idle timeout (no request for
``idle_s``), at its absolute timeout (``absolute_s`` after sign-in, whatever the activity),
at logout, at "log out everywhere", and when the password changes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.clock import clock
from nudge.store.control import sessions

COOKIE = "nudge_session"
CSRF_COOKIE = "nudge_csrf"
CSRF_HEADER = "x-csrf-token"
STAGES = ("mfa", "enroll", "full")
# A not-yet-full session (between password and MFA code) lives at most this long.
PARTIAL_S = 600.0


def _h(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    id: str
    user_id: int
    stage: str
    csrf_hash: str
    created_at: float

    def csrf_ok(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(_h(token or ""), self.csrf_hash)


@dataclass(frozen=True)
class NewSession:
    token: str
    csrf: str
    session: Session


class SessionStore:
    def __init__(self, engine: Engine, idle_s: float, absolute_s: float) -> None:
        self.engine = engine
        self.idle_s = idle_s
        self.absolute_s = absolute_s

    def create(self, user_id: int, stage: str, source_ip: str | None = None,
               user_agent: str | None = None) -> NewSession:
        token, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(24), clock.now()
        row = {"id": _h(token), "user_id": user_id, "stage": stage, "csrf_hash": _h(csrf),
               "created_at": now, "last_seen_at": now, "source_ip": (source_ip or "")[:64],
               "user_agent": (user_agent or "")[:300]}
        with self.engine.begin() as conn:
            conn.execute(sessions.insert().values(**row))
        return NewSession(token, csrf, Session(row["id"], user_id, stage, row["csrf_hash"], now))

    def resolve(self, token: str | None) -> Session | None:
        """The live session for a cookie token, or None (unknown, expired, revoked)."""
        if not token or len(token) > 200:
            return None
        now = clock.now()
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(sessions).where(sessions.c.id == _h(token))).first()
        if r is None or r.revoked_at is not None:
            return None
        limit = self.absolute_s if r.stage == "full" else min(PARTIAL_S, self.absolute_s)
        if now - r.created_at > limit or now - r.last_seen_at > self.idle_s:
            self.revoke(r.id)
            return None
        # Keep writes off most requests: last_seen moves at most every 1/20 of the idle timeout.
        if now - r.last_seen_at > min(60.0, self.idle_s / 20):
            with self.engine.begin() as conn:
                conn.execute(sessions.update().where(sessions.c.id == r.id)
                             .values(last_seen_at=now))
        return Session(r.id, r.user_id, r.stage, r.csrf_hash, r.created_at)

    def promote(self, session: Session, stage: str, source_ip: str | None = None,
                user_agent: str | None = None) -> NewSession:
        """Replace a session by a new one at ``stage`` (a new token: no fixation)."""
        self.revoke(session.id)
        return self.create(session.user_id, stage, source_ip, user_agent)

    def revoke(self, session_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sessions.update().where(sessions.c.id == session_id,
                                                 sessions.c.revoked_at.is_(None))
                         .values(revoked_at=clock.now()))

    def revoke_all(self, user_id: int) -> int:
        """Log out everywhere: every live session of the user ends now."""
        with self.engine.begin() as conn:
            return int(conn.execute(sessions.update().where(
                sessions.c.user_id == user_id, sessions.c.revoked_at.is_(None))
                .values(revoked_at=clock.now())).rowcount)

    def live_count(self, user_id: int) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).where(
                sessions.c.user_id == user_id, sessions.c.revoked_at.is_(None))).scalar_one())
