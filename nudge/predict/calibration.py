"""Calibrating a goal model's probabilities on a held-out cutoff (Platt scaling).

The trees learn from past cutoffs whose base rates differ from today's (on CDNOW the rate
of buying in the next 26 weeks fell from 35% to 23% as the cohort aged), so their raw
probabilities drift. A logistic regression on the logit of the trees' probability, fitted
on the latest cutoff the trees did not learn from, maps scores to observed rates one step
later in time. The map is increasing, so ranking (AUC, top-decile lift, buckets) is
unchanged; isotonic regression was measured too and is not used: its steps tie people and
cost a little AUC and lift (docs/predict.md).

    >>> import numpy as np
    >>> p = np.linspace(0.05, 0.95, 200)
    >>> y = (np.random.default_rng(0).random(200) < p / 2).astype(int)  # half as likely
    >>> c = fit(p, y)
    >>> bool(c.apply(np.array([0.8]))[0] < 0.6)
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.asarray(np.log(p / (1 - p)))


@dataclass(frozen=True)
class Platt:
    """p ↦ σ(slope · logit(p) + intercept)."""

    slope: float
    intercept: float
    fitted_on: float | None = None  # the cutoff (epoch seconds) it was fitted on

    def apply(self, p: np.ndarray) -> np.ndarray:
        if not len(p):
            return np.asarray(p, dtype=np.float64)
        z = self.slope * _logit(p) + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

    def to_dict(self) -> dict[str, Any]:
        return {"method": "platt", "slope": self.slope, "intercept": self.intercept,
                "fitted_on": self.fitted_on}


IDENTITY = Platt(1.0, 0.0)


def fit(p: np.ndarray, y: np.ndarray, cutoff: float | None = None) -> Platt:
    """Fit on held-out probabilities ``p`` and outcomes ``y`` (both classes needed)."""
    from sklearn.linear_model import LogisticRegression

    # Barely regularised: two numbers from thousands of people.
    lr = LogisticRegression(C=1e4, max_iter=1000).fit(_logit(p)[:, None], y)
    return Platt(float(lr.coef_[0, 0]), float(lr.intercept_[0]), cutoff)
