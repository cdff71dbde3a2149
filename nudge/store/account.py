"""An account store: one DuckDB file per account, one writer thread, group commit.

Requests hand validated records to ``submit``; the writer thread drains everything queued
meanwhile into one transaction (group commit), and each request is answered only after that
transaction is durable in DuckDB's write-ahead log. Readers use their own cursors and see
every committed record at once.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import datetime as dt
import gc
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import msgspec
import pyarrow as pa

from nudge.clock import clock
from nudge.config import Settings
from nudge.ingest.identity import IdentityState, Key
from nudge.ingest.log import Entry, IngestLog, log_key
from nudge.ingest.profiles import ProfileRow
from nudge.ingest.records import Record
from nudge.privacy import storage, suppression
from nudge.store import metrics, user_sets
from nudge.store.catalog import EPOCH, PropertyCatalog, from_column_value
from nudge.store.commit import Commit, CommitResult
from nudge.store.runs import Run, SortedRuns, insert_run, run_stats
from nudge.store.schema import DDL

log = logging.getLogger("nudge.store")
T = TypeVar("T")
_JSON = msgspec.json.Decoder()
IDENTITY_CACHE_MAX = 2_000_000  # identifiers cached in memory before the cache is emptied
# (store, ingest log position) that the reads of one request wait for (read_position).
_READ_AT: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "nudge_read_at", default=None)

# Live bus: called on the writer thread after every durable commit with
# (account_id, [(user_id, event, ts, properties, message_id), ...]) for the new (not
# duplicate) events. Subscribers (nudge/engage/bus.py) must only enqueue: a slow
# subscriber delays the next commit. Nothing is built when there are no subscribers.
CommittedEvent = tuple[int, str, float, dict[str, Any], str]
commit_subscribers: list[Callable[[str, list[CommittedEvent]], None]] = []
# Profile changes (journeys' live segment entry, nudge/journeys/segment_entry.py): called on the
# writer thread after each durable commit with (account_id, user ids whose profile row
# changed). Same rule: only enqueue.
profile_subscribers: list[Callable[[str, list[int]], None]] = []


@dataclass
class _Pending:
    records: list[Record]
    future: concurrent.futures.Future[CommitResult]
    lsn: int = 0  # its ingest log entry (0: not logged, acknowledged after its commit)


def infallible(rec: Record) -> bool:
    """True when a commit cannot reject the record (only identity conflicts, error 520,
    are decided at commit time, and they need two identifiers or an explicit merge)."""
    return len(rec.ids) == 1 and rec.token is None and not rec.merge_from


def sql_string(value: str) -> str:
    """A SQL string literal (for the few statements that take no parameters)."""
    return "'" + value.replace("'", "''") + "'"


def _epoch(v: dt.datetime | None) -> float | None:
    return None if v is None else (v - EPOCH).total_seconds()


class AccountStore:
    """The DuckDB silo of one account."""

    def __init__(self, account_id: str, path: Path, settings: Settings,
                 encryption_key: str | None = None) -> None:
        """``encryption_key``: the account's DuckDB key (``Keyring.duckdb_key``); servers and
        the CLI always pass it (StoreRegistry); ``None`` (unencrypted) is for store tests."""
        self.account_id = account_id
        self.path = path
        self.settings = settings
        path.parent.mkdir(parents=True, exist_ok=True)
        self.applied_lsn = self.durable_lsn = 0  # ingest log positions (_open_log)
        # Recent events compacted into a sorted run at this many (bulk loads raise it:
        # nudge/bulk.py bulk_mode).
        self.compact_rows = settings.compact_threshold_rows
        self._db_lock = threading.Lock()  # cursors vs. reopen_file
        self.db = self._connect(encryption_key)
        self.writer_cursor = self.cursor()
        for ddl in DDL:
            self.writer_cursor.execute(ddl)
        self._load_state()
        self._queue: queue.Queue[_Pending | _Job | None] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._writer, name=f"writer-{account_id}",
                                        daemon=True)
        self._open_log(encryption_key)
        self._thread.start()
        if self.log is not None:
            self.log.start()

    # -- ingest log (nudge/ingest/log.py) --------------------------------------------------
    def _open_log(self, encryption_key: str | None) -> None:
        """Open the account's ingest log and queue what it holds beyond the last applied
        entry (a crash between the log's fsync and DuckDB's commit) ahead of anything new."""
        row = self.writer_cursor.execute(
            "SELECT value FROM meta WHERE key = 'log_applied'").fetchone()
        self.applied_lsn = self.durable_lsn = int(row[0]) if row else 0
        self._applied_cv = threading.Condition()
        self._backlog = 0  # logged records not yet committed to DuckDB
        # (lsn, when it was logged) of the entries not yet committed, oldest first: the
        # bound on how long an acknowledged record can wait to be visible (log_lag).
        self._unapplied: collections.deque[tuple[int, float]] = collections.deque()
        self._backlog_lock = threading.Lock()
        self.log: IngestLog | None = None
        if not self.settings.ingest_log:
            return
        self.log = IngestLog(self.path.parent / "ingest-log", log_key(encryption_key),
                             self.account_id, self.settings.ingest_log_segment_bytes,
                             self._logged)
        replay = self.log.recover(self.applied_lsn)
        for lsn, records in replay:
            self._queue.put(_Pending(records, concurrent.futures.Future(), lsn))
        if replay:
            log.info("account %s: replaying %d ingest log entries (%d records)",
                     self.account_id, len(replay), sum(len(r) for _, r in replay))
            self._backlog = sum(len(r) for _, r in replay)
            self._unapplied.extend((lsn, time.monotonic()) for lsn, _ in replay)
            self.durable_lsn = replay[-1][0]

    def _logged(self, entries: list[Entry]) -> None:
        """Log thread, after a frame's fsync: hand the entries to the writer in lsn order."""
        now = time.monotonic()
        with self._backlog_lock:
            self._backlog += sum(len(e.records) for e in entries)
            self._unapplied.extend((e.lsn, now) for e in entries)
        for e in entries:
            pending = e.item
            pending.lsn = e.lsn
            self._queue.put(pending)
        self.durable_lsn = entries[-1].lsn

    def log_lag(self) -> float:
        """Seconds the oldest acknowledged entry not yet in DuckDB has waited (0: none)."""
        with self._backlog_lock:
            return time.monotonic() - self._unapplied[0][1] if self._unapplied else 0.0

    def log_must_wait(self) -> bool:
        """Whether a new request must wait for its commit instead of the log: the backlog
        is bounded in time (``ingest_log_max_lag_ms``: the oldest unapplied entry's age,
        which is what a read waits for) and in size (``ingest_log_max_backlog``). A bound
        in records alone let the backlog take seconds to drain on a loaded machine
        (freshness p99 2-6 s); one derived from the measured drain rate fed on itself
        (docs/benchmarks.md)."""
        return (self._backlog >= self.settings.ingest_log_max_backlog
                or self.log_lag() * 1000 >= self.settings.ingest_log_max_lag_ms)

    def _applied(self, lsn: int, records: int) -> None:
        with self._backlog_lock:
            self._backlog -= records
            while self._unapplied and self._unapplied[0][0] <= lsn:
                self._unapplied.popleft()
        with self._applied_cv:
            self.applied_lsn = max(self.applied_lsn, lsn)
            self._applied_cv.notify_all()
        if self.log is not None:
            self.log.release(self.applied_lsn)

    @contextlib.contextmanager
    def read_position(self) -> Any:
        """Inside the block, reads wait for what was acknowledged when it began, once.

        A request that reads through several cursors (a profile: the identifier lookup,
        the row, the identifiers, the counts) otherwise waited for the newest position at
        each one, i.e. for one more drain of the log per cursor under steady ingest (the
        profile read's freshness was twice the timeline's, docs/benchmarks.md). Reads see
        every record acknowledged before the request either way."""
        token = _READ_AT.set((id(self), self.durable_lsn))
        try:
            yield
        finally:
            _READ_AT.reset(token)

    def wait_applied(self, timeout: float = 30.0) -> bool:
        """Wait until every acknowledged log entry is in DuckDB (read-your-writes); a
        no-op when nothing is pending or on the writer thread itself."""
        target = self.durable_lsn
        pinned = _READ_AT.get()
        if pinned is not None and pinned[0] == id(self):
            target = pinned[1]
        if self.applied_lsn >= target or threading.current_thread() is self._thread:
            return True
        with self._applied_cv:
            return self._applied_cv.wait_for(
                lambda: self.applied_lsn >= target or self._closed, timeout)

    # -- startup ------------------------------------------------------------------------
    def _connect(self, encryption_key: str | None) -> duckdb.DuckDBPyConnection:
        db = duckdb.connect(":memory:")
        # Every TIMESTAMP column holds UTC. Casts like to_timestamp(?)::TIMESTAMP and now()
        # go through the session time zone, which defaults to the host's; pin it to UTC for
        # every cursor (GLOBAL: cursors are sessions of their own) so that time filters and
        # the dedup window do not shift by the host's UTC offset.
        db.execute("SET GLOBAL TimeZone = 'UTC'")
        if self.settings.duckdb_memory_limit:
            db.execute("SET memory_limit = ?", [self.settings.duckdb_memory_limit])
        if self.settings.duckdb_threads:
            db.execute(f"SET threads = {int(self.settings.duckdb_threads)}")
        # ATTACH (rather than connect) so that the file is encrypted with the account's key
        # (nudge/privacy/storage.py; migrates an old unencrypted file on first open).
        storage.attach(db, self.path, encryption_key, "acct")
        return db

    def _load_state(self) -> None:
        cur = self.writer_cursor
        self.catalog = PropertyCatalog(
            cur.execute("SELECT scope, name, column_name, type FROM property_catalog").fetchall(),
            self.settings.max_typed_columns)
        self.identity = IdentityState(
            merged_into=dict(cur.execute("SELECT from_id, to_id FROM profile_merges").fetchall()),
            next_uid=1 + int(cur.execute(
                "SELECT greatest((SELECT coalesce(max(user_id), 0) FROM profiles),"
                " (SELECT coalesce(max(from_id), 0) FROM profile_merges))").fetchone()[0]))
        self.next_seq = 1 + int(cur.execute(
            "SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
        row = cur.execute("SELECT value FROM meta WHERE key = 'compacted_through'").fetchone()
        self.compacted_through = int(row[0]) if row else 0
        user_sets.ensure(cur, self.compacted_through)  # nudge/store/user_sets.py
        self.sorted_runs = SortedRuns.load(cur, self.settings, self.compacted_through)
        self._load_identities(cur)
        # Ids of erased people are never handed out again (nudge/privacy/gdpr.py).
        row = cur.execute("SELECT value FROM meta WHERE key = 'next_uid_floor'").fetchone()
        if row:
            self.identity.next_uid = max(self.identity.next_uid, int(row[0]))
        self.suppressed: set[int] = suppression.load(self, cur)  # nudge/privacy/suppression.py
        self.event_props: set[tuple[str, str, str]] = set(
            cur.execute("SELECT event, name, type FROM event_properties").fetchall())
        # The dedup window: message ids of recently ingested events, oldest first.
        self.dedup: set[str] = set()
        self._dedup_order: collections.deque[tuple[float, list[str]]] = collections.deque()
        since = clock.now() - self.settings.dedup_window_s
        ids = cur.execute(
            "SELECT message_id FROM events WHERE ingested_at >= to_timestamp(?)::TIMESTAMP "
            "ORDER BY seq DESC LIMIT ?", [since, self.settings.dedup_max_ids]).fetchall()
        recent = [r[0] for r in ids]
        # Profile/token records' ids (events' ids are in the events tables); drop expired ones.
        cur.execute("DELETE FROM record_ids WHERE ingested_at < to_timestamp(?)::TIMESTAMP",
                    [since])
        recent += [r[0] for r in cur.execute(
            "SELECT message_id FROM record_ids ORDER BY ingested_at DESC LIMIT ?",
            [self.settings.dedup_max_ids]).fetchall()]
        self.dedup.update(recent)
        self._dedup_order.append((clock.now(), recent))
        # The caches just loaded (identity map, dedup window) are long-lived: keep Python's
        # cyclic GC from rescanning them at every full collection while requests allocate.
        gc.freeze()

    # -- identity cache ---------------------------------------------------------------------
    def _load_identities(self, cur: Any) -> None:
        """Cache the whole identity map when it is small enough: a key missing from a
        complete cache is new, so commits need no lookup statement (one of the few per
        commit; docs/benchmarks.md). Bigger maps are cached as keys come up."""
        n = int(cur.execute("SELECT count(*) FROM identities").fetchone()[0])
        if n > IDENTITY_CACHE_MAX // 2:
            return
        state = self.identity
        for kind, value, uid, identity in cur.execute(
                "SELECT i.kind, i.value, i.user_id, p.identity FROM identities i "
                "LEFT JOIN profiles p ON p.user_id = i.user_id").fetchall():
            state.ids[(kind, value)] = uid
            state.identity_of[uid] = identity
        state.complete = True

    def lookup_identities(self, keys: set[Key]) -> None:
        """Load the given identifiers (and their profiles' identity) into the cache."""
        if not keys:
            return
        state = self.identity
        if len(state.ids) > IDENTITY_CACHE_MAX:  # bound memory; entries are re-read on demand
            state.ids.clear()
            state.identity_of.clear()
            state.complete = False
        cur = self.writer_cursor
        wanted = pa.table({"kind": [k for k, _ in keys], "value": [v for _, v in keys]})
        cur.register("_wanted", wanted)
        rows = cur.execute(
            "SELECT i.kind, i.value, i.user_id, p.identity FROM identities i "
            "JOIN _wanted w ON i.kind = w.kind AND i.value = w.value "
            "LEFT JOIN profiles p ON p.user_id = i.user_id").fetchall()
        cur.unregister("_wanted")
        for kind, value, uid, identity in rows:
            state.ids[(kind, value)] = uid
            state.identity_of[uid] = identity

    def remember_ids(self, ids: list[str], now: float) -> None:
        self.dedup.update(ids)
        self._dedup_order.append((now, ids))
        horizon = now - self.settings.dedup_window_s
        while self._dedup_order and (
            self._dedup_order[0][0] < horizon or len(self.dedup) > self.settings.dedup_max_ids
        ):
            _, old = self._dedup_order.popleft()
            self.dedup.difference_update(old)

    # -- writes ---------------------------------------------------------------------------
    async def submit(self, records: list[Record]) -> CommitResult:
        """Queue records for the next group commit; returns once they are durable."""
        return await asyncio.wrap_future(self.submit_nowait(records))

    def submit_nowait(self, records: list[Record]) -> concurrent.futures.Future[CommitResult]:
        fut: concurrent.futures.Future[CommitResult] = concurrent.futures.Future()
        if self._closed:
            fut.set_exception(RuntimeError("store is closed"))
            return fut
        self._queue.put(_Pending(records, fut))
        return fut

    async def submit_logged(self, records: list[Record]) -> CommitResult:
        """Queue records through the ingest log; returns once they are durable there.

        A request that a commit might reject in part (identity conflicts) is answered after
        its commit as before, and so is every request while the backlog is past its bound
        in time or size (``log_must_wait``; backpressure: freshness stays bounded).
        Without the log (``NUDGE_INGEST_LOG=0``): ``submit``.
        """
        if self.log is None or self._closed:
            return await self.submit(records)
        fut: concurrent.futures.Future[CommitResult] = concurrent.futures.Future()
        wait_commit = self.log_must_wait() or not all(map(infallible, records))
        durable = self.log.append(records, _Pending(records, fut))
        await asyncio.wrap_future(durable)  # raises if the append failed
        if wait_commit:
            return await asyncio.wrap_future(fut)
        return CommitResult([None] * len(records))

    def write(self, records: list[Record]) -> CommitResult:
        """Blocking write (CLI, demo, import)."""
        return self.submit_nowait(records).result()

    def commit_queued(self) -> None:
        """Commit every request queued for the writer now; queued jobs stay queued. Writer
        thread only (the rewrite after an erasure applies the whole ingest log first)."""
        items: list[_Pending | _Job | None] = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        batch = [i for i in items if isinstance(i, _Pending)]
        if batch:
            self._commit(batch)
        for item in items:
            if not isinstance(item, _Pending):
                self._queue.put(item)

    def run_on_writer(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``fn`` on the writer thread between commits (compaction, merges, erasure)."""
        job = _Job(fn)
        self._queue.put(job)
        return job.future

    def _writer(self) -> None:
        stop = False
        while not stop:
            item = self._next_item()
            batch: list[_Pending] = []
            jobs: list[_Job] = []
            size = 0
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, _Job):
                    jobs.append(item)
                else:
                    batch.append(item)
                    size += len(item.records)
                if stop or size >= self.settings.commit_max_records:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._commit(batch)
            if jobs and self.log is not None:
                # Erasure and the like run as jobs, after every entry queued before them is
                # applied: close the active log segment and delete the applied ones, so that
                # no log file keeps what a job removes.
                self.log.release(self.applied_lsn, rotate=True)
            for job in jobs:
                job.run()
            self._maybe_compact()

    def _commit(self, batch: list[_Pending]) -> None:
        records = [r for p in batch for r in p.records]
        lsn = max(p.lsn for p in batch)
        logged = sum(len(p.records) for p in batch if p.lsn)
        started = time.perf_counter()
        try:
            commit = Commit(self, records)
            commit.log_lsn = lsn
            result = commit.run()
        except Exception as e:
            if len(batch) > 1:
                # One request must not fail the others it shared a commit with: the failed
                # commit changed nothing, so commit each request on its own.
                log.warning("group commit failed for account %s; retrying %d requests one "
                            "by one", self.account_id, len(batch))
                for p in batch:
                    self._commit([p])
                return
            log.exception("commit failed for account %s", self.account_id)
            batch[0].future.set_exception(e)
            if lsn:
                self._skip_entry(lsn, logged)
            return
        if lsn:
            self._applied(lsn, logged)
        if self.identity.complete and len(self.identity.ids) > IDENTITY_CACHE_MAX:
            self.identity.complete = False  # past the bound: back to looking keys up
        metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
        metrics.COMMIT_RECORDS.observe(len(records))
        pos = 0
        for p in batch:
            n = len(p.records)
            p.future.set_result(CommitResult(result.errors[pos:pos + n], result.stored_events,
                                             result.duplicates, result.first_seq, result.last_seq))
            pos += n
        if commit_subscribers and commit.plan.events:
            final, supp = commit.resolver.final, self.suppressed
            # Suppressed people's events were dropped by the commit: subscribers (triggers,
            # journeys, conversions) must not see them either.
            events = [(final(uid), rec.event or "", rec.ts, rec.props, rec.message_id)
                      for rec, uid in commit.plan.events
                      if not supp or (uid not in supp and final(uid) not in supp)]
            for subscriber in commit_subscribers if events else ():
                try:
                    subscriber(self.account_id, events)
                except Exception:
                    log.exception("commit subscriber failed for account %s", self.account_id)
        if profile_subscribers and commit.plan.touched:
            final = commit.resolver.final
            touched = sorted({final(u) for u in commit.plan.touched})
            for psub in profile_subscribers:
                try:
                    psub(self.account_id, touched)
                except Exception:
                    log.exception("profile subscriber failed for account %s", self.account_id)

    def _skip_entry(self, lsn: int, records: int) -> None:
        """A log entry that no commit accepts (a defect, or e.g. a full disk) is logged and
        passed over, so that it cannot block every later entry or each restart."""
        log.error("account %s: ingest log entry %d (%d records) could not be committed and "
                  "is skipped", self.account_id, lsn, records)
        metrics.LOG_SKIPPED.inc(records)
        try:
            self.writer_cursor.execute("INSERT OR REPLACE INTO meta VALUES ('log_applied', ?)",
                                       [str(max(lsn, self.applied_lsn))])
        except Exception:
            log.exception("account %s: could not record the skipped log entry", self.account_id)
        self._applied(lsn, records)

    # -- compaction -------------------------------------------------------------------------
    def recent_rows(self) -> int:
        return int(self.writer_cursor.execute("SELECT count(*) FROM events_recent").fetchone()[0])

    def _maybe_compact(self) -> None:
        if self.next_seq - 1 - self.compacted_through >= self.compact_rows:
            self.compact()
        if self.sorted_runs.due():  # a bounded merge step, rationed while requests queue
            self.sorted_runs.step(self.writer_cursor)

    def _next_item(self) -> _Pending | _Job | None:
        """The next queued item; while none is queued, merge sorted runs step by step."""
        while self.sorted_runs.pending():
            try:
                return self._queue.get_nowait()
            except queue.Empty:
                if not self.sorted_runs.step(self.writer_cursor):
                    break
        return self._queue.get()

    def compact(self) -> int:
        """Move recent events into the sorted table, ordered by (event, ts). Writer only."""
        cur = self.writer_cursor
        cur.execute("BEGIN TRANSACTION")
        try:
            hi = int(cur.execute("SELECT coalesce(max(seq), 0) FROM events_recent").fetchone()[0])
            moved = int(cur.execute("SELECT count(*) FROM events_recent").fetchone()[0])
            run = Run(self.compacted_through + 1, max(hi, self.compacted_through), moved,
                      run_stats(cur, "events_recent"))
            if moved:
                insert_run(cur, run)
            cur.execute("INSERT INTO events_sorted BY NAME "
                        "SELECT * FROM events_recent ORDER BY event, ts")
            user_sets.add_compacted(cur, self.compacted_through,
                                    max(hi, self.compacted_through))
            cur.execute("DELETE FROM events_recent")
            cur.execute("INSERT OR REPLACE INTO meta VALUES ('compacted_through', ?)",
                        [str(max(hi, self.compacted_through))])
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        self.compacted_through = max(hi, self.compacted_through)
        if moved:
            self.sorted_runs.appended(run)
        log.info("compacted %d events for account %s", moved, self.account_id)
        return moved

    def compact_now(self) -> int:
        """Compact on the writer thread (safe while ingest goes on)."""
        return self.run_on_writer(self.compact).result()

    def merge_runs_now(self) -> int:
        """Merge sorted runs on the writer thread until the merge policy is satisfied
        (benchmarks, tests, operators); returns the number of steps taken."""
        def merge_all() -> int:
            steps = 0
            while self.sorted_runs.pending() and self.sorted_runs.step(self.writer_cursor):
                steps += 1
            return steps
        return self.run_on_writer(merge_all).result()

    # -- reads ----------------------------------------------------------------------------
    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A read cursor on the account database; sees every acknowledged record (waits for
        the writer to apply acknowledged log entries first, usually a few milliseconds)."""
        self.wait_applied()
        with self._db_lock:
            cur = self.db.cursor()
            cur.execute("USE acct")  # each cursor starts on the default (in-memory) catalog
        return cur

    def reopen_file(self, replace: Callable[[], str | None]) -> None:
        """Close the database, let ``replace()`` put another file at ``self.path`` and
        return its key, and attach that (crypto-shredding, nudge/privacy/shred.py). Writer
        thread only; readers wait for the swap, reads in flight finish first."""
        with self._db_lock:
            self.db.close()
            key = replace()
            self.db = self._connect(key)
            if self.log is not None:
                # New log frames are sealed under the new file's key (segments before this
                # job were deleted once applied: _writer releases them before every job).
                self.log.rekey(log_key(key))
            cur = self.db.cursor()
            cur.execute("USE acct")
            self.writer_cursor = cur

    def user_for(self, kind: str, value: str) -> int | None:
        with self.cursor() as cur:
            row = cur.execute("SELECT user_id FROM identities WHERE kind = ? AND value = ?",
                              [kind, value]).fetchone()
        return None if row is None else int(row[0])

    def load_profiles(self, uids: list[int], cur: Any = None) -> dict[int, ProfileRow]:
        if not uids:
            return {}
        cur = cur or self.writer_cursor
        res = cur.execute("SELECT * FROM profiles WHERE user_id IN (SELECT unnest(?::BIGINT[]))",
                          [uids])
        names = [d[0] for d in res.description]
        out: dict[int, ProfileRow] = {}
        for values in res.fetchall():
            row = dict(zip(names, values, strict=True))
            props = _JSON.decode(row["props"]) if row["props"] else {}
            for col in self.catalog.by_scope("profile"):
                v = row.get(col.column)
                if v is not None:
                    props[col.name] = from_column_value(v, col.type)
            out[row["user_id"]] = ProfileRow(
                user_id=row["user_id"], identity=row["identity"], email=row["email"],
                phone=row["phone"], first_seen=_epoch(row["first_seen"]),
                last_seen=_epoch(row["last_seen"]), event_count=row["event_count"],
                first_event_seq=row["first_event_seq"], created_at=_epoch(row["created_at"]) or 0,
                updated_at=_epoch(row["updated_at"]) or 0, props=props)
        return out

    def identifiers_of(self, uid: int) -> list[tuple[str, str]]:
        with self.cursor() as cur:
            return [(k, v) for k, v in cur.execute(
                "SELECT kind, value FROM identities WHERE user_id = ? ORDER BY kind, created_at",
                [uid]).fetchall()]

    # -- shutdown ---------------------------------------------------------------------------
    def close(self) -> None:
        """Finish queued commits, then checkpoint and close the file."""
        if self._closed:
            return
        self._closed = True
        if self.log is not None:
            self.log.close()  # queued appends are written and handed to the writer first
        self._queue.put(None)
        self._thread.join()
        if self.log is not None:
            self.log.release(self.applied_lsn, rotate=True)
        try:
            self.writer_cursor.execute("CHECKPOINT")
        finally:
            self.db.close()


class _Job:
    """A function queued to run on the writer thread."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run(self) -> None:
        try:
            self.future.set_result(self.fn())
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits
            self.future.set_exception(e)
