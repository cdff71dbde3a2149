"""Suppression on a real account store, in process: the commit path drops events, channels
see it through the delivery policy's suppression hook, merges carry it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nudge.config import Settings
from nudge.ingest.records import Record
from nudge.privacy import suppression
from nudge.store.account import AccountStore

NOW = time.time()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AccountStore]:
    s = AccountStore("supp-acct", tmp_path / "events.duckdb", Settings(data_dir=tmp_path))
    yield s
    s.close()


def ev(ids: dict[str, str], mid: str, name: str = "E") -> Record:
    return Record(kind="event", ids=ids, ts=NOW, message_id=mid, event=name)


def events_of(store: AccountStore, uid: int) -> int:
    with store.cursor() as cur:
        return int(cur.execute("SELECT count(*) FROM events WHERE user_id = ?",
                               [uid]).fetchone()[0])


def test_commit_drops_suppressed_events_and_lifting_restores(store: AccountStore) -> None:
    store.write([ev({"identity": "a"}, "m1"), ev({"identity": "b"}, "m2")])
    a, b = store.user_for("identity", "a"), store.user_for("identity", "b")
    assert a is not None and b is not None
    assert store.run_on_writer(lambda: suppression.suppress(store, [a])).result() == 1
    assert suppression.is_suppressed("supp-acct", a)
    assert not suppression.is_suppressed("supp-acct", b)
    assert suppression.suppressed_subset("supp-acct", [a, b, 999]) == {a}
    res = store.write([ev({"identity": "a"}, "m3"), ev({"identity": "b"}, "m4")])
    assert res.stored_events == 1 and events_of(store, a) == 1 and events_of(store, b) == 2
    assert store.run_on_writer(lambda: suppression.unsuppress(store, [a])).result() == 1
    store.write([ev({"identity": "a"}, "m5")])
    assert events_of(store, a) == 2 and not suppression.is_suppressed("supp-acct", a)


def test_live_subscribers_do_not_see_a_suppressed_persons_events(store: AccountStore) -> None:
    """Triggers, journeys and conversions listen to committed events (commit_subscribers):
    a suppressed person's events, dropped by the commit, must not reach them either."""
    from nudge.store import account

    store.write([ev({"identity": "a"}, "s1"), ev({"identity": "b"}, "s2")])
    a, b = store.user_for("identity", "a"), store.user_for("identity", "b")
    store.run_on_writer(lambda: suppression.suppress(store, [a])).result()
    seen: list[int] = []

    def listen(acct: str, events: list) -> None:  # type: ignore[type-arg]
        seen.extend(e[0] for e in events if acct == "supp-acct")

    account.commit_subscribers.append(listen)
    try:
        store.write([ev({"identity": "a"}, "s3"), ev({"identity": "b"}, "s4")])
        store.write([ev({"identity": "a"}, "s5")])
    finally:
        account.commit_subscribers.remove(listen)
    assert seen == [b]


def test_suppression_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "events.duckdb"
    s = AccountStore("supp-reopen", path, Settings(data_dir=tmp_path))
    s.write([ev({"identity": "a"}, "m1")])
    a = s.user_for("identity", "a")
    s.run_on_writer(lambda: suppression.suppress(s, [a])).result()
    s.close()
    s = AccountStore("supp-reopen", path, Settings(data_dir=tmp_path))
    try:
        assert s.suppressed == {a} and suppression.is_suppressed("supp-reopen", a)
        s.write([ev({"identity": "a"}, "m2")])
        assert events_of(s, a) == 1
    finally:
        s.close()


def test_a_device_that_logs_in_as_a_suppressed_person_is_suppressed(
        store: AccountStore) -> None:
    store.write([ev({"identity": "known"}, "m1")])
    known = store.user_for("identity", "known")
    store.run_on_writer(lambda: suppression.suppress(store, [known])).result()
    store.write([ev({"object_id": "device"}, "m2")])  # a stranger's device: processed
    anon = store.user_for("object_id", "device")
    assert events_of(store, anon) == 1
    # The device logs in as "known": its profile merges into the suppressed person, and
    # from then on the device's events are theirs, so dropped.
    store.write([ev({"identity": "known", "object_id": "device"}, "m3")])
    store.write([ev({"object_id": "device"}, "m4"), ev({"object_id": "device"}, "m5")])
    assert store.identity.final(anon) == known
    assert suppression.is_suppressed("supp-acct", anon)
    assert events_of(store, known) == 2  # m1, and m2 merged in; m3-m5 dropped


def test_unknown_account_is_an_error_not_a_silent_no(tmp_path: Path) -> None:
    with pytest.raises(LookupError):
        suppression.is_suppressed("no-such-account-open", 1)


def test_the_delivery_policy_asks_the_suppression_list(store: AccountStore) -> None:
    policy = pytest.importorskip("nudge.engage.policy")
    store.write([ev({"identity": "a"}, "m1")])
    a = store.user_for("identity", "a")
    store.run_on_writer(lambda: suppression.suppress(store, [a])).result()
    suppression.register_with_policy()
    assert suppression.suppressed_subset in policy._suppression
    assert {u for check in policy._suppression for u in check("supp-acct", [a])} == {a}


def test_erasure_checkpoints_so_the_wal_holds_nothing_of_the_person(tmp_path: Path) -> None:
    """Inserts reach the WAL first; erasure CHECKPOINTs so the WAL no longer holds them, and
    everything else about the person is gone from the store's memory too."""
    from nudge.privacy.gdpr import Subject, erase_on_writer

    s = AccountStore("erase-wal", tmp_path / "events.duckdb",
                     Settings(data_dir=tmp_path, compact_threshold_rows=10**9))
    try:
        s.write([Record(kind="event", ids={"identity": "wal-person-zq@example.com"}, ts=NOW,
                        message_id=f"w{i}", event="E") for i in range(50)])
        s.write([ev({"identity": "other"}, "o1")])
        wal = tmp_path / "events.duckdb.wal"
        assert b"wal-person-zq@example.com" in wal.read_bytes()
        found, deleted = s.run_on_writer(lambda: erase_on_writer(
            s, [Subject("identity", "wal-person-zq@example.com", 0)])).result()
        assert found[0].user_id is not None and deleted["events"] == 50
        assert not wal.exists() or b"wal-person-zq" not in wal.read_bytes()
        assert ("identity", "wal-person-zq@example.com") not in s.identity.ids
        assert not {f"w{i}" for i in range(50)} & s.dedup
        # The same events sent again are new, and belong to a new person.
        s.write([Record(kind="event", ids={"identity": "wal-person-zq@example.com"}, ts=NOW,
                        message_id="w0", event="E")])
        again = s.user_for("identity", "wal-person-zq@example.com")
        assert again is not None and again not in found[0].all_ids
    finally:
        s.close()
