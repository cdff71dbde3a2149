"""Segments over HTTP (``/1/segments``) on a real server, with data ingested through the real
upload API.

Every condition kind and operator (tests/segments_cases.py) is evaluated live and saved, and
its count and members must equal the plain-Python reference evaluator's; then the saved
segment API: errors (422 with the JSON path of the offending node), cycles, versions,
deletion while referenced, count / members paging / CSV and Parquet export / explain /
contains, injection attempts, and isolation between accounts.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from segments_cases import DAY, EVIL, cases, reference, saved_definitions, upload_records

from conftest import NudgeServer, nudge_cli

EVERYONE = {"ann", "bob", "cyd", "dan", "eve", "fay"}


@dataclass
class Api:
    srv: NudgeServer
    t0: int  # the data's "now"
    ids: dict[str, int]  # saved segments the cases refer to

    def req(self, method: str, path: str, headers: dict[str, str] | None = None,
            **kw: Any) -> httpx.Response:
        return httpx.request(method, self.srv.url + "/1/segments" + path,
                             headers=self.srv.headers if headers is None else headers,
                             timeout=60, **kw)

    def evaluate(self, definition: Any, **extra: Any) -> httpx.Response:
        return self.req("POST", "/evaluate", json={"definition": definition, **extra})

    def create(self, name: str, definition: Any, **extra: Any) -> int:
        r = self.req("POST", "", json={"name": name, "definition": definition, **extra})
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    def update(self, seg_id: int, name: str, definition: Any) -> httpx.Response:
        return self.req("PUT", f"/{seg_id}", json={"name": name, "definition": definition})

    def members(self, seg_id: int, limit: int = 1000) -> list[dict[str, Any]]:
        """Every member, following the paging cursor."""
        out: list[dict[str, Any]] = []
        cursor: str | None = "0"
        while cursor is not None:
            r = self.req("GET", f"/{seg_id}/members", params={"limit": limit, "cursor": cursor})
            assert r.status_code == 200, r.text
            out += r.json()["members"]
            cursor = r.json()["next_cursor"]
        return out

    def expected(self, definition: Any) -> set[str]:
        saved = {self.ids[k]: d for k, d in saved_definitions().items()}
        return reference(self.t0, time.time(), saved).members(definition)

    def cases(self) -> dict[str, Any]:
        return cases(self.t0, self.ids["charged_30d"], self.ids["paris"])


@pytest.fixture(scope="module")
def api(shared_server: NudgeServer) -> Iterator[Api]:
    t0 = int(time.time())
    r = shared_server.upload(upload_records(t0))
    assert r.status_code == 200 and r.json()["status"] == "success", r.text
    a = Api(shared_server, t0, {})
    a.ids = {name: a.create(name, d) for name, d in saved_definitions().items()}
    yield a


def _error(r: httpx.Response, status: int, path: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["field"] == path, body
    assert body["message"].startswith(path + ": "), body
    return body  # type: ignore[no-any-return]


# -- every condition, live and saved, against the reference -----------------------------------
@pytest.mark.parametrize("case", sorted(cases(0)))
def test_every_condition_over_http_matches_reference(api: Api, case: str) -> None:
    definition = api.cases()[case]
    expected = api.expected(definition)
    r = api.evaluate(definition)
    assert r.status_code == 200, r.text
    assert r.json()["count"] == len(expected)
    assert r.json()["explanation"].startswith("People who ")
    seg_id = api.create(f"case {case}", definition)
    assert {m["identity"] for m in api.members(seg_id)} == expected


def test_unknown_event_names_are_valid_and_match_no_one(api: Api) -> None:
    for strict in (False, True):
        r = api.evaluate({"did": {"event": "No Such Event, Ever"}}, strict=strict)
        assert r.status_code == 200 and r.json()["count"] == 0, r.text
        r = api.evaluate({"did_not": {"event": "No Such Event, Ever"}}, strict=strict)
        assert r.status_code == 200 and r.json()["count"] == len(EVERYONE), r.text


# -- injection ---------------------------------------------------------------------------------
def test_injection_attempts_are_treated_as_data(api: Api) -> None:
    attempts = [
        ({"did": {"event": EVIL}}, {"dan"}),
        ({"did": {"event": EVIL, "where": [{"property": EVIL, "op": "eq", "value": EVIL}]}},
         {"dan"}),
        ({"did": {"event": "Charged", "where": [{"property": EVIL, "op": "not_exists"}]}},
         {"ann", "bob", "dan", "fay"}),
        ({"profile": {"property": "Plan", "op": "eq", "value": EVIL}}, {"dan"}),
        ({"profile": {"property": "City", "op": "eq", "value": "' OR '1'='1"}}, set()),
        ({"profile": {"property": "City", "op": "starts_with", "value": "it's \""}}, {"dan"}),
        ({"profile": {"property": "City", "op": "in", "value": ["x') OR ('1'='1", "Paris"]}},
         {"ann", "cyd"}),
        ({"did": {"event": "Charged'); DELETE FROM profiles; --"}}, set()),
        ({"profile": {"property": "x\" = x OR \"1", "op": "not_exists"}}, EVERYONE),
        ({"aggregate": {"event": "Charged", "property": "Amount); DROP TABLE events; --",
                        "fn": "count_distinct", "op": "=", "value": 0}}, EVERYONE),
    ]
    for definition, expected in attempts:
        assert api.expected(definition) == expected, definition
        r = api.evaluate(definition)
        assert r.status_code == 200 and r.json()["count"] == len(expected), (definition, r.text)
        seg_id = api.create("injection", definition)
        assert {m["identity"] for m in api.members(seg_id)} == expected
        sql = api.req("GET", f"/{seg_id}/explain").json()["sql"]
        for text in ("DROP", "DELETE", "OR '1'", "OR (", "it's"):
            assert text not in sql, sql
    # Nothing was dropped or deleted, and an unknown evil property name in strict mode is
    # named as data in the error.
    assert api.evaluate({"did": {"event": "Charged"}}).json()["count"] == 4
    assert api.evaluate({"did": {"event": "Charged", "count": {"op": ">=", "value": 0}}}
                        ).json()["count"] == len(EVERYONE)
    evil_name = "Tier'); DROP TABLE profiles; --"
    body = _error(api.evaluate({"profile": {"property": evil_name, "op": "exists"}},
                               strict=True), 422, "$.profile.property")
    assert repr(evil_name) in body["message"]


# -- errors: 422 with the JSON path of the offending node --------------------------------------
def _future() -> int:
    return int(time.time()) + 30 * DAY


ERRORS: list[tuple[str, Any, bool, str]] = [
    ("unknown operator", {"and": [{"did": {"event": "Charged"}},
                                  {"profile": {"property": "City", "op": "like",
                                               "value": "P%"}}]}, False, "$.and[1].profile.op"),
    ("unknown condition", {"or": [{"did": {"event": "Charged"}}, {"did_maybe": {}}]}, False,
     "$.or[1].did_maybe"),
    ("unknown count operator", {"did": {"event": "Charged", "count": {"op": "=>", "value": 2}}},
     False, "$.did.count.op"),
    ("string value on a number property",
     {"and": [{"did": {"event": "Charged", "where": [
         {"property": "Currency", "op": "exists"},
         {"property": "Amount", "op": "eq", "value": "500"}]}}]},
     False, "$.and[0].did.where[1].value"),
    ("number value on a string profile property",
     {"not": {"profile": {"property": "City", "op": "eq", "value": 5}}}, False,
     "$.not.profile.value"),
    ("contains on a number property",
     {"or": [{"did": {"event": "Charged"}}, {"not": {"profile": {
         "property": "Age", "op": "contains", "value": "3"}}}]}, False,
     "$.or[1].not.profile.value"),
    ("date operator on a string property",
     {"sequence": {"first": {"event": "Added To Cart"}, "then": {"event": "Charged", "where": [
         {"property": "Currency", "op": "before_days_ago", "value": 3}]}}}, False,
     "$.sequence.then.where[0].value"),
    ("sum of a string property",
     {"and": [{"reachable": {"channel": "email"}}, {"aggregate": {
         "event": "Charged", "property": "Currency", "fn": "sum", "op": ">", "value": 1}}]},
     False, "$.and[1].aggregate.property"),
    ("strict: property not in the catalog",
     {"or": [{"did": {"event": "Charged"}}, {"profile": {"property": "Shoe Size", "op": "gt",
                                                         "value": 40}}]},
     True, "$.or[1].profile.property"),
    ("strict: event property not in the catalog",
     {"and": [{"profile": {"property": "City", "op": "exists"}},
              {"did": {"event": "Charged", "where": [{"property": "Colour", "op": "eq",
                                                      "value": "red"}]}}]},
     True, "$.and[1].did.where[0].property"),
    ("strict: property not in the catalog for that event",
     {"did": {"event": "Charged", "where": [{"property": "Platform", "op": "eq",
                                             "value": "ios"}]}},
     True, "$.did.where[0].property"),
    ("strict: aggregate of a property the event does not have",
     {"aggregate": {"event": "Added To Cart", "property": "Currency", "fn": "count_distinct",
                    "op": ">", "value": 0}},
     True, "$.aggregate.property"),
    ("window in the future", {"did": {"event": "Charged", "window": {"between": [
        "FUTURE", "FUTURE+1"]}}}, False, "$.did.window.between"),
    ("bad duration unit", {"last_did": {"event": "Charged", "more_than": {"fortnights": 2}}},
     False, "$.last_did.more_than.fortnights"),
]


def _concrete(definition: Any) -> Any:
    text = json.dumps(definition)
    return json.loads(text.replace('"FUTURE+1"', str(_future() + DAY))
                      .replace('"FUTURE"', str(_future())))


@pytest.mark.parametrize(("definition", "strict", "path"),
                         [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_invalid_definitions_422_with_json_path(api: Api, definition: Any, strict: bool,
                                                path: str) -> None:
    definition = _concrete(definition)
    extra = {"strict": True} if strict else {}
    body = _error(api.evaluate(definition, **extra), 422, path)
    assert body["error"] == "invalid_segment"
    # Saving the definition is refused the same way, and nothing is saved.
    before = api.req("GET", "").json()["segments"]
    r = api.req("POST", "", json={"name": "bad", "definition": definition, **extra})
    _error(r, 422, path)
    assert api.req("GET", "").json()["segments"] == before
    if strict:  # without strict mode an unknown property is valid (absent for everyone)
        assert api.evaluate(definition).status_code == 200


# -- saved segments: cycles, versions, deletion ------------------------------------------------
def test_cycles_between_saved_segments_rejected(api: Api) -> None:
    a = api.create("A", {"did": {"event": "Charged"}})
    b = api.create("B", {"and": [{"segment": {"id": a}},
                                 {"profile": {"property": "City", "op": "eq", "value": "Paris"}}]})
    c = api.create("C", {"not": {"segment": {"id": b}}})
    for definition in ({"or": [{"segment": {"id": b}}, {"did": {"event": "Charged"}}]},  # A↔B
                       {"and": [{"did": {"event": "Charged"}},
                                {"segment": {"id": c, "member": False}}]},  # A→C→B→A
                       {"segment": {"id": a}}):  # A→A
        r = api.update(a, "A", definition)
        assert r.status_code == 422, r.text
        assert "cycle" in r.json()["message"]
    seg = api.req("GET", f"/{a}").json()
    assert seg["version"] == 1 and seg["definition"] == {"did": {"event": "Charged"}}
    # A reference to a segment that does not exist is refused too.
    r = api.req("POST", "", json={"name": "D", "definition": {"segment": {"id": 987654}}})
    assert r.status_code == 422 and "987654" in r.json()["message"], r.text
    # The non-cyclic chain evaluates: C = not (charged and in Paris).
    assert api.req("GET", f"/{c}/count").json()["count"] == len(
        api.expected({"not": {"and": [{"did": {"event": "Charged"}}, {
            "profile": {"property": "City", "op": "eq", "value": "Paris"}}]}}))


def test_versions_are_kept_on_update(api: Api) -> None:
    d1 = {"did": {"event": "Charged"}}
    d2 = {"did": {"event": "Charged", "count": {"op": ">=", "value": 2}}}
    d3 = {"profile": {"property": "City", "op": "eq", "value": "Paris"}}
    seg = api.create("v1", d1)
    assert api.update(seg, "v2", d2).json()["version"] == 2
    r = api.update(seg, "v3", d3)
    assert r.status_code == 200 and r.json()["version"] == 3
    got = api.req("GET", f"/{seg}").json()
    assert (got["name"], got["definition"], got["version"]) == ("v3", d3, 3)
    assert [(v["version"], v["name"], v["definition"]) for v in got["versions"]] == [
        (1, "v1", d1), (2, "v2", d2), (3, "v3", d3)]
    assert api.req("GET", f"/{seg}/count").json()["count"] == len(api.expected(d3))
    # An invalid update changes nothing.
    r = api.update(seg, "v4", {"profile": {"property": "City", "op": "similar", "value": "x"}})
    assert r.status_code == 422
    assert api.req("GET", f"/{seg}").json()["version"] == 3


def test_delete_refused_while_referenced(api: Api) -> None:
    base = api.create("base", {"did": {"event": "Added To Cart"}})
    user = api.create("user", {"or": [{"reachable": {"channel": "sms"}},
                                      {"not": {"segment": {"id": base}}}]})
    r = api.req("DELETE", f"/{base}")
    assert r.status_code == 409, r.text
    assert str(user) in r.json()["message"]
    assert api.req("GET", f"/{base}").status_code == 200
    assert api.req("DELETE", f"/{user}").status_code == 200
    assert api.req("DELETE", f"/{base}").status_code == 200
    for path in (f"/{base}", f"/{base}/count", f"/{user}"):
        assert api.req("GET", path).status_code == 404
    assert base not in {s["id"] for s in api.req("GET", "").json()["segments"]}


# -- count, members paging, export, explain, contains ------------------------------------------
def test_count_members_paging_export_explain_contains(api: Api) -> None:
    definition = {"did": {"event": "Charged", "count": {"op": ">=", "value": 0}}}
    seg = api.create("everyone", definition)
    assert api.req("GET", f"/{seg}/count").json() == {"id": seg, "count": len(EVERYONE)}
    # Paging: pages of 2 in id order, the last page's cursor is null.
    pages, cursor = [], "0"
    while cursor is not None:
        r = api.req("GET", f"/{seg}/members", params={"limit": 2, "cursor": cursor})
        assert r.status_code == 200
        pages.append(r.json()["members"])
        cursor = r.json()["next_cursor"]
    assert [len(p) for p in pages] == [2, 2, 2, 0]
    rows = [m for p in pages for m in p]
    assert [m["id"] for m in rows] == sorted({m["id"] for m in rows})
    assert {m["identity"] for m in rows} == EVERYONE
    assert {m["email"] for m in rows if m["identity"] == "ann"} == {"ann@example.com"}
    for bad in ({"limit": 0}, {"limit": 1001}, {"cursor": "abc"}):
        assert api.req("GET", f"/{seg}/members", params=bad).status_code == 400
    # Export: CSV (the default) and Parquet, every member with their identifiers.
    r = api.req("GET", f"/{seg}/export")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    assert {t["identity"] for t in table} == EVERYONE
    assert {(t["id"], t["identity"]) for t in table} == {(str(m["id"]), m["identity"])
                                                         for m in rows}
    r = api.req("GET", f"/{seg}/export", params={"format": "parquet"})
    assert r.status_code == 200
    parquet = pq.read_table(io.BytesIO(r.content)).to_pylist()
    assert {(p["id"], p["identity"], p["email"]) for p in parquet} == {
        (m["id"], m["identity"], m["email"]) for m in rows}
    assert api.req("GET", f"/{seg}/export", params={"format": "xml"}).status_code == 400
    # Explain: words and the SQL.
    paris = api.ids["paris"]
    r = api.req("GET", f"/{api.ids['charged_30d']}/explain")
    assert r.json()["explanation"] == "People who did Charged in the last 30 days"
    assert "SELECT" in r.json()["sql"]
    # Contains: one person, by any identifier.
    for query, member in (({"identity": "ann"}, True), ({"identity": "bob"}, False),
                          ({"email": "ann@example.com"}, True), ({"phone": "+15550003"}, True),
                          ({"email": "eve@example.com"}, False)):
        r = api.req("GET", f"/{paris}/contains", params=query)
        assert r.status_code == 200 and r.json() == {"id": paris, "member": member}, query
    assert api.req("GET", f"/{paris}/contains", params={"identity": "nobody"}).status_code == 404
    assert api.req("GET", f"/{paris}/contains").status_code == 400


def test_schema_is_published(api: Api) -> None:
    r = api.req("GET", "/schema")
    assert r.status_code == 200
    text = r.text
    for kind in ("did", "did_not", "aggregate", "first_time", "last_did", "sequence",
                 "profile", "reachable", "segment", "anniversary_within_days"):
        assert f'"{kind}"' in text


# -- isolation between accounts ----------------------------------------------------------------
def test_other_accounts_cannot_see_segment_ids(api: Api) -> None:
    other = json.loads(nudge_cli(api.srv.data_dir, "accounts", "create", "other", "--json"))
    theirs = {"X-Nudge-Account-Id": other["id"], "X-Nudge-Passcode": other["passcode"]}
    mine = api.ids["charged_30d"]
    missing = 10**9
    assert mine not in {s["id"] for s in api.req("GET", "", theirs).json()["segments"]}
    for method, path, kw in [
            ("GET", "/{}", {}), ("GET", "/{}/count", {}), ("GET", "/{}/members", {}),
            ("GET", "/{}/export", {}), ("GET", "/{}/explain", {}),
            ("GET", "/{}/contains", {"params": {"identity": "ann"}}),
            ("PUT", "/{}", {"json": {"name": "x", "definition": {"did": {"event": "x"}}}}),
            ("DELETE", "/{}", {})]:
        r = api.req(method, path.format(mine), theirs, **kw)
        nothing = api.req(method, path.format(missing), theirs, **kw)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json() == nothing.json(), (method, path)  # no hint that the id exists
    # Referring to it from the other account reads like a segment that does not exist.
    r = api.req("POST", "/evaluate", theirs, json={"definition": {"segment": {"id": mine}}})
    nothing = api.req("POST", "/evaluate", theirs,
                      json={"definition": {"segment": {"id": missing}}})
    assert r.status_code == nothing.status_code == 422
    assert r.json()["message"].replace(str(mine), "N") == \
        nothing.json()["message"].replace(str(missing), "N")
    r = api.req("POST", "", theirs, json={"name": "x", "definition": {"segment": {"id": mine}}})
    assert r.status_code == 422
    # The owner still has it, unchanged.
    seg = api.req("GET", f"/{mine}").json()
    assert seg["version"] == 1 and seg["name"] == "charged_30d"
