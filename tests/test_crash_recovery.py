"""Crash recovery: kill -9 the real server mid-ingest, restart it, and account for every record.

Client threads send sustained upload batches (every record has a unique msgId) and remember
which requests were acknowledged with a 200. The server is SIGKILLed in different phases
(early ingest, right after a compaction, during a client retry, right after a restart),
restarted on the same data directory, and then:

- every acknowledged record is present exactly once;
- no record is present twice;
- a request that was not acknowledged is either wholly present or wholly absent;
- re-sending every batch (a client retry) stores each record exactly once.

Counting goes through the API (profile lookups + paged timelines, deduplicated by profile),
and at the end through the DuckDB file itself, opened read-only after a clean stop.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from conftest import NudgeServer, make_server
from nudge.privacy.storage import open_account_file

CLIENTS = 4
USER_EVENTS = 20
ANON_EVENTS = 10
NOW = int(time.time())


@dataclass
class Batch:
    """One upload request: a user's events, the previous batch's device logging in as that
    user (a merge of already-committed events across requests), and a new anonymous device."""

    key: str
    user: str
    device: str
    records: list[dict] = field(default_factory=list)

    @property
    def event_ids(self) -> list[str]:
        return [r["msgId"] for r in self.records if r["type"] == "event"]


def make_batches(phase: str, client: int, n: int, plain: bool = False) -> list[Batch]:
    """``plain``: no login of the previous device, so that every record has one identifier
    and the request is acknowledged from the ingest log, before its DuckDB commit."""
    out: list[Batch] = []
    for i in range(n):
        key = f"{phase}.{client}.{i}"
        b = Batch(key, f"u-{key}", f"d-{key}")
        recs = b.records
        login = {"type": "event", "identity": b.user, "evtName": "Login", "ts": NOW - 100}
        if out and not plain:
            login["objectId"] = out[-1].device  # re-points the previous batch's device events
        recs.append(login)
        # New property names keep appearing, so commits also add typed columns (ALTER TABLE).
        recs.append({"type": "profile", "identity": b.user,
                     "profileData": {"Batch": i, f"{phase}_p{i % 17}": f"v{i}"}})
        for j in range(USER_EVENTS):
            recs.append({"type": "event", "identity": b.user, "evtName": f"E{j % 4}",
                         "ts": NOW - 3000 + j,
                         "evtData": {"j": j, f"{phase}_x{(i * 7 + j) % 23}": j * 1.5,
                                     "tag": key}})
        for j in range(ANON_EVENTS):
            recs.append({"type": "event", "objectId": b.device, "evtName": "Viewed",
                         "ts": NOW - 2000 + j, "evtData": {"page": f"/{j}"}})
        recs.append({"type": "profile", "objectId": b.device, "profileData": {"Anon": True}})
        for r, rec in enumerate(recs):
            rec["msgId"] = f"{key}.r{r}"
        out.append(b)
    return out


@dataclass
class Outcome:
    batch: Batch
    acked: bool


class Clients:
    """Client threads, each sending its own batches in order until told to stop."""

    def __init__(self, srv: NudgeServer, batches: dict[int, list[Batch]]) -> None:
        self.srv = srv
        self.batches = batches
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self.acked = 0
        self.acked_by: Counter[int] = Counter()
        self.unexpected: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(c,), daemon=True)
                        for c in batches]

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)
        assert not any(t.is_alive() for t in self.threads)

    def _run(self, client: int) -> None:
        with httpx.Client(base_url=self.srv.url, headers=self.srv.headers,
                          timeout=60) as http:
            for b in self.batches[client]:
                if self.stop.is_set():
                    return
                acked = False
                try:
                    r = http.post("/1/upload", json={"d": b.records})
                    if r.status_code == 200:
                        body = r.json()
                        acked = True
                        if body.get("status") != "success" or body["processed"] != len(
                                b.records):
                            self.unexpected.append(f"{b.key}: {body}")
                    else:
                        self.unexpected.append(f"{b.key}: HTTP {r.status_code} {r.text}")
                except httpx.HTTPError:
                    pass  # the server died under this request: not acknowledged
                with self.lock:
                    self.outcomes.append(Outcome(b, acked))
                    self.acked += acked
                    self.acked_by[client] += acked
                if not acked:
                    return  # the server is gone; stop like a client waiting to retry

    def wait_for(self, cond: Callable[[], bool], what: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if all(not t.is_alive() for t in self.threads):
                pytest.fail(f"clients finished before {what}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}")
            time.sleep(0.005)


class CompactionLog:
    """Counts the compactions the server logged (all runs on this data dir)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.n = 0
        self.partial = b""

    def count(self) -> int:
        if self.path.exists():
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = self.partial + f.read()
                self.offset = f.tell()
            *lines, self.partial = data.split(b"\n")
            for line in lines:
                if b'"compacted ' in line:
                    try:
                        self.n += json.loads(line)["msg"].startswith("compacted ")
                    except (ValueError, KeyError):
                        pass
        return self.n


def api_event_counts(srv: NudgeServer, batches: list[Batch]) -> Counter[str]:
    """Every stored event's msgId, counted, read through the API.

    Each batch names one user and one device; every event lives on a profile one of them
    resolves to. Profiles are read once each (merges make several names resolve to one).
    """
    counts: Counter[str] = Counter()
    seen: set[int] = set()
    with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=60) as http:
        for b in batches:
            for lookup in ({"identity": b.user}, {"objectId": b.device}):
                r = http.get("/1/profile", params=lookup)
                if r.status_code == 404:
                    continue
                assert r.status_code == 200, r.text
                pid = r.json()["profile"]["id"]
                if pid in seen:
                    continue
                seen.add(pid)
                cursor = None
                while True:
                    params = {**lookup, "limit": "1000"}
                    if cursor:
                        params["cursor"] = cursor
                    page = http.get("/1/profile/events", params=params)
                    assert page.status_code == 200, page.text
                    body = page.json()
                    counts.update(e["msgId"] for e in body["events"])
                    cursor = body["next_cursor"]
                    if not cursor:
                        break
    return counts


def check_recovered(counts: Counter[str], outcomes: list[Outcome],
                    all_batches: list[Batch]) -> tuple[int, int]:
    """The crash invariants; returns (unacked requests wholly present, wholly absent)."""
    known = {m for b in all_batches for m in b.event_ids}
    assert set(counts) <= known, sorted(set(counts) - known)[:5]
    dupes = {m: n for m, n in counts.items() if n > 1}
    assert not dupes, f"records stored more than once: {list(dupes.items())[:5]}"
    present = absent = 0
    for o in outcomes:
        ids = o.batch.event_ids
        n = sum(counts[m] for m in ids)
        if o.acked:
            missing = [m for m in ids if not counts[m]]
            assert not missing, f"acknowledged batch {o.batch.key} lost {missing[:5]}"
        else:
            assert n in (0, len(ids)), (
                f"unacknowledged batch {o.batch.key} is half-visible: {n}/{len(ids)} events")
            present += n == len(ids)
            absent += n == 0
    return present, absent


def resend_all(srv: NudgeServer, batches: dict[int, list[Batch]]) -> None:
    with Clients(srv, batches) as c:
        c.wait_for(lambda: len(c.outcomes) == sum(map(len, batches.values())), "the retry")
    assert not c.unexpected, c.unexpected[:3]
    assert all(o.acked for o in c.outcomes)


def db_check(path: Path, expected_ids: set[str]) -> dict[str, int]:
    """Invariants of the account file itself (server stopped)."""
    con = open_account_file(path.parents[2], path.parent.name)  # encrypted
    try:
        def one(sql: str) -> int:
            return int(con.execute(sql).fetchone()[0])

        dupes = con.execute("SELECT message_id, count(*) FROM events GROUP BY 1 "
                            "HAVING count(*) > 1 LIMIT 5").fetchall()
        assert not dupes, dupes
        stored = {r[0] for r in con.execute("SELECT message_id FROM events").fetchall()}
        assert stored == expected_ids, (len(stored), len(expected_ids),
                                        sorted(stored ^ expected_ids)[:5])
        assert one("SELECT count(*) - count(DISTINCT seq) FROM events") == 0
        # Compaction bookkeeping survived the kills: everything at or below the watermark
        # is in the sorted table, everything above it in the recent one.
        watermark = one("SELECT coalesce(max(value::BIGINT), 0) FROM meta "
                        "WHERE key = 'compacted_through'")
        assert one(f"SELECT count(*) FROM events_recent WHERE seq <= {watermark}") == 0
        assert one(f"SELECT count(*) FROM events_sorted WHERE seq > {watermark}") == 0
        # Events only point at live profiles, and the profile counters match the events.
        assert one("SELECT count(*) FROM events WHERE user_id IN "
                   "(SELECT from_id FROM profile_merges)") == 0
        assert one("SELECT count(*) FROM events e ANTI JOIN profiles p "
                   "ON e.user_id = p.user_id") == 0
        wrong = con.execute("""
            SELECT p.user_id, p.event_count, coalesce(e.n, 0) FROM profiles p
            LEFT JOIN (SELECT user_id, count(*) AS n FROM events GROUP BY 1) e
              ON e.user_id = p.user_id
            WHERE p.event_count <> coalesce(e.n, 0) LIMIT 5""").fetchall()
        assert not wrong, wrong
        assert one("SELECT count(*) FROM identities i ANTI JOIN profiles p "
                   "ON i.user_id = p.user_id") == 0
        return {"sorted": one("SELECT count(*) FROM events_sorted"),
                "recent": one("SELECT count(*) FROM events_recent"),
                "watermark": watermark}
    finally:
        con.close()


def send_unread(srv: NudgeServer, batch: Batch) -> socket.socket:
    """Send an upload and never read the answer: a request the client sees no ack for."""
    body = json.dumps({"d": batch.records}).encode()
    head = (f"POST /1/upload HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in srv.headers.items()) + "\r\n")
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.sendall(head.encode() + body)
    return sock


def wait_visible(srv: NudgeServer, batches: list[Batch]) -> None:
    """Until every batch's user is readable (a batch commits whole, so: until committed)."""
    deadline = time.monotonic() + 120
    pending = list(batches)
    while pending:
        assert time.monotonic() < deadline, "unanswered requests never committed"
        r = httpx.get(srv.url + "/1/profile", params={"identity": pending[0].user},
                      headers=srv.headers, timeout=60)
        if r.status_code == 200:
            pending.pop(0)
        else:
            time.sleep(0.01)


def attempted(outcomes: list[Outcome]) -> dict[int, list[Batch]]:
    """The batches the clients tried to send, per client, in order (what a client retries)."""
    out: dict[int, list[Batch]] = {}
    for o in sorted(outcomes, key=lambda o: (o.batch.key.split(".")[1],
                                               int(o.batch.key.split(".")[2]))):
        out.setdefault(int(o.batch.key.split(".")[1]), []).append(o.batch)
    return out


@pytest.mark.slow
def test_kill_9_loses_no_acknowledged_record_and_shows_no_half_request(tmp_path: Path) -> None:
    srv = make_server(tmp_path, {"NUDGE_COMPACT_THRESHOLD_ROWS": "1000",
                                 "NUDGE_INGEST_LOG": "true"})  # phase 5 kills the log drain
    sent: dict[str, Batch] = {}  # every batch a client tried to send, in any phase
    report: list[str] = []

    def kill_during(name: str, batches: dict[int, list[Batch]],
                    trigger: Callable[[Clients], bool], what: str,
                    unread: tuple[Batch, ...] | list[Batch] = ()) -> list[Batch]:
        """Ingest, kill -9 when ``trigger`` holds, restart, check, retry, check.

        ``unread`` batches are sent once ``trigger`` holds without reading the answer, and
        the kill waits until they are committed: unacknowledged requests that must be
        wholly present after the restart.
        """
        with Clients(srv, batches) as clients:
            clients.wait_for(lambda: trigger(clients), what)
            socks = [send_unread(srv, b) for b in unread]
            wait_visible(srv, unread)
            srv.kill()
        for sock in socks:
            sock.close()
        assert not clients.unexpected, clients.unexpected[:3]
        clients.outcomes += [Outcome(b, False) for b in unread]
        srv.start()
        tried = attempted(clients.outcomes)
        phase_batches = [b for bs in tried.values() for b in bs]
        sent.update((b.key, b) for b in phase_batches)
        counts = api_event_counts(srv, phase_batches)
        present, absent = check_recovered(counts, clients.outcomes, phase_batches)
        report.append(f"{name}: {clients.acked} acknowledged, {present + absent} not "
                      f"({present} wholly present, {absent} wholly absent)")
        assert present >= len(unread)
        # The client retries everything it tried: nothing twice, nothing missing.
        resend_all(srv, tried)
        counts = api_event_counts(srv, phase_batches)
        assert set(counts) == {m for b in phase_batches for m in b.event_ids}
        assert max(counts.values()) == 1
        return phase_batches

    try:
        # 1. Early in sustained ingest.
        kill_during("early", {c: make_batches("early", c, 100) for c in range(CLIENTS)},
                    lambda c: c.acked >= 6, "6 acknowledged batches",
                    unread=make_batches("early", CLIENTS, 3))

        # 2. Right after a compaction (NUDGE_COMPACT_THRESHOLD_ROWS=1000, 31 events a batch).
        log = CompactionLog(srv.data_dir / "server.log")
        base = log.count()
        kill_during("compaction", {c: make_batches("compact", c, 200) for c in range(CLIENTS)},
                    lambda c: log.count() > base, "a compaction")
        assert log.count() > base

        # 3. During a client retry: half the batches were stored before; the retry resends all
        #    of them (duplicates first, then new ones) and is killed half-way.
        retry = {c: make_batches("retry", c, 16) for c in range(CLIENTS)}
        resend_all(srv, {c: bs[:8] for c, bs in retry.items()})
        kill_during("retry", retry, lambda c: min(c.acked_by[i] for i in retry) >= 9,
                    "every client's retry to get past the stored half")

        # 4. Right after a restart, at the first acknowledged batch.
        srv.kill()
        srv.start()
        kill_during("restart", {c: make_batches("restart", c, 100) for c in range(CLIENTS)},
                    lambda c: c.acked >= 1, "the first acknowledged batch",
                    unread=make_batches("restart", CLIENTS, 2))

        # 5. Requests acknowledged from the ingest log (one identifier per record), killed
        #    while the writer drains the log into DuckDB: the restart replays the log. No
        #    unread requests here: waiting for them to be visible would wait for the drain.
        kill_during("log", {c: make_batches("log", c, 100, plain=True) for c in range(CLIENTS)},
                    lambda c: c.acked >= 12, "12 batches acknowledged from the log")

    finally:
        srv.stop()
    # Every record of every phase, once more, from the file itself after a clean stop:
    # what was verified after each kill also survived the kills that followed.
    stats = db_check(srv.data_dir / "accounts" / srv.account_id / "events.duckdb",
                     {m for b in sent.values() for m in b.event_ids})
    assert stats["sorted"] > 0 and stats["watermark"] > 0, stats  # compaction did happen
    print("\n" + "\n".join(report) + f"\nfile: {stats}")
