"""The Segment spec (``/v1/*``) with the unchanged client libraries.

``segment-analytics-python`` and ``rudder-sdk-python`` send to our server in sync mode; results
are read back through GET /1/profile and GET /1/profile/events with the passcode.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import rudderstack.analytics as rudder_analytics
import segment.analytics as analytics
from rudderstack.analytics.request import APIError as RudderAPIError
from segment.analytics.request import APIError as SegmentAPIError

from conftest import NudgeServer


def new_id(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def profile(srv: NudgeServer, **query: str) -> dict[str, Any] | None:
    r = httpx.get(srv.url + "/1/profile", params=query, headers=srv.headers)
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return r.json()["profile"]


def events(srv: NudgeServer, **query: str) -> list[dict[str, Any]]:
    r = httpx.get(srv.url + "/1/profile/events", params={**query, "limit": 1000},
                  headers=srv.headers)
    if r.status_code == 404:
        return []
    assert r.status_code == 200, r.text
    return r.json()["events"]


# -- the libraries ------------------------------------------------------------------------------
# Both are module-level singletons: ``default_client`` is built on first use from the module
# settings, so each test resets it.


class Lib:
    """One configured client library (the module, as an application would use it)."""

    def __init__(self, kind: str, srv: NudgeServer, write_key: str) -> None:
        self.kind = kind
        self.errors: list[Any] = []
        if kind.startswith("segment"):
            self.mod: Any = analytics
            analytics.write_key = write_key
            analytics.host = srv.url
            analytics.gzip = kind == "segment-gzip"
            analytics.max_retries = 0
            self.api_error: type[Exception] = SegmentAPIError
        else:
            self.mod = rudder_analytics
            rudder_analytics.write_key = write_key
            rudder_analytics.dataPlaneUrl = srv.url
            rudder_analytics.max_retries = 0
            self.api_error = RudderAPIError
        self.mod.sync_mode = True
        self.mod.on_error = lambda e, batch: self.errors.append(e)
        self.mod.default_client = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.mod, name)


LIBS = ["segment", "segment-gzip", "rudder"]


@pytest.fixture(autouse=True)
def _reset_libraries() -> Iterator[None]:
    yield
    for mod in (analytics, rudder_analytics):
        # Sync mode has no consumer threads to stop; dropping the client is enough.
        mod.default_client = None
        mod.sync_mode = False
        mod.on_error = None


@pytest.fixture(params=LIBS)
def lib(request: pytest.FixtureRequest, shared_server: NudgeServer) -> Lib:
    return Lib(request.param, shared_server, shared_server.write_key)


# -- track, page, screen -------------------------------------------------------------------------


def test_track_lands_with_properties_and_context(shared_server: NudgeServer, lib: Lib) -> None:
    who = new_id()
    lib.track(who, "Order Completed", {"revenue": 42.5, "currency": "EUR", "items": ["a", "b"]},
              context={"ip": "203.0.113.7", "locale": "de-DE", "timezone": "Europe/Berlin",
                       "app": {"name": "shop", "version": "1.2"},
                       "campaign": {"source": "newsletter", "medium": "email"}})
    [ev] = events(shared_server, identity=who)
    assert ev["evtName"] == "Order Completed"
    data = ev["evtData"]
    assert data["revenue"] == 42.5 and data["currency"] == "EUR" and data["items"] == ["a", "b"]
    assert data["context.ip"] == "203.0.113.7"
    assert data["context.locale"] == "de-DE"
    assert data["context.timezone"] == "Europe/Berlin"
    assert data["context.app.name"] == "shop" and data["context.app.version"] == "1.2"
    assert data["context.campaign.source"] == "newsletter"
    assert data["context.library.name"] == "analytics-python"
    assert abs(ev["ts"] - time.time()) < 120
    assert lib.errors == []


def test_page_and_screen(shared_server: NudgeServer, lib: Lib) -> None:
    who = new_id()
    lib.page(who, "Docs", "Install", {"url": "https://example.com/docs/install"})
    lib.screen(who, "Shop", "Cart", {"items": 3})
    evs = {e["evtName"]: e["evtData"] for e in events(shared_server, identity=who)}
    assert set(evs) == {"Page Viewed", "Screen Viewed"}
    assert evs["Page Viewed"]["name"] == "Install"
    assert evs["Page Viewed"]["category"] == "Docs"
    assert evs["Page Viewed"]["url"] == "https://example.com/docs/install"
    assert evs["Screen Viewed"]["name"] == "Cart"
    assert evs["Screen Viewed"]["category"] == "Shop"
    assert evs["Screen Viewed"]["items"] == 3


# -- identify, group, merges ---------------------------------------------------------------------


def test_identify_sets_traits_and_email_is_an_identifier(shared_server: NudgeServer,
                                                         lib: Lib) -> None:
    who = new_id()
    email = f"{who}@Example.com"
    lib.identify(who, {"email": email, "name": "Ada", "plan": "pro", "seats": 5})
    p = profile(shared_server, identity=who)
    assert p is not None
    assert p["properties"]["name"] == "Ada"
    assert p["properties"]["plan"] == "pro"
    assert p["properties"]["seats"] == 5
    assert p["email"] == email.lower()
    assert p["reachability"]["email"] is True
    by_email = profile(shared_server, email=email)
    assert by_email is not None and by_email["id"] == p["id"]
    # A later identify updates traits.
    lib.identify(who, {"plan": "enterprise"})
    assert profile(shared_server, identity=who)["properties"]["plan"] == "enterprise"  # type: ignore[index]


def test_anonymous_events_merge_on_identify(shared_server: NudgeServer, lib: Lib) -> None:
    anon, who = new_id("anon"), new_id()
    lib.track(anonymous_id=anon, event="Viewed Pricing", properties={"tier": "pro"})
    lib.page(anonymous_id=anon, name="Home")
    before = profile(shared_server, objectId=anon)
    assert before is not None and before["identity"] is None
    lib.identify(who, {"name": "Grace"}, anonymous_id=anon)
    lib.track(who, "Signed Up")
    p = profile(shared_server, identity=who)
    assert p is not None
    assert p["event_counts"] == {"Viewed Pricing": 1, "Page Viewed": 1, "Signed Up": 1}
    assert p["properties"]["name"] == "Grace"
    assert anon in p["identifiers"]["objectId"]
    assert profile(shared_server, objectId=anon)["id"] == p["id"]  # type: ignore[index]


def test_alias_merges_previous_anonymous_id(shared_server: NudgeServer, lib: Lib) -> None:
    anon, who = new_id("anon"), new_id()
    lib.track(anonymous_id=anon, event="Added To Cart")
    lib.identify(who, {"name": "Lin"})
    lib.alias(anon, who)
    p = profile(shared_server, identity=who)
    assert p is not None
    assert p["event_counts"] == {"Added To Cart": 1}
    assert profile(shared_server, objectId=anon)["id"] == p["id"]  # type: ignore[index]


def test_alias_merges_previous_user_id(shared_server: NudgeServer, lib: Lib) -> None:
    old, new = new_id("old"), new_id("new")
    lib.identify(old, {"legacy": True, "name": "Old Name"})
    lib.track(old, "Legacy Event")
    lib.identify(new, {"name": "New Name"})
    lib.alias(old, new)
    p = profile(shared_server, identity=new)
    assert p is not None
    assert p["event_counts"] == {"Legacy Event": 1}
    assert p["properties"]["legacy"] is True
    assert p["properties"]["name"] == "New Name"  # the alias target's values win
    assert [e["evtName"] for e in events(shared_server, identity=new)] == ["Legacy Event"]


def test_group_sets_group_properties(shared_server: NudgeServer, lib: Lib) -> None:
    who = new_id()
    lib.group(who, "acme-42", {"name": "Acme", "employees": 120})
    p = profile(shared_server, identity=who)
    assert p is not None
    assert p["properties"]["Group"] == "acme-42"
    assert p["properties"]["Group name"] == "Acme"
    assert p["properties"]["Group employees"] == 120


def test_library_message_id_deduplicates(shared_server: NudgeServer, lib: Lib) -> None:
    who, mid = new_id(), new_id("mid")
    lib.track(who, "Once", {"n": 1}, message_id=mid)
    lib.track(who, "Once", {"n": 2}, message_id=mid)
    evs = events(shared_server, identity=who)
    assert [(e["msgId"], e["evtData"]["n"]) for e in evs] == [(mid, 1)]


def test_library_wrong_write_key_is_rejected(shared_server: NudgeServer, lib: Lib) -> None:
    who = new_id()
    Lib(lib.kind, shared_server, "nw_not-a-key")
    with pytest.raises(lib.api_error) as exc:
        lib.mod.track(who, "Nope")
    # The library understood the error body (a proper APIError, not a KeyError).
    assert exc.value.status == 401  # type: ignore[attr-defined]
    assert exc.value.code == "unauthorized"  # type: ignore[attr-defined]
    assert profile(shared_server, identity=who) is None


def test_library_passcode_is_not_a_write_key(shared_server: NudgeServer, lib: Lib) -> None:
    who = new_id()
    Lib(lib.kind, shared_server, shared_server.passcode)
    with pytest.raises(lib.api_error) as exc:
        lib.mod.identify(who, {"name": "x"})
    # The library understood the error body (a proper APIError, not a KeyError).
    assert exc.value.status == 401  # type: ignore[attr-defined]
    assert exc.value.code == "unauthorized"  # type: ignore[attr-defined]
    assert profile(shared_server, identity=who) is None


# -- raw HTTP: auth, dedup, timestamps -------------------------------------------------------------


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def post(srv: NudgeServer, path: str, body: dict[str, Any], key: str | None = None,
         **kw: Any) -> httpx.Response:
    auth = None if key == "" else (key or srv.write_key, "")
    return httpx.post(srv.url + path, json=body, auth=auth, **kw)


def test_messageid_dedup_over_raw_http(shared_server: NudgeServer) -> None:
    who, mid = new_id(), new_id("mid")
    msg = {"userId": who, "event": "Paid", "messageId": mid, "properties": {"try": 1}}
    assert post(shared_server, "/v1/track", msg).json() == {"success": True}
    assert post(shared_server, "/v1/track", {**msg, "properties": {"try": 2}}).status_code == 200
    r = post(shared_server, "/v1/batch", {"batch": [{**msg, "type": "track"}] * 3})
    assert r.status_code == 200 and r.json()["success"] is True
    evs = events(shared_server, identity=who)
    assert [(e["msgId"], e["evtData"]["try"]) for e in evs] == [(mid, 1)]


def test_write_key_in_basic_auth_or_body(shared_server: NudgeServer) -> None:
    a, b = new_id(), new_id()
    assert post(shared_server, "/v1/track", {"userId": a, "event": "Auth"}).status_code == 200
    r = post(shared_server, "/v1/track",
             {"userId": b, "event": "Body", "writeKey": shared_server.write_key}, key="")
    assert r.status_code == 200
    assert [e["evtName"] for e in events(shared_server, identity=a)] == ["Auth"]
    assert [e["evtName"] for e in events(shared_server, identity=b)] == ["Body"]


@pytest.mark.parametrize("path", ["/v1/track", "/v1/identify", "/v1/batch"])
@pytest.mark.parametrize("key", ["nw_wrong", "passcode", ""], ids=["wrong", "passcode", "none"])
def test_bad_write_key_401(shared_server: NudgeServer, path: str, key: str) -> None:
    who = new_id()
    msg = {"userId": who, "event": "X", "traits": {"a": 1}}
    body = {"batch": [{**msg, "type": "track"}]} if path == "/v1/batch" else msg
    r = post(shared_server, path, body, shared_server.passcode if key == "passcode" else key)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized"
    assert profile(shared_server, identity=who) is None


def test_clock_skew_correction_with_sent_at(shared_server: NudgeServer) -> None:
    """Device clock 1h ahead: timestamp T and sentAt T+1h mean 'happened 1h before receipt'."""
    who = new_id()
    t = time.time() - 86400  # what the device claims (any value works)
    before = time.time()
    r = post(shared_server, "/v1/track", {"userId": who, "event": "Skewed",
                                          "timestamp": iso(t), "sentAt": iso(t + 3600)})
    after = time.time()
    assert r.status_code == 200
    [ev] = events(shared_server, identity=who)
    assert int(before - 3600) - 1 <= ev["ts"] <= after - 3600 + 1


def test_clock_skew_prefers_original_timestamp(shared_server: NudgeServer) -> None:
    who = new_id()
    t = time.time() + 7 * 86400  # a device clock a week ahead
    before = time.time()
    r = post(shared_server, "/v1/batch", {
        "sentAt": iso(t + 60),
        "batch": [{"type": "track", "userId": who, "event": "Orig",
                   "originalTimestamp": iso(t), "timestamp": iso(t - 5 * 86400)}]})
    after = time.time()
    assert r.status_code == 200 and r.json()["success"] is True, r.text
    [ev] = events(shared_server, identity=who)
    assert int(before - 60) - 1 <= ev["ts"] <= after - 60 + 1


def test_timestamp_without_sent_at_is_used_as_is(shared_server: NudgeServer) -> None:
    who = new_id()
    r = post(shared_server, "/v1/track", {"userId": who, "event": "Past",
                                          "timestamp": "2023-11-14T22:13:20.000Z"})
    assert r.status_code == 200
    [ev] = events(shared_server, identity=who)
    assert ev["ts"] == 1_700_000_000


def test_future_timestamp_without_sent_at_rejected(shared_server: NudgeServer) -> None:
    who = new_id()
    r = post(shared_server, "/v1/track", {"userId": who, "event": "Future",
                                          "timestamp": iso(time.time() + 7200)})
    assert r.status_code == 400 and "future" in r.json()["message"]
    assert profile(shared_server, identity=who) is None


def test_single_call_errors_400_and_batch_is_partial(shared_server: NudgeServer) -> None:
    who = new_id()
    r = post(shared_server, "/v1/track", {"event": "No Id"})
    assert r.status_code == 400 and "userId or anonymousId" in r.json()["message"]
    r = post(shared_server, "/v1/alias", {"userId": who})
    assert r.status_code == 400 and "previousId" in r.json()["message"]
    r = post(shared_server, "/v1/batch", {"batch": [
        {"type": "track", "userId": who, "event": "Ok"},
        {"type": "track", "event": "No Id"},
        {"type": "teleport", "userId": who},
    ]})
    assert r.status_code == 200
    out = r.json()
    assert out["success"] is False and out["status"] == "partial" and out["processed"] == 1
    assert [(e["index"], e["code"]) for e in out["unprocessed"]] == [(1, 514), (2, 510)]
    assert [e["evtName"] for e in events(shared_server, identity=who)] == ["Ok"]


def test_batch_shared_context(shared_server: NudgeServer) -> None:
    who = new_id()
    r = post(shared_server, "/v1/batch", {
        "context": {"ip": "198.51.100.1"},
        "batch": [{"type": "track", "userId": who, "event": "A"},
                  {"type": "track", "userId": who, "event": "B", "context": {"ip": "own"}}]})
    assert r.status_code == 200
    evs = {e["evtName"]: e["evtData"] for e in events(shared_server, identity=who)}
    assert evs["A"]["context.ip"] == "198.51.100.1"
    assert evs["B"]["context.ip"] == "own"


@pytest.mark.parametrize("context", [None, "web", ["a"], 7], ids=repr)
def test_identify_with_odd_context_is_not_a_server_error(shared_server: NudgeServer,
                                                          context: Any) -> None:
    who = new_id()
    r = post(shared_server, "/v1/identify", {"userId": who, "context": context,
                                             "traits": {"plan": "pro"}})
    assert r.status_code == 200, r.text
    r = post(shared_server, "/v1/batch", {"batch": [
        {"type": "identify", "userId": who, "context": context},
        {"type": "track", "userId": who, "event": "After", "context": context}]})
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    p = profile(shared_server, identity=who)
    assert p is not None and p["properties"] == {"plan": "pro"}
    assert p["event_counts"] == {"After": 1}


def test_identify_traits_from_context(shared_server: NudgeServer) -> None:
    who = new_id()
    r = post(shared_server, "/v1/identify", {"userId": who,
                                             "context": {"traits": {"plan": "team"}}})
    assert r.status_code == 200
    assert profile(shared_server, identity=who)["properties"] == {"plan": "team"}  # type: ignore[index]


@pytest.mark.parametrize(("traits", "text"), [
    ({f"t{i}": i for i in range(257)}, "more than 256 traits"),
    ({"email": "e" * 513 + "@x.io"}, "512 bytes"),
    ({"email": "not-an-email"}, "email"),
    ({"name": "x" * 513}, "512 bytes"),
    ({"deep": {"a": {"b": {"c": 1}}}}, "deeper than 3"),
], ids=["257-traits", "email-513-bytes", "email-invalid", "string-513", "depth-4"])
def test_identify_limits(shared_server: NudgeServer, traits: dict[str, Any], text: str) -> None:
    who = new_id()
    r = post(shared_server, "/v1/identify", {"userId": who, "traits": traits})
    assert r.status_code == 400, r.text
    assert text in r.json()["message"]
    r = post(shared_server, "/v1/batch", {"batch": [
        {"type": "identify", "userId": who, "traits": traits},
        {"type": "track", "userId": who, "event": "Good"}]})
    assert r.json()["status"] == "partial" and r.json()["unprocessed"][0]["index"] == 0
    p = profile(shared_server, identity=who)
    assert p is not None and p["properties"] == {} and p["event_counts"] == {"Good": 1}
