"""Calibration of goal probabilities on a held-out cutoff (nudge/predict/calibration.py).

- Platt scaling recovers known miscalibration and keeps the ranking;
- end to end on an account whose buying rate falls over time (as CDNOW's cohort does), the
  raw trees over-predict at the validation cutoff — they learned from cutoffs with higher
  rates — and the held-out calibration brings the mean prediction and the Brier score
  closer to what happened; the stored scores are calibrated by the map fitted on the
  validation cutoff.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from nudge.bulk import ingest_chunks
from nudge.config import Settings
from nudge.predict import calibration
from nudge.predict.conditions import SCORES_TABLE
from nudge.predict.goals import check_goal
from nudge.predict.train import rescore, train_goal
from nudge.store.account import AccountStore

DAY = 86400
NOW = float(int(time.time()) // DAY * DAY)
DAYS = 120


def test_platt_recovers_known_miscalibration_and_keeps_ranking() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0.02, 0.98, 40_000)
    y = (rng.random(40_000) < p / 3).astype(int)  # the scores claim 3x the real rate
    c = calibration.fit(p[:20_000], y[:20_000], cutoff=123.0)
    fresh, truth = p[20_000:], y[20_000:]
    q = c.apply(fresh)
    assert abs(q.mean() - truth.mean()) < 0.01 < abs(fresh.mean() - truth.mean())
    assert np.mean((q - truth) ** 2) < np.mean((fresh - truth) ** 2)
    assert (np.argsort(q, kind="stable") == np.argsort(fresh, kind="stable")).all()
    assert c.to_dict()["fitted_on"] == 123.0 and c.slope > 0
    assert calibration.IDENTITY.apply(np.array([0.25]))[0] == pytest.approx(0.25)


def records(users: int = 1500) -> Iterator[list[dict[str, object]]]:
    """People with a steady propensity to buy, whose daily buying rate halves every 40 days:
    the outcome rate at early cutoffs is far above the rate at the validation cutoff."""
    rng = np.random.default_rng(7)
    start = NOW - DAYS * DAY
    batch: list[dict[str, object]] = []
    for u in range(users):
        propensity = rng.beta(0.6, 4.0)
        for d in range(DAYS):
            if rng.random() < propensity * 0.25 * 0.5 ** (d / 40):
                batch.append({"type": "event", "identity": f"u{u}", "evtName": "Charged",
                              "ts": int(start + d * DAY + 3600), "msgId": f"{u}-{d}",
                              "evtData": {"Amount": 10.0}})
        if u % 5 == 0:  # a page view on day 0 so that everyone exists from the start
            batch.append({"type": "event", "identity": f"u{u}", "evtName": "Viewed",
                          "ts": int(start + 60), "msgId": f"{u}-v"})
        if len(batch) > 10_000:
            yield batch
            batch = []
    yield batch


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AccountStore]:
    tmp = tmp_path_factory.mktemp("calibration")
    s = AccountStore("cal", tmp / "events.duckdb", Settings(data_dir=tmp))
    ingest_chunks(s, records(), s.settings.limits, total=0, label="drift", quiet=True)
    s.compact_now()
    yield s
    s.close()


def test_held_out_calibration_corrects_drift(store: AccountStore) -> None:
    goal = check_goal({"name": "buys in 14 days", "event": "Charged", "horizon_days": 14,
                       "training_cutoffs": 5, "cutoff_step_days": 7}, NOW, goal_id=1)
    m = train_goal(store, goal, NOW)["metrics"]
    latest = max(m["training_cutoffs"])
    assert m["calibrated_on"]["fitted_on"] == latest
    assert m["scores_calibrated_on"]["fitted_on"] == m["validation_cutoff"]
    base = m["base_rate"]
    # The raw model learned from higher rates and over-predicts; calibrated is closer.
    assert m["mean_predicted_uncalibrated"] > base + 0.02
    assert abs(m["mean_predicted"] - base) < abs(m["mean_predicted_uncalibrated"] - base)
    assert m["brier"] < m["brier_uncalibrated"]
    table_mean = sum(c["predicted"] * c["users"] for c in m["calibration"]) / sum(
        c["users"] for c in m["calibration"])
    assert table_mean == pytest.approx(m["mean_predicted"])

    # Stored scores are the calibrated ones, and rescoring with the saved file keeps them.
    with store.cursor() as cur:
        before = cur.execute(f"SELECT user_id, score FROM {SCORES_TABLE} WHERE goal_id = 1 "
                             "ORDER BY user_id").fetchall()
    assert rescore(store, goal, NOW)
    with store.cursor() as cur:
        after = cur.execute(f"SELECT user_id, score FROM {SCORES_TABLE} WHERE goal_id = 1 "
                            "ORDER BY user_id").fetchall()
    assert [u for u, _ in after] == [u for u, _ in before]
    assert np.allclose([s for _, s in after], [s for _, s in before])
    c = m["scores_calibrated_on"]
    assert (c["slope"], c["intercept"]) != (1.0, 0.0)
