"""Live triggers survive a crash (nudge/engage/feed.py): kill -9 the server right after an
upload of triggering events was acknowledged — before the live bus evaluated them — and
restart it: the events are replayed from the account store past the bus's watermark, and
every triggered message is sent exactly once (one outbox row, one idempotency key)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tests.engage import engage_helpers as h

N = 400  # triggering events in one acknowledged request
ENV = {"NUDGE_ENGAGE_POLL_MS": "50", "NUDGE_ENGAGE_LEASE_S": "30"}


def outbox_rows(db: Path, campaign_id: int) -> list[tuple[int, str, str]]:
    with sqlite3.connect(db) as con:
        return con.execute("SELECT user_id, status, idem_key FROM outbox WHERE campaign_id = ?",
                           [campaign_id]).fetchall()


def signed_up(identity: str) -> dict[str, object]:
    return {"type": "event", "identity": identity, "ts": int(time.time()),
            "evtName": "Signed Up", "evtData": {"plan": "pro"}}


def test_kill_9_after_an_acknowledged_trigger_sends_each_message_once(tmp_path: Path) -> None:
    (tmp_path / "rx").mkdir()
    receiver = h.CountingReceiver(tmp_path / "rx")
    srv = h.start_server(tmp_path, ENV)
    db = tmp_path / "control.db"
    try:
        h.configure(srv, "webhook", {"provider": "http", "url": receiver.url,
                                     "secret": "durable-trigger-secret-0123"})
        c = h.campaign(srv, {
            "name": "welcome", "kind": "trigger", "channels": ["webhook"],
            "webhook_url": receiver.url,
            "trigger": {"event": "Signed Up", "where": [{"property": "plan", "op": "eq",
                                                          "value": "pro"}]},
            "content": {"webhook": {"body": '{"hi": "{{ profile.identity }}"}'}}})
        # One event handled live first: the bus has a watermark for the account.
        assert srv.upload([signed_up("early")]).status_code == 200
        h.wait_for(lambda: len(receiver.accepted) == 1, what="the live trigger")
        r = srv.upload([signed_up(f"d{i}") for i in range(N)], timeout=120)
        assert r.status_code == 200 and r.json()["unprocessed"] == [], r.text
        srv.kill()  # acknowledged = durable; the bus had no time to evaluate 400 events
        at_kill = len(outbox_rows(db, c["id"]))
        srv.start()
        h.wait_for(lambda: len(receiver.accepted) >= N + 1, timeout=600, every=0.2,
                   what="every triggered message sent")
        h.wait_for(lambda: {s for _, s, _ in outbox_rows(db, c["id"])} == {"sent"},
                   timeout=120, what="all rows final")
        time.sleep(1.0)  # a second replay or a duplicate send would show up by now
        rows = outbox_rows(db, c["id"])
    finally:
        srv.stop()
        receiver.stop()
    assert at_kill < N + 1  # the restart, not the killed process, queued the rest
    assert len(rows) == N + 1 and len({u for u, _, _ in rows}) == N + 1
    assert receiver.accepted == {k for _, _, k in rows}
    # Repeats (same key) only for what could have been in flight at the kill.
    assert receiver.requests - len(receiver.accepted) <= at_kill - 1
    log = (tmp_path / "server.log").read_text()
    assert "engage feed replayed" in log
