"""The learner choice on the held-out latest training cutoff (nudge/predict/learners.py):
the additive model where the cutoff being predicted lies beyond the training range, the
trees where the outcome depends on an interaction no additive model can form."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from nudge.predict.learners import Additive
from nudge.predict.train import Frame, _choose_and_calibrate

STORE: Any = SimpleNamespace(settings=SimpleNamespace(predict_threads=1))


def _frames(outcome: Any, grows: bool) -> list[Frame]:
    """Six cutoffs, latest first; with ``grows`` each cutoff's values reach further (longer
    histories at later cutoffs)."""
    rng = np.random.default_rng(1)
    frames = []
    for k in range(6):
        top = (6 - k) if grows else 1.0
        x = rng.uniform(-1, 1, size=(1000, 2)) * [top, 1]
        y = (rng.random(1000) < outcome(x)).astype(np.int8)
        frames.append(Frame(float(6 - k), np.arange(1000), x, y))
    return frames


def _choose(frames: list[Frame]) -> tuple[str, dict[str, Any]]:
    kind, on, platt = _choose_and_calibrate(STORE, [False, False], frames, 50, gap=3)
    assert on is not None and on["cutoff"] == frames[0].cutoff  # the latest, held out
    assert platt.fitted_on == frames[0].cutoff
    return kind, on["auc"]


def test_additive_is_chosen_when_the_held_out_cutoff_lies_beyond_the_training_range() -> None:
    kind, auc = _choose(_frames(lambda x: 1 / (1 + np.exp(-0.6 * x[:, 0])), grows=True))
    assert kind == "additive" and auc["additive"] > auc["trees"]


def test_trees_are_chosen_for_an_interaction() -> None:
    kind, auc = _choose(_frames(lambda x: np.where(x[:, 0] * x[:, 1] > 0, 0.8, 0.2),
                                grows=False))
    assert kind == "trees" and auc["trees"] > auc["additive"] + 0.1


def test_additive_handles_missing_values_and_categories() -> None:
    rng = np.random.default_rng(2)
    x = np.column_stack([rng.normal(size=3000), rng.integers(0, 3, 3000).astype(float)])
    y = (x[:, 1] == 2).astype(int)
    x[::7, 0] = np.nan
    m = Additive([False, True]).fit(x, y)
    p = m.predict_proba(np.array([[np.nan, 2.0], [0.0, 0.0], [0.0, 9.0]]))[:, 1]
    assert p[0] > 0.9 and p[1] < 0.1  # the category decides; missing numbers are fine
    assert 0 < p[2] < 1  # an unseen category scores like none of the known ones
