"""The SDK against a real ``nudge serve`` (fixtures in the repository's conftest.py)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx
import nudge_sdk
import pytest
from sdk_stub import Errors

# Retries that outlast a server restart (minutes of retrying, at most 0.5 s apart).
OUTLAST_RESTART: dict[str, Any] = {"max_retries": 500, "retry_base_delay": 0.05,
                                   "retry_max_delay": 0.5}


@pytest.fixture
def errors() -> Errors:
    return Errors()


def uid(prefix: str = "u") -> str:
    """A fresh identity, so tests sharing a server never see each other's data."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def connect(server: Any, errors: Errors, **kw: Any) -> nudge_sdk.Client:
    return nudge_sdk.Client(server.account_id, server.passcode, host=server.url,
                            on_error=errors, **kw)


def profile(server: Any, **lookup: str) -> dict[str, Any]:
    r = httpx.get(server.url + "/1/profile", params=lookup, headers=server.headers, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["profile"]  # type: ignore[no-any-return]


def events(server: Any, **lookup: str) -> list[dict[str, Any]]:
    """A profile's whole timeline, following the cursor."""
    out: list[dict[str, Any]] = []
    params: dict[str, Any] = {**lookup, "limit": 1000}
    while True:
        r = httpx.get(server.url + "/1/profile/events", params=params, headers=server.headers,
                      timeout=10)
        assert r.status_code == 200, r.text
        out += r.json()["events"]
        if not r.json().get("next_cursor"):
            return out
        params["cursor"] = r.json()["next_cursor"]


def test_track_and_profile_arrive(shared_server: Any, errors: Errors) -> None:
    user = uid()
    with connect(shared_server, errors) as c:
        c.track(user, "Charged", {"Amount": 10, "Currency": "EUR"})
        c.track(user, "Charged", {"Amount": 5})
        c.profile(user, {"Name": "Ada", "Plan": "pro", "Logins": nudge_sdk.incr(2)})
    assert not errors
    p = profile(shared_server, identity=user)
    assert p["identity"] == user
    assert p["event_counts"] == {"Charged": 2}
    assert {"Name": "Ada", "Plan": "pro", "Logins": 2}.items() <= p["properties"].items()
    amounts = sorted(e["evtData"]["Amount"] for e in events(shared_server, identity=user))
    assert amounts == [5, 10]


def test_profile_operations(shared_server: Any, errors: Errors) -> None:
    user = uid()
    with connect(shared_server, errors, sync_mode=True) as c:
        c.profile(user, {"Logins": 5, "First": "web", "Tags": ["a"], "Trial": True})
        c.profile(user, {
            "Logins": nudge_sdk.decr(2),
            "First": nudge_sdk.set_once("ios"),
            "Second": nudge_sdk.set_once("ios"),
            "Tags": nudge_sdk.add(["b", "c"]),
            "Trial": nudge_sdk.unset(),
            "Signed Up": nudge_sdk.date(1_700_000_000),
        })
        c.profile(user, {"Tags": nudge_sdk.remove("a")})
    assert not errors
    props = profile(shared_server, identity=user)["properties"]
    assert props["Logins"] == 3
    assert (props["First"], props["Second"]) == ("web", "ios")
    assert sorted(props["Tags"]) == ["b", "c"]
    assert "Trial" not in props
    assert props["Signed Up"] == "$D_1700000000"


def test_gzip_and_plain_bodies_are_both_stored(shared_server: Any, errors: Errors) -> None:
    zipped, plain = uid(), uid()
    with connect(shared_server, errors, gzip=True) as c:
        c.track(zipped, "Viewed")
    with connect(shared_server, errors, gzip=False) as c:
        c.track(plain, "Viewed")
    assert not errors
    assert profile(shared_server, identity=zipped)["event_counts"] == {"Viewed": 1}
    assert profile(shared_server, identity=plain)["event_counts"] == {"Viewed": 1}


def test_per_record_errors_reach_on_error(shared_server: Any, errors: Errors) -> None:
    user = uid()
    with connect(shared_server, errors, flush_interval=60) as c:
        c.track(user, "Before")
        bad = c.track(user, "X" * 121, {"why": "name too long"})
        c.track(user, "After")
    (err,) = errors
    assert err.reason == "rejected" and err.record["msgId"] == bad
    assert err.record["evtName"] == "X" * 121
    assert err.code == 511 and "120" in err.message
    # The rest of the batch was stored.
    assert profile(shared_server, identity=user)["event_counts"] == {"Before": 1, "After": 1}


def test_flush_and_close_deliver_everything(shared_server: Any, errors: Errors) -> None:
    user = uid()
    c = connect(shared_server, errors, batch_size=200, flush_interval=60)
    for i in range(500):
        c.track(user, "Viewed", {"i": i})
    assert c.flush(timeout=60)
    assert profile(shared_server, identity=user)["total_events"] == 500
    for i in range(300):
        c.track(user, "Clicked", {"i": i})
    assert c.close(timeout=60)
    assert not errors
    assert profile(shared_server, identity=user)["event_counts"] == {"Viewed": 500, "Clicked": 300}


def test_identify_links_anonymous_history(shared_server: Any, errors: Errors) -> None:
    user, anon = uid(), uid("anon")
    with connect(shared_server, errors, sync_mode=True) as c:
        c.track(None, "Product Viewed", {"Sku": "A-1"}, object_id=anon)
        c.identify(user, object_id=anon, email=f"{user}@example.com", properties={"Name": "Ada"})
        c.track(user, "Charged", {"Amount": 10})
    assert not errors
    p = profile(shared_server, identity=user)
    assert p["event_counts"] == {"Product Viewed": 1, "Charged": 1}
    assert anon in p["identifiers"]["objectId"]
    assert p["email"] == f"{user}@example.com" and p["properties"]["Name"] == "Ada"
    assert profile(shared_server, objectId=anon)["id"] == p["id"]


def test_same_msg_id_is_stored_once(shared_server: Any, errors: Errors) -> None:
    user = uid()
    with connect(shared_server, errors, sync_mode=True) as c:
        first = c.track(user, "Charged", {"Amount": 10}, msg_id=f"order-{user}")
        again = c.track(user, "Charged", {"Amount": 10}, msg_id=f"order-{user}")
    assert first == again and not errors
    assert profile(shared_server, identity=user)["event_counts"] == {"Charged": 1}


def test_bad_credentials_fail_without_retry(shared_server: Any, errors: Errors) -> None:
    c = nudge_sdk.Client(shared_server.account_id, "wrong-passcode", host=shared_server.url,
                         on_error=errors, sync_mode=True)
    started = time.monotonic()
    with c:
        c.track(uid(), "Charged")
    assert time.monotonic() - started < 5
    (err,) = errors
    assert (err.reason, err.code) == ("failed", 401)


@pytest.mark.slow
def test_server_down_then_up_receives_everything_once(nudge_server: Any, errors: Errors) -> None:
    user = uid()
    nudge_server.stop()
    c = connect(nudge_server, errors, batch_size=50, flush_interval=0.05, **OUTLAST_RESTART)
    sent = [c.track(user, "Viewed", {"i": i}) for i in range(120)]
    time.sleep(1)  # the sender is now failing and backing off
    assert c.pending == 120
    nudge_server.start()  # the same port and data directory
    assert c.close(timeout=90)
    assert not errors
    stored = [e["msgId"] for e in events(nudge_server, identity=user)]
    assert sorted(stored) == sorted(sent)  # every record, exactly once


@pytest.mark.slow
def test_kill_9_mid_stream_stores_everything_once(nudge_server: Any, errors: Errors) -> None:
    """Batches in flight when the server dies may be stored but unacknowledged; the SDK
    resends them with the same msgIds and the server must not store them twice."""
    user = uid()
    sent: list[str] = []
    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.is_set():
            sent.append(c.track(user, "Viewed", {"i": i}))
            i += 1
            time.sleep(0.0005)

    c = connect(nudge_server, errors, batch_size=20, flush_interval=0.01, **OUTLAST_RESTART)
    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(1)
    nudge_server.kill()
    time.sleep(0.5)
    nudge_server.start()
    time.sleep(0.5)
    stop.set()
    producer.join()
    assert c.close(timeout=90)
    assert not errors
    stored = [e["msgId"] for e in events(nudge_server, identity=user)]
    assert len(stored) == len(set(stored)), "a record was stored twice"
    assert set(stored) == set(sent)
