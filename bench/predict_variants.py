"""Model variants for the CDNOW goal, chosen on a development split (docs/predict.md).

Features are computed once by the product's own pipeline (``features_at``) at weekly
cutoffs and cached; each variant is then one fit on the same frames. Two splits:

- **dev** — goal "Charged within the next 13 weeks" as of 1998-01-01: validation cutoff
  1997-10-02, training cutoffs 1997-07-03 back every 14 days; no outcome after 1997-12-31;
- **test** — "Charged within the next 26 weeks" as of 1998-07-02: validation cutoff
  1998-01-01, training cutoffs 1997-07-03 back every 14 days (the published comparison).

Variants are judged on dev only; test figures are printed for the record.

    python -m bench.predict_variants --cache /tmp/cdnow-frames     # all variants
    python -m bench.predict_variants --cache /tmp/cdnow-frames --only base,poisson
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from bench import bgnbd, cdnow
from nudge.config import Settings
from nudge.predict.features import features_at, plan_features
from nudge.predict.goals import check_goal
from nudge.store.account import AccountStore

DAY = 86400
END = dt.datetime(1998, 1, 1, tzinfo=dt.UTC).timestamp()
TRAIN_LATEST = END - 26 * 7 * DAY  # 1997-07-03


@dataclass
class Split:
    name: str
    horizon: int  # days
    validation: float
    train: list[float]


def splits(n_train: int, step_days: int) -> list[Split]:
    train = [TRAIN_LATEST - i * step_days * DAY for i in range(n_train)]
    first = dt.datetime(1997, 1, 1, tzinfo=dt.UTC).timestamp()
    train = [c for c in train if c > first]
    return [Split("dev", 91, END - 91 * DAY, train), Split("test", 182, END, train)]


def load_frames(cache: Path) -> tuple[dict[float, tuple[np.ndarray, np.ndarray]], list[str],
                                      dict[int, np.ndarray]]:
    """Features at every weekly cutoff (1997-01-08 … 1998-01-01), by the product's code,
    keyed by cutoff; the feature names; each user's purchase times (epoch days)."""
    cache.mkdir(parents=True, exist_ok=True)
    store = AccountStore("cdnow", cache / "cdnow.duckdb", Settings(data_dir=cache))
    try:
        with store.cursor() as cur:
            n = cur.execute("SELECT count(*) FROM events").fetchone()[0]
        if n == 0:
            cdnow.load(store)
            store.compact_now()
        goal = check_goal({"name": "g", "event": "Charged", "horizon_days": 91}, END,
                          goal_id=1)
        plan = plan_features(store, goal)
        frames = {}
        for k in range(52):
            c = END - k * 7 * DAY
            path = cache / f"f{int(c)}.npz"
            if not path.exists():
                t = time.perf_counter()
                ids, x = features_at(store, plan, c)
                np.savez(path, ids=ids, x=x)
                print(f"features at {dt.datetime.fromtimestamp(c, dt.UTC):%Y-%m-%d}: "
                      f"{len(ids)} users, {time.perf_counter() - t:.1f} s", flush=True)
            z = np.load(path)
            frames[c] = (z["ids"], z["x"])
        with store.cursor() as cur:
            rows = cur.execute("SELECT user_id, epoch(ts) / 86400.0 FROM events "
                               "WHERE event = 'Charged' ORDER BY user_id, ts").fetchall()
        days: dict[int, list[float]] = {}
        for u, d in rows:
            days.setdefault(u, []).append(d)
        return frames, plan.names, {u: np.array(v) for u, v in days.items()}
    finally:
        store.close()


def outcome(ids: np.ndarray, days: dict[int, np.ndarray], c: float, h: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """(bought in [c, c + h days), distinct purchase days in it) per user."""
    lo, hi = c / DAY, c / DAY + h
    counts = np.array([len(np.unique(np.floor(d[(d >= lo) & (d < hi)]))) for d in
                       (days[int(u)] for u in ids)], dtype=float)
    return (counts > 0).astype(np.int8), counts


def lift(y: np.ndarray, s: np.ndarray) -> float:
    top = np.argsort(-s, kind="stable")[: math.ceil(len(y) / 10)]
    return float(y[top].mean() / y.mean())


def bgnbd_scores(ids: np.ndarray, days: dict[int, np.ndarray], c: float, h: int) -> np.ndarray:
    ids_b, x, t_x, big_t = bgnbd.summary({int(u): list(days[int(u)]) for u in ids}, c / DAY)
    assert (ids_b == np.sort(ids)).all()
    params = bgnbd.fit(x, t_x, big_t)
    e = bgnbd.expected_purchases(params, h, x, t_x, big_t)
    return e[np.searchsorted(ids_b, ids)]


@dataclass
class Data:
    x: np.ndarray
    y: np.ndarray
    count: np.ndarray
    cutoff: np.ndarray  # per row
    xv: np.ndarray
    yv: np.ndarray
    ids_v: np.ndarray
    horizon: int  # days


Variant = Callable[[Data, list[str]], np.ndarray]


def assemble(split: Split, frames: dict[float, tuple[np.ndarray, np.ndarray]],
             days: dict[int, np.ndarray]) -> Data:
    xs, ys, cs, cut = [], [], [], []
    for c in split.train:
        ids, x = frames[c]
        y, cnt = outcome(ids, days, c, split.horizon)
        xs.append(x)
        ys.append(y)
        cs.append(cnt)
        cut.append(np.full(len(ids), c))
    ids_v, xv = frames[split.validation]
    yv, _ = outcome(ids_v, days, split.validation, split.horizon)
    return Data(np.vstack(xs), np.concatenate(ys), np.concatenate(cs), np.concatenate(cut),
                xv, yv, ids_v, split.horizon)


def main() -> None:
    from bench import predict_variant_models as vm

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cdnow-frames")
    ap.add_argument("--only", default="")
    ap.add_argument("--cutoffs", type=int, default=13)
    ap.add_argument("--step", type=int, default=14)
    ap.add_argument("--splits", default="dev,test")
    args = ap.parse_args()
    frames, names, days = load_frames(args.cache)
    chosen = [v for v in vm.VARIANTS if not args.only or v in args.only.split(",")]
    for split in splits(args.cutoffs, args.step):
        if split.name not in args.splits.split(","):
            continue
        d = assemble(split, frames, days)
        ref = bgnbd_scores(d.ids_v, days, split.validation, split.horizon)
        print(f"{split.name}: {len(split.train)} training cutoffs, {len(d.y):,} rows, "
              f"validation {len(d.yv):,} ({d.yv.mean():.3f} positive); BG/NBD "
              f"{roc_auc_score(d.yv, ref):.4f} / {lift(d.yv, ref):.3f}", flush=True)
        for name in chosen:
            t, cpu = time.perf_counter(), time.process_time()
            s = vm.VARIANTS[name](d, names)
            print(f"  {name:32s} {roc_auc_score(d.yv, s):.4f} / {lift(d.yv, s):.3f}   "
                  f"({time.perf_counter() - t:.0f} s wall, {time.process_time() - cpu:.0f} s "
                  "CPU)", flush=True)


if __name__ == "__main__":
    main()
