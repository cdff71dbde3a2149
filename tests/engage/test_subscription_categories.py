"""``/1/subscription-categories`` against a real server: CRUD with the default category and
archiving, field-naming validation that changes nothing, the audit entries (read from the
real control store), campaigns and subscriptions checked against the list (422 naming
``category``), a viewer refused, and a second account seeing none of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from conftest import NudgeServer, make_server, nudge_cli
from nudge.tenancy import audit
from tests.engage import engage_helpers as h
from tests.web.dashboard_helpers import PASSWORD, add_user

PATH = "/1/subscription-categories"
VIEWER = "cat-viewer@example.com"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NudgeServer]:
    s = make_server(tmp_path_factory.mktemp("categories"))
    try:
        add_user(s, VIEWER, "viewer")
        yield s
    finally:
        s.stop()


def keys(srv: Any, archived: bool = False) -> list[str]:
    r = h.api(srv, "GET", PATH, params={"archived": "true"} if archived else {}, ok=200)
    return [c["key"] for c in r.json()["categories"]]


def email_campaign(category: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": f"c-{category}", "kind": "api", "channels": ["email"],
                            "content": {"email": {"subject": "Hi", "text": "x"}}}
    if category is not None:
        body["category"] = category
    return body


def test_crud_archive_and_audit(srv: NudgeServer) -> None:
    assert keys(srv) == ["general"]  # the default exists from the start
    c = h.api(srv, "POST", PATH, {"name": "Product news", "description": "Monthly"},
              ok=201).json()
    assert (c["key"], c["name"], c["description"], c["archived"], c["default"]) == (
        "product-news", "Product news", "Monthly", False, False)
    h.api(srv, "POST", PATH, {"name": "Offers", "key": "offers"}, ok=201)
    r = h.api(srv, "POST", PATH, {"name": "Offers again", "key": "offers"}, ok=409)
    assert "offers" in r.json()["message"]
    renamed = h.api(srv, "PUT", f"{PATH}/offers", {"name": "Deals", "description": "Sales"},
                    ok=200).json()
    assert (renamed["key"], renamed["name"], renamed["description"]) == ("offers", "Deals",
                                                                         "Sales")
    assert h.api(srv, "GET", f"{PATH}/offers", ok=200).json()["name"] == "Deals"
    assert keys(srv) == ["general", "offers", "product-news"]  # default first, then by name
    assert h.api(srv, "DELETE", f"{PATH}/offers", ok=200).json()["archived"] is True
    assert keys(srv) == ["general", "product-news"]
    assert keys(srv, archived=True) == ["general", "product-news", "offers"]
    assert h.api(srv, "PUT", f"{PATH}/offers", {"archived": False}, ok=200).json()[
        "archived_at"] is None
    r = h.api(srv, "PUT", f"{PATH}/general", {"archived": True}, ok=400)
    assert r.json()["field"] == "archived"
    h.api(srv, "GET", f"{PATH}/nope", ok=404)

    engine = sa.create_engine(f"sqlite:///{srv.data_dir / 'control.db'}")
    try:
        got = [(e.action, e.target, e.detail) for e in reversed(audit.entries(
            engine, srv.account_id, limit=50)) if e.action.startswith("subscription_category")]
    finally:
        engine.dispose()
    assert got == [
        ("subscription_category.created", "subscription_category:product-news",
         {"name": "Product news"}),
        ("subscription_category.created", "subscription_category:offers", {"name": "Offers"}),
        ("subscription_category.updated", "subscription_category:offers",
         {"name": ["Offers", "Deals"], "description": ["", "Sales"]}),
        ("subscription_category.archived", "subscription_category:offers", {"name": "Deals"}),
        ("subscription_category.updated", "subscription_category:offers",
         {"archived": [True, False]})]


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("POST", PATH, {}, "name"),
    ("POST", PATH, {"name": ""}, "name"),
    ("POST", PATH, {"name": 5}, "name"),
    ("POST", PATH, {"name": "Bad key", "key": "has space"}, "key"),
    ("POST", PATH, {"name": "!!!"}, "key"),  # its slug is empty
    ("POST", PATH, {"name": "Long", "description": "x" * 1001}, "description"),
    ("POST", PATH, {"name": "Extra", "colour": "red"}, "colour"),
    ("POST", PATH, ["Product news"], "body"),
    ("PUT", f"{PATH}/general", {"archived": "yes"}, "archived"),
    ("PUT", f"{PATH}/general", {"name": " "}, "name"),
])
def test_bad_input_names_the_field_and_changes_nothing(srv: NudgeServer, method: str,
                                                       path: str, body: Any,
                                                       field: str) -> None:
    before = h.api(srv, "GET", PATH, params={"archived": "true"}, ok=200).json()
    r = h.api(srv, method, path, body, ok=400)
    assert r.json()["field"] == field, r.text
    assert h.api(srv, "GET", PATH, params={"archived": "true"}, ok=200).json() == before


def test_campaigns_and_subscriptions_must_name_a_known_category(srv: NudgeServer) -> None:
    h.api(srv, "POST", PATH, {"name": "Tips", "key": "tips"}, ok=201)
    h.api(srv, "POST", "/1/campaigns", email_campaign(None), ok=201)  # the default
    tips = h.api(srv, "POST", "/1/campaigns", email_campaign("tips"), ok=201).json()
    r = h.api(srv, "POST", "/1/campaigns", email_campaign("unknown-cat"), ok=422)
    assert (r.json()["error"], r.json()["field"]) == ("unknown_category", "category")
    assert "tips" in r.json()["message"]  # says which ones exist
    h.api(srv, "DELETE", f"{PATH}/tips", ok=200)
    r = h.api(srv, "POST", "/1/campaigns", email_campaign("tips"), ok=422)
    assert "archived" in r.json()["message"]
    # A draft made before the archive can still be edited while it keeps its category.
    h.api(srv, "PUT", f"/1/campaigns/{tips['id']}", {**email_campaign("tips"), "name": "T2"},
          ok=200)
    h.profiles(srv, [{"identity": "cat-sub-1"}])
    sub = {"user": {"identity": "cat-sub-1"}, "channel": "email", "subscribed": False}
    r = h.api(srv, "PUT", "/1/subscriptions", {**sub, "category": "nope"}, ok=422)
    assert r.json()["field"] == "category"
    h.api(srv, "PUT", "/1/subscriptions", {**sub, "category": "tips"}, ok=200)  # archived ok


def test_a_viewer_reads_but_cannot_change(srv: NudgeServer) -> None:
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        r = c.post("/auth/login", json={"email": VIEWER, "password": PASSWORD})
        assert r.status_code == 200 and r.json()["stage"] == "full", r.text
        hdrs = {"X-CSRF-Token": c.cookies["nudge_csrf"], "X-Nudge-Account-Id": srv.account_id}
        assert c.get(PATH, headers=hdrs).status_code == 200
        before = keys(srv, archived=True)
        assert c.post(PATH, json={"name": "Viewer's"}, headers=hdrs).status_code == 403
        assert c.put(f"{PATH}/general", json={"name": "X"}, headers=hdrs).status_code == 403
        assert c.delete(f"{PATH}/product-news", headers=hdrs).status_code == 403
    assert keys(srv, archived=True) == before
    assert h.api(srv, "GET", f"{PATH}/general", ok=200).json()["name"] == "General"


def test_accounts_do_not_share_categories(srv: NudgeServer) -> None:
    h.api(srv, "POST", PATH, {"name": "Mine only", "key": "mine-only"}, ok=201)
    o = json.loads(nudge_cli(srv.data_dir, "accounts", "create", "other", "--json"))
    other = type("Other", (), {"url": srv.url, "headers": {
        "X-Nudge-Account-Id": o["id"], "X-Nudge-Passcode": o["passcode"]}})()
    assert keys(other, archived=True) == ["general"]
    h.api(other, "GET", f"{PATH}/mine-only", ok=404)
    h.api(other, "PUT", f"{PATH}/mine-only", {"name": "Taken"}, ok=404)
    h.api(other, "DELETE", f"{PATH}/mine-only", ok=404)
    r = h.api(other, "POST", "/1/campaigns", email_campaign("mine-only"), ok=422)
    assert r.json()["field"] == "category"
    h.api(other, "POST", PATH, {"name": "Mine only", "key": "mine-only"}, ok=201)  # own list
    assert h.api(srv, "GET", f"{PATH}/mine-only", ok=200).json()["archived"] is False
