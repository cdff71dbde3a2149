"""Predictive goals through the real server: invalid goals refused with the field, too
little data refused with a clear message, training with progress and validation metrics,
scores as segment conditions and as a campaign audience (delivered to a real webhook
receiver), churn, RFM over HTTP, account isolation and deletion."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import NudgeServer, make_server, nudge_cli
from tests.engage import engage_helpers as h
from tests.engage.providers import WebhookReceiver

DAY = 86400
SECRET = "predict-webhook-secret-0123"  # noqa: S105 - a test receiver's secret
FAST = {"NUDGE_ENGAGE_POLL_MS": "50", "NUDGE_PREDICT_SCHEDULE_S": "1"}


def behaviour(now: float, users: int = 300, days: int = 100) -> list[dict[str, Any]]:
    """People whose behaviour drives purchases: "fans" browse electronics most days and buy
    every week or two; "casuals" browse now and then and rarely buy; "browsers" never buy;
    a third of the fans stop coming at some point (churn)."""
    rnd = random.Random(3)
    out: list[dict[str, Any]] = []
    for u in range(users):
        kind = ("fan", "casual", "browser")[u % 3]
        out.append({"type": "profile", "identity": f"p{u}", "ts": int(now - days * DAY),
                    "profileData": {"Tier": "gold" if kind == "fan" and u % 2 else "basic",
                                    "Age": 20 + u % 40}})
        stop = now - rnd.uniform(5, 60) * DAY if kind == "fan" and u % 9 == 0 else now
        visit, buy = {"fan": (0.6, 0.12), "casual": (0.15, 0.02), "browser": (0.2, 0.0)}[kind]
        for d in range(days, 0, -1):
            t = now - d * DAY + rnd.uniform(0, DAY - 60)
            if t >= stop or t >= now - 60:
                continue
            if rnd.random() < visit:
                out.append({"type": "event", "identity": f"p{u}", "ts": int(t),
                            "evtName": "Product Viewed",
                            "evtData": {"Category": "Electronics" if kind == "fan" else "Books"}})
            if rnd.random() < buy:
                out.append({"type": "event", "identity": f"p{u}", "ts": int(t) + 30,
                            "evtName": "Charged",
                            "evtData": {"Category": "Electronics", "Amount": 50 + u % 7}})
    return out


@pytest.fixture(scope="module")
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(SECRET) as r:
        yield r


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, hook: WebhookReceiver
        ) -> Iterator[NudgeServer]:
    s = make_server(tmp_path_factory.mktemp("predict"), FAST)
    try:
        records = behaviour(time.time())
        for i in range(0, len(records), 1000):
            r = s.upload(records[i:i + 1000], timeout=120)
            assert r.status_code == 200 and r.json()["status"] == "success", r.text
        h.configure(s, "webhook", hook.channel_config())
        yield s
    finally:
        s.stop()


def api(srv: NudgeServer, method: str, path: str, body: Any = None,
        ok: int | None = None, **kw: Any) -> httpx.Response:
    return h.api(srv, method, path, body, ok, **kw)


def trained(srv: NudgeServer, goal_id: int, body: Any = None) -> dict[str, Any]:
    """Start training and follow its progress until it ends; returns the last run."""
    run = api(srv, "POST", f"/1/predict/goals/{goal_id}/train", body, ok=202).json()["run"]
    assert run["status"] == "running"
    seen = []

    def finished() -> dict[str, Any] | None:
        r = api(srv, "GET", f"/1/predict/goals/{goal_id}/train", ok=200).json()["run"]
        seen.append(r["progress"])
        return r if r["status"] != "running" else None

    run = h.wait_for(finished, timeout=180, every=0.2, what="training to finish")
    assert seen == sorted(seen)  # progress only moves forward
    return run


@pytest.mark.parametrize(("body", "field"), [
    ({"event": "Charged", "horizon_days": 14}, "name"),
    ({"name": "x", "horizon_days": 14}, "event"),
    ({"name": "x", "event": "Charged"}, "horizon_days"),
    ({"name": "x", "event": "Charged", "horizon_days": 14, "deadline": "2099-01-01"},
     "horizon_days"),
    ({"name": "x", "event": "Charged", "horizon_days": 0}, "horizon_days"),
    ({"name": "x", "event": "Charged", "horizon_days": 400}, "horizon_days"),
    ({"name": "x", "event": "Charged", "deadline": "2001-01-01T00:00:00Z"}, "deadline"),
    ({"name": "x", "event": "Charged", "deadline": "soon"}, "deadline"),
    ({"name": "x", "event": "Charged", "horizon_days": 7,
      "where": [{"property": "Category", "op": "zz", "value": 1}]}, "where[0].op"),
    ({"name": "x", "event": "", "horizon_days": 7}, "event"),
    ({"name": "x", "event": "Charged", "horizon_days": 7, "colour": 1}, "colour"),
    ({"name": "x", "kind": "upsell", "horizon_days": 7}, "kind"),
    ({"name": "x", "kind": "churn", "event": "Charged", "horizon_days": 7}, "event"),
    ({"name": "x", "event": "Charged", "horizon_days": 7, "active_within_days": 30},
     "active_within_days"),
    ({"name": "x", "event": "Charged", "horizon_days": 7, "training_cutoffs": 2.5},
     "training_cutoffs"),
])
def test_invalid_goals_are_refused_naming_the_field(srv: NudgeServer, body: dict[str, Any],
                                                    field: str) -> None:
    before = api(srv, "GET", "/1/predict/goals", ok=200).json()["goals"]
    r = api(srv, "POST", "/1/predict/goals", body)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field, r.json()
    assert api(srv, "GET", "/1/predict/goals", ok=200).json()["goals"] == before


def test_too_little_data_fails_with_a_clear_message(srv: NudgeServer) -> None:
    never = api(srv, "POST", "/1/predict/goals", {
        "name": "never", "event": "Refund Requested", "horizon_days": 7}, ok=201).json()
    run = trained(srv, never["id"])
    assert run["status"] == "failed"
    assert "not enough data to learn from" in run["error"]
    assert "0 people did the goal's event" in run["error"]
    far = api(srv, "POST", "/1/predict/goals", {
        "name": "far", "event": "Charged", "horizon_days": 120}, ok=201).json()
    run = trained(srv, far["id"])
    assert run["status"] == "failed" and "not enough history" in run["error"]
    assert "120 days ahead" in run["error"]
    r = api(srv, "GET", f"/1/predict/goals/{far['id']}/report")
    assert r.status_code == 404 and "no trained model" in r.json()["message"]
    for g in (never, far):
        api(srv, "DELETE", f"/1/predict/goals/{g['id']}", ok=200)


def test_goal_trains_scores_and_feeds_segments_and_campaigns(
        srv: NudgeServer, hook: WebhookReceiver) -> None:
    goal = api(srv, "POST", "/1/predict/goals", {
        "name": "Electronics buyers", "event": "Charged", "horizon_days": 14,
        "where": [{"property": "Category", "op": "eq", "value": "Electronics"}]},
        ok=201).json()
    run = trained(srv, goal["id"])
    assert run["status"] == "done", run
    report = api(srv, "GET", f"/1/predict/goals/{goal['id']}/report", ok=200).json()
    m = report["model"]["metrics"]
    # Purchases here are driven by behaviour the features see: the model must find it.
    assert m["auc"] > 0.8 and m["top_decile_lift"] > 2
    assert len(m["calibration"]) == 10 and 0 <= m["brier"] < 0.25
    assert m["validation_cutoff"] < report["model"]["as_of"] - 13 * DAY
    assert all(c < m["validation_cutoff"] for c in m["training_cutoffs"])
    assert "goal_days_since_last" in report["model"]["features"]
    assert "profile:Tier" in report["model"]["features"]
    buckets = report["buckets_now"]
    assert sum(buckets.values()) == 300
    assert buckets["most_likely"] >= 60 and buckets["moderately_likely"] >= 1

    scores = api(srv, "GET", f"/1/predict/goals/{goal['id']}/scores",
                 params={"limit": 1000}, ok=200).json()["scores"]
    assert len(scores) == 300
    assert [s["score"] for s in scores] == sorted((s["score"] for s in scores), reverse=True)
    top = {s["identity"] for s in scores if s["bucket"] == "most_likely"}
    assert len(top) == buckets["most_likely"]
    # Fans (p0, p3, ...) dominate the top bucket; browsers (p2, p5, ...) are not in it.
    assert sum(int(i[1:]) % 3 == 0 for i in top) > 0.8 * len(top)
    assert not any(int(i[1:]) % 3 == 2 for i in top)
    one = api(srv, "GET", f"/1/predict/goals/{goal['id']}/scores",
              params={"identity": scores[0]["identity"]}, ok=200).json()
    assert one["score"] == scores[0]["score"] and one["bucket"] == "most_likely"

    # As segment conditions (live count) ...
    bucket = {"intent_bucket": {"goal": goal["id"], "in": ["most_likely"]}}
    count = api(srv, "POST", "/1/segments/evaluate", {"definition": bucket}, ok=200).json()
    assert count["count"] == len(top)
    high = {"intent_score": {"goal": goal["id"], "op": ">=", "value": 0.5}}
    assert api(srv, "POST", "/1/segments/evaluate", {"definition": high}, ok=200).json()[
        "count"] == sum(s["score"] >= 0.5 for s in scores)
    both = {"and": [bucket, {"profile": {"property": "Tier", "op": "eq", "value": "gold"}}]}
    seg = api(srv, "POST", "/1/segments", {"name": "likely gold", "definition": both},
              ok=201).json()
    members = api(srv, "GET", f"/1/segments/{seg['id']}/members", params={"limit": 1000},
                  ok=200).json()["members"]
    gold = {f"p{u}" for u in range(300) if u % 3 == 0 and u % 2}
    assert {m["identity"] for m in members} == top & gold
    contains = api(srv, "GET", f"/1/segments/{seg['id']}/contains",
                   params={"identity": sorted(top & gold)[0]}, ok=200).json()
    assert contains["member"] is True

    # ... and as a campaign audience, delivered to a real webhook receiver.
    est = api(srv, "POST", "/1/campaigns/estimate", {
        "name": "likely", "channels": ["webhook"], "webhook_url": f"{hook.url}/hook",
        "audience": {"definition": bucket},
        "content": {"webhook": {"body": '{"c": "likely", "to": "{{ profile.identity }}"}'}}},
        ok=200).json()
    assert est["audience"] == len(top)
    h.campaign(srv, {
        "name": "likely", "channels": ["webhook"], "webhook_url": f"{hook.url}/hook",
        "audience": {"segment_id": seg["id"]},
        "content": {"webhook": {"body": '{"c": "likely", "to": "{{ profile.identity }}"}'}}})

    def got() -> set[str] | None:
        to = {r.parsed["to"] for r in hook.received
              if isinstance(r.parsed, dict) and r.parsed.get("c") == "likely"}
        return to if len(to) >= len(top & gold) else None

    assert h.wait_for(got, timeout=60, what="campaign deliveries") == top & gold

    # Everything predicted about one person, as the profile shows it.
    person = api(srv, "GET", "/1/predict/users", params={"identity": "p3"}, ok=200).json()
    assert {g["goal"] for g in person["goals"]} == {goal["id"]}
    assert person["rfm"]["segment"] != "no_purchases" and 1 <= person["rfm"]["r"] <= 5
    profile = api(srv, "GET", "/1/profile", params={"identity": "p3"}, ok=200).json()["profile"]
    assert profile["predictions"] == person["goals"]

    # Rescoring with the stored model (no training) gives the same scores on the same data.
    again = api(srv, "POST", f"/1/predict/goals/{goal['id']}/score", ok=200).json()
    assert again["buckets"] == buckets

    # Deleting the goal removes its scores: the segment then matches no one.
    api(srv, "DELETE", f"/1/segments/{seg['id']}", ok=200)
    api(srv, "DELETE", f"/1/predict/goals/{goal['id']}", ok=200)
    assert api(srv, "POST", "/1/segments/evaluate", {"definition": bucket},
               ok=200).json()["count"] == 0
    assert api(srv, "GET", f"/1/predict/goals/{goal['id']}").status_code == 404


def test_churn_goal(srv: NudgeServer) -> None:
    # Messages we delivered are not the person's activity: everyone got one yesterday.
    sent = [{"type": "event", "identity": f"p{u}", "ts": int(time.time() - DAY),
             "evtName": "Message Sent", "evtData": {"Channel": "email"}} for u in range(300)]
    assert srv.upload(sent).json()["status"] == "success"
    goal = api(srv, "POST", "/1/predict/goals", {
        "name": "Churn", "kind": "churn", "horizon_days": 10, "active_within_days": 30},
        ok=201).json()
    run = trained(srv, goal["id"])
    assert run["status"] == "done", run
    report = api(srv, "GET", f"/1/predict/goals/{goal['id']}/report", ok=200).json()
    assert report["model"]["metrics"]["auc"] > 0.7
    assert "count_30d:Message Sent" in report["model"]["features"]
    scores = api(srv, "GET", f"/1/predict/goals/{goal['id']}/scores",
                 params={"limit": 1000}, ok=200).json()["scores"]
    # Only people active in the last 30 days are scored: fans who stopped coming are not.
    active = {"or": [{"did": {"event": e, "window": {"last": {"days": 30}}}}
                     for e in ("Product Viewed", "Charged")]}
    assert len(scores) == api(srv, "POST", "/1/segments/evaluate", {"definition": active},
                              ok=200).json()["count"]
    assert 100 < len(scores) < 300
    api(srv, "DELETE", f"/1/predict/goals/{goal['id']}", ok=200)


def test_deadline_goal_and_backtest(srv: NudgeServer) -> None:
    goal = api(srv, "POST", "/1/predict/goals", {
        "name": "by the sale", "event": "Charged",
        "deadline": time.time() + 10 * DAY}, ok=201).json()
    run = trained(srv, goal["id"])
    assert run["status"] == "done", run
    m = api(srv, "GET", f"/1/predict/goals/{goal['id']}/report", ok=200).json()["model"]
    assert m["metrics"]["horizon_days"] == pytest.approx(10, abs=0.01)
    api(srv, "DELETE", f"/1/predict/goals/{goal['id']}", ok=200)
    # A backtest: as if it were 30 days ago.
    weekly = api(srv, "POST", "/1/predict/goals", {
        "name": "weekly", "event": "Charged", "horizon_days": 7}, ok=201).json()
    as_of = time.time() - 30 * DAY
    run = trained(srv, weekly["id"], {"as_of": as_of})
    assert run["status"] == "done", run
    m = api(srv, "GET", f"/1/predict/goals/{weekly['id']}/report", ok=200).json()["model"]
    assert m["as_of"] == pytest.approx(as_of)
    assert m["metrics"]["validation_cutoff"] == pytest.approx(as_of - 7 * DAY)
    bad = api(srv, "POST", f"/1/predict/goals/{weekly['id']}/train", {"as_of": "2999-01-01"})
    assert bad.status_code == 400 and bad.json()["field"] == "as_of"
    api(srv, "DELETE", f"/1/predict/goals/{weekly['id']}", ok=200)


def test_scheduled_retraining(srv: NudgeServer) -> None:
    goal = api(srv, "POST", "/1/predict/goals", {
        "name": "scheduled", "event": "Charged", "horizon_days": 14,
        "retrain_every_hours": 1}, ok=201).json()

    def model() -> dict[str, Any] | None:
        g = api(srv, "GET", f"/1/predict/goals/{goal['id']}", ok=200).json()
        return g["model"] if g["model"] else None

    m = h.wait_for(model, timeout=180, every=0.5, what="scheduled training")
    assert m["auc"] > 0.7
    run = api(srv, "GET", f"/1/predict/goals/{goal['id']}/train", ok=200).json()["run"]
    assert run["trigger"] == "schedule" and run["status"] == "done"
    api(srv, "DELETE", f"/1/predict/goals/{goal['id']}", ok=200)


def test_rfm_over_http(srv: NudgeServer) -> None:
    report = api(srv, "GET", "/1/predict/rfm", ok=200).json()
    assert report["settings"] == {"event": "Charged", "property": "Amount",
                                  "lookback_days": 365.0}
    assert report["buyers"] + report["no_purchases"] == 300
    assert report["buyers"] == sum(s["users"] for s in report["segments"])
    moved = api(srv, "GET", "/1/predict/rfm", params={"since": time.time() - 30 * DAY},
                ok=200).json()["movement"]
    assert sum(m["users"] for m in moved) == 300
    bad = api(srv, "PUT", "/1/predict/rfm/settings", {"property": "Category"})
    assert bad.status_code == 400 and bad.json()["field"] == "property"
    bad = api(srv, "GET", "/1/predict/rfm", params={"since": "2999-01-01"})
    assert bad.status_code == 400 and bad.json()["field"] == "since"
    api(srv, "PUT", "/1/predict/rfm/settings", {"lookback_days": 20}, ok=200)
    try:
        short = api(srv, "GET", "/1/predict/rfm", ok=200).json()
        assert short["buyers"] < report["buyers"]
        assert api(srv, "POST", "/1/segments/evaluate", {"definition": {
            "rfm_segment": {"in": ["no_purchases"]}}}, ok=200).json()["count"] == \
            short["no_purchases"]
    finally:
        api(srv, "PUT", "/1/predict/rfm/settings", {"lookback_days": 365}, ok=200)


def test_other_accounts_see_nothing(srv: NudgeServer) -> None:
    goal = api(srv, "POST", "/1/predict/goals", {
        "name": "mine", "event": "Charged", "horizon_days": 14}, ok=201).json()
    other = json.loads(nudge_cli(srv.data_dir, "accounts", "create", "other", "--json"))
    headers = {"X-Nudge-Account-Id": other["id"], "X-Nudge-Passcode": other["passcode"]}
    for method, path in (("GET", f"/1/predict/goals/{goal['id']}"),
                         ("POST", f"/1/predict/goals/{goal['id']}/train"),
                         ("GET", f"/1/predict/goals/{goal['id']}/scores"),
                         ("DELETE", f"/1/predict/goals/{goal['id']}")):
        assert httpx.request(method, srv.url + path, headers=headers).status_code == 404
    assert httpx.get(srv.url + "/1/predict/goals", headers=headers).json()["goals"] == []
    api(srv, "DELETE", f"/1/predict/goals/{goal['id']}", ok=200)
