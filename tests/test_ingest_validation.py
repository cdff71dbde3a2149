"""Validation of ``POST /1/upload``: every limit and malformed input, and that nothing from a
rejected record or request is stored.

Per-record problems give HTTP 200 with the record in ``unprocessed`` (and never block the good
records of the same batch); request-level problems give 400/401/413/429 and store nothing.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import NudgeServer, make_server, nudge_cli


def new_id(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def profile_exists(srv: NudgeServer, **query: str) -> bool:
    r = httpx.get(srv.url + "/1/profile", params=query, headers=srv.headers)
    assert r.status_code in (200, 404), r.text
    return r.status_code == 200


def catalog(srv: NudgeServer) -> dict[str, dict[str, Any]]:
    r = httpx.get(srv.url + "/1/events/catalog", headers=srv.headers)
    assert r.status_code == 200, r.text
    return {e["name"]: e for e in r.json()["events"]}


def event_names(srv: NudgeServer, who: str) -> list[str]:
    r = httpx.get(srv.url + "/1/profile/events", params={"identity": who, "limit": 1000},
                  headers=srv.headers)
    assert r.status_code == 200, r.text
    return [e["evtName"] for e in r.json()["events"]]


# -- per-record rejections -------------------------------------------------------------------
# Each case builds one bad record from (identity, event name); the test sends it between two
# good records and checks the code, the message, and that nothing of it was stored.

NOW = time.time()


def ev(**kw: Any) -> Any:
    def build(who: str, name: str) -> dict[str, Any]:
        rec: dict[str, Any] = {"type": "event", "identity": who, "evtName": name}
        rec.update(kw)
        return rec
    return build


def prof(data: dict[str, Any], **kw: Any) -> Any:
    def build(who: str, name: str) -> dict[str, Any]:
        return {"type": "profile", "identity": who, "profileData": data, **kw}
    return build


RECORD_CASES: list[tuple[str, Any, int, str]] = [
    # (case id, record builder, code, text the error must contain)
    ("event-name-121", lambda w, n: {"type": "event", "identity": w, "evtName": n + "x" * 121},
     511, "longer than 120"),
    ("event-name-empty", lambda w, n: {"type": "event", "identity": w, "evtName": ""},
     511, "evtName"),
    ("event-name-missing", lambda w, n: {"type": "event", "identity": w}, 511, "evtName"),
    ("event-name-control-char", lambda w, n: {"type": "event", "identity": w,
                                              "evtName": n + "\x00"}, 511, "control"),
    ("event-name-reserved", lambda w, n: {"type": "event", "identity": w, "evtName": "$" + n},
     510, "reserved"),
    ("prop-name-121", ev(evtData={"p" * 121: 1}), 511, "longer than 120"),
    ("prop-name-empty", ev(evtData={"": 1}), 511, "property name"),
    ("string-513-bytes", ev(evtData={"s": "x" * 513}), 512, "512 bytes"),
    ("string-513-utf8-bytes", ev(evtData={"s": "é" * 256 + "x"}), 512, "512 bytes"),
    ("nested-string-513", ev(evtData={"o": {"s": "x" * 513}}), 512, "512 bytes"),
    ("list-string-513", ev(evtData={"l": ["x" * 513]}), 512, "512 bytes"),
    ("bad-date", ev(evtData={"d": "$D_tomorrow"}), 512, "$D_"),
    ("257-properties", ev(evtData={f"p{i}": i for i in range(257)}), 515, "256"),
    ("nested-257-properties", ev(evtData={"o": {f"p{i}": i for i in range(257)}}), 515, "256"),
    ("object-depth-4", ev(evtData={"a": {"b": {"c": {"d": 1}}}}), 515, "deeper than 3"),
    ("list-depth-4", ev(evtData={"a": [[[1]]]}), 515, "deeper than 3"),
    ("list-101-items", ev(evtData={"l": list(range(101))}), 515, "100 items"),
    ("ts-milliseconds", ev(ts=int(NOW * 1000)), 513, "future"),
    ("ts-2h-future", ev(ts=int(NOW) + 7200), 513, "future"),
    ("ts-negative", ev(ts=-1), 513, "before 1970"),
    ("ts-string", ev(ts=str(int(NOW))), 513, "epoch seconds"),
    ("ts-bool", ev(ts=True), 513, "epoch seconds"),
    ("no-identifier", lambda w, n: {"type": "event", "evtName": n}, 514, "identifier"),
    ("identity-empty", ev(identity=""), 514, "identity"),
    ("identity-not-string", ev(identity={"id": 1}), 514, "identity"),
    ("email-invalid", lambda w, n: {"type": "event", "email": w, "evtName": n}, 514, "email"),
    ("phone-invalid", lambda w, n: {"type": "event", "phone": "12", "evtName": n, "identity": w},
     514, "phone"),
    ("unknown-type", ev(type="purchase"), 510, "type"),
    ("missing-type", lambda w, n: {"identity": w, "evtName": n}, 510, "type"),
    ("unknown-field", ev(foo=1), 510, "foo"),
    ("evtData-list", ev(evtData=[{"a": 1}]), 510, "object"),
    ("evtData-empty-list", ev(evtData=[]), 510, "object"),
    ("evtData-string", ev(evtData="a=1"), 510, "object"),
    ("evtData-zero", ev(evtData=0), 510, "object"),
    ("event-with-profileData", ev(profileData={"a": 1}), 510, "evtName/evtData only"),
    ("msgId-not-string", ev(msgId=5), 510, "msgId"),
    ("msgId-too-long", ev(msgId="m" * 129), 510, "msgId"),
    ("record-not-object", lambda w, n: [w, n], 510, "object"),
    ("profileData-missing", lambda w, n: {"type": "profile", "identity": w}, 510, "profileData"),
    ("profileData-list", prof([{"a": 1}]), 510, "profileData"),  # type: ignore[arg-type]
    ("profile-257-properties", prof({f"p{i}": i for i in range(257)}), 515, "256"),
    ("profile-prop-name-121", prof({"p" * 121: 1}), 511, "longer than 120"),
    ("profile-string-513", prof({"s": "x" * 513}), 512, "512 bytes"),
    ("profile-incr-string", prof({"n": {"$incr": "1"}}), 512, "number"),
    ("profile-depth-4", prof({"a": {"b": {"c": {"d": 1}}}}), 515, "deeper than 3"),
    ("profile-ts-future", prof({"a": 1}, ts=int(NOW * 1000)), 513, "future"),
    ("profile-Identity-513-bytes", lambda w, n: {"type": "profile",
                                                 "profileData": {"Identity": w + "i" * 513}},
     514, "512 bytes"),
    ("profile-Email-513-bytes", prof({"Email": "e" * 513 + "@x.io"}), 514, "512 bytes"),
    ("profile-Email-invalid", prof({"Email": "nobody"}), 514, "email"),
    ("token-missing-data", lambda w, n: {"type": "token", "identity": w}, 510, "tokenData"),
    ("token-bad-kind", lambda w, n: {"type": "token", "identity": w,
                                     "tokenData": {"type": "sms", "id": "t"}}, 510, "tokenData"),
    ("token-no-id", lambda w, n: {"type": "token", "identity": w,
                                  "tokenData": {"type": "fcm"}}, 510, "tokenData.id"),
]


@pytest.mark.parametrize(("build", "code", "text"), [c[1:] for c in RECORD_CASES],
                         ids=[c[0] for c in RECORD_CASES])
def test_bad_record_rejected_and_not_stored(shared_server: NudgeServer, build: Any, code: int,
                                            text: str) -> None:
    bad_who, bad_name = new_id("bad"), new_id("Bad")
    good_who, good_name = new_id("good"), new_id("Good")
    good = {"type": "event", "identity": good_who, "evtName": good_name}
    r = shared_server.upload([good, build(bad_who, bad_name), {**good, "evtData": {"n": 2}}])
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "partial"
    assert out["processed"] == 2
    [err] = out["unprocessed"]
    assert err["index"] == 1
    assert err["code"] == code, err
    assert text in err["error"], err
    # The good records around it were stored ...
    assert event_names(shared_server, good_who) == [good_name, good_name]
    # ... and nothing of the bad one.
    cat = catalog(shared_server)
    assert not [n for n in cat if bad_name in n]
    assert not profile_exists(shared_server, identity=bad_who)
    assert not profile_exists(shared_server, email=bad_who)


@pytest.mark.parametrize(("record", "stored"), [
    ({"evtName": "E" * 120}, "E" * 120),
    ({"evtData": {"p" * 120: 1}}, None),
    ({"evtData": {"s": "x" * 512}}, None),
    ({"evtData": {"s": "é" * 256}}, None),
    ({"evtData": {f"p{i}": i for i in range(256)}}, None),
    ({"evtData": {"a": {"b": {"c": 1}}}}, None),
    ({"evtData": {"a": [[1]]}}, None),
    ({"evtData": {"l": list(range(100))}}, None),
    ({"ts": 0}, None),
    ({"ts": int(NOW) + 3000}, None),
    ({"evtData": None}, None),
    ({"identity": 12345}, None),
], ids=["name-120", "prop-name-120", "string-512", "utf8-512-bytes", "256-properties",
        "depth-3", "list-depth-3", "list-100", "ts-zero", "ts-50min-future", "evtData-null",
        "identity-number"])
def test_values_at_the_limit_are_accepted(shared_server: NudgeServer, record: dict[str, Any],
                                          stored: str | None) -> None:
    who = new_id()
    name = stored or new_id("Edge")
    rec = {"type": "event", "identity": who, "evtName": name, **record}
    r = shared_server.upload([rec])
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    lookup = str(rec["identity"])
    assert event_names(shared_server, lookup)[0] == name


# -- request-level rejections ------------------------------------------------------------------

MB5 = 5 * 1024 * 1024


def good_record(who: str, name: str) -> dict[str, Any]:
    return {"type": "event", "identity": who, "evtName": name, "evtData": {"k": "v"}}


def body_json(who: str, name: str, **extra: Any) -> bytes:
    return json.dumps({"d": [good_record(who, name)], **extra}).encode()


def _over_5mb(who: str, name: str) -> bytes:
    return body_json(who, name, pad="x" * MB5)


def _many_records(who: str, name: str) -> bytes:
    return json.dumps({"d": [good_record(who, name)] * 1001}).encode()


def _with(raw: bytes) -> Any:
    """A body: the good record's JSON with ``raw`` spliced into its evtData."""
    def build(who: str, name: str) -> bytes:
        return (b'{"d":[{"type":"event","identity":"' + who.encode() + b'","evtName":"'
                + name.encode() + b'","evtData":{' + raw + b'}}]}')
    return build


REQUEST_CASES: list[tuple[str, Any, dict[str, str], int, str]] = [
    # (case id, body builder, extra headers, status, text in message)
    ("body-over-5mb", _over_5mb, {}, 413, "larger than"),
    ("gzip-bomb", lambda w, n: gzip.compress(body_json(w, n, pad=" " * (MB5 + 10))),
     {"Content-Encoding": "gzip"}, 413, "decompressed body"),
    ("gzip-bomb-of-records", lambda w, n: gzip.compress(json.dumps(
        {"d": [{**good_record(w, n), "evtData": {"s": "x" * 500}}] * 1000
         + [{"type": "event", "identity": w, "evtName": n, "evtData": {"p": " " * MB5}}]})
        .encode()), {"Content-Encoding": "gzip"}, 413, "decompressed body"),
    ("invalid-json", lambda w, n: body_json(w, n)[:-3], {}, 400, "not valid JSON"),
    ("invalid-json-trailing", lambda w, n: body_json(w, n) + b"x", {}, 400, "not valid JSON"),
    ("empty-body", lambda w, n: b"", {}, 400, "not valid JSON"),
    ("invalid-utf8", lambda w, n: body_json(w, n).replace(b'"v"', b'"\xff\xfe"'), {}, 400,
     "UTF-8"),
    ("NaN", _with(b'"x":NaN'), {}, 400, "not valid JSON"),
    ("Infinity", _with(b'"x":Infinity'), {}, 400, "not valid JSON"),
    ("-Infinity", _with(b'"x":-Infinity'), {}, 400, "not valid JSON"),
    ("1e400", _with(b'"x":1e400'), {}, 400, "out of range"),
    ("-1e400", _with(b'"x":-1e400'), {}, 400, "out of range"),
    ("duplicate-key-evtData", _with(b'"x":1,"x":2'), {}, 400, "duplicate key"),
    ("duplicate-key-nested", _with(b'"o":{"x":1, "x" :2}'), {}, 400, "duplicate key"),
    ("duplicate-key-record", lambda w, n: body_json(w, n).replace(
        b'"type": "event"', b'"type": "event", "type": "profile"'), {}, 400, "duplicate key"),
    ("duplicate-key-top", lambda w, n: b'{"d": [], ' + body_json(w, n)[1:], {}, 400,
     "duplicate key"),
    ("d-not-a-list", lambda w, n: json.dumps({"d": good_record(w, n)}).encode(), {}, 400, '"d"'),
    ("d-missing", lambda w, n: json.dumps({"data": [good_record(w, n)]}).encode(), {}, 400,
     '"d"'),
    ("body-a-list", lambda w, n: json.dumps([good_record(w, n)]).encode(), {}, 400, '"d"'),
    ("d-empty", lambda w, n: b'{"d": []}', {}, 400, "empty"),
    ("1001-records", _many_records, {}, 400, "at most 1000"),
    ("unsupported-encoding", body_json, {"Content-Encoding": "br"}, 400, "Content-Encoding"),
    ("corrupt-gzip", lambda w, n: b"\x1f\x8b" + body_json(w, n), {"Content-Encoding": "gzip"},
     400, "gzip"),
]


@pytest.mark.parametrize(("build", "headers", "status", "text"), [c[1:] for c in REQUEST_CASES],
                         ids=[c[0] for c in REQUEST_CASES])
def test_bad_request_rejected_and_nothing_stored(shared_server: NudgeServer, build: Any,
                                                 headers: dict[str, str], status: int,
                                                 text: str) -> None:
    who, name = new_id(), new_id("Req")
    r = httpx.post(shared_server.url + "/1/upload", content=build(who, name),
                   headers={**shared_server.headers, "Content-Type": "application/json",
                            **headers}, timeout=60)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == "fail"
    assert text in body["message"], body
    assert not profile_exists(shared_server, identity=who)
    assert name not in catalog(shared_server)


def test_oversized_streamed_body_413(shared_server: NudgeServer) -> None:
    """Without Content-Length (chunked), the limit applies while reading."""
    who, name = new_id(), new_id("Chunked")
    raw = body_json(who, name, pad="x" * MB5)

    def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(raw), 65536):
            yield raw[i:i + 65536]

    r = httpx.post(shared_server.url + "/1/upload", content=chunks(),
                   headers=shared_server.headers, timeout=60)
    assert r.status_code == 413
    assert not profile_exists(shared_server, identity=who)


def test_limit_is_configurable(tmp_path: Path) -> None:
    srv = make_server(tmp_path, {"NUDGE_LIMIT_MAX_BODY_BYTES": "2000",
                                 "NUDGE_LIMIT_MAX_RECORDS": "3",
                                 "NUDGE_LIMIT_MAX_NAME_LEN": "10"})
    try:
        who = new_id()
        r = srv.upload([{"type": "event", "identity": who, "evtName": "E",
                         "evtData": {"s": "x" * 2000}}])
        assert r.status_code == 413
        r = srv.upload([{"type": "event", "identity": who, "evtName": "E"}] * 4)
        assert r.status_code == 400 and "at most 3" in r.json()["message"]
        r = srv.upload([{"type": "event", "identity": who, "evtName": "E" * 11},
                        {"type": "event", "identity": who, "evtName": "E" * 10}])
        assert r.json()["unprocessed"][0]["code"] == 511
        assert r.json()["processed"] == 1
    finally:
        srv.stop()


# -- authentication ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_account(shared_server: NudgeServer) -> dict[str, str]:
    """A second account on the same server (created with the real CLI)."""
    return json.loads(nudge_cli(shared_server.data_dir, "accounts", "create", "other", "--json"))


AUTH_CASES: list[tuple[str, Any]] = [
    ("no-headers", lambda s, o: {}),
    ("no-passcode", lambda s, o: {"X-Nudge-Account-Id": s.account_id}),
    ("no-account-id", lambda s, o: {"X-Nudge-Passcode": s.passcode}),
    ("empty-passcode", lambda s, o: {"X-Nudge-Account-Id": s.account_id, "X-Nudge-Passcode": ""}),
    ("wrong-passcode", lambda s, o: {"X-Nudge-Account-Id": s.account_id,
                                     "X-Nudge-Passcode": "np_wrong"}),
    ("unknown-account", lambda s, o: {"X-Nudge-Account-Id": "nosuchaccount",
                                      "X-Nudge-Passcode": s.passcode}),
    ("other-accounts-passcode", lambda s, o: {"X-Nudge-Account-Id": s.account_id,
                                              "X-Nudge-Passcode": o["passcode"]}),
    ("passcode-with-other-account-id", lambda s, o: {"X-Nudge-Account-Id": o["id"],
                                                     "X-Nudge-Passcode": s.passcode}),
    ("write-key-as-passcode", lambda s, o: {"X-Nudge-Account-Id": s.account_id,
                                            "X-Nudge-Passcode": s.write_key}),
    ("clevertap-wrong-passcode", lambda s, o: {"X-CleverTap-Account-Id": s.account_id,
                                               "X-CleverTap-Passcode": "wrong"}),
]


@pytest.mark.parametrize("headers", [c[1] for c in AUTH_CASES], ids=[c[0] for c in AUTH_CASES])
def test_bad_credentials_401_and_nothing_stored(shared_server: NudgeServer,
                                                other_account: dict[str, str],
                                                headers: Any) -> None:
    who, name = new_id(), new_id("Auth")
    r = httpx.post(shared_server.url + "/1/upload", json={"d": [good_record(who, name)]},
                   headers=headers(shared_server, other_account))
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "unauthorized"
    assert not profile_exists(shared_server, identity=who)
    assert name not in catalog(shared_server)
    other = {"X-Nudge-Account-Id": other_account["id"],
             "X-Nudge-Passcode": other_account["passcode"]}
    r = httpx.get(shared_server.url + "/1/profile", params={"identity": who}, headers=other)
    assert r.status_code == 404


def test_401_does_not_reveal_whether_account_exists(shared_server: NudgeServer) -> None:
    payload = {"d": [good_record(new_id(), "E")]}
    wrong_key = httpx.post(shared_server.url + "/1/upload", json=payload,
                           headers={"X-Nudge-Account-Id": shared_server.account_id,
                                    "X-Nudge-Passcode": "np_wrong"})
    no_account = httpx.post(shared_server.url + "/1/upload", json=payload,
                            headers={"X-Nudge-Account-Id": "zzzzzzzzzzzz",
                                     "X-Nudge-Passcode": "np_wrong"})
    assert wrong_key.status_code == no_account.status_code == 401
    assert wrong_key.content == no_account.content
    assert shared_server.account_id not in wrong_key.text


def test_read_endpoints_need_auth(shared_server: NudgeServer) -> None:
    for path in ("/1/profile?identity=x", "/1/profile/events?identity=x", "/1/events/catalog"):
        r = httpx.get(shared_server.url + path,
                      headers={"X-Nudge-Account-Id": shared_server.account_id,
                               "X-Nudge-Passcode": "np_wrong"})
        assert r.status_code == 401, path


def test_accounts_are_isolated(shared_server: NudgeServer, other_account: dict[str, str]) -> None:
    who, name = new_id(), new_id("Mine")
    assert shared_server.upload([good_record(who, name)]).json()["processed"] == 1
    other = {"X-Nudge-Account-Id": other_account["id"],
             "X-Nudge-Passcode": other_account["passcode"]}
    r = httpx.get(shared_server.url + "/1/profile", params={"identity": who}, headers=other)
    assert r.status_code == 404
    r = httpx.get(shared_server.url + "/1/events/catalog", headers=other)
    assert name not in {e["name"] for e in r.json()["events"]}


# -- concurrency limit -------------------------------------------------------------------------


def test_too_many_concurrent_requests_429(tmp_path: Path) -> None:
    srv = make_server(tmp_path, {"NUDGE_LIMIT_MAX_INFLIGHT_PER_ACCOUNT": "1"})
    n_requests, per_request = 40, 200

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=n_requests)
        async with httpx.AsyncClient(base_url=srv.url, headers=srv.headers, timeout=60,
                                     limits=limits) as client:
            return await asyncio.gather(*(
                client.post("/1/upload", json={"d": [
                    {"type": "event", "identity": f"c{k}", "evtName": "Burst",
                     "msgId": f"{k}-{i}", "evtData": {"i": i}} for i in range(per_request)]})
                for k in range(n_requests)))

    try:
        responses = asyncio.run(fire())
        limited = [r for r in responses if r.status_code == 429]
        others = [r for r in responses if r.status_code != 429]
        assert limited, "no request was limited"
        for r in limited:
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["error"] == "rate_limited"
        for r in others:
            assert r.status_code == 200 and r.json()["status"] == "success", r.text
        # Exactly the admitted requests were stored; the limited ones stored nothing.
        cat = httpx.get(srv.url + "/1/events/catalog", headers=srv.headers).json()
        count = {e["name"]: e["count"] for e in cat["events"]}.get("Burst", 0)
        assert count == len(others) * per_request
        for k, r in enumerate(responses):
            exists = httpx.get(srv.url + "/1/profile", params={"identity": f"c{k}"},
                               headers=srv.headers).status_code == 200
            assert exists == (r.status_code == 200)
        # The limit frees up: a request afterwards is admitted.
        assert srv.upload([good_record("after", "After")]).status_code == 200
    finally:
        srv.stop()
