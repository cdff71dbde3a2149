"""Live RFM: Nudge's SQL (nudge/predict/rfm.py) vs the same computation in pandas.

On a demo-shaped account store (bench/datasets.py), time

- **nudge report**: ``rfm.report`` (per-segment counts and revenue, the R x F grid, cut
  points) — what ``GET /1/predict/rfm`` runs;
- **nudge segment**: ``SegmentEngine.count`` of ``{"rfm_segment": {"in": ["champions",
  "loyal"]}}`` — what a segment or campaign audience with that condition runs;
- **pandas**: the reference — group the purchases (already loaded in memory, not timed) by
  person, inverted-CDF quintiles with numpy, scores and the R x F map, counts per segment.

Segment counts of all three must agree (checked before timing). Medians over ``--reps``,
interleaved.

    python -m bench.predict_rfm                         # 5M events, 100k users
    python -m bench.predict_rfm --events 20000000 --users 400000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench import datasets
from bench.common import header, median
from nudge.predict import rfm
from nudge.predict.names import RFM_SEGMENTS
from nudge.query.segments.evaluate import SegmentEngine
from nudge.query.segments.model import parse

GRID = {(r, f): n for n, (rs, fs) in RFM_SEGMENTS.items() for r in rs for f in fs}


def pandas_counts(df: pd.DataFrame, now: float) -> dict[str, int]:
    df = df[(df.ts >= now - 365 * 86400) & (df.ts <= now)]
    g = df.groupby("user_id").agg(last=("ts", "max"), f=("ts", "size"), m=("amount", "sum"))
    g["m"] = g.m.round(6)
    scores = []
    for col in ("last", "f", "m"):
        x = g[col].to_numpy()
        cuts = np.quantile(x, [0.2, 0.4, 0.6, 0.8], method="inverted_cdf")
        scores.append(1 + (x[:, None] > cuts[None, :]).sum(axis=1))
    seg = pd.Series([GRID[(r, f)] for r, f in zip(scores[0], scores[1], strict=True)])
    return {k: int(v) for k, v in seg.value_counts().items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    header("Live RFM: nudge vs pandas")
    directory = args.dir or Path(tempfile.gettempdir()) / (
        f"nudge-rfm-bench-{args.events}-{args.users}")
    datasets.build(directory, args.users, args.events)
    store = datasets.open_store(directory)
    try:
        now = time.time()
        with store.cursor() as cur:
            n_events = cur.execute("SELECT count(*) FROM events").fetchone()[0]
            last = cur.execute("SELECT max(epoch(ts)) FROM events").fetchone()[0]
        now = min(now, last + 1)
        settings = rfm.RfmSettings()
        col = store.catalog.get("event", settings.property)
        assert col is not None
        with store.cursor() as cur:
            df = cur.execute(f"SELECT user_id, epoch(ts) AS ts, coalesce({col.column}, 0) AS "
                             "amount FROM events WHERE event = ?", [settings.event]).fetchdf()
        engine = SegmentEngine(store)
        node = parse({"rfm_segment": {"in": ["champions", "loyal"]}}, now)
        ref = pandas_counts(df, now)
        report = rfm.report(store, settings, now)
        ours = {s["segment"]: s["users"] for s in report["segments"] if s["users"]}
        assert ours == ref, (ours, ref)
        assert engine.count(node, now=now) == ref.get("champions", 0) + ref.get("loyal", 0)
        times: dict[str, list[float]] = {"nudge report": [], "nudge segment": [], "pandas": []}
        runs = {"nudge report": lambda: rfm.report(store, settings, now),
                "nudge segment": lambda: engine.count(node, now=now),
                "pandas": lambda: pandas_counts(df, now)}
        for _ in range(args.reps):
            for name, fn in runs.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        print(f"{n_events:,} events, {len(df):,} purchases, {sum(ref.values()):,} buyers; "
              f"medians of {args.reps}")
        ref_t = median(times["pandas"])
        print("| computation | median | vs pandas |\n|---|---|---|")
        for name, ts in times.items():
            print(f"| {name} | {median(ts) * 1000:.0f} ms | {median(ts) / ref_t:.2f}x |")
    finally:
        store.close()


if __name__ == "__main__":
    main()
