"""Login throttling and lockout that do not reveal whether a user exists.

Failures are counted per email (hashed; unknown emails get rows like known ones) and per
source address. The first ``FREE_FAILURES`` failures of a key cost nothing; each further one
locks the key for twice as long as the last (1 s, 2 s, 4 s, ... up to ``MAX_LOCK_S``).
While a key is locked, every attempt — even with the right password — is answered 429 with
``Retry-After`` *before* any password is checked, so a guesser gets a handful of tries per
quarter hour. Failures are forgotten ``WINDOW_S`` after the last one, or on a success.
"""

from __future__ import annotations

import hashlib
import math

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.clock import clock
from nudge.errors import TooManyRequests
from nudge.store import control
from nudge.store.control import login_throttle

FREE_FAILURES = 5
IP_FREE_FAILURES = 50
MAX_LOCK_S = 900.0
WINDOW_S = 900.0


def email_key(email: str) -> str:
    return "email:" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:40]


def ip_key(ip: str | None) -> str:
    return "ip:" + (ip or "unknown")[:60]


def _free(key: str) -> int:
    return IP_FREE_FAILURES if key.startswith("ip:") else FREE_FAILURES


class LoginThrottle:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def check(self, *keys: str) -> None:
        """Raise TooManyRequests if any key is locked now."""
        now = clock.now()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(login_throttle.c.locked_until)
                                .where(login_throttle.c.key.in_(keys))).all()
        wait = max((r.locked_until - now for r in rows if r.locked_until), default=0.0)
        if wait > 0:
            raise TooManyRequests("too many failed attempts; try again later",
                                  retry_after=max(1, math.ceil(wait)))

    def fail(self, *keys: str) -> None:
        """Count a failure against each key. The count is incremented by one ``UPDATE``
        first (it takes SQLite's write lock, or PostgreSQL's row lock), so concurrent
        failures in several processes are each counted."""
        now = clock.now()
        t = login_throttle
        bump = t.update().values(
            failures=sa.case((now - t.c.last_failure_at > WINDOW_S, 1),
                             else_=t.c.failures + 1),
            last_failure_at=now)
        with self.engine.begin() as conn:
            for key in keys:
                if not conn.execute(bump.where(t.c.key == key)).rowcount and not (
                        _insert_ignore(conn, key, now)):
                    conn.execute(bump.where(t.c.key == key))  # created meanwhile elsewhere
                failures = int(conn.execute(sa.select(t.c.failures)
                                            .where(t.c.key == key)).scalar_one())
                over = failures - _free(key)
                locked = now + min(2.0 ** (over - 1), MAX_LOCK_S) if over > 0 else None
                conn.execute(t.update().where(t.c.key == key).values(locked_until=locked))

    def succeed(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(login_throttle.delete().where(login_throttle.c.key == key))


def _insert_ignore(conn: sa.Connection, key: str, now: float) -> bool:
    """Create the key's row with one failure; False if it exists already."""
    return bool(control.insert_ignore(conn, login_throttle, [{
        "key": key, "failures": 1, "last_failure_at": now, "locked_until": None}], ("key",)))
