"""The ``nudge predict`` CLI on data imported with ``nudge import``: create a goal, train it
with progress, list goals with their quality, print the RFM report."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from conftest import nudge_cli
from tests.predict.test_predict_api import behaviour


def test_import_create_train_and_report(tmp_path: Path) -> None:
    acct = json.loads(nudge_cli(tmp_path, "accounts", "create", "cli", "--json"))
    data = tmp_path / "events.jsonl"
    data.write_bytes(b"\n".join(msgspec.json.encode(r) for r in behaviour(time.time(), 150)))
    assert "rejected 0" in nudge_cli(tmp_path, "import", str(data))

    created = json.loads(nudge_cli(tmp_path, "predict", "create-goal", json.dumps(
        {"name": "buyers", "event": "Charged", "horizon_days": 14})))
    assert created["id"] >= 1 and created["kind"] == "event"

    out = nudge_cli(tmp_path, "predict", "train", "--goal", str(created["id"]))
    metrics = json.loads(out.strip().splitlines()[-1])
    assert metrics["auc"] > 0.75 and metrics["validation_rows"] == 150
    assert sum(metrics["scored"].values()) == 150
    listing = nudge_cli(tmp_path, "predict", "goals", "--account", acct["id"])
    assert f"{created['id']:4}  buyers  (AUC {metrics['auc']:.3f}" in listing

    report = json.loads(nudge_cli(tmp_path, "predict", "rfm"))
    assert report["buyers"] + report["no_purchases"] == 150 and report["buyers"] > 40

    bad = subprocess.run([sys.executable, "-m", "nudge", "predict", "create-goal",
                          '{"name": "x", "event": "Charged"}', "--data-dir", str(tmp_path)],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "give exactly one of horizon_days or deadline" in bad.stderr
    never = json.loads(nudge_cli(tmp_path, "predict", "create-goal", json.dumps(
        {"name": "never", "event": "Refund", "horizon_days": 7})))
    fail = subprocess.run([sys.executable, "-m", "nudge", "predict", "train", "--goal",
                           str(never["id"]), "--data-dir", str(tmp_path)],
                          capture_output=True, text=True)
    assert fail.returncode == 1 and "not enough data to learn from" in fail.stderr
