"""The ingest log: acknowledged records as sealed, fsync'd frames, drained into DuckDB.

An HTTP upload is acknowledged once its validated records are in this append-only log on
disk (one ``fdatasync`` per group of requests, the same durability as a DuckDB commit); the
account's writer drains the log into DuckDB in large batches, where a commit's fixed cost
(about ten statements and DuckDB's own WAL fsync) is shared by ~10,000 records instead of
the ~800 that the requests in flight give (docs/benchmarks.md, section 1).

Layout: ``<account dir>/ingest-log/<first lsn>.seg`` segments of frames. A frame holds the
entries (one per request) of one group append::

    magic "NLG1" | payload length u32 | first lsn u64 | last lsn u64 | crc32 u32 | payload

The payload is msgpack of ``[(lsn, [record, ...]), ...]`` sealed with AES-256-GCM (a random
nonce per frame, the header as associated data) under a key derived from the account's
data key, so the log holds no plaintext (tests/privacy scan the data directory). Every
DuckDB commit that applies log entries also stores the last applied lsn in ``meta``
(``log_applied``) in the same transaction; at start the entries after it are replayed, and
segments whose entries are all applied are deleted. A torn frame at the end of the last
segment (a crash during an append, never acknowledged) is cut off.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
import queue
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nudge.ingest.records import Date, ProfileOp, Record

log = logging.getLogger("nudge.ingest.log")

MAGIC = b"NLG1"
_HEADER = struct.Struct(">4sIQQI")
_LSNS = struct.Struct(">QQ")
_NONCE = 12
_DATE = struct.Struct(">d")
_EXT_DATE = 1
_NESTED = {Date, dict, list}


class LogCorrupt(RuntimeError):
    """A frame in the middle of the log does not read back (not a torn tail)."""


def log_key(encryption_key: str | None) -> bytes | None:
    """The log's AES key, derived from the account database's key (None: unencrypted)."""
    if encryption_key is None:
        return None
    return hashlib.sha256(b"nudge-ingest-log" + encryption_key.encode()).digest()


# -- records <-> msgpack ------------------------------------------------------------------
def _out(v: Any) -> Any:
    t = type(v)
    if t is Date:
        return msgspec.msgpack.Ext(_EXT_DATE, _DATE.pack(v.epoch))
    if t is dict:
        return {k: _out(x) for k, x in v.items()}
    if t is list:
        return [_out(x) for x in v]
    return v


def _props_out(props: dict[str, Any]) -> dict[str, Any]:
    for v in props.values():
        if type(v) in _NESTED:
            return {k: _out(x) for k, x in props.items()}
    return props


def pack(rec: Record) -> tuple[Any, ...]:
    """A record as a msgpack-able tuple (dates as an extension type, not as a dict)."""
    return (rec.kind, rec.ids, rec.ts, rec.message_id, rec.index, rec.event,
            _props_out(rec.props) if rec.props else rec.props,
            [(o.op, o.name, _out(o.value)) for o in rec.ops] if rec.ops else [],
            rec.token, rec.merge_allowed, rec.merge_from)


def unpack(t: list[Any]) -> Record:
    kind, ids, ts, mid, index, event, props, ops, token, merge_allowed, merge_from = t
    return Record(kind=kind, ids=ids, ts=ts, message_id=mid, index=index, event=event,
                  props=props, ops=[ProfileOp(*o) for o in ops],
                  token=tuple(token) if token else None,  # type: ignore[arg-type]
                  merge_allowed=merge_allowed, merge_from=[tuple(k) for k in merge_from])


def _ext(code: int, data: memoryview) -> Any:
    if code == _EXT_DATE:
        return Date(_DATE.unpack(data)[0])
    raise LogCorrupt(f"unknown extension type {code} in the ingest log")


_ENCODE = msgspec.msgpack.Encoder().encode
_DECODE = msgspec.msgpack.Decoder(ext_hook=_ext).decode
decode_packed = _DECODE  # msgpack with dates read back (nudge/demo_load.py)


# -- the log ---------------------------------------------------------------------------
@dataclass
class Entry:
    """One request's records; ``lsn`` is assigned when the log thread takes it."""

    records: list[Record]
    item: Any  # handed to on_durable once the frame is on disk
    durable: concurrent.futures.Future[int]
    lsn: int = 0


class IngestLog:
    """Segments of one account's log, and the thread that appends to them.

    ``on_durable(entries)`` runs on the log thread after each frame's fsync and before the
    requests' ``durable`` futures are resolved (the store queues the entries for its writer
    there, so that anything submitted after an acknowledgment is queued after it).
    """

    def __init__(self, directory: Path, key: bytes | None, account_id: str,
                 segment_bytes: int, on_durable: Callable[[list[Entry]], None]) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._aes = AESGCM(key) if key is not None else None
        self._aad = f"nudge-ingest-log:{account_id}".encode()
        self.segment_bytes = segment_bytes
        self.on_durable = on_durable
        self._segments: list[tuple[int, Path]] = []  # (first lsn, path), oldest first
        self._last_lsn: dict[Path, int] = {}
        self._fd: int | None = None
        self._size = 0
        self.next_lsn = 1
        self._queue: queue.Queue[Entry | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- recovery ----------------------------------------------------------------------
    def recover(self, applied: int) -> list[tuple[int, list[Record]]]:
        """Entries after ``applied`` in lsn order; cuts a torn tail, deletes applied segments."""
        paths = sorted(self.dir.glob("*.seg"))
        out: list[tuple[int, list[Record]]] = []
        last = applied
        for path in paths:
            seg_last = self._read_segment(path, applied, out)
            self._segments.append((int(path.stem), path))
            self._last_lsn[path] = seg_last
            last = max(last, seg_last)
        self.next_lsn = last + 1
        self.release(applied)
        return out

    def _read_segment(self, path: Path, applied: int,
                      out: list[tuple[int, list[Record]]]) -> int:
        data = path.read_bytes()
        pos, last = 0, 0
        while pos < len(data):
            frame = self._frame_at(data, pos)
            if frame is None:
                # Only an append that failed or was cut by a crash ends a segment this way
                # (a failed append abandons its segment), and it was never acknowledged.
                log.warning("ingest log %s: cutting a torn frame at byte %d (never "
                            "acknowledged)", path, pos)
                with path.open("r+b") as f:
                    f.truncate(pos)
                    os.fsync(f.fileno())
                break
            end, first_lsn, last_lsn, payload = frame
            if last_lsn > applied:
                for lsn, recs in _DECODE(self._open(payload, first_lsn, last_lsn)):
                    if lsn > applied:
                        out.append((lsn, [unpack(r) for r in recs]))
            last = max(last, last_lsn)
            pos = end
        return last

    def _frame_at(self, data: bytes, pos: int) -> tuple[int, int, int, bytes] | None:
        if len(data) - pos < _HEADER.size:
            return None
        magic, length, first, last, crc = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if magic != MAGIC or end > len(data):
            return None
        payload = data[pos + _HEADER.size:end]
        if zlib.crc32(payload) != crc:
            return None
        return end, first, last, payload

    def _open(self, payload: bytes, first: int, last: int) -> bytes:
        if self._aes is None:
            return payload
        try:
            return self._aes.decrypt(payload[:_NONCE], payload[_NONCE:],
                                     self._aad + _LSNS.pack(first, last))
        except InvalidTag:
            raise LogCorrupt(f"ingest log frame {first}-{last} does not open with this "
                             "account's key") from None

    # -- appends -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._appender, name="ingest-log", daemon=True)
        self._thread.start()

    def append(self, records: list[Record], item: Any) -> concurrent.futures.Future[int]:
        """Queue one request's records; the future resolves (to its lsn) once durable."""
        entry = Entry(records, item, concurrent.futures.Future())
        self._queue.put(entry)
        return entry.durable

    def _appender(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            entries: list[Entry] = []
            while True:
                if item is None:
                    stop = True
                else:
                    entries.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if entries:
                self._write(entries)

    def _write(self, entries: list[Entry]) -> None:
        try:
            first = self.next_lsn
            for i, e in enumerate(entries):
                e.lsn = first + i
            body = _ENCODE([(e.lsn, [pack(r) for r in e.records]) for e in entries])
            last = first + len(entries) - 1
            with self._lock:
                if self._fd is None or self._size >= self.segment_bytes:
                    self._rotate(first)
                if self._aes is not None:
                    nonce = os.urandom(_NONCE)
                    body = nonce + self._aes.encrypt(nonce, body,
                                                     self._aad + _LSNS.pack(first, last))
                frame = _HEADER.pack(MAGIC, len(body), first, last, zlib.crc32(body)) + body
                assert self._fd is not None
                os.write(self._fd, frame)
                os.fdatasync(self._fd)
                self._size += len(frame)
                self._last_lsn[self._segments[-1][1]] = last
            self.next_lsn = last + 1
        except BaseException as e:  # noqa: BLE001 - every waiting request learns of it
            log.exception("ingest log append failed")
            self.next_lsn += len(entries)  # lsns are never reused; gaps are harmless
            self._close_fd()  # the next append starts a fresh segment after a torn frame
            for entry in entries:
                entry.durable.set_exception(e)
            return
        self.on_durable(entries)
        for entry in entries:
            entry.durable.set_result(entry.lsn)

    def _rotate(self, first_lsn: int) -> None:
        self._close_fd()
        path = self.dir / f"{first_lsn:020d}.seg"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._size = os.fstat(self._fd).st_size
        self._segments.append((first_lsn, path))
        self._last_lsn[path] = first_lsn - 1
        dfd = os.open(self.dir, os.O_RDONLY)  # make the new file's name durable too
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def rekey(self, key: bytes | None) -> None:
        """Seal the frames from now on under ``key``, in a new segment (the account file was
        rewritten under a new key: nudge/privacy/shred.py). Frames sealed under the old key
        and not yet applied are applied from memory; only a crash before that would leave
        frames that no longer open (recovery then stops with ``LogCorrupt``)."""
        with self._lock:
            self._close_fd()
            self._aes = AESGCM(key) if key is not None else None

    # -- cleanup ---------------------------------------------------------------------------
    def release(self, applied: int, rotate: bool = False) -> None:
        """Delete segments whose entries are all applied; ``rotate`` closes the active one
        first (erasure: nothing of an erased person may stay behind in a log file)."""
        with self._lock:
            if rotate and self._fd is not None:
                self._close_fd()
            keep = []
            for first, path in self._segments:
                active = self._fd is not None and path == self._segments[-1][1]
                if not active and self._last_lsn.get(path, 0) <= applied:
                    path.unlink(missing_ok=True)
                    self._last_lsn.pop(path, None)
                else:
                    keep.append((first, path))
            self._segments = keep

    def close(self) -> None:
        """Stop appending (queued appends are written first)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        with self._lock:
            self._close_fd()

    def set_key(self, key: bytes | None) -> None:
        """Seal frames from now on with ``key``: the account file was rewritten under a new
        key after an erasure (nudge/privacy/shred.py, which closes the log, applies and
        releases every segment first, then calls this and :meth:`start`)."""
        with self._lock:
            if self._thread is not None or self._segments:
                raise RuntimeError("the ingest log's key changes only while it is closed "
                                   "and empty")
            self._aes = AESGCM(key) if key is not None else None
