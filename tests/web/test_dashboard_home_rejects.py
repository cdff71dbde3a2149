"""Home's ingestion health: rejected records by reason, per account, kept across a server
restart. Two accounts on one server each send different bad records; each account's user
sees exactly its own reasons and counts (as the upload answers reported them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import pytest
from dashboard_helpers import PASSWORD, add_user, signed_in
from playwright.sync_api import Browser, expect

from conftest import NudgeServer, make_server, nudge_cli

pytest_plugins = ["browser"]

BAD_A = [{"type": "event", "evtName": "Viewed"},  # no identity
         {"type": "event", "evtName": "Viewed"},
         {"identity": "a1", "type": "event", "evtName": "Viewed", "evtData": {"n": 1}}]
BAD_B = [{"identity": "b1", "type": "nonsense"},
         {"identity": "b3", "type": "event"}]


def _add_member(srv: NudgeServer, account_id: str, email: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "nudge", "users", "create", email, "--account", account_id,
         "--role", "analyst", "--password-stdin", "--data-dir", str(srv.data_dir)],
        input=PASSWORD + "\n", text=True, check=True, capture_output=True,
        env={**os.environ, "NUDGE_LOG_LEVEL": "warning"})


def _codes(resp_json: dict) -> Counter[int]:  # type: ignore[type-arg]
    return Counter(e["code"] for e in resp_json["unprocessed"])


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NudgeServer, dict]]:
    s = make_server(tmp_path_factory.mktemp("dash-rejects"))
    try:
        b = json.loads(nudge_cli(s.data_dir, "accounts", "create", "second", "--json"))
        add_user(s, "a@example.com", "analyst")
        _add_member(s, b["id"], "b@example.com")
        yield s, b
    finally:
        s.stop()


def test_rejects_by_reason_per_account_survive_a_restart(two: tuple[NudgeServer, dict],
                                                         browser: Browser) -> None:
    import httpx

    srv, b = two
    got_a = srv.upload(BAD_A).json()
    got_b = httpx.post(srv.url + "/1/upload", json={"d": BAD_B * 2}, headers={
        "X-Nudge-Account-Id": b["id"], "X-Nudge-Passcode": b["passcode"]}).json()
    want_a, want_b = _codes(got_a), _codes(got_b)
    assert sum(want_a.values()) == 2 and sum(want_b.values()) == 4
    assert set(want_b) - set(want_a)  # a reason only B has, which A must not see
    srv.stop()
    srv.start()  # the counts are in the control store, not this process

    for email, account_id, want, other in (("a@example.com", srv.account_id, want_a, want_b),
                                           ("b@example.com", b["id"], want_b, want_a)):
        ctx = signed_in(browser, srv, email)
        page = ctx.new_page()
        page.goto(f"{srv.url}/ui/{account_id}")
        rows = page.locator("[data-rejects] tbody tr")
        expect(rows).to_have_count(len(want))
        for code, n in want.items():
            expect(page.locator(f"[data-rejects] tr[data-code='{code}'] td.num")
                   ).to_have_text(str(n))
        for code in set(other) - set(want):
            expect(page.locator(f"[data-rejects] tr[data-code='{code}']")).to_have_count(0)
        ctx.close()
