"""The ingest log (nudge/ingest/log.py): acknowledged records survive any crash exactly once.

The store-level crash tests run the store in a child process and SIGKILL it, so that what
is on disk is whatever a real crash leaves: the child blocks its writer (a job that waits)
so that acknowledged entries sit in the log and not yet in DuckDB, then kills itself.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nudge.config import Settings
from nudge.ingest.log import IngestLog, log_key, pack, unpack
from nudge.ingest.records import Date, ProfileOp, Record
from nudge.store.account import AccountStore

KEY = "ab" * 32
MARKER = "Zanzibar-7731"  # a value that must never be found in plaintext on disk


def logged(data_dir: Path) -> Settings:
    """Settings with the ingest log on (it is opt-in: NUDGE_INGEST_LOG)."""
    return Settings(data_dir=data_dir, ingest_log=True)


def event(i: int, user: str = "u1", **props: object) -> Record:
    return Record(kind="event", ids={"identity": user}, ts=1_700_000_000.0 + i,
                  message_id=f"m{user}-{i}", index=i, event="Viewed",
                  props={"page": f"/p{i}", **props})


def event_ids(store: AccountStore) -> list[str]:
    with store.cursor() as cur:
        return [r[0] for r in cur.execute("SELECT message_id FROM events ORDER BY seq").fetchall()]


def test_records_round_trip_through_the_log_encoding() -> None:
    recs = [
        event(1, when=Date(1_700_000_123.0), nested={"at": Date(5.0), "xs": [Date(6.0), 1]},
              epoch_dict={"epoch": 3}),
        Record(kind="profile", ids={"email": "a@b.co"}, ts=2.5, message_id="p1", index=3,
               ops=[ProfileOp("set", "Plan", "gold"), ProfileOp("set", "Born", Date(9.0)),
                    ProfileOp("unset", "Old")]),
        Record(kind="token", ids={"object_id": "d1"}, ts=3.0, message_id="t1",
               token=("fcm", "tok"), merge_allowed=True, merge_from=[("identity", "x")]),
    ]
    import msgspec

    back = [unpack(msgspec.msgpack.decode(msgspec.msgpack.encode(pack(r)),
                                          ext_hook=lambda c, d: Date(
                                              __import__("struct").unpack(">d", d)[0])))
            for r in recs]
    assert back == recs
    assert isinstance(back[0].props["when"], Date)
    assert back[0].props["epoch_dict"] == {"epoch": 3}  # a dict is not mistaken for a date


def _log(tmp_path: Path, got: list) -> IngestLog:
    return IngestLog(tmp_path / "log", log_key(KEY), "acct1", 1 << 20, got.extend)


def test_log_is_sealed_and_recovers_after_the_applied_entry(tmp_path: Path) -> None:
    got: list = []
    lg = _log(tmp_path, got)
    assert lg.recover(0) == []
    lg.start()
    futs = [lg.append([event(i, secret=MARKER)], None) for i in range(5)]
    lsns = [f.result(10) for f in futs]
    lg.close()
    assert lsns == [1, 2, 3, 4, 5] and [e.lsn for e in got] == lsns
    for f in (tmp_path / "log").iterdir():
        assert MARKER.encode() not in f.read_bytes()
        assert b"Viewed" not in f.read_bytes()
    again = _log(tmp_path, [])
    replay = again.recover(applied=3)
    assert [lsn for lsn, _ in replay] == [4, 5]
    assert replay[0][1][0].props["secret"] == MARKER
    assert again.next_lsn == 6
    # Another account's key does not open it: a clear error, not garbage.
    other = IngestLog(tmp_path / "log", log_key("cd" * 32), "acct1", 1 << 20, list.append)
    with pytest.raises(Exception, match="does not open"):
        other.recover(0)


def test_torn_tail_is_cut_and_applied_segments_are_deleted(tmp_path: Path) -> None:
    got: list = []
    lg = IngestLog(tmp_path / "log", log_key(KEY), "a", 200, got.extend)  # tiny segments
    lg.recover(0)
    lg.start()
    for i in range(6):
        lg.append([event(i)], None).result(10)
    lg.close()
    segs = sorted((tmp_path / "log").glob("*.seg"))
    assert len(segs) >= 3  # rotation by size
    with segs[-1].open("ab") as f:
        f.write(b"NLG1\x00\x00\x10\x00partial")  # a crash in the middle of an append
    size = segs[-1].stat().st_size
    again = IngestLog(tmp_path / "log", log_key(KEY), "a", 200, list.append)
    assert [lsn for lsn, _ in again.recover(0)] == [1, 2, 3, 4, 5, 6]
    assert segs[-1].stat().st_size < size  # the torn frame was cut off
    third = IngestLog(tmp_path / "log", log_key(KEY), "a", 200, list.append)
    assert [lsn for lsn, _ in third.recover(applied=4)] == [5, 6]
    left = sorted((tmp_path / "log").glob("*.seg"))
    assert left and len(left) < len(segs)  # segments with only applied entries are gone


def test_acknowledged_write_is_readable_at_once_and_the_log_empties(tmp_path: Path) -> None:
    store = AccountStore("a1", tmp_path / "a1" / "events.duckdb", logged(tmp_path),
                         KEY)
    try:
        async def go() -> None:
            for i in range(20):
                res = await store.submit_logged([event(i), event(i, "u2")])
                assert res.errors == [None, None]
                # read-your-writes: a read right after the acknowledgment sees it
                assert f"mu1-{i}" in event_ids(store)

        asyncio.run(go())
        assert store.applied_lsn == store.durable_lsn == 20
    finally:
        store.close()
    assert not list((tmp_path / "a1" / "ingest-log").glob("*.seg"))  # clean close: all applied


def test_identity_conflict_is_still_reported_per_record(tmp_path: Path) -> None:
    store = AccountStore("a1", tmp_path / "a1" / "events.duckdb", logged(tmp_path),
                         KEY)
    try:
        async def go() -> list:
            await store.submit_logged([event(1, "alice"), Record(
                kind="profile", ids={"identity": "bob", "email": "b@x.co"}, ts=1.0,
                message_id="p1", ops=[ProfileOp("set", "a", 1)])])
            res = await store.submit_logged([Record(
                kind="profile", ids={"identity": "alice", "email": "b@x.co"}, ts=2.0,
                message_id="p2", index=0, ops=[ProfileOp("set", "a", 2)])])
            return res.errors

        errors = asyncio.run(go())
        assert errors[0] is not None and errors[0].code == 520
    finally:
        store.close()


CHILD = textwrap.dedent("""
    import asyncio, os, signal, sys, threading
    from pathlib import Path
    from nudge.config import Settings
    from nudge.ingest.records import Record
    from nudge.store.account import AccountStore

    root, mode, key = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    store = AccountStore("a1", root / "a1" / "events.duckdb",
                         Settings(data_dir=root, ingest_log=True), key)

    def ev(user, i):
        return Record(kind="event", ids={"identity": user}, ts=1.7e9 + i,
                      message_id=f"{user}-{i}", index=i, event="Viewed",
                      props={"page": f"/p{i}", "card": "Zanzibar-7731"})

    async def send(user, n):
        for i in range(n):
            await store.submit_logged([ev(user, i), ev(user, i + 1000)])

    if mode == "blocked":
        # Acknowledged entries in the log, none in DuckDB: the writer waits on a job.
        gate = threading.Event()
        store.run_on_writer(gate.wait)
        asyncio.run(send("alice", 30))
    elif mode == "draining":
        # Keep sending; the writer drains as it goes; die at an arbitrary point.
        asyncio.run(send("alice", 30))
    elif mode == "erase":
        from nudge.privacy.gdpr import erase_on_writer, Subject
        asyncio.run(send("alice", 10))
        asyncio.run(send("bob", 5))
        found, _ = store.run_on_writer(
            lambda: erase_on_writer(store, [Subject("identity", "alice", 0)])).result()
        assert found[0].user_id is not None
    print("acked", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def _crash_child(tmp_path: Path, mode: str) -> None:
    p = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), mode, KEY],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    assert "acked" in p.stdout, p.stderr[-3000:]


@pytest.mark.parametrize("mode", ["blocked", "draining"])
def test_kill_9_after_log_fsync_replays_every_acknowledged_record_once(
        tmp_path: Path, mode: str) -> None:
    _crash_child(tmp_path, mode)
    expected = sorted(f"alice-{i}" for i in [*range(30), *range(1000, 1030)])
    for _ in range(2):  # a second open must not apply anything twice
        store = AccountStore("a1", tmp_path / "a1" / "events.duckdb",
                             logged(tmp_path), KEY)
        try:
            ids = event_ids(store)
            assert sorted(ids) == expected
            with store.cursor() as cur:
                assert cur.execute("SELECT event_count FROM profiles").fetchall() == [(60,)]
        finally:
            store.close()
    assert not list((tmp_path / "a1" / "ingest-log").glob("*.seg"))
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert MARKER.encode() not in f.read_bytes(), f


def test_erased_persons_logged_events_do_not_come_back(tmp_path: Path) -> None:
    _crash_child(tmp_path, "erase")
    # The log holds nothing of alice any more (segments read back with the key).
    left = IngestLog(tmp_path / "a1" / "ingest-log", log_key(KEY), "a1", 1 << 20, list.append)
    assert not [r for _, recs in left.recover(0) for r in recs if r.ids == {"identity": "alice"}]
    store = AccountStore("a1", tmp_path / "a1" / "events.duckdb", logged(tmp_path),
                         KEY)
    try:
        ids = event_ids(store)
        assert not [m for m in ids if m.startswith("alice")]
        assert sorted(ids) == sorted(f"bob-{i}" for i in [*range(5), *range(1000, 1005)])
    finally:
        store.close()


def test_without_the_log_acknowledgment_waits_for_the_commit(tmp_path: Path) -> None:
    store = AccountStore("a1", tmp_path / "a1" / "events.duckdb",
                         Settings(data_dir=tmp_path, ingest_log=False), KEY)
    try:
        asyncio.run(store.submit_logged([event(1)]))
        assert store.log is None and event_ids(store) == ["mu1-1"]
    finally:
        store.close()
    assert not (tmp_path / "a1" / "ingest-log").exists()
    os.sync()


def test_backlog_is_bounded_in_time_then_requests_wait_for_their_commit(tmp_path: Path) -> None:
    """Past ``ingest_log_max_lag_ms`` of unapplied backlog, a request is not acknowledged
    from the log but after its own commit (backpressure that keeps reads fresh)."""
    import threading

    store = AccountStore("a1", tmp_path / "a1" / "events.duckdb",
                         Settings(data_dir=tmp_path, ingest_log=True,
                                  ingest_log_max_lag_ms=50), KEY)
    gate = threading.Event()
    try:
        store.run_on_writer(gate.wait)  # the writer is busy: logged entries wait

        async def go() -> None:
            first = await store.submit_logged([event(1)])  # acknowledged from the log
            assert first.errors == [None] and store.applied_lsn < store.durable_lsn
            while store.log_lag() < 0.05:
                await asyncio.sleep(0.01)
            assert store.log_must_wait()
            second = asyncio.ensure_future(store.submit_logged([event(2)]))
            while store.durable_lsn < 2:  # logged, but not answered: waits for the commit
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            assert not second.done()
            gate.set()
            assert (await second).errors == [None]
            assert store.log_lag() == 0.0 and not store.log_must_wait()

        asyncio.run(go())
        assert event_ids(store) == ["mu1-1", "mu1-2"]
    finally:
        gate.set()
        store.close()


def test_a_read_waits_once_for_what_was_acknowledged_when_it_began(tmp_path: Path) -> None:
    import threading

    store = AccountStore("a1", tmp_path / "a1" / "events.duckdb", logged(tmp_path), KEY)
    gates = [threading.Event(), threading.Event()]
    try:
        store.run_on_writer(gates[0].wait)
        asyncio.run(store.submit_logged([event(1)]))
        with store.read_position():  # begins with entry 1 acknowledged, not applied
            gates[0].set()
            assert event_ids(store) == ["mu1-1"]  # waited for entry 1
            store.run_on_writer(gates[1].wait)
            asyncio.run(store.submit_logged([event(2)]))  # acknowledged during the read
            assert event_ids(store) == ["mu1-1"]  # no second wait, for entry 2
        assert not store.wait_applied(timeout=0.05)  # a new read waits for entry 2
        gates[1].set()
        assert event_ids(store) == ["mu1-1", "mu1-2"]
    finally:
        for g in gates:
            g.set()
        store.close()
