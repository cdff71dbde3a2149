"""The journey engine of one server process: entries, steps, timers, event-driven advances.

State lives in the control store (``journey_entries``: node, state, due time, step counter
``seq``; ``journey_steps``: one row per step run). Three paths change it, serialized by one
lock so that an entry is never advanced by two of them at once:

- **ticks** (``tick``): entries that are ``ready`` or whose timer is due are advanced through
  as many instant nodes as they can go (send, condition, split, update, webhook) until they
  wait (delay, wait_event) or exit. A batch's step rows (unique ``step_key`` =
  journey, version, entry, seq, node), outbox rows (idempotency key of the outbox including
  journey, version, entry and node) and state changes commit in one transaction, so after
  kill -9 an entry is either before a step or after it, never half way — no step runs twice
  and none is lost. Timers are rows (``due_at``), so they fire after a restart;
- **events** (``on_events``, from the account store's post-commit subscribers): entries on
  an event, goal conversions, exit criteria and waiting users' ``wait_event`` — the waiting
  entry is made ``ready`` and the tick is woken, so it advances within the poll interval;
- **segments** (``poll_segments``): segment-entry journeys enter the segment's members in
  batches of ``NUDGE_JOURNEY_ENTRY_BATCH``, one transaction each, on a thread: DuckDB is only
  read (through a cursor), so ingestion is not blocked.

Profile updates are written to the account store (and waited for) before the step commits;
re-running one after a crash sets the same values again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from nudge.clock import clock
from nudge.engage import outbox, sealing
from nudge.engage.bus import _plain, matches
from nudge.engage.directory import CampaignDirectory, spec_of
from nudge.engage.expand import build_rows, segment_engine
from nudge.engage.feed import EventFeed
from nudge.errors import NotFound
from nudge.ingest.records import Record
from nudge.query.segments.model import Did, EventSpec, Window
from nudge.query.segments.model import parse as parse_segment
from nudge.query.segments.saved import SegmentDirectory
from nudge.store import account as account_store
from nudge.store import control

from . import date_entry, leases, segment_entry
from .caps import JourneyCaps
from .model import EventMatch, Journey, Node, parse
from .timers import delay_until

log = logging.getLogger("nudge.journeys")
J, V, E, S = (control.journeys, control.journey_versions, control.journey_entries,
              control.journey_steps)
MAX_CHAIN = 100  # instant nodes one entry may run in one tick (cycles need a delay anyway)


def step_key(journey_id: int, version: int, entry_id: int, seq: int, node: str) -> str:
    return f"j{journey_id}:v{version}:e{entry_id}:{seq}:{node}"


def occurrence(journey_id: int, version: int, entry_id: int, node: str) -> str:
    """The outbox occurrence of a send step: journey, version, entry and node."""
    return f"j{journey_id}.{version}.{entry_id}.{node}"[:64]


def split_bucket(journey_id: int, entry_id: int, node: str) -> float:
    """A uniform number in [0, 100) fixed per (journey, entry, node): re-runs agree."""
    h = hashlib.blake2b(f"{journey_id}:{entry_id}:{node}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64 * 100.0


@dataclass
class Step:
    """What one tick decided for one entry: rows to write and the new state."""

    entry: Any
    steps: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    profile: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)


class JourneyEngine:
    def __init__(self, engage: Any) -> None:
        self.engage = engage
        self.engine = engage.engine
        self.settings = engage.settings
        self.lock = threading.Lock()
        self._versions: dict[tuple[int, int], Journey] = {}
        self._published: dict[str, tuple[float, list[Any]]] = {}
        self.tasks: list[asyncio.Task[Any]] = []
        self.kick: asyncio.Event | None = None
        self.feed: EventFeed | None = None
        self.changed_kick: asyncio.Event | None = None
        self._changed: dict[str, set[int]] = {}
        self._changed_lock = threading.Lock()
        self.stopping = False
        self.steps_run = 0
        self.steps_planned = 0  # steps of committed batches incl. plans dropped at commit
        self.owner = leases.new_owner()

    # -- definitions ---------------------------------------------------------------------------
    def version(self, journey_id: int, version: int) -> Journey:
        key = (journey_id, version)
        j = self._versions.get(key)
        if j is None:
            with self.engine.connect() as conn:
                d = conn.execute(sa.select(V.c.definition).where(
                    V.c.journey_id == journey_id, V.c.version == version)).scalar_one()
            j = self._versions[key] = parse(json.loads(d))
        return j

    def published(self, account_id: str) -> list[Any]:
        """Published journeys of an account (cached 1 s; ``invalidate`` on change)."""
        hit = self._published.get(account_id)
        if hit and time.monotonic() - hit[0] < 1.0:
            return hit[1]
        with self.engine.connect() as conn:
            rows = list(conn.execute(sa.select(J.c.id, J.c.version).where(
                J.c.account_id == account_id, J.c.status == "published",
                J.c.deleted_at.is_(None))))
        self._published[account_id] = (time.monotonic(), rows)
        return rows

    def invalidate(self, account_id: str) -> None:
        self._published.pop(account_id, None)
        self.wake()

    # -- entering ------------------------------------------------------------------------------
    def enter(self, account_id: str, journey_id: int, version: int,
              people: list[tuple[int, str, dict[str, Any] | None]]) -> int:
        """Enter (user, entry key, context) under the re-entry rules; returns how many."""
        if not people:
            return 0
        j = self.version(journey_id, version)
        now = clock.now()
        uids = list({u for u, _, _ in people})
        with self.lock, self.engine.begin() as conn:
            leases.begin_write(conn)
            history: dict[int, list[Any]] = {}
            for i in range(0, len(uids), 900):
                for r in conn.execute(sa.select(E.c.user_id, E.c.status, E.c.entered_at,
                                                E.c.exited_at).where(
                        E.c.journey_id == journey_id, E.c.user_id.in_(uids[i:i + 900]))):
                    history.setdefault(r.user_id, []).append(r)
            active = None
            if j.max_users is not None:
                active = conn.execute(sa.select(sa.func.count()).select_from(E).where(
                    E.c.journey_id == journey_id, E.c.status == "active")).scalar_one()
            rows = []
            for uid, key, ctx in people:
                h = history.get(uid, [])
                if not _may_enter(j, h, now):
                    continue
                if active is not None:
                    if active >= j.max_users:  # type: ignore[operator]
                        break
                    active += 1
                history.setdefault(uid, []).append(_Active)
                rows.append({"account_id": account_id, "journey_id": journey_id,
                             "version": version, "user_id": uid, "entry_key": key,
                             "status": "active", "node": j.start, "state": "ready", "seq": 0,
                             "due_at": now, "context": json.dumps(ctx) if ctx else None,
                             "entered_at": now})
            n = control.insert_ignore(conn, E, rows, ("journey_id", "entry_key"))
        if n:
            self.wake()
        return n

    # -- events --------------------------------------------------------------------------------
    def on_events(self, account_id: str, events: list[Any]) -> None:
        """Committed events: entries, goals, exit criteria, waiting users."""
        journeys = self.published(account_id)
        if not journeys:
            return
        events = [(u, n, ts, _plain(p), mid) for u, n, ts, p, mid in events]
        for jr in journeys:
            j = self.version(jr.id, jr.version)
            m = j.entry_event
            if m is None:
                continue
            hits: list[tuple[int, str, dict[str, Any] | None]] = [
                (u, f"e:{mid}", {**p, "$event": n, "$ts": ts})
                    for u, n, ts, p, mid in events if n == m.event and matches(m.where, p)]
            if hits:
                self.enter(account_id, jr.id, jr.version, hits)
        self._advance_waiting(account_id, {jr.id for jr in journeys}, events)

    def _advance_waiting(self, account_id: str, live: set[int], events: list[Any]) -> None:
        by_user: dict[int, list[Any]] = {}
        for e in events:
            by_user.setdefault(e[0], []).append(e)
        uids = list(by_user)
        now = clock.now()
        # Most events are of people in no journey: find that out with a plain read, and
        # take the write lock (below) only when some entry may change.
        with self.engine.connect() as conn:
            if not any(conn.execute(sa.select(E.c.id).where(
                    E.c.account_id == account_id, E.c.status == "active",
                    E.c.journey_id.in_(live), E.c.user_id.in_(uids[i:i + 900])).limit(1)
                    ).first() for i in range(0, len(uids), 900)):
                return
        with self.lock, self.engine.begin() as conn:
            leases.begin_write(conn)
            entries = []
            for i in range(0, len(uids), 900):
                q = sa.select(E).where(E.c.account_id == account_id, E.c.status == "active",
                                       E.c.user_id.in_(uids[i:i + 900]))
                if conn.dialect.name == "postgresql":
                    q = q.with_for_update()
                entries += conn.execute(q).fetchall()
            changed = 0
            for en in entries:
                if en.journey_id not in live:
                    continue
                j = self.version(en.journey_id, en.version)
                ctx = json.loads(en.context) if en.context else {}
                for _u, name, ts, props, _mid in sorted(by_user[en.user_id], key=lambda e: e[2]):
                    if ts < en.entered_at - 1:
                        continue
                    if j.goal and _hit(j.goal, name, props):
                        _exit(conn, en, "converted", now, converted_at=ts)
                        changed += 1
                        break
                    if any(_hit(x, name, props) for x in j.exit_when):
                        _exit(conn, en, "exit criteria", now)
                        changed += 1
                        break
                    node = j.nodes.get(en.node)
                    if (en.state == "wait" and node is not None and node.wait is not None
                            and _hit(node.wait, name, props)
                            and all(props.get(k) == ctx.get(k) for k in node.match)
                            and ts >= (en.due_at or 0) - (node.timeout or 0) - 1):
                        conn.execute(S.insert().values(
                            account_id=en.account_id, journey_id=en.journey_id,
                            entry_id=en.id, user_id=en.user_id, node=en.node,
                            step_key=step_key(en.journey_id, en.version, en.id, en.seq,
                                              en.node),
                            outcome="event", at=now))
                        conn.execute(E.update().where(E.c.id == en.id).values(
                            node=node.on_event, state="ready", due_at=now, seq=en.seq + 1,
                            wait_event=None))
                        changed += 1
                        break
        if changed:
            self.wake()

    # -- ticks ---------------------------------------------------------------------------------
    def tick(self) -> int:
        """Advance every due entry (in batches); returns the number of steps run."""
        total = 0
        batch = self.settings.journey_step_batch
        while not self.stopping:
            with self.engine.connect() as conn:
                live = {r[0] for r in conn.execute(sa.select(J.c.id).where(
                    J.c.status == "published"))}
            if not live:
                return total
            rows = leases.claim(self.engine, self.owner, live, clock.now(), batch,
                                self.settings.journey_lease_s)
            if not rows:
                return total
            try:
                total += self._run_batch(rows)
            except Exception:
                # Give the claims back at once (else they block these entries until they
                # lapse); the batch is retried by the next tick.
                with contextlib.suppress(Exception), self.engine.begin() as conn:
                    leases.release(conn, self.owner, [r.id for r in rows])
                raise
            if len(rows) < batch:
                return total
        return total

    def _run_batch(self, rows: list[Any]) -> int:
        now = clock.now()
        plans = [Step(r) for r in rows]
        runner = _Runner(self, now)
        runner.preload(plans)
        for p in plans:
            runner.plan(p)
        runner.sends(plans)
        runner.write_profiles(plans)
        planned = sum(len(p.steps) for p in plans)
        # Seal outbox rows now, not inside the transaction below: sealing may create the
        # account's data key through another connection, which would wait for the write
        # lock that transaction holds (a self-deadlock until busy_timeout).
        keyring = sealing.keyring_of(self.engine) if any(p.outbox for p in plans) else None
        for p in plans:
            if p.outbox and keyring is not None:
                p.outbox = [sealing.seal_outbox_row(keyring, dict(r)) for r in p.outbox]
        with self.lock, self.engine.begin() as conn:
            # An event (in any process) may have moved an entry since it was claimed: only
            # plans whose entry is still at the same step are applied (compare-and-set on
            # seq, under the write lock / row locks), and the claims end with the commit.
            ids = [p.entry.id for p in plans]
            leases.release(conn, self.owner, ids)
            current = leases.current_seq(conn, ids)
            plans = [p for p in plans if current.get(p.entry.id) == p.entry.seq]
            steps = [s for p in plans for s in p.steps]
            control.insert_ignore(conn, S, steps, ("step_key",))
            outbox.insert(conn, [m for p in plans for m in p.outbox])
            if plans:
                conn.execute(E.update().where(E.c.id == sa.bindparam("eid")),
                             [{"eid": p.entry.id, **p.state} for p in plans])
        self.steps_planned += planned  # committed batches only, incl. plans dropped by CAS
        if any(p.outbox for p in plans):
            self.engage.notify()
        n = sum(len(p.steps) for p in plans)
        self.steps_run += n
        return n

    # -- segments and dates --------------------------------------------------------------------
    def poll_segments(self) -> int:
        """Reconciliation: enter members of segment-entry journeys who may enter."""
        with self.engine.connect() as conn:
            rows = list(conn.execute(sa.select(J.c.id, J.c.account_id, J.c.version).where(
                J.c.status == "published", J.c.deleted_at.is_(None))))
        n = 0
        for r in rows:
            j = self.version(r.id, r.version)
            if j.segment_entry:
                n += segment_entry.enter_all(self, r.account_id, r.id, r.version, j)
        return n

    def scan_dates(self) -> int:
        """Enter date-property occurrences that came due (docs: date_entry.py)."""
        return date_entry.scan(self)

    # -- process lifecycle ---------------------------------------------------------------------
    def wake(self) -> None:
        loop, kick = getattr(self, "loop", None), self.kick
        if loop is not None and kick is not None:
            loop.call_soon_threadsafe(kick.set)

    def _on_commit(self, account_id: str, events: list[Any]) -> None:
        """Whose events a commit stored (live segment entry; the events themselves reach
        ``on_events`` through the durable feed)."""
        self._on_profiles(account_id, [e[0] for e in events])

    def _handle(self, account_id: str, events: list[Any]) -> int:
        """The durable feed's handler: live batches and, after a crash, replayed ones
        (idempotent: entry keys are message ids, exits and advances check the state)."""
        self.on_events(account_id, events)
        return len(events)

    def _on_profiles(self, account_id: str, uids: list[int]) -> None:
        """People whose events or profile a commit changed (live segment entry)."""
        with self._changed_lock:
            self._changed.setdefault(account_id, set()).update(uids)
        if self.changed_kick is not None:
            self.loop.call_soon_threadsafe(self.changed_kick.set)

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.kick = asyncio.Event()
        self.changed_kick = asyncio.Event()
        # Committed events through the engage feed (nudge/engage/feed.py): a watermark per
        # account, replayed from the store at start, so events committed just before a
        # crash still advance waiting users, convert and enter.
        self.feed = EventFeed("journeys", self.engine, self.engage.stores, self._handle,
                              wants=lambda a: bool(self.published(a)))
        self.feed.attach()
        account_store.commit_subscribers.append(self._on_commit)
        account_store.profile_subscribers.append(self._on_profiles)
        self.tasks = [asyncio.create_task(self._ticks(), name="journey-ticks"),
                      asyncio.create_task(self._events(), name="journey-events"),
                      asyncio.create_task(self._segments(), name="journey-segments"),
                      asyncio.create_task(self._live_segments(), name="journey-live"),
                      asyncio.create_task(self._dates(), name="journey-dates")]

    async def stop(self) -> None:
        self.stopping = True
        if self.feed is not None:
            self.feed.detach()
        if self._on_commit in account_store.commit_subscribers:
            account_store.commit_subscribers.remove(self._on_commit)
        if self._on_profiles in account_store.profile_subscribers:
            account_store.profile_subscribers.remove(self._on_profiles)
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.feed is not None:
            await asyncio.to_thread(self.feed.flush)

    async def _ticks(self) -> None:
        assert self.kick is not None
        while True:
            self.kick.clear()
            try:
                await asyncio.to_thread(self.tick)
            except Exception:
                log.exception("journey tick failed")
            try:
                await asyncio.wait_for(self.kick.wait(), self.settings.journey_poll_ms / 1000)
            except TimeoutError:
                pass

    async def _events(self) -> None:
        assert self.feed is not None
        await self.feed.run()  # replays what was committed after the watermark, then live

    async def _live_segments(self) -> None:
        assert self.changed_kick is not None
        while True:
            await self.changed_kick.wait()
            self.changed_kick.clear()
            with self._changed_lock:
                changed, self._changed = self._changed, {}
            for account_id, uids in changed.items():
                try:
                    if any(self.version(r.id, r.version).segment_entry
                           for r in self.published(account_id)):
                        await asyncio.to_thread(segment_entry.enter_changed, self,
                                                account_id, uids)
                except Exception:
                    log.exception("journeys: live segment entry failed for account %s",
                                  account_id)

    async def _dates(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.scan_dates)
            except Exception:
                log.exception("journey date entry failed")
            await asyncio.sleep(self.settings.journey_date_poll_s)

    async def _segments(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.poll_segments)
            except Exception:
                log.exception("journey segment entry failed")
            await asyncio.sleep(self.settings.journey_segment_poll_s)


class _ActiveMarker:
    status = "active"
    entered_at = 0.0
    exited_at = None


_Active = _ActiveMarker()


def _may_enter(j: Journey, history: list[Any], now: float) -> bool:
    if any(h.status == "active" for h in history):
        return False  # one entry at a time per journey
    if not history:
        return True
    if j.max_entries is not None and len(history) >= j.max_entries:
        return False
    if j.reentry == "never":
        return False
    if j.reentry == "after":
        last = max((h.exited_at or h.entered_at) for h in history)
        return now >= last + j.reentry_after
    return True


def _hit(m: EventMatch, name: str, props: dict[str, Any]) -> bool:
    return name == m.event and matches(m.where, props)


def _exit(conn: Any, en: Any, reason: str, now: float, converted_at: float | None = None
          ) -> None:
    conn.execute(E.update().where(E.c.id == en.id).values(
        status="exited", exit_reason=reason, exited_at=now, converted_at=converted_at,
        due_at=None, wait_event=None))




class _Runner:
    """Plans one batch: walks each entry through instant nodes, collecting rows."""

    def __init__(self, eng: JourneyEngine, now: float) -> None:
        self.eng = eng
        self.now = now
        self.profiles: dict[tuple[str, int], dict[str, Any]] = {}
        self.pending_sends: list[tuple[Step, Node, int, str]] = []
        self.account_tz: dict[str, str] = {}
        self._seg: dict[tuple[str, str], Any] = {}
        self._caps: dict[tuple[str, int], JourneyCaps] = {}

    def tz(self, account_id: str, uid: int) -> str:
        p = self.props(account_id, uid)
        from nudge.engage.compose import TZ_PROPS, _valid_zone

        for k in TZ_PROPS:
            if _valid_zone(p.get(k)):
                return str(p[k])
        if account_id not in self.account_tz:
            self.account_tz[account_id] = self.eng.engage.timezone(account_id)
        return self.account_tz[account_id]

    def props(self, account_id: str, uid: int) -> dict[str, Any]:
        key = (account_id, uid)
        if key not in self.profiles:
            from nudge.engage.compose import load_recipients

            store = self.eng.engage.stores.get(account_id)
            r = load_recipients(store, [uid], None, tokens=False, full=True).get(uid)
            self.profiles[key] = dict(r.props) if r else {}
        return self.profiles[key]

    def preload(self, plans: list[Step]) -> None:
        """Profiles of a batch's users in one query per account, when a calendar or
        property delay of their journey needs the timezone or a date property."""
        from nudge.engage.compose import load_recipients

        want: dict[str, list[int]] = {}
        for p in plans:
            j = self.eng.version(p.entry.journey_id, p.entry.version)
            if any(n.type == "delay" and (n.days or n.until_time is not None
                                          or n.until_property) for n in j.nodes.values()):
                want.setdefault(p.entry.account_id, []).append(p.entry.user_id)
        for account_id, uids in want.items():
            store = self.eng.engage.stores.get(account_id)
            got = load_recipients(store, uids, None, tokens=False, full=True)
            for u in uids:
                r = got.get(u)
                self.profiles[(account_id, u)] = dict(r.props) if r else {}

    def plan(self, p: Step) -> None:
        en = p.entry
        j = self.eng.version(en.journey_id, en.version)
        node_id, state, seq = en.node, en.state, en.seq
        p.state = {"node": node_id, "state": state, "seq": seq, "due_at": en.due_at,
                   "wait_event": en.wait_event, "status": "active", "exited_at": None,
                   "exit_reason": None}

        def done(outcome: str, nxt: str | None) -> None:
            nonlocal node_id, state, seq
            p.steps.append({"account_id": en.account_id, "journey_id": en.journey_id,
                            "entry_id": en.id, "user_id": en.user_id, "node": node_id,
                            "step_key": step_key(en.journey_id, en.version, en.id, seq, node_id),
                            "outcome": outcome[:64], "at": self.now})
            seq += 1
            node_id, state = nxt or node_id, "ready"

        for _ in range(MAX_CHAIN):
            node = j.nodes[node_id]
            if state == "delay":
                done("elapsed", node.next)
                continue
            if state == "wait":
                done("timeout", node.on_timeout)
                continue
            t = node.type
            if t == "exit":
                done("exit", None)
                p.state.update(status="exited", exit_reason="completed", exited_at=self.now,
                               due_at=None, wait_event=None)
                break
            if t == "delay":
                at = delay_until(node, self.now, self.tz(en.account_id, en.user_id),
                                 self.props(en.account_id, en.user_id)
                                 if node.until_property else {})
                if at <= self.now:
                    done("elapsed", node.next)
                    continue
                state = "delay"
                p.state.update(due_at=at)
                break
            if t == "wait_event":
                assert node.wait is not None and node.timeout is not None
                state = "wait"
                p.state.update(due_at=self.now + node.timeout, wait_event=node.wait.event)
                break
            if t == "send":
                self.pending_sends.append((p, node, seq, node_id))
                done(f"send c{node.campaign_id}", node.next)
                continue
            if t == "condition":
                yes = self.condition(en, node)
                done("yes" if yes else "no", node.yes if yes else node.no)
                continue
            if t == "split":
                b = split_bucket(en.journey_id, en.id, node_id)
                edge, pick = 0.0, len(node.branches) - 1
                for i, (pct, _) in enumerate(node.branches):
                    edge += pct
                    if b < edge:
                        pick = i
                        break
                done(f"branch {pick}", node.branches[pick][1])
                continue
            if t == "update_profile":
                p.profile.update(node.set)
                done("updated", node.next)
                continue
            if t == "webhook":
                key = f"{step_key(en.journey_id, en.version, en.id, seq, node_id)}:wh"
                body = {"type": "journey", "journey_id": en.journey_id, "version": en.version,
                        "entry_id": en.id, "node": node_id, "user_id": en.user_id,
                        "account_id": en.account_id}
                p.outbox.append(outbox.row(
                    account_id=en.account_id, key=key, campaign_id=None,
                    occurrence=occurrence(en.journey_id, en.version, en.id, node_id),
                    user_id=en.user_id, variant="-", channel="webhook", category="webhook",
                    transactional=True, to=node.url, content={"body": body}, meta=None,
                    status="pending", reason=None, at=self.now, now=self.now))
                done("webhook queued", node.next)
                continue
        p.state.update(node=node_id, state=state if p.state["status"] == "active" else "done",
                       seq=seq)
        if state == "ready" and p.state["status"] == "active":
            p.state["due_at"] = self.now
        if state != "wait":
            p.state["wait_event"] = None

    def condition(self, en: Any, node: Node) -> bool:
        saved = SegmentDirectory(self.eng.engine, en.account_id)
        seg: Any
        if node.did is not None:
            # "did E (where ...) at least N times since entry": the segment language's own
            # event condition over [entered_at, now], so property filters compile to the
            # same SQL (typed columns, JSON overflow) as in segments.
            seg = Did(EventSpec(node.did.event, node.did.where), ">=", node.did_count,
                      Window("between", start=float(en.entered_at), end=self.now + 1.0))
        else:
            assert node.segment is not None
            seg = (parse_segment(saved.get(int(node.segment["segment_id"])).definition,
                                 self.now) if "segment_id" in node.segment
                   else parse_segment(node.segment["definition"], self.now))
        return bool(segment_engine(self.eng.engage, en.account_id, saved)
                    .contains(seg, en.user_id, now=self.now))

    def sends(self, plans: list[Step]) -> None:
        """Outbox rows for every send step of the batch, through the campaign's render and
        policy path (build_rows); keys carry journey, version, entry and node."""
        groups: dict[tuple[str, int, int, int, str], list[tuple[Step, Node, int, str]]] = {}
        for s in self.pending_sends:
            en = s[0].entry
            ctx_key = en.context or ""
            groups.setdefault((en.account_id, en.journey_id, en.version,
                               s[1].campaign_id or 0, ctx_key), []).append(s)
        for (account_id, jid, version, cid, ctx_key), items in groups.items():
            try:
                c = CampaignDirectory(self.eng.engine, account_id).get(cid)
            except NotFound:
                log.warning("journey send: no campaign %s in account %s", cid, account_id)
                continue
            spec = spec_of(c)
            j = self.eng.version(jid, version)
            if j.quiet_hours is not None:  # the journey's quiet hours, through the policy
                spec = dataclasses.replace(spec, quiet_hours=j.quiet_hours)
            if j.caps:
                items = self._within_caps(account_id, jid, j, spec.channels, items)
            event = _event_ctx(ctx_key)
            uids = [p.entry.user_id for p, *_ in items]
            if not uids:
                continue
            rows = build_rows(self.eng.engage, c, spec, "journey", uids, event=event)
            by_uid = {r["user_id"]: r for r in rows}
            for p, _node, _seq, node_id in items:
                r = by_uid.get(p.entry.user_id)
                if r is None:
                    continue
                en = p.entry
                occ = occurrence(en.journey_id, en.version, en.id, node_id)
                r = dict(r, occurrence=occ,
                         idem_key=outbox.idem_key(cid, occ, en.user_id, r["variant"]))
                meta = json.loads(r["meta"]) if r.get("meta") else {}
                meta["journey"] = {"id": en.journey_id, "version": en.version,
                                   "entry": en.id, "node": node_id}
                r["meta"] = json.dumps(meta)
                p.outbox.append(r)

    def _within_caps(self, account_id: str, journey_id: int, j: Journey,
                     channels: tuple[str, ...], items: list[tuple[Step, Node, int, str]]
                     ) -> list[tuple[Step, Node, int, str]]:
        """The sends the journey's caps allow; the others' steps say ``capped``."""
        key = (account_id, journey_id)
        if key not in self._caps:
            self._caps[key] = JourneyCaps(self.eng.engine, account_id, journey_id, j.caps,
                                          self.now)
        gate = self._caps[key]
        gate.load([p.entry.user_id for p, *_ in items])
        out = []
        for it in items:
            p, node, seq, node_id = it
            if gate.allows(p.entry.user_id, channels):
                out.append(it)
                continue
            sk = step_key(p.entry.journey_id, p.entry.version, p.entry.id, seq, node_id)
            for st in p.steps:
                if st["step_key"] == sk:
                    st["outcome"] = f"capped c{node.campaign_id}"
        return out

    def write_profiles(self, plans: list[Step]) -> None:
        """Profile updates, durable in the account store before the steps commit."""
        from nudge.engage.tracking import identifiers

        by_account: dict[str, list[Step]] = {}
        for p in plans:
            if p.profile:
                by_account.setdefault(p.entry.account_id, []).append(p)
        for account_id, ps in by_account.items():
            store = self.eng.engage.stores.get(account_id)
            ids = identifiers(store, [p.entry.user_id for p in ps])
            recs = []
            for i, p in enumerate(ps):
                ident = ids.get(p.entry.user_id)
                if ident is None:
                    continue
                recs.append(Record(kind="profile", ids={ident[0]: ident[1]}, ts=self.now,
                                   message_id=f"nudge-journey:{p.entry.id}:{p.entry.seq}",
                                   index=i, props=dict(p.profile)))
            if recs:
                store.submit_nowait(recs).result(timeout=60)


def _event_ctx(ctx_key: str) -> dict[str, Any] | None:
    if not ctx_key:
        return None
    props = json.loads(ctx_key)
    name, ts = props.pop("$event", None), props.pop("$ts", None)
    return {**props, "name": name, "ts": ts, "properties": props}


async def start_journeys(app: Any, nudge: Any) -> JourneyEngine:
    """Start the process's journey engine on ``app.state.journeys`` (after start_engage)."""
    eng = JourneyEngine(app.state.engage)
    app.state.journeys = eng
    await eng.start()
    return eng
