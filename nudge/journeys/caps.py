"""Journey-level message settings, applied on top of the sent campaign's policy.

- ``quiet_hours`` (``{"start", "end", "action": "delay" | "drop"}``) replaces the campaign's
  own quiet hours for the journey's sends; the message policy (nudge/engage/policy.py)
  applies it in each person's timezone like any campaign's;
- ``caps`` (``[{"max", "per", "channel"?}]``): at most ``max`` messages *from this journey*
  per person within ``per`` (counted in the outbox by the journey's occurrence prefix
  ``j<journey>.``, every version, plus the sends planned earlier in the same batch). A send
  step over a cap records the outcome ``capped c<campaign>`` and the person moves on, as
  with any skipped message. The account's caps and the campaign's own still apply.
"""

from __future__ import annotations

from collections import Counter

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.engage.campaigns import Cap
from nudge.engage.policy import COUNTED
from nudge.store import control

OB = control.outbox


def sent_within(engine: Engine, account_id: str, journey_id: int, uids: list[int],
                since: float) -> dict[int, list[tuple[float, str]]]:
    """(created_at, channel) of this journey's counted messages per person since ``since``."""
    out: dict[int, list[tuple[float, str]]] = {}
    with engine.connect() as conn:
        for i in range(0, len(uids), 900):
            for uid, at, ch in conn.execute(sa.select(OB.c.user_id, OB.c.created_at,
                                                      OB.c.channel).where(
                    OB.c.account_id == account_id, OB.c.user_id.in_(uids[i:i + 900]),
                    OB.c.occurrence.like(f"j{int(journey_id)}.%"),
                    OB.c.created_at >= since, OB.c.status.in_(COUNTED))):
                out.setdefault(uid, []).append((at, ch))
    return out


class JourneyCaps:
    """Cap decisions for one journey in one batch."""

    def __init__(self, engine: Engine, account_id: str, journey_id: int, caps: tuple[Cap, ...],
                 now: float) -> None:
        self.engine, self.account_id, self.journey_id = engine, account_id, journey_id
        self.caps, self.now = caps, now
        self.history: dict[int, list[tuple[float, str]]] = {}
        self.planned: Counter[int] = Counter()

    def load(self, uids: list[int]) -> None:
        todo = [u for u in set(uids) if u not in self.history]
        if self.caps and todo:
            since = self.now - max(c.seconds for c in self.caps)
            got = sent_within(self.engine, self.account_id, self.journey_id, todo, since)
            for u in todo:
                self.history[u] = got.get(u, [])

    def allows(self, uid: int, channels: tuple[str, ...]) -> bool:
        """Whether one more message may go to ``uid``; counts it when it may."""
        hist = self.history.get(uid, [])
        for c in self.caps:
            since = self.now - c.seconds
            n = sum(1 for at, ch in hist if at >= since and (c.channel == "*" or ch == c.channel))
            if (c.channel == "*" or c.channel in channels) and n + self.planned[uid] >= c.max:
                return False
        self.planned[uid] += 1
        return True
