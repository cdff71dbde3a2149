"""Predictive goals on real and generated data: Nudge's model vs reference models.

**CDNOW** (tests/data/cdnow): goal "Charged within the next 26 weeks" at the cutoff
1998-01-01 (purchases through 1997-12-31 are history; 22.8% of customers buy in the 26
weeks after), Nudge trained on earlier cutoffs only (``train_goal``, the path the API
takes), against BG/NBD (bench/bgnbd.py) fit on the same history. Reported: AUC and
top-decile lift of both, a paired bootstrap (same resampled customers for both models) of
the differences, bootstrap intervals of each, Brier score and calibration by decile (Nudge's
calibrated probability; BG/NBD's probability of at least one purchase), and wall time of
Nudge's training next to the BG/NBD fit.

**Demo** (nudge/demo.py, behaviour-driven e-commerce data): goal "Charged within the next 7
days" as of the end of the generated window, against ranking people by how recently they
last bought (the usual rule of thumb).

    python -m bench.predict_cdnow                      # CDNOW, 12 training cutoffs, demo
    python -m bench.predict_cdnow --cutoffs 4 --no-demo
    python -m bench.predict_cdnow --no-cdnow           # demo only
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from bench import bgnbd, cdnow
from bench.common import header, median
from nudge.bulk import ingest_chunks
from nudge.config import Settings
from nudge.predict.calibration import Platt
from nudge.predict.features import features_at, outcome_users, plan_features
from nudge.predict.goals import check_goal
from nudge.predict.train import train_goal
from nudge.store.account import AccountStore

DAY = 86400
CUTOFF = dt.datetime(1998, 1, 1, tzinfo=dt.UTC).timestamp()
HORIZON = 26 * 7


def lift(y: np.ndarray, s: np.ndarray) -> float:
    top = np.argsort(-s, kind="stable")[: math.ceil(len(y) / 10)]
    return float(y[top].mean() / y.mean())


def bootstrap(y: np.ndarray, a: np.ndarray, b: np.ndarray, reps: int = 200
              ) -> dict[str, tuple[float, float]]:
    """95% intervals over customers resampled with replacement (the same resamples for
    both models): AUC and lift of ``a``, of ``b``, and of the differences a − b."""
    rng = np.random.default_rng(0)
    out: dict[str, list[float]] = {k: [] for k in (
        "auc_a", "auc_b", "lift_a", "lift_b", "auc", "lift")}
    for _ in range(reps):
        i = rng.integers(0, len(y), len(y))
        for k, f in (("auc", roc_auc_score), ("lift", lift)):
            va, vb = f(y[i], a[i]), f(y[i], b[i])
            out[f"{k}_a"].append(va)
            out[f"{k}_b"].append(vb)
            out[k].append(va - vb)
    return {k: tuple(np.percentile(v, (2.5, 97.5))) for k, v in out.items()}


def calibration(y: np.ndarray, p: np.ndarray) -> str:
    """Mean predicted → observed rate by decile of prediction, lowest first."""
    order = np.argsort(p, kind="stable")
    return ", ".join(f"{p[i].mean():.2f}→{y[i].mean():.2f}" for i in np.array_split(order, 10))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


def run_cdnow(tmp: Path, cutoffs: int, reps: int) -> None:
    store = AccountStore("cdnow", tmp / "cdnow.duckdb", Settings(data_dir=tmp))
    try:
        t = time.perf_counter()
        cdnow.load(store)
        store.compact_now()
        print(f"imported 69,659 purchases in {time.perf_counter() - t:.1f} s")
        now = CUTOFF + HORIZON * DAY
        goal = check_goal({"name": "26 weeks", "event": "Charged", "horizon_days": HORIZON,
                           "training_cutoffs": cutoffs}, now, goal_id=1)
        ours_s, ref_s, ours_cpu, ref_cpu = [], [], [], []
        for _ in range(reps):
            t, cpu = time.perf_counter(), time.process_time()
            record = train_goal(store, goal, now)
            ours_s.append(time.perf_counter() - t)
            ours_cpu.append(time.process_time() - cpu)
            purchases: dict[int, list[float]] = {}
            for cid, ts, _cds, _usd in cdnow.rows():
                purchases.setdefault(cid, []).append(ts / DAY)
            t, cpu = time.perf_counter(), time.process_time()
            ids, x, t_x, big_t = bgnbd.summary(purchases, CUTOFF / DAY)
            params = bgnbd.fit(x, t_x, big_t)
            expected = bgnbd.expected_purchases(params, HORIZON, x, t_x, big_t)
            ref_s.append(time.perf_counter() - t)
            ref_cpu.append(time.process_time() - cpu)
        # Our scores at the validation cutoff, per customer, from the validated procedure:
        # refit the same way on the training cutoffs and score the cutoff's features.
        m = record["metrics"]
        y = np.array([any(CUTOFF / DAY <= d < CUTOFF / DAY + HORIZON for d in purchases[c])
                      for c in ids], dtype=float)
        ours = _validation_scores(store, goal, now, ids, record)
        assert abs(roc_auc_score(y, ours) - m["auc"]) < 1e-9  # the same validated model
        assert abs(brier(y, ours) - m["brier"]) < 1e-9
        ref_p = bgnbd.p_any(params, HORIZON, x, t_x, big_t)
        ci = bootstrap(y, ours, expected)
        print(f"positives at the cutoff: {y.mean():.3f} of {len(y):,} customers")
        print("| model | AUC [95% CI] | top-decile lift [95% CI] | Brier | mean p | time "
              f"(median of {reps}) |\n|---|---|---|---|---|---|")
        print(f"| Nudge ({m['learner']}, chosen on {m['learner_chosen_on']}; "
              f"{len(m['training_cutoffs'])} training cutoffs, calibrated) | {m['auc']:.4f} "
              f"[{ci['auc_a'][0]:.4f}, {ci['auc_a'][1]:.4f}] | "
              f"{m['top_decile_lift']:.3f} [{ci['lift_a'][0]:.3f}, {ci['lift_a'][1]:.3f}] | "
              f"{m['brier']:.4f} (raw {m['brier_uncalibrated']:.4f}) | {ours.mean():.3f} | "
              f"{median(ours_s):.1f} s wall, {median(ours_cpu):.1f} s CPU (features, 4-5 fits, "
              "score) |")
        print(f"| BG/NBD (r={params[0]:.3f}, α={params[1]:.2f}, a={params[2]:.3f}, "
              f"b={params[3]:.3f}) | {roc_auc_score(y, expected):.4f} "
              f"[{ci['auc_b'][0]:.4f}, {ci['auc_b'][1]:.4f}] | {lift(y, expected):.3f} "
              f"[{ci['lift_b'][0]:.3f}, {ci['lift_b'][1]:.3f}] | {brier(y, ref_p):.4f} "
              f"(P(≥1 purchase)) | {ref_p.mean():.3f} | {median(ref_s):.1f} s wall, "
              f"{median(ref_cpu):.1f} s CPU (fit) |")
        print(f"paired bootstrap, Nudge − BG/NBD, 95%: AUC [{ci['auc'][0]:+.4f}, "
              f"{ci['auc'][1]:+.4f}], lift [{ci['lift'][0]:+.3f}, {ci['lift'][1]:+.3f}]")
        print("calibration at the cutoff (predicted → observed by decile), Nudge: "
              + calibration(y, ours))
        print("  BG/NBD P(≥1 purchase): " + calibration(y, ref_p))
        print(f"  Nudge calibrated on {m['calibrated_on']}")
    finally:
        store.close()


def _validation_scores(store: AccountStore, goal: object, now: float, ids: np.ndarray,
                       record: dict[str, Any]) -> np.ndarray:
    """The validated model's calibrated scores at the cutoff, in the order of ``ids``
    (customer ids): train_goal keeps only metrics, so fit the same model on the same
    training frames and apply the calibration it recorded."""
    from nudge.predict import train as tr

    validation, train_cuts = tr.cutoffs(store, goal, now)  # type: ignore[arg-type]
    plan = plan_features(store, goal)  # type: ignore[arg-type]
    frames = [tr.frame(store, goal, plan, c, HORIZON * DAY)  # type: ignore[arg-type]
              for c in train_cuts]
    x = np.vstack([f.x for f in frames])
    y = np.concatenate([f.y for f in frames])
    from nudge.predict import learners

    with tr._threads(store):
        model = learners.make(record["metrics"]["learner"], plan.categorical_mask,
                              len(y)).fit(x, y)
    uids, xv = features_at(store, plan, validation)
    c = record["metrics"]["calibrated_on"]
    p = Platt(c["slope"], c["intercept"]).apply(model.predict_proba(xv)[:, 1])
    with store.cursor() as cur:
        ident = dict(cur.execute("SELECT user_id, identity FROM profiles").fetchall())
    by_customer = {int(ident[u][1:]): s for u, s in zip(uids, p, strict=True)}
    return np.array([by_customer[int(c)] for c in ids])


def run_demo(tmp: Path, users: int, events: int) -> None:
    from nudge.demo import generate

    store = AccountStore("demo", tmp / "demo.duckdb", Settings(data_dir=tmp))
    try:
        now = float(int(time.time()) // DAY * DAY)
        t = time.perf_counter()
        chunks = generate(users=users, events=events, seed=7, now=now, days=90)
        stored, _ = ingest_chunks(store, chunks, store.settings.limits, total=None or 0,
                                  label="demo", quiet=True)
        store.compact_now()
        print(f"demo: {stored:,} records for {users:,} users in {time.perf_counter() - t:.0f} s")
        goal = check_goal({"name": "buys in 7 days", "event": "Charged", "horizon_days": 7},
                          now, goal_id=2)
        t, cpu = time.perf_counter(), time.process_time()
        record = train_goal(store, goal, now)
        took, took_cpu = time.perf_counter() - t, time.process_time() - cpu
        m = record["metrics"]
        # Reference: rank by recency of the last purchase at the validation cutoff.
        c = m["validation_cutoff"]
        plan = plan_features(store, goal)
        uids, x = features_at(store, plan, c)
        rec = x[:, plan.names.index("goal_days_since_last")]
        score = -np.nan_to_num(rec, nan=1e9)
        y = np.isin(uids, outcome_users(store, goal, c, c + 7 * DAY)).astype(float)
        print("| model | AUC | top-decile lift |\n|---|---|---|")
        print(f"| Nudge ({m['learner']}; {took:.0f} s wall, {took_cpu:.0f} s CPU) | "
              f"{m['auc']:.4f} | {m['top_decile_lift']:.3f} |")
        print(f"| recency of last purchase | {roc_auc_score(y, score):.4f} | "
              f"{lift(y, score):.3f} |")
        _by_hidden_type(store, users, events, now)
        print(f"positives: {m['base_rate']:.3f} of {m['validation_rows']:,}; Brier "
              f"{m['brier']:.4f} (raw {m['brier_uncalibrated']:.4f}); calibration: "
              + ", ".join(f"{c['predicted']:.2f}→{c['observed']:.2f}"
                          for c in m["calibration"]))
        print("observed rate per bucket: " + ", ".join(
            f"{b} {v['observed']:.3f} ({v['users']})" for b, v in m["buckets"].items()))
    finally:
        store.close()


HIDDEN_TYPES = ("loyal", "regular", "one-time buyer", "browser", "churner")  # nudge/demo.py


def _by_hidden_type(store: AccountStore, users: int, events: int, now: float) -> None:
    """Who the scores put in each bucket, by the generator's hidden type (which drives how
    often people come back and buy, and which no feature sees): the check that the model
    found the behaviour the data was made from."""
    from nudge.demo import _Demo  # the generator's own draw of each user's type

    seg = _Demo(users, events, 7, now, 90, 50_000).seg
    with store.cursor() as cur:
        rows = cur.execute("SELECT p.identity, s.bucket FROM predict_scores s JOIN profiles p "
                           "USING (user_id) WHERE s.goal_id = 2 AND p.identity LIKE 'u%'"
                           ).fetchall()
    counts: dict[str, list[int]] = {}
    for ident, bucket in rows:
        counts.setdefault(bucket, [0] * 5)[seg[int(ident[1:]) - 1]] += 1
    print("| bucket now | " + " | ".join(HIDDEN_TYPES) + " |\n" + "|---" * 6 + "|")
    for bucket, row in sorted(counts.items()):
        total = sum(row)
        print(f"| {bucket} ({total:,}) | " + " | ".join(f"{c / total:.1%}" for c in row) + " |")
    every = [sum(r[i] for r in counts.values()) for i in range(5)]
    print("| everyone scored | " + " | ".join(f"{c / sum(every):.1%}" for c in every) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cutoffs", type=int, default=12)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--no-demo", action="store_true")
    ap.add_argument("--no-cdnow", action="store_true")
    ap.add_argument("--demo-users", type=int, default=10_000)
    ap.add_argument("--demo-events", type=int, default=500_000)
    args = ap.parse_args()
    header("Predictive goals: CDNOW vs BG/NBD, demo vs recency")
    tmp = Path(tempfile.mkdtemp(prefix="nudge-predict-"))
    try:
        if not args.no_cdnow:
            run_cdnow(tmp, args.cutoffs, args.reps)
        if not args.no_demo:
            run_demo(tmp, args.demo_users, args.demo_events)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
