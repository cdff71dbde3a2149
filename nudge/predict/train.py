"""Training a goal's model on past cutoffs, validating it, and scoring everyone now.

With horizon ``H`` (the goal's horizon, or the time left to its deadline) and ``now``:

1. the **validation cutoff** is ``now - H``: the latest moment whose outcome is fully known;
2. the **training cutoffs** are ``now - 2H``, ``now - 2H - step``, ... (``training_cutoffs``
   of them, after the first event): their outcome windows end before the validation cutoff,
   so nothing about the validation period is learned;
3. features (features.py) are computed for everyone at each cutoff, labels are whether they
   did the goal's event in ``[cutoff, cutoff + H)`` (for churn: did nothing at all);
4. the **learner** is chosen and the probabilities **calibrated** on the latest training
   cutoff, held out: gradient-boosted trees and an additive spline model (learners.py) are
   each fitted on the other training cutoffs, the one with the higher AUC on the held-out
   cutoff is used, and a map (calibration.py) is fitted from its held-out scores to what
   happened there; the chosen learner, fitted on all training cutoffs and calibrated by
   that map, is measured on the validation cutoff: AUC, top-decile lift, calibration by
   decile of predicted probability, Brier score (calibrated and raw);
5. the same learner (for trees, the same number of boosting rounds) is refit on all cutoffs
   and calibrated the same way one step later — by a map fitted on the validation cutoff's
   scores of the model of step 4, which did not learn from it; everyone is scored as of
   ``now`` and put in a bucket by rank: the top 20% of scores are ``most_likely``, the
   next 30% ``moderately_likely``, the rest ``least_likely`` (equal scores share a bucket);
6. scores replace the goal's previous scores in one transaction on the account's writer
   thread; the model file goes to ``<account dir>/models/``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pyarrow as pa
from threadpoolctl import threadpool_limits

from nudge.clock import clock
from nudge.errors import NudgeError
from nudge.store.account import AccountStore

from .calibration import IDENTITY, Platt
from .calibration import fit as calibration_fit
from .conditions import SCORES_TABLE
from .features import FeaturePlan, features_at, outcome_users, plan_features
from .goals import DAY, Goal
from .learners import KINDS, make, rounds
from .names import BUCKETS

Progress = Callable[[str, float], None]
BUCKET_SHARES = (0.2, 0.5)  # cumulative: top 20% most likely, next 30% moderately
MIN_POSITIVES = 20  # per class, over the training cutoffs
MIN_VALIDATION = 10  # per class, at the validation cutoff


class NotEnoughData(NudgeError):
    status = 422
    code = "not_enough_data"


@dataclass
class Frame:
    cutoff: float
    ids: np.ndarray
    x: np.ndarray
    y: np.ndarray


def _noop(stage: str, fraction: float) -> None:
    pass


def cutoffs(store: AccountStore, goal: Goal, now: float) -> tuple[float, list[float]]:
    """(validation cutoff, training cutoffs) for ``goal`` as of ``now``."""
    horizon = goal.horizon(now)
    with store.cursor() as cur:
        first = cur.execute("SELECT min(epoch(first_seen)) FROM event_catalog").fetchone()[0]
    if first is None:
        raise NotEnoughData("the account has no events yet: nothing to learn from",
                            field="goal")
    validation = now - horizon
    step = goal.step(now)
    train = [c for c in (validation - horizon - i * step for i in range(goal.training_cutoffs))
             if c > first]
    if not train:
        need = 2 * horizon / DAY
        have = (now - first) / DAY
        raise NotEnoughData(
            f"not enough history: this goal looks {horizon / DAY:g} days ahead, so training "
            f"needs events from more than {need:g} days ago (two horizons: one to learn from, "
            f"one to validate on); the account's events span {have:.1f} days", field="goal")
    return validation, train


def frame(store: AccountStore, goal: Goal, plan: FeaturePlan, cutoff: float,
          horizon: float) -> Frame:
    active = goal.active_within_days if goal.kind == "churn" else None
    ids, x = features_at(store, plan, cutoff, active)
    did = np.isin(ids, outcome_users(store, goal, cutoff, cutoff + horizon))
    y = ~did if goal.kind == "churn" else did
    return Frame(cutoff, ids, x, y.astype(np.int8))


def _threads(store: AccountStore) -> Any:
    """Fit on at most NUDGE_PREDICT_THREADS OpenMP/BLAS threads (default 1). The server shares
    its cores with ingest and queries; OpenMP threads spinning while they wait for a busy
    core made one fit ~14x slower on a loaded 2-core machine (docs/predict.md)."""
    return threadpool_limits(limits=max(1, store.settings.predict_threads))


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """AUC, top-decile lift, calibration by decile, Brier score, observed rate per bucket."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    y = y.astype(np.float64)
    n = len(y)
    order = np.argsort(-p, kind="stable")
    top = order[: math.ceil(n / 10)]
    base = float(y.mean())
    calibration = [{"predicted": float(p[idx].mean()), "observed": float(y[idx].mean()),
                    "users": len(idx)} for idx in np.array_split(order[::-1], 10) if len(idx)]
    buckets = assign_buckets(p)
    return {
        "auc": float(roc_auc_score(y, p)),
        "top_decile_lift": float(y[top].mean() / base) if base > 0 else None,
        "base_rate": base,
        "brier": float(brier_score_loss(y, p)),
        "calibration": calibration,
        "buckets": {b: {"users": int((buckets == b).sum()),
                        "observed": float(y[buckets == b].mean()) if (buckets == b).any()
                        else None} for b in BUCKETS},
    }


def assign_buckets(p: np.ndarray) -> np.ndarray:
    """Buckets by rank (BUCKET_SHARES); equal scores always share a bucket."""
    out = np.full(len(p), BUCKETS[2], dtype=object)
    if not len(p):
        return out
    desc = np.sort(p)[::-1]
    lo = desc[max(0, math.ceil(BUCKET_SHARES[1] * len(p)) - 1)]
    hi = desc[max(0, math.ceil(BUCKET_SHARES[0] * len(p)) - 1)]
    out[p >= lo] = BUCKETS[1]
    out[p >= hi] = BUCKETS[0]
    return out


def train_goal(store: AccountStore, goal: Goal, now: float | None = None,
               progress: Progress = _noop) -> dict[str, Any]:
    """Train, validate and score ``goal``; returns the model record (metrics, features...)."""
    now = clock.now() if now is None else now
    horizon = goal.horizon(now)
    validation, train_cuts = cutoffs(store, goal, now)
    plan = plan_features(store, goal)
    frames = []
    steps = len(train_cuts) + 6
    for i, c in enumerate([*train_cuts, validation]):
        progress(f"features at cutoff {i + 1}/{len(train_cuts) + 1}", i / steps)
        frames.append(frame(store, goal, plan, c, horizon))
    train, valid = frames[:-1], frames[-1]
    x = np.vstack([f.x for f in train])
    y = np.concatenate([f.y for f in train])
    _check_counts(y, valid.y, goal)
    progress("fitting", len(frames) / steps)
    mask = plan.categorical_mask
    with _threads(store):
        model = make("trees", mask, len(y)).fit(x, y)
    n_rounds = rounds(model)
    progress("choosing the learner on the latest training cutoff", (len(frames) + 1) / steps)
    gap = max(1, min(math.ceil(horizon / goal.step(now)), len(train) // 2))
    kind, chosen_on, held = _choose_and_calibrate(store, mask, train, n_rounds, gap)
    if kind != "trees":
        with _threads(store):
            model = make(kind, mask, len(y)).fit(x, y)
    progress("validating", (len(frames) + 2) / steps)
    raw = model.predict_proba(valid.x)[:, 1]
    found = metrics(valid.y, held.apply(raw))
    progress("refitting on all cutoffs", (len(frames) + 3) / steps)
    with _threads(store):
        final = make(kind, mask, len(y), n_rounds).fit(np.vstack([x, valid.x]),
                                                       np.concatenate([y, valid.y]))
    calibration = _calibrate(raw, valid.y, valid.cutoff)
    progress("scoring", (len(frames) + 4) / steps)
    scored = score(store, goal, plan, final, now, calibration)
    path = save_model(store, goal, plan, final, calibration)
    return {
        "trained_at": clock.now(), "as_of": now, "features": plan.names, "path": str(path),
        "metrics": {
            **found, "brier_uncalibrated": _brier(valid.y, raw),
            "mean_predicted": float(held.apply(raw).mean()),
            "mean_predicted_uncalibrated": float(raw.mean()),
            "calibrated_on": held.to_dict(), "scores_calibrated_on": calibration.to_dict(),
            "horizon_days": horizon / DAY, "validation_cutoff": validation,
            "training_cutoffs": train_cuts, "learner": kind, "learner_chosen_on": chosen_on,
            "boosting_rounds": n_rounds if kind == "trees" else None,
            "training_rows": int(len(y)), "training_positives": int(y.sum()),
            "validation_rows": int(len(valid.y)), "validation_positives": int(valid.y.sum()),
            "scored": scored,
        },
    }


def _choose_and_calibrate(store: AccountStore, mask: list[bool], train: list[Frame],
                          n_rounds: int | None, gap: int = 1
                          ) -> tuple[str, dict[str, Any] | None, Platt]:
    """Hold out the latest training cutoff: fit each learner (the trees with the rounds of
    the full fit) on the training cutoffs ``gap`` or more steps older, keep the one with
    the higher AUC on the held-out cutoff (learners.py), and map its held-out scores to
    what happened (the calibration used for validation).

    The gap mirrors how the model is used: it predicts a horizon past the latest cutoff it
    learned from, for people whose histories are that much longer, so the fold skips as
    many cutoffs as fit in a horizon (but keeps at least half of them to learn from). With a
    single training cutoff, or one class in either part, there is nothing to hold out: the
    trees are used and the scores stay raw."""
    from sklearn.metrics import roc_auc_score

    held, rest = train[0], train[gap:]
    if len(train) < 2:
        return "trees", None, IDENTITY
    y = np.concatenate([f.y for f in rest])
    if y.min() == y.max() or held.y.min() == held.y.max():
        return "trees", None, IDENTITY
    x = np.vstack([f.x for f in rest])
    scores, aucs = {}, {}
    for kind in KINDS:
        with _threads(store):
            twin = make(kind, mask, len(y), n_rounds).fit(x, y)
        scores[kind] = twin.predict_proba(held.x)[:, 1]
        aucs[kind] = float(roc_auc_score(held.y, scores[kind]))
    kind = max(KINDS, key=lambda k: aucs[k])  # ties: the first, trees
    return kind, {"cutoff": held.cutoff, "auc": aucs}, _calibrate(scores[kind], held.y,
                                                                  held.cutoff)


def _calibrate(p: np.ndarray, y: np.ndarray, cutoff: float) -> Platt:
    if len(y) == 0 or y.min() == y.max():
        return IDENTITY
    return calibration_fit(p, y, cutoff)


def _brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p - y.astype(np.float64)) ** 2))


def _check_counts(y: np.ndarray, yv: np.ndarray, goal: Goal) -> None:
    what = "churned" if goal.kind == "churn" else "did the goal's event"
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if pos < MIN_POSITIVES or neg < MIN_POSITIVES:
        raise NotEnoughData(
            f"not enough data to learn from: over the training cutoffs {pos} people {what} "
            f"and {neg} did not; at least {MIN_POSITIVES} of each are needed", field="goal")
    vpos, vneg = int(yv.sum()), int(len(yv) - yv.sum())
    if vpos < MIN_VALIDATION or vneg < MIN_VALIDATION:
        raise NotEnoughData(
            f"not enough data to validate on: at the validation cutoff {vpos} people {what} "
            f"and {vneg} did not; at least {MIN_VALIDATION} of each are needed", field="goal")


def score(store: AccountStore, goal: Goal, plan: FeaturePlan, model: Any,
          now: float, calibration: Platt = IDENTITY) -> dict[str, int]:
    """Score everyone as of ``now`` and replace the goal's scores; returns bucket counts."""
    active = goal.active_within_days if goal.kind == "churn" else None
    ids, x = features_at(store, plan, now, active)
    p = calibration.apply(model.predict_proba(x)[:, 1]) if len(ids) else np.empty(0)
    buckets = assign_buckets(p)
    write_scores(store, goal.id, ids, p, buckets)
    return {b: int((buckets == b).sum()) for b in BUCKETS}


def write_scores(store: AccountStore, goal_id: int, ids: np.ndarray, p: np.ndarray,
                 buckets: np.ndarray) -> None:
    """Replace the goal's scores atomically, on the writer thread."""
    table = pa.table({"user_id": pa.array(ids, pa.int64()), "score": pa.array(p, pa.float64()),
                      "bucket": pa.array(list(buckets), pa.string())})

    def write() -> None:
        cur = store.writer_cursor
        cur.execute(f"CREATE TABLE IF NOT EXISTS {SCORES_TABLE} (goal_id INTEGER NOT NULL, "
                    "user_id BIGINT NOT NULL, score DOUBLE NOT NULL, bucket VARCHAR NOT NULL)")
        cur.register("_new_scores", table)
        cur.execute("BEGIN TRANSACTION")
        try:
            cur.execute(f"DELETE FROM {SCORES_TABLE} WHERE goal_id = ?", [goal_id])
            cur.execute(f"INSERT INTO {SCORES_TABLE} SELECT ?, user_id, score, bucket "
                        "FROM _new_scores", [goal_id])
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        finally:
            cur.unregister("_new_scores")

    store.run_on_writer(write).result()


def drop_scores(store: AccountStore, goal_id: int) -> None:
    def drop() -> None:
        cur = store.writer_cursor
        exists = cur.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = "
                             "'acct' AND table_name = ?", [SCORES_TABLE]).fetchone()[0]
        if exists:
            cur.execute(f"DELETE FROM {SCORES_TABLE} WHERE goal_id = ?", [goal_id])

    store.run_on_writer(drop).result()


def model_path(store: AccountStore, goal_id: int) -> Path:
    return store.path.parent / "models" / f"goal-{int(goal_id)}.joblib"


def save_model(store: AccountStore, goal: Goal, plan: FeaturePlan, model: Any,
               calibration: Platt = IDENTITY) -> Path:
    """Write the model, its calibration and feature plan (replacing the previous file
    atomically)."""
    path = model_path(store, goal.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    joblib.dump({"model": model, "plan": plan, "goal": goal.definition,
                 "calibration": calibration}, tmp)
    os.replace(tmp, path)
    return path


def rescore(store: AccountStore, goal: Goal, now: float | None = None) -> dict[str, int]:
    """Score everyone again with the stored model (no training)."""
    path = model_path(store, goal.id)
    if not path.exists():
        raise NotEnoughData("the goal has no trained model yet; train it first", field="goal")
    saved = joblib.load(path)  # our own file, written by save_model
    return score(store, goal, saved["plan"], saved["model"], clock.now() if now is None else now,
                 saved.get("calibration", IDENTITY))  # files from before calibration: raw
