"""The SDK's behaviour against the upload protocol: batching, gzip, retries, errors.

These drive the SDK with a scripted endpoint (tests/conftest.py) to produce 503/429/413
on demand; storage itself is tested against the real server in test_sdk_server.py.
"""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import nudge_sdk
import pytest
from nudge_sdk.transport import RetryPolicy
from sdk_stub import Errors, Reply, Request, StubUpload

FAST_RETRY: dict[str, Any] = {"retry_base_delay": 0.01, "retry_max_delay": 0.05}


# Fixtures live in the test modules: a conftest.py here would shadow the repository's
# root conftest, which the server tests import by name.
@pytest.fixture
def stub() -> Iterator[StubUpload]:
    server = StubUpload()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def errors() -> Errors:
    return Errors()


def client(stub: StubUpload, errors: Errors, **kw: Any) -> nudge_sdk.Client:
    return nudge_sdk.Client("acct-1", "secret", host=stub.url, on_error=errors,
                            **{**FAST_RETRY, **kw})


def test_gzip_body_and_auth_headers(stub: StubUpload, errors: Errors) -> None:
    with client(stub, errors, sync_mode=True) as c:
        c.track("u1", "Charged", {"Amount": 10})
    (req,) = stub.requests
    assert req.headers["Content-Encoding"] == "gzip"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["X-Nudge-Account-Id"] == "acct-1"
    assert req.headers["X-Nudge-Passcode"] == "secret"
    assert json.loads(gzip.decompress(req.raw))["d"][0]["evtName"] == "Charged"
    assert not errors


def test_gzip_can_be_turned_off(stub: StubUpload, errors: Errors) -> None:
    with client(stub, errors, sync_mode=True, gzip=False) as c:
        c.track("u1", "Charged")
    (req,) = stub.requests
    assert "Content-Encoding" not in req.headers
    assert json.loads(req.raw)["d"][0]["identity"] == "u1"


def test_batches_of_batch_size_in_order(stub: StubUpload, errors: Errors) -> None:
    with client(stub, errors, batch_size=10, flush_interval=60) as c:
        ids = [c.track("u1", "Viewed", {"n": i}) for i in range(25)]
        assert c.flush(timeout=10)
        assert [len(r.records) for r in stub.requests] == [10, 10, 5]
    assert [r["msgId"] for r in stub.delivered()] == ids
    assert len(set(ids)) == 25
    assert not errors


def test_flush_interval_sends_without_flush(stub: StubUpload, errors: Errors) -> None:
    with client(stub, errors, flush_interval=0.1) as c:
        c.track("u1", "Viewed")
        deadline = time.monotonic() + 5
        while not stub.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stub.requests, "the record was not sent within flush_interval"
        assert c.pending == 0 or c.flush(timeout=5)


def test_retries_503_then_429_with_retry_after(stub: StubUpload, errors: Errors) -> None:
    stub.then(Reply(503, {"error": "busy"}), Reply(429, {"error": "slow down"},
                                                    {"Retry-After": "1"}))
    with client(stub, errors, sync_mode=True) as c:
        msg_id = c.track("u1", "Charged", {"Amount": 10})
    assert [len(r.records) for r in stub.requests] == [1, 1, 1]
    # The same record (same msgId) on every attempt, so the server can deduplicate.
    assert {r.records[0]["msgId"] for r in stub.requests} == {msg_id}
    assert len({r.raw for r in stub.requests}) == 1
    assert stub.requests[2].at - stub.requests[1].at >= 0.95  # Retry-After honoured
    assert stub.delivered()[0]["msgId"] == msg_id
    assert not errors


def test_retry_on_connection_error_then_give_up(errors: Errors) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    c = nudge_sdk.Client("a", "p", host=url, on_error=errors, sync_mode=True, max_retries=2,
                         **FAST_RETRY)
    c.track("u1", "Charged")
    c.close()
    (err,) = errors
    assert (err.reason, err.code) == ("failed", 0)
    assert "Connect" in err.message and err.retryable


def test_gives_up_after_max_retries_and_reports_every_record(
        stub: StubUpload, errors: Errors) -> None:
    stub.then(*[Reply(503)] * 10)
    with client(stub, errors, max_retries=2, flush_interval=60) as c:
        sent = {c.track("u1", "Viewed", {"n": i}) for i in range(3)}
        c.flush(timeout=10)
    assert len(stub.requests) == 3  # the first attempt and 2 retries
    assert {e.record["msgId"] for e in errors} == sent
    assert {(e.reason, e.code) for e in errors} == {("failed", 503)}


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_no_retry_on_other_4xx(stub: StubUpload, errors: Errors, status: int) -> None:
    stub.then(Reply(status, {"error": "nope"}))
    with client(stub, errors, sync_mode=True) as c:
        c.track("u1", "Charged")
    assert len(stub.requests) == 1
    (err,) = errors
    assert (err.reason, err.code, err.message) == ("failed", status, "nope")


def test_per_record_errors_reach_on_error(stub: StubUpload, errors: Errors) -> None:
    def reject_second(req: Request) -> Reply:
        return Reply(200, {"status": "partial", "processed": len(req.records) - 1,
                           "unprocessed": [{"index": 1, "code": 511, "error": "bad name"}]})

    stub.then(reject_second)
    with client(stub, errors, flush_interval=60) as c:
        c.track("u1", "A")
        bad = c.track("u1", "B")
        c.track("u1", "C")
    (err,) = errors
    assert err.record["msgId"] == bad and err.record["evtName"] == "B"
    assert (err.reason, err.code, err.message) == ("rejected", 511, "bad name")
    assert not err.retryable


def test_413_halves_the_batch(stub: StubUpload, errors: Errors) -> None:
    def at_most_two(req: Request) -> Reply:
        return Reply(413, {"error": "too large"}) if len(req.records) > 2 else Reply()

    stub.then(*[at_most_two] * 20)
    with client(stub, errors, flush_interval=60) as c:
        ids = [c.track("u1", "Viewed", {"n": i}) for i in range(7)]
    assert [r["msgId"] for r in stub.delivered()] == ids
    assert not errors


def test_queue_full_drops_without_blocking(stub: StubUpload, errors: Errors) -> None:
    with client(stub, errors, max_queue=3, flush_interval=60) as c:
        started = time.monotonic()
        ids = [c.track("u1", "Viewed", {"n": i}) for i in range(5)]
        assert time.monotonic() - started < 1
        assert [(e.reason, e.record["msgId"]) for e in errors] == [
            ("dropped", ids[3]), ("dropped", ids[4])]
        assert "queue is full" in errors[0].message
    assert [r["msgId"] for r in stub.delivered()] == ids[:3]


def test_close_delivers_everything_and_later_calls_are_dropped(
        stub: StubUpload, errors: Errors) -> None:
    c = client(stub, errors, batch_size=50, flush_interval=60)
    ids = [c.track(f"u{i}", "Viewed") for i in range(120)]
    assert c.close() is True
    assert [r["msgId"] for r in stub.delivered()] == ids
    assert c._thread is not None and not c._thread.is_alive()
    c.track("u1", "Late")
    (err,) = errors
    assert (err.reason, err.message) == ("dropped", "client is closed")
    assert c.close() is True  # idempotent


def test_close_with_timeout_gives_up_on_a_failing_server(
        stub: StubUpload, errors: Errors) -> None:
    stub.then(*[Reply(503)] * 1000)
    c = client(stub, errors, max_retries=1000, batch_size=2, flush_interval=60,
               retry_base_delay=0.05, retry_max_delay=0.1)
    ids = {c.track("u1", "Viewed", {"n": i}) for i in range(5)}
    started = time.monotonic()
    assert c.close(timeout=0.5) is False
    assert time.monotonic() - started < 3
    # Every record is accounted for: the batch in flight failed, the rest were dropped.
    assert {e.record["msgId"] for e in errors} == ids
    assert {e.reason for e in errors} == {"failed", "dropped"}


def test_a_raising_on_error_does_not_stop_delivery(stub: StubUpload) -> None:
    def on_error(error: nudge_sdk.RecordError) -> None:
        raise RuntimeError("callback bug")

    stub.then(Reply(400, {"error": "bad"}))
    with nudge_sdk.Client("a", "p", host=stub.url, on_error=on_error, batch_size=1) as c:
        c.track("u1", "First")
        c.flush(timeout=5)
        c.track("u1", "Second")
    assert [r["evtName"] for r in stub.delivered()] == ["Second"]


def test_unreadable_200_counts_as_delivered(stub: StubUpload, errors: Errors) -> None:
    stub.then(Reply(200, {"unexpected": True}), Reply(200, ["not", "an", "object"]))
    with client(stub, errors, sync_mode=True) as c:
        c.track("u1", "A")
        c.track("u1", "B")
    assert len(stub.requests) == 2 and not errors


def test_backoff_is_exponential_with_full_jitter() -> None:
    policy = RetryPolicy(max_retries=6, base_delay=0.5, max_delay=4.0)
    for retry, ceiling in enumerate([0.5, 1, 2, 4, 4, 4]):
        delays = [policy.delay(retry) for _ in range(300)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8 and min(delays) < ceiling * 0.2  # jitter
    assert all(policy.delay(0, retry_after=3) >= 3 for _ in range(50))
    assert policy.delay(0, retry_after=10_000) == policy.max_retry_after


def test_many_threads_each_record_once(stub: StubUpload, errors: Errors) -> None:
    sent: list[str] = []

    def produce(n: int) -> None:
        sent.extend(c.track(f"u{n}", "Viewed", {"i": i}) for i in range(500))

    with client(stub, errors, batch_size=100, flush_interval=0.05) as c:
        threads = [threading.Thread(target=produce, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    delivered = [r["msgId"] for r in stub.delivered()]
    assert len(delivered) == len(sent) == 4000 and set(delivered) == set(sent)
    assert all(len(r.records) <= 100 for r in stub.requests)
    assert not errors


def test_records_are_flushed_at_interpreter_exit(stub: StubUpload) -> None:
    script = (f"import nudge_sdk\n"
              f"c = nudge_sdk.Client('a', 'p', host={stub.url!r}, flush_interval=60)\n"
              f"c.track('u1', 'Exited')\n")  # no close(): the atexit hook must send it
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    assert [r["evtName"] for r in stub.delivered()] == ["Exited"]
