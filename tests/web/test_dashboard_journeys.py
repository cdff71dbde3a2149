"""The journey canvas (nudge/web/journeys.py, static/journey_canvas.js) in Debian's Chromium
against a real server: a marketer builds an abandoned-cart journey node by node, publishes it,
events ingested through the API move people through it, the email of the timeout branch
arrives at a real SMTP server (aiosmtpd) and the canvas shows the report's counts on each
node; an invalid graph shows the validator's problems on the offending nodes; a viewer gets
no edit controls and the server refuses the viewer's forged requests."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from dashboard_helpers import (
    page_without_script_errors,
    signed_in,
    smtp_backed_server,
)
from playwright.sync_api import Browser, BrowserContext, Page, expect

from conftest import NudgeServer
from tests.engage import engage_helpers as h
from tests.engage.providers import SmtpServer

pytest_plugins = ["browser"]

MARKETER, VIEWER = "jm@example.com", "jv@example.com"
INVALID = re.compile(r"\binvalid\b")
FAST = {"NUDGE_ENGAGE_POLL_MS": "50", "NUDGE_JOURNEY_POLL_MS": "100"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NudgeServer, SmtpServer]]:
    with smtp_backed_server(tmp_path_factory.mktemp("nudge"), tmp_path_factory.mktemp("tls"),
                            FAST, {MARKETER: "marketer", VIEWER: "viewer"}) as pair:
        yield pair


@pytest.fixture(scope="module")
def srv(servers: tuple[NudgeServer, SmtpServer]) -> NudgeServer:
    return servers[0]


@pytest.fixture(scope="module")
def smtp(servers: tuple[NudgeServer, SmtpServer]) -> SmtpServer:
    return servers[1]


@pytest.fixture(scope="module")
def marketer_context(browser: Browser, srv: NudgeServer) -> Iterator[BrowserContext]:
    ctx = signed_in(browser, srv, MARKETER)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def marketer(marketer_context: BrowserContext) -> Iterator[Page]:
    with page_without_script_errors(marketer_context) as p:
        yield p


def _node(page: Page, nid: str) -> Any:
    return page.locator(f"g[data-node='{nid}']")


def _add(page: Page, kind: str, after: str | None = None) -> None:
    """Select ``after`` (or nothing) on the canvas and add a node of ``kind`` after it."""
    if after:
        _node(page, after).click()
    else:
        page.click("#journey-settings")
    page.select_option("#add-type", kind)
    page.click("#add-node")


def _expect_status(page: Page, status: str) -> None:
    try:
        expect(page.locator("[data-journey-status]")).to_have_text(status)
    except AssertionError:
        raise AssertionError(f"status not {status!r}; the canvas says: "
                             f"{page.locator('#journey-message').inner_text()!r} "
                             f"{page.locator('#journey-problems').inner_text()!r}") from None


def _set_property(page: Page, n: int, prop: str, value: str) -> None:
    """Row ``n`` of an update_profile node's properties (the segment builder's filter rows
    without an operator)."""
    if page.get_by_label(f"Set profile properties: property {n}").count() == 0:
        page.get_by_role("button", name="Add property: Set profile properties").click()
    page.get_by_label(f"Set profile properties: property {n}").fill(prop)
    page.get_by_label(f"Set profile properties: value {n}").fill(value)


def _span(page: Page, legend: str, amount: float, unit: str) -> None:
    box = page.locator("#journey-panel fieldset", has=page.locator("legend", has_text=legend))
    box.get_by_label("unit").select_option(unit)
    box.get_by_label("amount").fill(str(amount))


def test_abandoned_cart_built_on_the_canvas_runs_and_shows_counts(
        marketer: Page, srv: NudgeServer, smtp: SmtpServer) -> None:
    page = marketer
    h.profiles(srv, [{"identity": f"ac{i}", "Email": f"ac{i}@example.com", "first_name": f"A{i}"}
                     for i in range(3)])
    mail = h.api(srv, "POST", "/1/campaigns", {
        "name": "Cart reminder", "kind": "api", "channels": ["email"],
        "content": {"email": {"subject": "You left something, {{ profile.first_name }}",
                              "text": "Come back"}}}, ok=201).json()

    page.goto(f"{srv.url}/ui/{srv.account_id}/journeys")
    page.click("#new-journey")
    page.get_by_label("Name", exact=True).fill("Abandoned cart")
    page.get_by_label("Entry event", exact=True).fill("Added To Cart")
    page.get_by_label("Goal event (converts and exits)").fill("Charged")

    _add(page, "wait_event")  # the first node becomes the start
    page.get_by_label("Wait for event").fill("Charged")
    _span(page, "Time out after", 0.2, "minutes")
    _add(page, "exit", after="wait-event")  # on_event -> exit
    _add(page, "send", after="wait-event")  # on_timeout -> send
    page.get_by_label("Message (a campaign", exact=False).select_option(str(mail["id"]))
    page.get_by_label("Then (next)").select_option("exit")
    expect(page.locator("line[data-edge]")).to_have_count(3)

    with page.expect_request("**/1/journeys") as posted:
        page.click("#publish-journey")
    _expect_status(page, "published")
    saved_body = json.loads(posted.value.post_data or "{}")
    jid = int(page.url.rsplit("/", 1)[1])
    stored = h.api(srv, "GET", f"/1/journeys/{jid}", ok=200).json()
    assert stored["definition"] == saved_body  # the canvas posted the API's own shape
    assert saved_body["entry"] == {"event": "Added To Cart"}
    assert saved_body["start"] == "wait-event"
    assert {n["id"]: n["type"] for n in saved_body["nodes"]} == {
        "wait-event": "wait_event", "exit": "exit", "send": "send"}
    wait = next(n for n in saved_body["nodes"] if n["id"] == "wait-event")
    assert (wait["on_event"], wait["on_timeout"], wait["timeout"]) == \
        ("exit", "send", {"minutes": 0.2})

    before = len(smtp.messages)
    now = int(time.time())
    r = srv.upload([{"type": "event", "identity": f"ac{i}", "ts": now, "evtName": "Added To Cart",
                     "evtData": {"item": "shoes"}} for i in range(3)])
    assert r.status_code == 200, r.text
    h.wait_for(lambda: h.api(srv, "GET", f"/1/journeys/{jid}/report", ok=200).json()
               ["at_node"].get("wait-event") == 3, what="3 people waiting")
    srv.upload([{"type": "event", "identity": "ac0", "ts": int(time.time()), "evtName": "Charged",
                 "evtData": {}}])
    h.wait_for(lambda: len(smtp.messages) - before >= 2, what="2 reminder emails")
    assert sorted(str(m["to"]) for m in smtp.messages[before:]) == \
        ["ac1@example.com", "ac2@example.com"]
    report = h.wait_for(lambda: (x := h.api(srv, "GET", f"/1/journeys/{jid}/report",
                                            ok=200).json())["active"] == 0 and
                        sum(x["steps"].get("send", {}).values()) == 2 and x,
                        what="everyone through the journey")
    # The canvas polls the same report and overlays it on each node.
    for nid in ("wait-event", "send", "exit"):
        expect(_node(page, nid).locator("[data-passed]")).to_have_text(
            str(sum(report["steps"].get(nid, {}).values())))
        expect(_node(page, nid).locator("[data-waiting]")).to_have_text("0")
    assert report["converted"] == 1  # ac0 reached the goal (Charged) while waiting
    expect(page.locator("[data-figure=entered]")).to_have_text("3")
    expect(page.locator("[data-figure=converted]")).to_have_text(str(report["converted"]))

    page.goto(f"{srv.url}/ui/{srv.account_id}/journeys")  # the list shows the same figures
    row = page.locator(f"#journey-{jid}")
    for k in ("entered", "active", "converted"):
        expect(row.locator(f"[data-figure={k}]")).to_have_text(str(report[k]))
    row.get_by_role("link", name="Abandoned cart").click()
    page.click("#pause-journey")
    _expect_status(page, "paused")
    assert h.api(srv, "GET", f"/1/journeys/{jid}", ok=200).json()["status"] == "paused"
    page.click("#resume-journey")
    _expect_status(page, "published")


def test_validation_problems_are_marked_on_the_offending_nodes(
        marketer: Page, srv: NudgeServer) -> None:
    page = marketer
    page.goto(f"{srv.url}/ui/{srv.account_id}/journeys/new")
    page.get_by_label("Name", exact=True).fill("Broken")
    page.get_by_label("Entry", exact=True).select_option("api")
    _add(page, "condition")  # start; yes/no not connected
    page.get_by_label("Event", exact=True).fill("Opened App")
    _add(page, "update_profile", after="condition")  # yes -> update-profile (no next)
    _set_property(page, 1, "vip", "true")
    page.click("#journey-settings")
    _add(page, "exit")  # connected to nothing: unreachable
    with page.expect_request("**/1/journeys/validate") as req:
        page.click("#validate-journey")
    expect(page.locator("#journey-problems li")).not_to_have_count(0)
    body = json.loads(req.value.post_data or "{}")
    api = h.api(srv, "POST", "/1/journeys/validate", body, ok=400).json()
    bad_nodes = {p["node"] for p in api["problems"]}
    assert bad_nodes == {"condition", "update-profile", "exit"}
    for nid in bad_nodes:
        expect(_node(page, nid)).to_have_class(INVALID)
        reasons = "; ".join(p["reason"] for p in api["problems"] if p["node"] == nid)
        expect(_node(page, nid).locator("[data-problem]")).to_have_attribute("data-problem",
                                                                           reasons)
    expect(page.locator("#journey-problems li")).to_have_count(len(api["problems"]))
    # Saving is refused the same way, and nothing is stored.
    page.click("#save-journey")
    expect(page.locator("#journey-message")).to_contain_text("Not valid")
    names = [j["name"] for j in h.api(srv, "GET", "/1/journeys", ok=200).json()["journeys"]]
    assert "Broken" not in names

    # A field-level error (a parse error, before the graph checks) lands on its node too.
    page.get_by_role("button", name="condition", exact=True).click()
    expect(page.locator("#n-id")).to_have_value("condition")
    page.get_by_label("Then (no)").select_option("exit")
    page.get_by_label("Then (yes)").select_option("update-profile")
    _node(page, "update-profile").click()
    page.get_by_label("Then (next)").select_option("exit")
    page.get_by_role("button", name="Remove property 1: Set profile properties").click()
    page.click("#validate-journey")
    expect(_node(page, "update-profile")).to_have_class(INVALID)
    expect(page.locator("#journey-problems")).to_contain_text("nodes[1].set")
    _set_property(page, 1, "vip", "true")
    page.click("#validate-journey")
    expect(page.locator("#journey-message")).to_have_text("Valid: ready to publish.")
    expect(page.locator("g[data-node].invalid")).to_have_count(0)


def test_viewer_sees_no_edit_controls_and_forged_writes_are_refused(
        browser: Browser, srv: NudgeServer) -> None:
    j = h.api(srv, "POST", "/1/journeys", {
        "name": "Read only", "entry": {"api": True}, "start": "bye",
        "nodes": [{"id": "bye", "type": "exit"}]}, ok=201).json()
    ctx = signed_in(browser, srv, VIEWER)
    try:
        page = ctx.new_page()
        page.goto(f"{srv.url}/ui/{srv.account_id}/journeys")
        expect(page.locator("#new-journey")).to_have_count(0)
        page.get_by_role("link", name="Read only").click()
        expect(_node(page, "bye")).to_be_visible()
        for control in ("#add-node", "#save-journey", "#publish-journey", "#validate-journey",
                        "#delete-node"):
            expect(page.locator(control)).to_have_count(0)
        expect(page.get_by_label("Name", exact=True)).to_be_disabled()
        r = page.goto(f"{srv.url}/ui/{srv.account_id}/journeys/new")
        assert r is not None and r.status == 403

        csrf = next(c["value"] for c in ctx.cookies() if c["name"] == "nudge_csrf")
        headers = {"X-CSRF-Token": csrf, "X-Nudge-Account-Id": srv.account_id}
        forged = {"name": "Forged", "entry": {"api": True}, "start": "x",
                  "nodes": [{"id": "x", "type": "exit"}]}
        assert ctx.request.post(srv.url + "/1/journeys", data=forged,
                                headers=headers).status == 403
        assert ctx.request.put(f"{srv.url}/1/journeys/{j['id']}", data=forged,
                               headers=headers).status == 403
        assert ctx.request.post(f"{srv.url}/1/journeys/{j['id']}/publish",
                                headers=headers).status == 403
        after = h.api(srv, "GET", f"/1/journeys/{j['id']}", ok=200).json()
        assert (after["name"], after["status"]) == ("Read only", "draft")
        names = [x["name"] for x in h.api(srv, "GET", "/1/journeys", ok=200).json()["journeys"]]
        assert "Forged" not in names
    finally:
        ctx.close()


def test_every_node_type_and_setting_saves_as_the_api_definition(
        marketer: Page, srv: NudgeServer) -> None:
    """Date-property entry, delay (date property with offset, duration, time of day),
    condition, A/B split, send, webhook, update profile, wait for event, exit, and the
    journey's goal, exit criteria, re-entry and limits — built with the panel's controls
    only, saved, and stored exactly as the API's definition."""
    page = marketer
    cid = h.api(srv, "POST", "/1/campaigns", {
        "name": "Renewal reminder", "kind": "api", "channels": ["email"],
        "content": {"email": {"subject": "Renew", "text": "Please"}}}, ok=201).json()["id"]
    page.goto(f"{srv.url}/ui/{srv.account_id}/journeys/new")
    page.get_by_label("Name", exact=True).fill("Renewal")
    page.get_by_label("Entry", exact=True).select_option("date")
    page.get_by_label("Date property").fill("renewal_date")
    _node(page, "on-date").click()
    _span(page, "Offset", 7, "days")
    page.get_by_label("before the date").check()
    _add(page, "condition", after="on-date")
    page.get_by_label("Event", exact=True).fill("Opened App")
    _add(page, "split", after="condition")  # yes
    page.get_by_label("Branch 1 share (%)").fill("60")
    page.get_by_label("Branch 2 share (%)").fill("40")
    _add(page, "send", after="split")
    page.get_by_label("Message (a campaign", exact=False).select_option(str(cid))
    _add(page, "delay", after="send")
    page.locator("#journey-panel fieldset", has_text="Wait for").get_by_label("hours").fill("2")
    _add(page, "exit", after="delay")
    _add(page, "webhook", after="split")
    page.get_by_label("URL (POST)").fill("https://hooks.example.com/renewal")
    page.get_by_label("Then (next)").select_option("exit")
    _add(page, "update_profile", after="condition")  # no
    _set_property(page, 1, "churn_risk", "true")
    _add(page, "delay", after="update-profile")
    page.get_by_label("Delay kind").select_option("until_time")
    _add(page, "wait_event", after="delay-2")
    page.get_by_label("Wait for event").fill("Charged")
    _span(page, "Time out after", 3, "days")
    page.get_by_label("Then (on_event)").select_option("exit")
    page.get_by_label("Then (on_timeout)").select_option("exit")
    # Keyboard: focus a node and press Enter to edit it.
    _node(page, "split").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#n-id")).to_have_value("split")
    page.click("#journey-settings")
    page.get_by_label("Goal event (converts and exits)").fill("Renewed")
    for i, event in enumerate(("Cancelled", "Uninstalled"), 1):
        page.click("#add-exit")
        page.get_by_label(f"Exit event {i}", exact=True).fill(event)
    page.get_by_label("Re-entry").select_option("after")
    _span(page, "Re-enter after", 30, "days")
    page.get_by_label("Most entries per person").fill("3")
    page.get_by_label("Most people in the journey (user limit)").fill("1000")
    with page.expect_response("**/1/journeys") as resp:
        page.click("#save-journey")
    assert resp.value.status == 201, resp.value.text()
    jid = resp.value.json()["id"]
    expected = {
        "name": "Renewal",
        "entry": {"segment": {"profile": {"property": "renewal_date", "op": "exists"}}},
        "start": "on-date",
        "nodes": [
            {"id": "on-date", "type": "delay", "until_property": "renewal_date",
             "offset": {"days": 7, "before": True}, "next": "condition"},
            {"id": "condition", "type": "condition", "did": {"event": "Opened App"},
             "yes": "split", "no": "update-profile"},
            {"id": "split", "type": "split", "branches": [{"percent": 60, "next": "send"},
                                                          {"percent": 40, "next": "webhook"}]},
            {"id": "send", "type": "send", "campaign_id": cid, "next": "delay"},
            {"id": "delay", "type": "delay", "duration": {"hours": 2}, "next": "exit"},
            {"id": "exit", "type": "exit"},
            {"id": "webhook", "type": "webhook", "url": "https://hooks.example.com/renewal",
             "next": "exit"},
            {"id": "update-profile", "type": "update_profile", "set": {"churn_risk": True},
             "next": "delay-2"},
            {"id": "delay-2", "type": "delay", "until_time": "09:00", "next": "wait-event"},
            {"id": "wait-event", "type": "wait_event", "event": "Charged",
             "timeout": {"days": 3}, "on_event": "exit", "on_timeout": "exit"}],
        "goal": {"event": "Renewed"},
        "exit_when": [{"event": "Cancelled"}, {"event": "Uninstalled"}],
        "reentry": {"mode": "after", "after": {"days": 30}, "max_entries": 3},
        "max_users": 1000}
    assert h.api(srv, "GET", f"/1/journeys/{jid}", ok=200).json()["definition"] == expected
    # Reopened, the canvas draws it back from the stored definition.
    page.reload()
    expect(page.locator("g[data-node]")).to_have_count(10)
    expect(page.locator("line[data-edge]")).to_have_count(12)
    expect(page.get_by_label("Entry", exact=True)).to_have_value("date")


def test_layout_points_every_forward_edge_down() -> None:
    """Rows by longest path: an exit reached both early and late sits below both; a loop
    back does not push nodes down forever; unreachable nodes go last."""
    from nudge.web.journeys import edges_of, layout

    d = {"start": "wait", "nodes": [
        {"id": "wait", "type": "wait_event", "on_event": "done", "on_timeout": "test"},
        {"id": "test", "type": "split", "branches": [{"percent": 50, "next": "remind"},
                                                     {"percent": 50, "next": "again"}]},
        {"id": "remind", "type": "send", "campaign_id": 1, "next": "done"},
        {"id": "again", "type": "delay", "duration": {"days": 1}, "next": "wait"},
        {"id": "done", "type": "exit"}, {"id": "orphan", "type": "exit"}]}
    pos = layout(d)
    back = {("again", "wait")}
    for n in d["nodes"]:
        for _, t in edges_of(n):
            if (n["id"], t) not in back:
                assert pos[t]["y"] > pos[n["id"]]["y"], (n["id"], t)
    assert pos["orphan"]["y"] > max(p["y"] for k, p in pos.items() if k != "orphan")
    assert len({(p["x"], p["y"]) for p in pos.values()}) == len(pos)  # no two overlap
