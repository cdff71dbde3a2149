"""Every benchmark with its default sizes, then a summary (``make bench``).

    python -m bench.run_all [--only ingest_http,freshness,storage,layout,segments,
                                    analytics_trends,analytics_paths]

Each benchmark prints its own tables (ours, the reference, the ratio); see docs/benchmarks.md
for what they mean and for figures at larger sizes (every module takes ``--events N``).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench import (
    analytics_paths,
    analytics_trends,
    common,
    freshness,
    ingest_http,
    layout,
    segments,
    storage,
)

ALL = ("ingest_http", "freshness", "storage", "layout", "segments", "analytics_trends",
       "analytics_paths")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", default=",".join(ALL),
                   help="comma-separated subset of " + ", ".join(ALL))
    args = p.parse_args(argv)
    chosen = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(chosen) - set(ALL)
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    started = time.perf_counter()
    out: dict[str, Any] = {}
    if "ingest_http" in chosen:
        out["ingest_http"] = ingest_http.main([])
    if "freshness" in chosen:
        out["freshness"] = freshness.main([])
    if "storage" in chosen:
        out["storage"] = storage.main([])
    if "layout" in chosen:
        out["layout"] = layout.main([])
    if "segments" in chosen:
        out["segments"] = segments.main([])
    # The analytics benchmarks reuse the data set bench.segments builds (same default size).
    if "analytics_trends" in chosen:
        out["analytics_trends"] = analytics_trends.main(["--reps", "5", "--user-sets"])
    if "analytics_paths" in chosen:
        out["analytics_paths"] = analytics_paths.main(["--reps", "5"])

    rows: list[list[Any]] = []
    if "ingest_http" in out:
        r = out["ingest_http"]
        rows += [["ingest over HTTP, events/s (target 100,000)", r["http"],
                  f"{r['ceiling']:,.0f} (store.write, big batches)",
                  f"{r['http'] / r['ceiling']:.2f}"],
                 ["", "", f"{r['floor']:,.0f} (DuckDB INSERT from Arrow)",
                  f"{r['http'] / r['floor']:.3f}"]]
    if "freshness" in out:
        for r in out["freshness"]:
            label = freshness._label(r)
            rows.append([f"freshness p99 ms, background {label} (target 1,000)", r["timeline"][1],
                         f"{r['ack'][1]:,.0f} (durable ack p99)",
                         f"{r['timeline'][1] / r['ack'][1]:.2f}"])
    if "storage" in out:
        r = out["storage"]
        n = r["events"]
        rows.append(["bytes/event, events only, (event, ts) order", r["sorted"] / n,
                     f"{r['refs']['parquet'] / n:.1f} (Parquet zstd)",
                     f"{r['sorted'] / r['refs']['parquet']:.2f}"])
        if "clickhouse" in r["refs"]:
            rows.append(["", "", f"{r['refs']['clickhouse'] / n:.1f} (ClickHouse MergeTree)",
                         f"{r['sorted'] / r['refs']['clickhouse']:.2f}"])
        m = r["memory"]
        rows.append(["server RSS MiB after reads", m["reads"] / 2**20,
                     f"{m['bare_duckdb'] / 2**20:.0f} (bare DuckDB, same reads)",
                     f"{m['reads'] / m['bare_duckdb']:.2f}"])
    if "layout" in out:
        t = out["layout"]["timings"]
        ours = t[layout.STORE]
        ch = t.get(layout.CHDB)
        best = min(ours["trend"], ours["trend, dedup first"])
        if ch:
            rows += [["segment query ms, our store", ours["segment"],
                      f"{ch['segment']:.1f} (chDB)", f"{ours['segment'] / ch['segment']:.2f}"],
                     ["daily trend ms, our store (best form)", best,
                      f"{ch['trend']:.1f} (chDB uniqExact)", f"{best / ch['trend']:.2f}"]]
    for key in ("analytics_trends", "analytics_paths"):
        for name, m in out.get(key, {}).get("median_ms", {}).items():
            refs = {e: v for e, v in m.items() if e != "nudge" and not e.startswith("duckdb_")}
            if refs:
                best = min(refs, key=refs.__getitem__)
                rows.append([f"{name} ms", m["nudge"], f"{refs[best]:,.1f} ({best})",
                             f"{m['nudge'] / refs[best]:.2f}"])
    common.header("summary")
    print(common.table(["figure", "ours", "reference", "ours ÷ reference"], rows))
    print(f"# all benchmarks took {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
