"""The variants compared by bench/predict_variants.py: each maps training frames to scores
at the validation cutoff. The two LightGBM variants need ``pip install lightgbm``, which is
not a dependency of Nudge: neither was adopted (docs/predict.md)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bench.predict_variants import Data

COMMON = dict(learning_rate=0.05, max_iter=400, max_leaf_nodes=15, min_samples_leaf=200,
              l2_regularization=1.0, early_stopping=True, validation_fraction=0.15,
              n_iter_no_change=20, random_state=0)
# More recent → more likely; more often → more likely (the goal's event and activity).
INCREASING = ("goal_count_", "goal_days_with_event_", "events_", "active_days_",
              "goal_days_per_tenure_day", "goal_repeat_rate_over_span")
DECREASING = ("goal_days_since_last", "days_since_last_event")


def monotone(names: list[str]) -> list[int]:
    return [1 if n.startswith(INCREASING) else -1 if n in DECREASING else 0 for n in names]


def _clf(**kw: Any) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(**{**COMMON, **kw})


def _reg(**kw: Any) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(**{**COMMON, "loss": "poisson", **kw})


def base(d: Data, names: list[str]) -> np.ndarray:
    return _clf().fit(d.x, d.y).predict_proba(d.xv)[:, 1]


def mono(d: Data, names: list[str]) -> np.ndarray:
    return _clf(monotonic_cst=monotone(names)).fit(d.x, d.y).predict_proba(d.xv)[:, 1]


def poisson(d: Data, names: list[str]) -> np.ndarray:
    return _reg().fit(d.x, d.count).predict(d.xv)


def poisson_mono(d: Data, names: list[str]) -> np.ndarray:
    return _reg(monotonic_cst=monotone(names)).fit(d.x, d.count).predict(d.xv)


def poisson_capped(d: Data, names: list[str]) -> np.ndarray:
    return _reg().fit(d.x, np.minimum(d.count, 5)).predict(d.xv)


VARIANTS = {"base": base, "mono": mono, "poisson": poisson, "poisson_mono": poisson_mono,
            "poisson_capped": poisson_capped}


def _glm_x(x: np.ndarray, names: list[str]) -> np.ndarray:
    """Features a linear model can extrapolate with: log counts, log days, rates; missing
    values 0 with an indicator."""
    cols = []
    for j, n in enumerate(names):
        v = x[:, j]
        miss = np.isnan(v)
        v = np.where(miss, 0.0, v)
        if not n.startswith(("goal_days_per", "goal_repeat", "goal_span", "goal_recency_over")):
            v = np.log1p(np.maximum(v, 0))
        cols.append(v)
        if miss.any():
            cols.append(miss.astype(float))
    return np.column_stack(cols)


def _glm(d: Data, names: list[str]) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import SplineTransformer, StandardScaler

    xt = _glm_x(d.x, names)
    keep = xt.std(axis=0) > 0
    model = make_pipeline(StandardScaler(), SplineTransformer(n_knots=5, degree=3,
                                                              extrapolation="linear"),
                          LogisticRegression(C=1.0, max_iter=2000))
    model.fit(xt[:, keep], d.y)
    return model, keep


def glm(d: Data, names: list[str]) -> np.ndarray:
    model, keep = _glm(d, names)
    return model.predict_proba(_glm_x(d.xv, names)[:, keep])[:, 1]


def _rank(s: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(s) / len(s)


def trees_plus_glm(d: Data, names: list[str]) -> np.ndarray:
    return _rank(base(d, names)) + _rank(glm(d, names))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def lgbm_glm_init(d: Data, names: list[str]) -> np.ndarray:
    import lightgbm as lgb

    model, keep = _glm(d, names)
    init = _logit(model.predict_proba(_glm_x(d.x, names)[:, keep])[:, 1])
    init_v = _logit(model.predict_proba(_glm_x(d.xv, names)[:, keep])[:, 1])
    booster = lgb.train({"objective": "binary", "learning_rate": 0.05, "num_leaves": 15,
                         "min_data_in_leaf": 200, "lambda_l2": 1.0, "num_threads": 1,
                         "verbose": -1, "seed": 0}, lgb.Dataset(d.x, d.y, init_score=init),
                        num_boost_round=100)
    return init_v + booster.predict(d.xv, raw_score=True)


def lgbm_linear_tree(d: Data, names: list[str]) -> np.ndarray:
    import lightgbm as lgb

    x = np.where(np.isnan(d.x), -1.0, d.x)
    xv = np.where(np.isnan(d.xv), -1.0, d.xv)
    booster = lgb.train({"objective": "binary", "learning_rate": 0.05, "num_leaves": 15,
                         "min_data_in_leaf": 200, "lambda_l2": 1.0, "linear_tree": True,
                         "linear_lambda": 1.0, "num_threads": 1, "verbose": -1, "seed": 0},
                        lgb.Dataset(x, d.y), num_boost_round=150)
    return booster.predict(xv)


VARIANTS.update({"glm": glm, "trees_plus_glm": trees_plus_glm,
                 "lgbm_glm_init": lgbm_glm_init, "lgbm_linear_tree": lgbm_linear_tree})


def _glm_variant(knots: int = 5, c: float = 1.0, extrapolation: str = "linear",
                 splines: bool = True, poisson: bool = False) -> Any:
    def run(d: Data, names: list[str]) -> np.ndarray:
        from sklearn.linear_model import LogisticRegression, PoissonRegressor
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import SplineTransformer, StandardScaler

        xt = _glm_x(d.x, names)
        keep = xt.std(axis=0) > 0
        steps: list[Any] = [StandardScaler()]
        if splines:
            steps.append(SplineTransformer(n_knots=knots, degree=3,
                                           extrapolation=extrapolation))
        if poisson:
            steps.append(PoissonRegressor(alpha=1 / (c * len(d.y)), max_iter=2000))
            model = make_pipeline(*steps).fit(xt[:, keep], d.count)
            return model.predict(_glm_x(d.xv, names)[:, keep])
        steps.append(LogisticRegression(C=c, max_iter=3000))
        model = make_pipeline(*steps).fit(xt[:, keep], d.y)
        return model.predict_proba(_glm_x(d.xv, names)[:, keep])[:, 1]
    return run


VARIANTS.update({
    "glm_c0.1": _glm_variant(c=0.1), "glm_c10": _glm_variant(c=10),
    "glm_k3": _glm_variant(knots=3), "glm_k8": _glm_variant(knots=8),
    "glm_constant": _glm_variant(extrapolation="constant"),
    "glm_linear_only": _glm_variant(splines=False),
    "glm_poisson": _glm_variant(poisson=True),
})


def additive(d: Data, names: list[str]) -> np.ndarray:
    from nudge.predict.learners import Additive

    return Additive([False] * len(names)).fit(d.x, d.y).predict_proba(d.xv)[:, 1]


def product(d: Data, names: list[str]) -> np.ndarray:
    """What train_goal does: the learner chosen on the latest training cutoff (held out),
    fitted on all training cutoffs (calibration does not change the ranking)."""
    from nudge.predict import learners
    from nudge.predict.train import Frame, _choose_and_calibrate

    mask = [False] * len(names)
    cuts = sorted(set(d.cutoff), reverse=True)
    frames = [Frame(c, np.empty(0), d.x[d.cutoff == c], d.y[d.cutoff == c]) for c in cuts]
    trees = learners.make("trees", mask, len(d.y)).fit(d.x, d.y)
    gap = max(1, min(math.ceil(d.horizon / 14), len(frames) // 2))
    kind, on, _ = _choose_and_calibrate(_NoStore(), mask, frames, learners.rounds(trees), gap)
    print(f"    chose {kind}: {on}")
    model = trees if kind == "trees" else learners.make(kind, mask, len(d.y)).fit(d.x, d.y)
    return np.asarray(model.predict_proba(d.xv)[:, 1])


class _NoStore:
    class settings:  # noqa: N801 - stands in for AccountStore.settings
        predict_threads = 1


VARIANTS.update({"additive": additive, "product": product})
