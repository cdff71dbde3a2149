"""Segment entry: people enter a journey when they enter its segment.

Two paths enter them, with the same entry key ``s:<user>:<n>`` (n = their n-th entry), so
whichever runs first enters a person and the other finds the key taken:

- **live** (``enter_changed``): the account store reports, after each durable commit, whose
  events were stored and whose profile changed (``commit_subscribers`` and
  ``profile_subscribers``). Only those people can have entered a segment because of the
  commit, so only they are tested — one by one with the segment engine's single-user test
  when they are few, with one set query intersected with them when they are many. A person
  who qualifies enters within about a second of the event or profile change;
- **reconciliation** (``enter_all``, every ``NUDGE_JOURNEY_SEGMENT_POLL_S``): the whole
  segment is evaluated, for conditions that change with time alone ("did not buy in the
  last 30 days", dates) and anything the live path missed (a restart between commit and
  evaluation).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from nudge.clock import clock
from nudge.engage.expand import segment_engine
from nudge.errors import NotFound
from nudge.query.segments.model import parse as parse_segment
from nudge.query.segments.saved import SegmentDirectory
from nudge.store import control

from .model import Journey

if TYPE_CHECKING:
    from .engine import JourneyEngine

log = logging.getLogger("nudge.journeys")
E = control.journey_entries
SINGLE_TESTS = 50  # up to this many changed people: single-user tests; beyond: one set query


def _segment(eng: JourneyEngine, account_id: str, journey_id: int, j: Journey
             ) -> tuple[Any, Any] | None:
    saved = SegmentDirectory(eng.engine, account_id)
    try:
        node = (parse_segment(saved.get(int(j.entry["segment_id"])).definition, clock.now())
                if "segment_id" in j.entry else parse_segment(j.entry["definition"], clock.now()))
    except NotFound:
        log.warning("journey %s: entry segment is gone", journey_id)
        return None
    return node, segment_engine(eng.engage, account_id, saved)


def _enter(eng: JourneyEngine, account_id: str, journey_id: int, version: int, j: Journey,
           members: list[int]) -> int:
    """Enter ``members`` who may enter (one at a time, re-entry rules) in batches."""
    if not members:
        return 0
    with eng.engine.connect() as conn:
        q = sa.select(E.c.user_id, sa.func.count(),
                      sa.func.sum(sa.case((E.c.status == "active", 1), else_=0))).where(
            E.c.journey_id == journey_id)
        if len(members) <= 900:
            q = q.where(E.c.user_id.in_(members))
        stats = {r[0]: (r[1], r[2]) for r in conn.execute(q.group_by(E.c.user_id))}
    todo = [u for u in members if not (stats.get(u, (0, 0))[1])
            and (j.reentry != "never" or u not in stats)]
    batch = eng.settings.journey_entry_batch
    n = 0
    for i in range(0, len(todo), batch):
        if eng.stopping:
            break
        n += eng.enter(account_id, journey_id, version,
                       [(u, f"s:{u}:{stats.get(u, (0, 0))[0] + 1}", None)
                        for u in todo[i:i + batch]])
    return n


def enter_all(eng: JourneyEngine, account_id: str, journey_id: int, version: int,
              j: Journey) -> int:
    """Reconciliation: every current member who may enter."""
    seg = _segment(eng, account_id, journey_id, j)
    if seg is None:
        return 0
    node, engine = seg
    return _enter(eng, account_id, journey_id, version, j, sorted(engine.user_ids(node)))


def enter_changed(eng: JourneyEngine, account_id: str, uids: set[int]) -> int:
    """Live: of the people a commit changed, enter those now in an entry segment."""
    n = 0
    for jr in eng.published(account_id):
        j = eng.version(jr.id, jr.version)
        if not j.segment_entry:
            continue
        seg = _segment(eng, account_id, jr.id, j)
        if seg is None:
            continue
        node, engine = seg
        people = sorted(uids)
        if len(people) <= SINGLE_TESTS:
            members = [u for u in people if engine.contains(node, u)]
        else:
            members = sorted(engine.user_ids(node) & uids)
        n += _enter(eng, account_id, jr.id, jr.version, j, members)
    return n
