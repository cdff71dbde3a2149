"""The two learners a goal can use, and the held-out choice between them.

- ``trees``: scikit-learn's ``HistGradientBoostingClassifier`` — interactions and
  categorical profile properties come for free, but a tree cannot score a value beyond the
  largest one it was trained on: every heavier buyer gets the score of the heaviest one seen.
- ``additive``: a logistic regression on cubic splines of each feature (a generalised
  additive model, scikit-learn's ``SplineTransformer`` + ``LogisticRegression``), after a
  signed log and standardisation, with an indicator for missing values and categories
  one-hot. Its splines continue linearly beyond the training range, so it extrapolates.

Training cutoffs always have shorter histories than the cutoff being predicted (they are
earlier), which is where the difference shows: on CDNOW, whose customers all arrived in
Q1 1997, the additive model's development-split AUC was 0.779 against the trees' 0.771
(docs/predict.md). On data with interactions the trees win. So neither is fixed: both are
fitted on the training cutoffs except the latest and the one with the higher AUC on that
held-out cutoff is used — the same fold that calibrates the probabilities (calibration.py).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(2000, 2))
    >>> y = (rng.random(2000) < 1 / (1 + np.exp(-2 * x[:, 0]))).astype(int)
    >>> m = Additive([False, False]).fit(x, y)
    >>> bool(m.predict_proba(np.array([[3.0, 0.0]]))[0, 1] > 0.9)
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np

KINDS = ("trees", "additive")


def trees(categorical: list[bool], rows: int, max_iter: int | None = None) -> Any:
    """Leaves of at least 200 rows on large data (smoother scores at the top: on CDNOW
    200 gave a better top-decile lift than 40 or 100), fewer on small accounts."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        learning_rate=0.05, max_iter=max_iter or 400, max_leaf_nodes=15,
        min_samples_leaf=max(20, min(200, rows // 500)),
        l2_regularization=1.0, early_stopping=max_iter is None, validation_fraction=0.15,
        n_iter_no_change=20, random_state=0,
        categorical_features=np.array(categorical) if any(categorical) else None)


class Additive:
    """Logistic regression on per-feature cubic splines (5 knots, linear beyond the range).

    Numbers go through ``sign(v)·log1p(|v|)`` (counts, days and money are skewed) and are
    standardised; a missing number becomes 0 plus a 0/1 "missing" column; categorical
    columns (category codes) are one-hot. Constant columns are dropped."""

    def __init__(self, categorical: list[bool], c: float = 1.0) -> None:
        self.categorical = list(categorical)
        self.c = c

    def _design(self, x: np.ndarray, fit: bool = False) -> np.ndarray:
        cat = np.array(self.categorical, dtype=bool) if self.categorical else \
            np.zeros(x.shape[1], dtype=bool)
        num = x[:, ~cat]
        miss = np.isnan(num)
        if fit:
            self.missing_ = miss.any(axis=0)
        v = np.where(miss, 0.0, num)
        parts = [np.sign(v) * np.log1p(np.abs(v)), miss[:, self.missing_].astype(np.float64)]
        if cat.any():
            codes = np.where(np.isnan(x[:, cat]), -1.0, x[:, cat])
            parts.append(self.onehot_.transform(codes) if not fit else
                         self.onehot_.fit_transform(codes))
        return np.column_stack(parts)

    def fit(self, x: np.ndarray, y: np.ndarray) -> Additive:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, SplineTransformer, StandardScaler

        self.onehot_ = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        d = self._design(x, fit=True)
        self.keep_ = d.std(axis=0) > 0
        self.model_ = make_pipeline(
            StandardScaler(), SplineTransformer(n_knots=5, degree=3, extrapolation="linear"),
            LogisticRegression(C=self.c, max_iter=3000))
        self.model_.fit(d[:, self.keep_], y)
        self.classes_ = self.model_.classes_
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model_.predict_proba(self._design(x)[:, self.keep_]))


def make(kind: str, categorical: list[bool], rows: int, max_iter: int | None = None) -> Any:
    """A fresh learner of ``kind``; ``max_iter`` fixes the trees' rounds (refits)."""
    if kind == "additive":
        return Additive(categorical)
    return trees(categorical, rows, max_iter)


def rounds(model: Any) -> int | None:
    """Boosting rounds of a fitted tree model (None for the additive model)."""
    return int(model.n_iter_) if hasattr(model, "n_iter_") else None
