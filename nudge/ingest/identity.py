"""Identity resolution: which profile a record belongs to, and when profiles merge.

Rules (docs/concepts/identity.md):
- ``identity`` (the customer's user id) is the strongest identifier. A profile that has one
  is *identified*; one with only a device id (objectId), email or phone is *anonymous*.
- Identifiers in one record that point to different profiles are reconciled: anonymous
  profiles merge into the identified one (the identified profile's properties win).
- Two identified profiles are never merged implicitly: the record is rejected with code 520,
  unless it is an explicit merge (``POST /1/profiles/merge``).
- A device id or push token seen with a different identified user moves to that user
  (a shared device); no data moves with it.

The resolver works on a per-commit overlay of the identity map so that nothing is changed
if the commit fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nudge.ingest.records import E_CONFLICT, Record, RecordInvalid

Key = tuple[str, str]
MOVABLE = ("object_id", "fcm", "apns", "webpush")


@dataclass
class IdentityState:
    """Committed identity knowledge cached in memory (a cache of the DuckDB tables)."""

    ids: dict[Key, int] = field(default_factory=dict)
    identity_of: dict[int, str | None] = field(default_factory=dict)
    merged_into: dict[int, int] = field(default_factory=dict)
    next_uid: int = 1
    # True while ``ids`` holds every stored identifier (loaded whole at start, never
    # emptied since): then a key missing from it is new, and nothing needs looking up.
    # Whoever deletes identifiers from the table drops them from ``ids`` too.
    complete: bool = False

    def final(self, uid: int) -> int:
        while uid in self.merged_into:
            uid = self.merged_into[uid]
        return uid


@dataclass
class Resolution:
    """What one commit changes: new/moved identifiers, merges, new profiles."""

    assigned: dict[Key, int] = field(default_factory=dict)
    identity_of: dict[int, str | None] = field(default_factory=dict)
    merged_into: dict[int, int] = field(default_factory=dict)
    merges: list[tuple[int, int]] = field(default_factory=list)
    created: set[int] = field(default_factory=set)
    next_uid: int = 0


class Resolver:
    def __init__(self, state: IdentityState, lookup_missing: Callable[[set[Key]], None]) -> None:
        self.state = state
        self.lookup_missing = lookup_missing
        self.res = Resolution(next_uid=state.next_uid)

    # -- overlay reads -------------------------------------------------------------------
    def final(self, uid: int) -> int:
        if uid not in self.res.merged_into and uid not in self.state.merged_into:
            return uid
        while True:
            nxt = self.res.merged_into.get(uid) or self.state.merged_into.get(uid)
            if nxt is None:
                return uid
            uid = nxt

    def uid_of(self, key: Key) -> int | None:
        uid = self.res.assigned.get(key)
        if uid is None:
            uid = self.state.ids.get(key)
        return None if uid is None else self.final(uid)

    def identity(self, uid: int) -> str | None:
        if uid in self.res.identity_of:
            return self.res.identity_of[uid]
        return self.state.identity_of.get(uid)

    # -- resolution ----------------------------------------------------------------------
    def prefetch(self, records: list[Record]) -> None:
        if self.state.complete:
            return
        keys: set[Key] = set()
        for r in records:
            keys.update(r.ids.items())
            keys.update(r.merge_from)
            if r.token:
                keys.add(r.token)
        missing = {k for k in keys if k not in self.state.ids}
        self.lookup_missing(missing)
        # The lookup empties a full cache (its memory is bounded); read back the keys of these
        # records that it dropped, or they would look new and get a second profile.
        dropped = {k for k in keys - missing if k not in self.state.ids}
        if dropped:
            self.lookup_missing(dropped)

    def resolve(self, rec: Record) -> int:
        """The profile this record belongs to, applying merges/attachments it implies."""
        if len(rec.ids) == 1 and rec.token is None and not rec.merge_from:
            # The common case: one known identifier, nothing to attach or merge.
            (key,) = rec.ids.items()
            uid = self.res.assigned.get(key)
            if uid is None:
                uid = self.state.ids.get(key)
            if uid is not None:
                return self.final(uid)
        found = {kind: uid for kind, value in rec.ids.items()
                 if (uid := self.uid_of((kind, value))) is not None}
        if "identity" in rec.ids:
            target, merges, moves = self._with_identity(rec, found)
        else:
            target, merges, moves = self._anonymous(rec, found)
        for key in rec.merge_from:
            uid = self.uid_of(key)
            if uid is not None and uid != target and uid not in merges:
                merges.append(uid)
        for loser in merges:
            self._merge(loser, target)
        for kind, value in rec.ids.items():
            if kind in moves or self.uid_of((kind, value)) != target:
                self.res.assigned[(kind, value)] = target
        if rec.token and self.uid_of(rec.token) != target:
            self.res.assigned[rec.token] = target
        return target

    def _with_identity(self, rec: Record, found: dict[str, int]):  # type: ignore[no-untyped-def]
        target = found.get("identity")
        others = {k: u for k, u in found.items() if k != "identity" and u != target}
        merges: list[int] = []
        moves: set[str] = set()
        for kind, uid in others.items():
            if self.identity(uid) is None:
                if uid not in merges:
                    merges.append(uid)
            elif kind in MOVABLE:
                moves.add(kind)
            elif rec.merge_allowed:
                merges.append(uid)
            else:
                raise RecordInvalid(E_CONFLICT, (
                    f"{kind} {rec.ids[kind]!r} belongs to another identified profile; "
                    "merging two identified profiles needs POST /1/profiles/merge"))
        if target is None:
            # Adopt the oldest anonymous profile (the device that just logged in).
            target = min(merges) if merges else self._create()
            if merges:
                merges.remove(target)
            self.res.identity_of[target] = rec.ids["identity"]
        return target, merges, moves

    def _anonymous(self, rec: Record, found: dict[str, int]):  # type: ignore[no-untyped-def]
        uids = sorted(set(found.values()))
        if not uids:
            return self._create(), [], set()
        identified = [u for u in uids if self.identity(u) is not None]
        if len(identified) > 1 and not rec.merge_allowed:
            raise RecordInvalid(E_CONFLICT, (
                "identifiers in this record belong to different identified profiles; "
                "merging them needs POST /1/profiles/merge"))
        target = identified[0] if identified else uids[0]
        return target, [u for u in uids if u != target], set()

    def _create(self) -> int:
        uid = self.res.next_uid
        self.res.next_uid += 1
        self.res.created.add(uid)
        self.res.identity_of[uid] = None
        return uid

    def _merge(self, loser: int, winner: int) -> None:
        # An anonymous winner takes the loser's identity (as ProfileRow.absorb does), so
        # that the cache knows the merged profile is identified (explicit merges only).
        if self.identity(winner) is None and self.identity(loser) is not None:
            self.res.identity_of[winner] = self.identity(loser)
        self.res.merged_into[loser] = winner
        self.res.merges.append((loser, winner))

    # -- commit --------------------------------------------------------------------------
    def apply(self) -> None:
        """Fold this commit's resolution into the committed state (after a durable commit)."""
        s, r = self.state, self.res
        s.ids.update(r.assigned)
        s.identity_of.update(r.identity_of)
        s.merged_into.update(r.merged_into)
        for loser, _ in r.merges:
            s.identity_of.pop(loser, None)
        s.next_uid = r.next_uid
