"""A recurring (cron) campaign end to end with the injectable clock: an in-process server
whose ``nudge.clock`` the test moves, a real SMTP server (aiosmtpd). Nothing is sent before
the slot; at the slot every member gets one email; a restart within the same slot does not
fire it again; the next slot fires once more, as its own occurrence."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nudge.clock import clock
from tests.engage import engage_helpers as h
from tests.engage.providers import SmtpServer, tls_pair

SLOT_S = 600  # "*/10 * * * *"
PEOPLE = [{"identity": f"cron{i}", "Email": f"cron{i}@example.com"} for i in range(3)]


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    with SmtpServer(tls_pair(tmp_path / "tls")) as s:
        yield s


@pytest.fixture
def frozen_clock() -> Iterator[None]:
    yield
    clock.offset = 0.0


def occurrences(srv: h.InProcessServer, cid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in h.outbox(srv, campaign_id=cid):
        out[m["occurrence"]] = out.get(m["occurrence"], 0) + 1
    return out


def test_cron_campaign_fires_each_slot_once_across_a_restart(
        tmp_path: Path, smtp: SmtpServer, frozen_clock: None) -> None:
    srv = h.InProcessServer(tmp_path / "data", {"NUDGE_ENGAGE_POLL_MS": "50"})
    try:
        h.configure(srv, "email", smtp.channel_config())
        h.profiles(srv, PEOPLE)
        # Just before a slot: 60 s before a multiple of ten minutes.
        slot = (int(time.time()) // SLOT_S + 2) * SLOT_S
        clock.offset = slot - 60 - time.time()
        c = h.campaign(srv, {
            "name": "digest", "kind": "recurring", "channels": ["email"],
            "audience": h.everyone(),
            "schedule": {"cron": "*/10 * * * *", "timezone": "UTC"},
            "content": {"email": {"subject": "Digest for {{ profile.identity }}",
                                  "text": "Your ten-minute digest"}}})
        assert c["status"] == "scheduled" and c["next_run_at"] == slot
        time.sleep(3)  # the scheduler ticks every second: nothing is due yet
        assert occurrences(srv, c["id"]) == {} and smtp.messages == []

        clock.offset += 65  # 5 s past the slot
        h.wait_for(lambda: len(smtp.messages) == len(PEOPLE), what="the slot's emails")
        assert occurrences(srv, c["id"]) == {f"t{slot}": len(PEOPLE)}
        after = h.api(srv, "GET", f"/1/campaigns/{c['id']}", ok=200).json()
        assert after["status"] == "running" and after["next_run_at"] == slot + SLOT_S

        srv.restart()  # same slot, clock unchanged: the occurrence is not started again
        time.sleep(3)
        assert occurrences(srv, c["id"]) == {f"t{slot}": len(PEOPLE)}
        assert len(smtp.messages) == len(PEOPLE)

        clock.offset += SLOT_S  # the next slot
        h.wait_for(lambda: len(smtp.messages) == 2 * len(PEOPLE), what="the next slot")
        assert occurrences(srv, c["id"]) == {f"t{slot}": len(PEOPLE),
                                             f"t{slot + SLOT_S}": len(PEOPLE)}
        report = h.api(srv, "GET", f"/1/campaigns/{c['id']}/report", ok=200).json()
        (cell,) = report["by_variant_channel"]
        assert cell["sent"] == 2 * len(PEOPLE)
        assert [(o["occurrence"], o["at"], o["sent"], o["queued"])
                for o in report["by_occurrence"]] == [
            (f"t{slot}", slot, len(PEOPLE), len(PEOPLE)),
            (f"t{slot + SLOT_S}", slot + SLOT_S, len(PEOPLE), len(PEOPLE))]
    finally:
        srv.stop()
    to = sorted(m["To"] for m in smtp.messages)
    assert to == sorted([p["Email"] for p in PEOPLE] * 2)  # each person once per slot
