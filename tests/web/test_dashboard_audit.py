"""Issue 9's last gaps, in Debian's Chromium against a real server with a real SMTP server
(aiosmtpd):

- on the journey canvas, segment definitions (entry and condition) are built with the
  segment builder's condition editor (its reach is the API's count), update_profile's
  properties and the goal / exit events' filters with the filter rows; what is published
  is exactly what the API returns;
- the filter rows' value typing in the browser (static/filter_rows.js) agrees with the
  server's (``segments.typed_value``) case by case;
- the preference page asks only about channels where the person can be reached;
- the account switcher takes a member to their other account and the server refuses an
  account that is not theirs;
- a long action (a GDPR erase) shows progress while its request runs.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from dashboard_helpers import (
    add_user,
    page_without_script_errors,
    signed_in,
    signed_in_with_mfa,
    smtp_backed_server,
)
from playwright.sync_api import Browser, Page, expect

from conftest import NudgeServer, nudge_cli
from nudge.web.segments import typed_value
from tests.engage import engage_helpers as h
from tests.engage.providers import SmtpServer

pytest_plugins = ["browser"]

MARKETER, ANALYST, ADMIN = "audit-m@example.com", "audit-a@example.com", "audit-ad@example.com"
FAST = {"NUDGE_ENGAGE_POLL_MS": "50"}
DAY = 86400


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NudgeServer, SmtpServer]]:
    with smtp_backed_server(tmp_path_factory.mktemp("nudge"), tmp_path_factory.mktemp("tls"),
                            FAST, {MARKETER: "marketer", ANALYST: "analyst",
                                   ADMIN: "admin"}) as pair:
        yield pair


@pytest.fixture(scope="module")
def srv(servers: tuple[NudgeServer, SmtpServer]) -> NudgeServer:
    return servers[0]


@pytest.fixture
def marketer(browser: Browser, srv: NudgeServer) -> Iterator[Page]:
    ctx = signed_in(browser, srv, MARKETER)
    try:
        with page_without_script_errors(ctx) as p:
            p.set_default_timeout(30_000)
            yield p
    finally:
        ctx.close()


def _rows(page: Page, legend: str, n: int, prop: str, op: str | None, value: str) -> None:
    page.get_by_role("button", name=f"Add {'filter' if op else 'property'}: {legend}").click()
    page.get_by_label(f"{legend}: property {n}").fill(prop)
    if op:
        page.get_by_label(f"{legend}: operator {n}").select_option(op)
    page.get_by_label(f"{legend}: value {n}").fill(value)


def _count(srv: NudgeServer, definition: Any) -> int:
    r = h.api(srv, "POST", "/1/segments/evaluate", {"definition": definition}, ok=200)
    return int(r.json()["count"])


def test_canvas_segment_definitions_properties_and_goal_exit_filters(
        marketer: Page, srv: NudgeServer) -> None:
    page = marketer
    h.profiles(srv, [{"identity": f"pu{i}", "plan": ["pro", "team", "free"][i % 3],
                      "Phone": f"+1555000{i:04d}"} for i in range(7)])
    page.goto(f"{srv.url}/ui/{srv.account_id}/journeys/new")
    page.get_by_label("Name", exact=True).fill("Plan upgrade")
    page.get_by_label("Entry", exact=True).select_option("segment")
    entry = page.locator("[data-segment-editor='Entry segment definition']")
    c0, c1 = entry.locator("#cond-0"), entry.locator("#cond-1")
    c0.get_by_label("Type").select_option("profile")
    c0.get_by_label("profile property").fill("plan")
    c0.locator("label[data-for=profile][data-filter=op] select").select_option("in")
    c0.locator("label[data-for=profile][data-filter=value] input").fill("pro, team")
    profile = {"profile": {"property": "plan", "op": "in", "value": ["pro", "team"]}}
    expect(entry.locator("[data-reach]")).to_have_text(str(_count(srv, profile)))
    c1.get_by_label("Type").select_option("did_not")
    c1.get_by_label("Event", exact=True).fill("Charged")
    c1.get_by_label("where property").fill("Amount")
    c1.locator("label[data-filter=op]:not([data-for=profile]) select").select_option("gt")
    c1.locator("label[data-filter=value]:not([data-for=profile]) input").fill("100")
    entry_def = {"and": [profile, {"did_not": {"event": "Charged", "where": [
        {"property": "Amount", "op": "gt", "value": 100}]}}]}
    shown = json.dumps(entry_def, indent=2, sort_keys=True)  # as the reach fragment shows it
    expect(entry.locator("[data-definition]")).to_have_text(shown)
    expect(entry.locator("[data-reach]")).to_have_text(str(_count(srv, entry_def)))

    page.get_by_label("Goal event (converts and exits)").fill("Upgraded")
    _rows(page, "Goal filters", 1, "plan", "eq", "team")
    page.click("#add-exit")
    page.get_by_label("Exit event 1", exact=True).fill("Cancelled")
    _rows(page, "Exit 1 filters", 1, "reason", "in", "price, other")

    page.select_option("#add-type", "condition")
    page.click("#add-node")
    page.get_by_label("Condition", exact=True).select_option("segment")
    cond = page.locator("[data-segment-editor='Segment definition']")
    cond.locator("#cond-0").get_by_label("Type").select_option("did")
    # A row the server refuses shows the server's reason, as in the builder.
    expect(cond.locator("[data-reach-error]")).to_contain_text("event")
    cond.locator("#cond-0").get_by_label("Type").select_option("reachable")
    cond.locator("#cond-0").get_by_label("channel").select_option("sms")
    expect(cond.locator("[data-reach]")).to_have_text(
        str(_count(srv, {"reachable": {"channel": "sms"}})))
    page.select_option("#add-type", "update_profile")
    page.click("#add-node")  # condition yes -> update-profile
    _rows(page, "Set profile properties", 1, "tier", None, "gold")
    _rows(page, "Set profile properties", 2, "score", None, "10")
    _rows(page, "Set profile properties", 3, "vip", None, "true")
    page.select_option("#add-type", "exit")
    page.click("#add-node")  # update-profile next -> exit
    page.locator("g[data-node=condition]").click()
    page.get_by_label("Then (no)").select_option("exit")
    with page.expect_response("**/publish") as resp:
        page.click("#publish-journey")
    assert resp.value.status == 200, resp.value.text()
    jid = int(page.url.rsplit("/", 1)[1])
    d = h.api(srv, "GET", f"/1/journeys/{jid}", ok=200).json()["definition"]
    assert d["entry"] == {"segment": entry_def}
    assert d["goal"] == {"event": "Upgraded",
                         "where": [{"property": "plan", "op": "eq", "value": "team"}]}
    assert d["exit_when"] == [{"event": "Cancelled", "where": [
        {"property": "reason", "op": "in", "value": ["price", "other"]}]}]
    nodes = {n["id"]: n for n in d["nodes"]}
    assert nodes["condition"]["segment"] == {"reachable": {"channel": "sms"}}
    assert nodes["update-profile"]["set"] == {"tier": "gold", "score": 10, "vip": True}
    # Reopened: a stored definition opens in the editor's JSON box, counted again.
    page.reload()
    entry = page.locator("[data-segment-editor='Entry segment definition']")
    expect(entry.locator("[data-reach]")).to_have_text(str(_count(srv, entry_def)))
    assert json.loads(entry.locator("textarea[name=json]").input_value()) == entry_def
    expect(page.get_by_label("Exit 1 filters: value 1")).to_have_value("price, other")


CASES = [("10", "eq"), (" 10 ", "gt"), ("1.5", "lte"), ("true", "eq"), ("null", "eq"),
         ("pro", "eq"), ("", "eq"), ("01", "eq"), ("1e3", "eq"), ("NaN", "eq"),
         ("Infinity", "gt"), ('"quoted"', "eq"), ('{"a": 1}', "eq"), ("[1, \"a\"]", "in"),
         ("pro, team", "in"), ("a,, 2 ,true", "not_in"), ("1,5", "between"),
         ("x", "exists"), ("", "not_exists"), ("2026-01-01", "after_days_ago")]


def test_filter_rows_type_values_as_the_server_does(marketer: Page, srv: NudgeServer) -> None:
    page = marketer
    page.goto(f"{srv.url}/ui/{srv.account_id}/journeys/new")
    got = page.evaluate("cases => cases.map(([t, op]) => { const v = NudgeFilterRows.typed(t, op);"
                        " return v === undefined ? null : v; })", CASES)
    want = [typed_value(t, op) for t, op in CASES]
    assert got == want


def test_preference_page_asks_about_reachable_channels_only(
        servers: tuple[NudgeServer, SmtpServer]) -> None:
    srv, smtp = servers
    h.profiles(srv, [{"identity": "pref1", "grp": "pref", "Email": "pref1@example.com",
                      "Phone": "+15550009999"}])
    before = len(smtp.messages)
    h.campaign(srv, {"name": "pref", "channels": ["email"],
                     "audience": {"definition": {"profile": {"property": "grp", "op": "eq",
                                                              "value": "pref"}}},
                     "content": {"email": {"subject": "pref", "html": "<p>Hi</p>"}}})
    h.wait_for(lambda: len(smtp.messages) > before, what="the email")
    url = str(smtp.messages[before]["List-Unsubscribe"]).strip("<>")
    page = httpx.get(srv.url + urlsplit(url).path, timeout=60)
    assert page.status_code == 200
    head = page.text.split("<thead>", 1)[1].split("</thead>", 1)[0]
    # email (the link's), then sms and whatsapp (a phone number) and the in-app inbox; no
    # push or web push (no token).
    assert head.count("<th scope='col'>") == 5
    assert [c.split("</th>")[0] for c in head.split("<th scope='col'>")[2:]] == [
        "email", "sms", "whatsapp", "inapp"]


def test_account_switcher_and_other_accounts_refused(browser: Browser, srv: NudgeServer) -> None:
    acct = json.loads(nudge_cli(srv.data_dir, "accounts", "create", "Second shop", "--json"))
    # Its owner adds our marketer as a viewer (the API's "add a membership").
    add_user(dataclasses.replace(srv, account_id=acct["id"]), "audit-owner2@example.com", "owner")
    octx = signed_in_with_mfa(browser, srv, "audit-owner2@example.com")
    try:
        csrf = next(c["value"] for c in octx.cookies() if c["name"] == "nudge_csrf")
        r = octx.request.post(srv.url + "/1/users", data={"email": MARKETER, "role": "viewer"},
                              headers={"X-CSRF-Token": csrf, "X-Nudge-Account-Id": acct["id"]},
                              timeout=120_000)
        assert r.status in (200, 201), r.text()
    finally:
        octx.close()
    ctx = signed_in(browser, srv, MARKETER)
    try:
        with page_without_script_errors(ctx) as page:
            page.set_default_timeout(30_000)
            page.goto(f"{srv.url}/ui/{srv.account_id}/segments")
            expect(page.get_by_role("link", name="New segment")).to_be_visible()
            page.get_by_label("Account").select_option(acct["id"])
            page.wait_for_url(f"**/ui/{acct['id']}")
            expect(page.get_by_label("Account")).to_have_value(acct["id"])
            # A viewer there: the navigation and pages offer no edits, the server refuses them.
            page.goto(f"{srv.url}/ui/{acct['id']}/segments")
            expect(page.get_by_role("link", name="New segment")).to_have_count(0)
            assert ctx.request.get(f"{srv.url}/ui/{acct['id']}/journeys/new").status == 403
            # An account the user is not a member of: refused, by the switcher and by URL.
            third = json.loads(nudge_cli(srv.data_dir, "accounts", "create", "Not mine",
                                         "--json"))["id"]
            assert ctx.request.get(f"{srv.url}/ui/switch?account={third}",
                                   max_redirects=0).status == 403
            assert ctx.request.get(f"{srv.url}/ui/{third}", max_redirects=0).status in (403, 404)
    finally:
        ctx.close()


def test_a_long_action_shows_progress_until_it_answers(marketer: Page, srv: NudgeServer) -> None:
    page = marketer
    held: list[Any] = []
    page.route("**/segments", lambda route: held.append(route)
               if route.request.method == "POST" else route.continue_())
    page.goto(f"{srv.url}/ui/{srv.account_id}/segments/new")
    c0 = page.locator("#cond-0")
    c0.get_by_label("Type").select_option("reachable")
    expect(page.locator("#reach [data-reach]")).to_have_text(
        str(_count(srv, {"reachable": {"channel": "email"}})))
    page.get_by_label("Name", exact=True).fill("Reachable by email")
    save = page.get_by_role("button", name="Save segment")
    save.click()
    # While the server has not answered: the button is busy and says so.
    expect(save).to_be_disabled()
    expect(save).to_have_attribute("aria-busy", "true")
    expect(page.locator(".save [role=status]")).to_have_text("Working…")
    assert len(held) == 1
    held[0].continue_()
    page.wait_for_url("**/segments#segment-*")
    names = [s["name"] for s in h.api(srv, "GET", "/1/segments", ok=200).json()["segments"]]
    assert "Reachable by email" in names


def test_person_page_shows_their_journeys_and_rfm_as_the_api(marketer: Page,
                                                             srv: NudgeServer) -> None:
    h.profiles(srv, [{"identity": "jp1"}])
    j = h.api(srv, "POST", "/1/journeys", {
        "name": "Welcome path", "entry": {"api": True}, "start": "wait",
        "nodes": [{"id": "wait", "type": "delay", "duration": {"days": 3}, "next": "bye"},
                  {"id": "bye", "type": "exit"}]}, ok=201).json()
    h.api(srv, "POST", f"/1/journeys/{j['id']}/publish", ok=200)
    h.api(srv, "POST", f"/1/journeys/{j['id']}/enter", {"to": [{"identity": "jp1"}]}, ok=202)
    def waiting() -> dict[str, Any] | None:
        r = h.api(srv, "GET", f"/1/journeys/{j['id']}/users", params={"identity": "jp1"},
                  ok=200).json()
        return r if [e for e in r["entries"] if e["state"] == "delay"] else None

    got = h.wait_for(waiting, what="jp1 waiting at the delay")
    uid, path = got["user_id"], got["entries"]
    now = int(time.time())
    assert srv.upload([{"type": "event", "identity": "jp1", "ts": now - k * DAY,
                        "evtName": "Charged", "evtData": {"Amount": 20 + k}}
                       for k in range(3)]).status_code == 200
    def rfm_of_jp1() -> dict[str, Any] | None:
        r: dict[str, Any] = h.api(srv, "GET", "/1/predict/rfm/user",
                                  params={"identity": "jp1"}, ok=200).json()
        return r if r.get("frequency") == 3 else None

    rfm = h.wait_for(rfm_of_jp1, what="jp1's purchases in RFM")
    marketer.goto(f"{srv.url}/ui/{srv.account_id}/people/{uid}")
    shown = marketer.locator("[data-rfm]").evaluate(
        "dl => Object.fromEntries([...dl.querySelectorAll('dt')].map("
        "dt => [dt.textContent, dt.nextElementSibling.textContent]))")
    for k in ("segment", "frequency", "monetary", "r", "f", "m"):
        assert shown[k] == str(rfm[k]), (k, shown, rfm)
    row = marketer.locator(f"[data-person-journeys] tr[data-journey='{j['id']}']")
    expect(row).to_contain_text("Welcome path")
    expect(row.locator("[data-journey-where]")).to_have_text(
        f"at {path[0]['node']} ({path[0]['state']})")


def _reports(srv: NudgeServer) -> dict[str, dict[str, Any]]:
    """A body per analytics kind over the events uploaded here (RFM reads Charged)."""
    now = int(time.time())
    span = {"from": now - 3 * DAY, "to": now + 60}
    h.profiles(srv, [{"identity": f"ch{i}"} for i in range(4)])
    r = srv.upload([{"type": "event", "identity": f"ch{i}", "ts": now - k * 3600 - i,
                     "evtName": name, "evtData": {"Amount": 10 + i}}
                    for i in range(4) for k, name in enumerate(("Viewed", "Charged")[: 1 + i % 2])])
    assert r.status_code == 200, r.text
    return {"trends": {"series": [{"event": "Viewed"}], "interval": "day", **span},
            "funnels": {"steps": [{"event": "Viewed"}, {"event": "Charged"}], **span},
            "retention": {"start": {"event": "Viewed"}, "return": {"event": "Charged"},
                          "interval": "day", "periods": 2, **span},
            "flows": {"event": "Viewed", "direction": "after", "steps": 2, **span},
            "dayparting": {"event": "Viewed", **span},
            "rfm": {}}


def test_every_analytics_chart_exports_csv_and_png_and_saves_to_a_board(
        browser: Browser, srv: NudgeServer) -> None:
    bodies = _reports(srv)
    ctx = signed_in(browser, srv, ANALYST)
    ctx.set_default_timeout(30_000)
    try:
        with page_without_script_errors(ctx) as page:
            for kind, body in bodies.items():
                page.goto(f"{srv.url}/ui/{srv.account_id}/analytics/{kind}")
                if body:
                    page.click("details summary")
                    page.fill("#report-json", json.dumps(body))
                page.click("#report-form button[type=submit]")
                result = page.locator(f"#report-result section.report[data-kind={kind}]")
                expect(result.locator("table.report-table")).to_be_visible()
                expect(result.locator("#report-chart canvas")).to_have_count(1)
                with page.expect_download() as png:
                    result.get_by_role("button", name="Export PNG").click()
                assert png.value.suggested_filename == f"{kind}.png"
                with open(png.value.path(), "rb") as f:
                    assert f.read(8) == b"\x89PNG\r\n\x1a\n", kind
                href = result.locator("a[data-export=csv]").get_attribute("href")
                csv_resp = ctx.request.get(srv.url + str(href))
                assert csv_resp.ok and csv_resp.headers["content-type"].startswith("text/csv")
                header = result.locator("thead th").evaluate_all(
                    "ths => ths.map(th => th.textContent.trim())")
                assert csv_resp.text().splitlines()[0] == ",".join(header), kind
                result.locator("input[name=board]").fill("Every chart")
                result.locator("input[name=title]").fill(f"{kind} chart")
                result.get_by_role("button", name="Save to board").click()
                expect(page.locator("[data-saved]")).to_contain_text("Every chart")
            page.goto(f"{srv.url}/ui/{srv.account_id}/boards")
            page.get_by_role("link", name="Every chart").click()
            expect(page.locator("section.report h2")).to_have_text(
                [f"{k} chart" for k in bodies])
            expect(page.locator("section.report [role=alert]")).to_have_count(0)
    finally:
        ctx.close()


# The other main pages, held to what test_dashboard_settings_a11y checks on Home and Settings:
# (path under /ui/{account}, the main action the keyboard must reach).
MAIN_PAGES = [("/events", None), ("/people", "Search"), ("/segments", "New segment"),
              ("/segments/new", "Save segment"), ("/analytics/trends", "Run"),
              ("/boards", None), ("/campaigns", None), ("/campaigns/new", None),
              ("/journeys", None), ("/journeys/new", "Publish")]


def test_main_pages_labels_contrast_keyboard_and_widths(browser: Browser,
                                                         srv: NudgeServer) -> None:
    from test_dashboard_settings_a11y import LOW_CONTRAST, OVERFLOW, UNLABELLED, _tab_reaches

    ctx = signed_in(browser, srv, MARKETER)
    ctx.set_default_timeout(30_000)
    problems = []
    try:
        with page_without_script_errors(ctx) as page:
            for path, action in MAIN_PAGES:
                for width in (1280, 768):
                    page.set_viewport_size({"width": width, "height": 1000})
                    page.goto(f"{srv.url}/ui/{srv.account_id}{path}")
                    page.wait_for_load_state("networkidle")
                    if unlabelled := page.evaluate(UNLABELLED):
                        problems.append((path, width, "unlabelled", unlabelled))
                    if (over := page.evaluate(OVERFLOW)) > 0:
                        problems.append((path, width, "overflows by", over))
                if low := page.evaluate(LOW_CONTRAST):
                    problems.append((path, "low contrast", low))
                if action and not _tab_reaches(page, action):
                    problems.append((path, "Tab never reaches", action))
    finally:
        ctx.close()
    assert problems == []


def test_person_messages_export_and_suppress_from_the_profile(
        browser: Browser, servers: tuple[NudgeServer, SmtpServer]) -> None:
    srv, smtp = servers
    h.profiles(srv, [{"identity": "gd1", "grp": "gd", "Email": "gd1@example.com"}])
    mail = {"name": "gd", "channels": ["email"],
            "audience": {"definition": {"profile": {"property": "grp", "op": "eq",
                                                    "value": "gd"}}},
            "content": {"email": {"subject": "gd", "html": "<p>Hi</p>"}}}

    def settled(cid: int) -> list[dict[str, Any]] | None:
        done = [m for m in h.outbox(srv, campaign_id=cid)
                if m["status"] in ("sent", "delivered", "skipped")]
        return done or None

    cid = h.campaign(srv, mail)["id"]
    first = h.wait_for(lambda: settled(cid), what="the first message")
    uid = first[0]["user_id"]
    ctx = signed_in_with_mfa(browser, srv, ADMIN)
    ctx.set_default_timeout(30_000)
    try:
        with page_without_script_errors(ctx) as page:
            page.goto(f"{srv.url}/ui/{srv.account_id}/people/{uid}")
            # Messages received and their outcome: the outbox's.
            cells = page.get_by_role("heading", name="Messages").locator("..").locator(
                "tbody tr td").all_text_contents()
            assert cells[:3] == [str(first[0]["campaign_id"]), "email", first[0]["status"]]
            with page.expect_download() as dl:
                page.get_by_role("link", name="Export data (GDPR)").click()
            with open(dl.value.path(), encoding="utf-8") as f:
                exported = json.load(f)
            assert "gd1@example.com" in json.dumps(exported)
            page.get_by_role("button", name="Suppress…").click()
            page.get_by_role("dialog").get_by_role("button", name="Suppress",
                                                   exact=True).click()
            expect(page.locator("[data-gdpr-done]")).to_contain_text("suppress")
    finally:
        ctx.close()
    cid2 = h.campaign(srv, {**mail, "name": "gd2"})["id"]
    again = h.wait_for(lambda: settled(cid2), what="the next campaign settled")
    assert [(m["status"], m["reason"]) for m in again] == [("skipped", "suppressed")]
