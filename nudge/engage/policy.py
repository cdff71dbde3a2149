"""Policy, decided per message before it enters the outbox.

In order, for one user and the campaign's ordered channel list:

1. suppressed (GDPR / account suppression lists) → skip, reason ``suppressed``;
2. per channel, first channel that passes: subscribed to (channel, category)
   (``unsubscribed``), has an address (``unreachable``), is under the global per-channel
   frequency caps (``capped``) — otherwise the next channel is tried;
3. global caps across channels and the campaign's own caps (``capped``); transactional
   messages are exempt from frequency caps;
4. quiet hours in the user's timezone: ``drop`` (``quiet_hours``) or delay to the window end.

The skip reason of the first channel tried is the one recorded when no channel passes
(it is the channel the campaign wanted). Counts include messages decided earlier in the
same batch, so a cap holds within one large send too.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.store import control

from .campaigns import CampaignSpec, Cap, QuietHours, caps, quiet_hours

# Statuses that count as "a message the user got or will get" for frequency caps.
COUNTED = ("pending", "sending", "sent", "delivered")

# Suppression checks: fn(account_id, user_ids) -> the suppressed subset. The privacy area
# registers its GDPR suppression list here (register_suppression); every check runs per batch.
SuppressionCheck = Callable[[str, list[int]], set[int]]
_suppression: list[SuppressionCheck] = []


def register_suppression(check: SuppressionCheck) -> None:
    """Add a suppression source; messages to users it returns are skipped as ``suppressed``."""
    if check not in _suppression:
        _suppression.append(check)


def unregister_suppression(check: SuppressionCheck) -> None:
    if check in _suppression:
        _suppression.remove(check)


def suppressed_users(account_id: str, uids: list[int]) -> set[int]:
    out: set[int] = set()
    for check in _suppression:
        out |= check(account_id, uids)
    return out


def unsubscribed_from(off: set[tuple[str, str]], channel: str, category: str) -> bool:
    """Whether a person whose (channel, category) rows in ``off`` are unsubscribed gets no
    ``category`` messages by ``channel`` (``*`` stands for every channel or category)."""
    return bool({(channel, category), (channel, "*"), ("*", category), ("*", "*")} & off)


@dataclass(frozen=True)
class AccountPolicy:
    caps: tuple[Cap, ...] = ()
    quiet_hours: QuietHours | None = None


def parse_policy(body: object) -> AccountPolicy:
    from .campaigns import _obj

    o = _obj(body, "", ("caps", "quiet_hours"))
    return AccountPolicy(caps(o.get("caps"), "caps"), quiet_hours(o.get("quiet_hours"),
                                                                  "quiet_hours"))


class PolicyStore:
    """Account policies, cached for a few seconds (they change rarely, are read per batch)."""

    TTL = 2.0

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cache: dict[str, tuple[float, AccountPolicy, dict[str, object]]] = {}
        self._lock = threading.Lock()

    def get(self, account_id: str) -> AccountPolicy:
        return self._load(account_id)[0]

    def raw(self, account_id: str) -> dict[str, object]:
        return self._load(account_id)[1]

    def _load(self, account_id: str) -> tuple[AccountPolicy, dict[str, object]]:
        hit = self._cache.get(account_id)
        if hit and time.monotonic() - hit[0] < self.TTL:
            return hit[1], hit[2]
        t = control.engage_policies
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.c.definition).where(t.c.account_id == account_id)
                               ).first()
        raw = json.loads(row[0]) if row else {}
        pol = parse_policy(raw)
        with self._lock:
            self._cache[account_id] = (time.monotonic(), pol, raw)
        return pol, raw

    def put(self, account_id: str, body: object, now: float) -> AccountPolicy:
        pol = parse_policy(body)
        t = control.engage_policies
        text = json.dumps(body)
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.account_id == account_id))
            conn.execute(t.insert().values(account_id=account_id, definition=text,
                                           updated_at=now))
        with self._lock:
            self._cache.pop(account_id, None)
        return pol


@dataclass
class Decision:
    channel: str | None  # None: skipped
    reason: str | None = None
    send_at: float = 0.0
    tried: list[tuple[str, str]] = field(default_factory=list)  # (channel, why not)


def local_minute(ts: float, tz: str) -> int:
    t = dt.datetime.fromtimestamp(ts, ZoneInfo(tz))
    return t.hour * 60 + t.minute


def quiet_end(ts: float, tz: str, qh: QuietHours) -> float:
    """The first moment at or after ``ts`` outside the quiet window, in zone ``tz``."""
    zone = ZoneInfo(tz)
    local = dt.datetime.fromtimestamp(ts, zone)
    end = local.replace(hour=qh.end // 60, minute=qh.end % 60, second=0, microsecond=0)
    if end <= local:
        end += dt.timedelta(days=1)
    # Re-attach the zone so a DST change between now and the end is applied correctly.
    return end.replace(tzinfo=None).replace(tzinfo=zone).timestamp()


class PolicyGate:
    """Policy for one campaign and a batch of users (history loaded once per batch)."""

    def __init__(self, engine: Engine, account_id: str, policy: AccountPolicy,
                 spec: CampaignSpec, campaign_id: int | None, now: float) -> None:
        self.engine = engine
        self.account_id = account_id
        self.policy = policy
        self.spec = spec
        self.campaign_id = campaign_id
        self.now = now
        self.global_caps = () if spec.transactional else policy.caps
        self.campaign_caps = spec.caps
        self.quiet = spec.quiet_hours or (None if spec.transactional else policy.quiet_hours)
        # user -> [(ts, channel, campaign_id)]
        self.history: dict[int, list[tuple[float, str, int | None]]] = defaultdict(list)
        self.unsubscribed: dict[int, set[tuple[str, str]]] = defaultdict(set)
        self.suppressed: set[int] = set()
        self._quiet: dict[str, float] = {}  # tz -> end of the quiet window now, or -1
        # Every cap allows at least one message: a person with no counted message passes all.
        self.caps_allow_one = all(c.max >= 1 for c in (*self.global_caps, *self.campaign_caps))

    def prepare(self, uids: list[int]) -> None:
        """Load what the decisions need for these users, in a few queries."""
        self.history.clear()
        self.unsubscribed.clear()
        windows = [c.seconds for c in (*self.global_caps, *self.campaign_caps)]
        with self.engine.connect() as conn:
            # One statement per table for the whole batch (the ids as one bound value).
            if windows:
                o = control.outbox
                q = sa.select(o.c.user_id, o.c.created_at, o.c.channel, o.c.campaign_id
                              ).where(o.c.account_id == self.account_id,
                                      control.in_ids(conn, o.c.user_id, uids),
                                      o.c.created_at >= self.now - max(windows),
                                      o.c.status.in_(COUNTED),
                                      o.c.transactional == sa.false())
                for uid, ts, ch, cid in conn.execute(q):
                    self.history[uid].append((ts, ch, cid))
            s = control.subscriptions
            q2 = sa.select(s.c.user_id, s.c.channel, s.c.category).where(
                s.c.account_id == self.account_id, control.in_ids(conn, s.c.user_id, uids),
                s.c.subscribed == sa.false())
            for uid, ch, cat in conn.execute(q2):
                self.unsubscribed[uid].add((ch, cat))
        self.suppressed |= suppressed_users(self.account_id, uids)

    def _count(self, uid: int, seconds: float, channel: str = "*",
               campaign: bool = False) -> int:
        since = self.now - seconds
        return sum(1 for ts, ch, cid in self.history.get(uid, ())
                   if ts >= since and (channel == "*" or ch == channel)
                   and (not campaign or cid == self.campaign_id))

    def is_unsubscribed(self, uid: int, channel: str) -> bool:
        u = self.unsubscribed.get(uid)
        return bool(u) and unsubscribed_from(u, channel, self.spec.category)

    def decide(self, uid: int, reachable: Callable[[str], bool], tz: str,
               channels: Iterable[str] | None = None) -> Decision:
        if (channels is None and self.caps_allow_one and uid not in self.history
                and uid not in self.unsubscribed and uid not in self.suppressed
                and reachable(self.spec.channels[0])):
            # Nothing counted, unsubscribed or suppressed (most of a large audience): no cap
            # can bind, so the campaign's first channel is the decision — the same as the
            # checks below reach, without them.
            return self._timed(Decision(self.spec.channels[0]), tz)
        d = Decision(None)
        if uid in self.suppressed:
            d.reason = "suppressed"
            return d
        for ch in (self.spec.channels if channels is None else channels):
            if self.is_unsubscribed(uid, ch):
                d.tried.append((ch, "unsubscribed"))
            elif not reachable(ch):
                d.tried.append((ch, "unreachable"))
            elif any(c.channel == ch and self._count(uid, c.seconds, ch) >= c.max
                     for c in self.global_caps):
                d.tried.append((ch, "capped"))
            else:
                d.channel = ch
                break
        if d.channel is None:
            d.reason = d.tried[0][1] if d.tried else "unreachable"
            return d
        if any(c.channel == "*" and self._count(uid, c.seconds) >= c.max
               for c in self.global_caps) or any(
                self._count(uid, c.seconds, campaign=True) >= c.max for c in self.campaign_caps):
            d.channel, d.reason = None, "capped"
            return d
        return self._timed(d, tz)

    def _timed(self, d: Decision, tz: str) -> Decision:
        """When ``d`` may be sent: now, or the end of the quiet hours in ``tz`` (or not at
        all: ``quiet_hours`` with the drop action)."""
        d.send_at = self.now
        if self.quiet is not None:
            end = self._quiet.get(tz, 0.0)
            if end == 0.0:  # per timezone, once per batch
                inside = self.quiet.contains(local_minute(self.now, tz))
                end = self._quiet[tz] = quiet_end(self.now, tz, self.quiet) if inside else -1.0
            if end > 0:
                if self.quiet.action == "drop":
                    d.channel, d.reason = None, "quiet_hours"
                    return d
                d.send_at = end
        return d

    def record(self, uid: int, channel: str) -> None:
        """Count a message decided in this batch towards later decisions."""
        self.history[uid].append((self.now, channel, self.campaign_id))
