"""The Nudge client: builds records, queues them and sends them in batches."""

from __future__ import annotations

import atexit
import collections
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from nudge_sdk import records
from nudge_sdk.errors import NO_RESPONSE, Reason, RecordError
from nudge_sdk.records import Properties, Timestamp
from nudge_sdk.transport import Rejection, RetryPolicy, Transport

logger = logging.getLogger("nudge_sdk")

ErrorCallback = Callable[[RecordError], None]

#: The server accepts at most this many records per request.
MAX_BATCH_SIZE = 1000
#: Upper bound of an uncompressed request body. The server's limit is 5 MiB and applies to
#: the decompressed body too, so gzip does not raise it; the margin is deliberate.
MAX_BODY_BYTES = 5_000_000
#: How long the interpreter's exit waits for queued records to be sent.
EXIT_FLUSH_TIMEOUT = 10.0

_ENVELOPE = len(b'{"d":[]}')


@dataclass(slots=True)
class _Item:
    """A queued record: the dict for error reports and its encoded JSON for the body."""

    record: dict[str, Any]
    payload: bytes
    queued_at: float


class Client:
    """Sends events and profile updates to a Nudge server.

    Calls return immediately: records go to a bounded in-memory queue that a background
    thread sends in batches of ``batch_size``, at least every ``flush_interval`` seconds.
    Records that cannot be stored are passed to ``on_error`` (or logged when no callback is
    given); the caller is never blocked and no exception escapes from the sending thread.

    With ``sync_mode=True`` every call sends its record before returning (for scripts and
    tests). Use the client as a context manager, or call :meth:`close`, so that the queue
    is flushed before the process exits (an ``atexit`` hook also tries, for at most
    ``EXIT_FLUSH_TIMEOUT`` seconds).

    ``on_error`` runs on the sending thread (on the caller's thread for records dropped
    when queued, and in sync mode); it must be quick and must not call :meth:`flush`.
    """

    def __init__(
        self,
        account_id: str,
        passcode: str,
        host: str = "http://localhost:8000",
        *,
        batch_size: int = 100,
        flush_interval: float = 0.5,
        max_queue: int = 100_000,
        gzip: bool = True,
        max_retries: int = 6,
        timeout: float = 10.0,
        on_error: ErrorCallback | None = None,
        sync_mode: bool = False,
        retry_base_delay: float = 0.5,
        retry_max_delay: float = 30.0,
    ) -> None:
        _check_config(account_id, passcode, batch_size, flush_interval, max_queue,
                      max_retries, timeout)
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_queue = max_queue
        self._timeout = timeout
        self._on_error = on_error
        self._sync_mode = sync_mode
        self._transport = Transport(
            host, account_id, passcode, gzip=gzip, timeout=timeout,
            retry=RetryPolicy(max_retries, retry_base_delay, retry_max_delay),
        )
        # One condition guards the queue and the counters below. flush() waits until
        # `_done` reaches the `_enqueued` it saw: one FIFO worker makes that exact.
        self._cond = threading.Condition()
        self._items: collections.deque[_Item] = collections.deque()
        self._queued_bytes = 0
        self._enqueued = 0
        self._done = 0
        self._flush_waiters = 0
        self._closed = False
        self._stopping = False
        self._abort = threading.Event()  # set by close(timeout) to cut retries short
        self._thread: threading.Thread | None = None
        if not sync_mode:
            self._thread = threading.Thread(target=self._run, name="nudge-sdk-sender",
                                            daemon=True)
            self._thread.start()
        _live_clients.add(self)

    # ---- public API -------------------------------------------------------------------

    def track(
        self,
        identity: str | int | None,
        event: str,
        properties: Properties | None = None,
        *,
        object_id: str | None = None,
        email: str | None = None,
        phone: str | None = None,
        ts: Timestamp | None = None,
        msg_id: str | None = None,
    ) -> str:
        """Record that a user did ``event``; returns the record's ``msgId``.

        Identify the user by ``identity`` (your user id) and/or ``object_id`` (an anonymous
        or device id), ``email``, ``phone``; pass ``None`` as identity for an anonymous
        user. ``ts`` defaults to now (datetime, date or epoch seconds; naive means UTC).
        ``msg_id`` is your own idempotency key; by default a random one is generated.

        Raises ValueError/TypeError for programming errors (no identifier, a property value
        that is not JSON); everything else is reported to ``on_error``.
        """
        ids = records.identifiers(identity, object_id, email, phone)
        return self._enqueue(records.event_record(ids, event, properties, ts, msg_id))

    def profile(
        self,
        identity: str | int | None,
        properties: Properties | None = None,
        *,
        object_id: str | None = None,
        email: str | None = None,
        phone: str | None = None,
        ts: Timestamp | None = None,
        msg_id: str | None = None,
    ) -> str:
        """Update a user's profile properties; returns the record's ``msgId``.

        Plain values set the property; use :func:`nudge_sdk.incr`, :func:`~nudge_sdk.decr`,
        :func:`~nudge_sdk.set_once`, :func:`~nudge_sdk.unset`, :func:`~nudge_sdk.add`,
        :func:`~nudge_sdk.remove` for other operations and datetimes (or
        :func:`~nudge_sdk.date`) for date values.
        """
        ids = records.identifiers(identity, object_id, email, phone)
        return self._enqueue(records.profile_record(ids, properties, ts, msg_id))

    def identify(
        self,
        identity: str | int,
        *,
        object_id: str | None = None,
        email: str | None = None,
        phone: str | None = None,
        properties: Properties | None = None,
        ts: Timestamp | None = None,
        msg_id: str | None = None,
    ) -> str:
        """Link ``identity`` to an anonymous ``object_id`` (and/or an email or phone).

        Sends one profile record carrying all the identifiers, so that the server joins the
        anonymous profile's history to the identified user. Typically called at login or
        sign-up with the device/cookie id seen before.
        """
        if identity is None:
            raise ValueError("identify() needs an identity")
        if object_id is None and email is None and phone is None:
            raise ValueError("identify() links the identity to object_id, email or phone; "
                             "give at least one (use profile() to update properties only)")
        return self.profile(identity, properties, object_id=object_id, email=email,
                            phone=phone, ts=ts, msg_id=msg_id)

    def inbox(self, identity: str | int, *, limit: int = 20, before: int | None = None,
              unread_only: bool = False) -> dict[str, Any]:
        """The user's in-app inbox, newest first: ``{"messages", "unread", "next"}`` (pass
        ``next`` as ``before`` for the following page). Read with the passcode, so call it
        from your server (apps read their own inbox with the write key and a user hash).

        Raises :class:`httpx.HTTPStatusError` when the server refuses (e.g. 400, 401).
        """
        params = {"identity": str(identity), "limit": str(limit)}
        if before is not None:
            params["before"] = str(before)
        if unread_only:
            params["unread_only"] = "true"
        r = self._transport.get("/1/inbox", params)
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def record_open(self, message: Mapping[str, Any]) -> bool:
        """Record that the user saw ``message`` — an inbox or in-app message from
        :meth:`inbox`, or a push payload — by requesting its signed open URL
        (``content.open_url``, or ``open_url`` at the top level of a push payload). The
        campaign report counts the open and the profile gets a ``Message Opened`` event, each
        once per message however often this is called. Returns whether the server accepted
        it. The URL's path and signature are sent to this client's ``host``.
        """
        content = message.get("content")
        url = (content.get("open_url") if isinstance(content, Mapping) else None) or \
            message.get("open_url")
        if not isinstance(url, str) or "/1/t/o/" not in url:
            raise ValueError("the message has no open_url (only push and in-app messages "
                             "carry one)")
        parts = urlsplit(url)
        path = parts.path[parts.path.index("/1/t/o/"):]
        params = dict(parse_qsl(parts.query))
        try:
            return self._transport.get(path, params).status_code == 200
        except httpx.HTTPError as exc:
            logger.warning("nudge: could not record an open: %s", exc)
            return False

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued so far and wait until it was sent or failed.

        Returns False if ``timeout`` seconds passed first (the records stay queued).
        """
        if self._thread is None:
            return True  # sync mode: nothing is ever queued
        if threading.current_thread() is self._thread:
            # Called from on_error on the sending thread: waiting for itself would deadlock.
            return False
        with self._cond:
            target = self._enqueued
            self._flush_waiters += 1  # makes the worker send partial batches right away
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: self._done >= target, timeout)
            finally:
                self._flush_waiters -= 1

    def close(self, timeout: float | None = None) -> bool:
        """Flush, stop the sending thread and release connections. Idempotent.

        With a ``timeout``, records still unsent when it expires (including those waiting
        for a retry) are reported to ``on_error`` as dropped. Returns True if everything
        queued was sent or failed in time. Records given after close are dropped.
        """
        with self._cond:
            if self._closed:
                return True
            self._closed = True
        _live_clients.discard(self)
        completed = self._stop_worker(timeout)
        self._transport.close()
        return completed

    @property
    def pending(self) -> int:
        """Records queued or being sent."""
        with self._cond:
            return self._enqueued - self._done

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ---- queueing (caller's thread) ------------------------------------------------------

    def _enqueue(self, record: dict[str, Any]) -> str:
        msg_id: str = record["msgId"]
        item = _Item(record, records.encode(record), time.monotonic())
        if len(item.payload) + _ENVELOPE > MAX_BODY_BYTES:
            self._drop(item, 413, f"record is larger than {MAX_BODY_BYTES} bytes")
        elif self._sync_mode:
            self._send_now(item)
        elif not self._push(item):
            self._drop(item, NO_RESPONSE, self._push_refusal())
        return msg_id

    def _push(self, item: _Item) -> bool:
        with self._cond:
            if self._closed or len(self._items) >= self._max_queue:
                return False
            self._items.append(item)
            self._queued_bytes += len(item.payload) + 1
            self._enqueued += 1
            # The worker sleeps without a timeout only while the queue is empty, and with
            # one otherwise; wake it only when that changes something.
            if len(self._items) == 1 or self._batch_ready():
                self._cond.notify_all()
        return True

    def _push_refusal(self) -> str:
        if self._closed:
            return "client is closed"
        return f"queue is full ({self._max_queue} records); is the server reachable?"

    def _send_now(self, item: _Item) -> None:
        if self._closed:
            self._drop(item, NO_RESPONSE, "client is closed")
            return
        self._deliver([item])

    def _drop(self, item: _Item, code: int, message: str) -> None:
        self._report([RecordError(item.record, code, message, "dropped")])

    # ---- sending (worker thread) ---------------------------------------------------------

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                if self._abort.is_set():
                    self._report(_errors(batch, NO_RESPONSE,
                                         "client closed before the record was sent", "dropped"))
                else:
                    self._deliver(batch)
            except Exception as exc:  # the sending thread must outlive any bug
                logger.exception("nudge: unexpected error while sending a batch")
                self._report(_errors(batch, NO_RESPONSE, f"unexpected error: {exc!r}", "failed"))
            finally:
                self._mark_done(len(batch))

    def _next_batch(self) -> list[_Item] | None:
        """Wait until a batch is due and take it; None once stopping with nothing left."""
        with self._cond:
            while True:
                if self._items and self._batch_due():
                    return self._take_batch()
                if not self._items and self._stopping:
                    return None
                self._cond.wait(self._time_until_due())

    def _batch_ready(self) -> bool:
        return len(self._items) >= self._batch_size or self._queued_bytes >= MAX_BODY_BYTES

    def _batch_due(self) -> bool:
        return (self._batch_ready() or self._flush_waiters > 0 or self._stopping
                or self._time_until_due() == 0)

    def _time_until_due(self) -> float | None:
        """Seconds until the oldest queued record has waited flush_interval."""
        if not self._items:
            return None
        return max(0.0, self._items[0].queued_at + self._flush_interval - time.monotonic())

    def _take_batch(self) -> list[_Item]:
        batch: list[_Item] = []
        size = _ENVELOPE
        while self._items and len(batch) < self._batch_size:
            cost = len(self._items[0].payload) + 1  # the record and its comma
            if batch and size + cost > MAX_BODY_BYTES:
                break
            batch.append(self._items.popleft())
            size += cost
            self._queued_bytes -= cost
        return batch

    def _mark_done(self, count: int) -> None:
        with self._cond:
            self._done += count
            self._cond.notify_all()

    def _deliver(self, batch: list[_Item]) -> None:
        """Upload one batch and report every record that was not stored."""
        body = b'{"d":[' + b",".join(item.payload for item in batch) + b"]}"
        result = self._transport.upload(body, self._abort)
        if result.delivered:
            self._report(_rejections(batch, result.rejections))
        elif result.status == 413 and len(batch) > 1:
            # The server's size limit may be lower than ours: halve until it fits.
            middle = len(batch) // 2
            self._deliver(batch[:middle])
            self._deliver(batch[middle:])
        else:
            self._report(_errors(batch, result.status, result.message, "failed"))

    def _stop_worker(self, timeout: float | None) -> bool:
        if self._thread is None:
            return True
        completed = self.flush(timeout)
        if not completed:
            self._abort.set()  # stop retrying; the worker reports the rest as dropped
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            # After an abort the worker may still be inside one HTTP request.
            self._thread.join(None if completed else self._timeout + 1)
        return completed

    # ---- error reporting -----------------------------------------------------------------

    def _report(self, errors: list[RecordError]) -> None:
        if not errors:
            return
        if self._on_error is None:
            logger.warning("nudge: %d record(s) not stored; first: %s", len(errors), errors[0])
            return
        for error in errors:
            try:
                self._on_error(error)
            except Exception:  # a broken callback must not stop delivery of other records
                logger.exception("nudge: on_error callback raised")


def _rejections(batch: list[_Item], rejections: Iterable[Rejection]) -> list[RecordError]:
    return [RecordError(batch[r.index].record, r.code, r.message, "rejected")
            for r in rejections if 0 <= r.index < len(batch)]


def _errors(batch: list[_Item], code: int, message: str, reason: Reason) -> list[RecordError]:
    return [RecordError(item.record, code, message, reason) for item in batch]


def _check_config(account_id: str, passcode: str, batch_size: int, flush_interval: float,
                  max_queue: int, max_retries: int, timeout: float) -> None:
    if not account_id or not passcode:
        raise ValueError("account_id and passcode are required")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}")
    if flush_interval <= 0 or timeout <= 0:
        raise ValueError("flush_interval and timeout must be positive")
    if max_queue < 1 or max_retries < 0:
        raise ValueError("max_queue must be positive and max_retries not negative")


# Clients still open when the interpreter exits get a bounded last flush. A WeakSet, so
# that this registry never keeps a client alive by itself.
_live_clients: weakref.WeakSet[Client] = weakref.WeakSet()


@atexit.register
def _close_live_clients() -> None:
    for client in list(_live_clients):
        try:
            client.close(timeout=EXIT_FLUSH_TIMEOUT)
        except Exception:
            logger.exception("nudge: error while closing a client at exit")
