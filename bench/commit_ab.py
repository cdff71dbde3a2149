"""The group-commit path of two checkouts on the same records, alternating, in one process.

    python -m bench.commit_ab --before /path/to/other/checkout [--events 40000]
                              [--batch 800] [--reps 2] [--threads N]

``Commit(store, records).run()`` of the other checkout's ``nudge/store/commit.py`` and of
this one's, on fresh stores, with the same pre-parsed demo-shaped records, ``--batch``
records per commit; runs alternate so that both see the same machine load. Prints events/s
and CPU per event (the whole process: DuckDB's threads included). Everything else (the
store, parsing) is this checkout's, so only the commit path differs.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common, data
from bench.ingest_http import stage_costs
from bench.load import encode_bodies


def load_commit_class(root: Path) -> Any:
    spec = importlib.util.spec_from_file_location("before_commit",
                                                  root / "nudge/store/commit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["before_commit"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.Commit


def run(commit_class: Any, records: list[Any], batch: int, threads: int) -> tuple[float, float]:
    from nudge.config import load_settings
    from nudge.store.account import AccountStore

    tmp = Path(tempfile.mkdtemp(prefix="nudge-bench-ab-"))
    try:
        store = AccountStore("ab", tmp / "events.duckdb", load_settings(data_dir=tmp))
        if threads:
            store.writer_cursor.execute(f"SET threads = {int(threads)}")
        # The writer thread is idle: commit here, as the writer would.
        c0, t0 = time.process_time(), time.perf_counter()
        for i in range(0, len(records), batch):
            commit_class(store, records[i:i + batch]).run()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        store.close()
        return len(records) / wall, cpu / len(records) * 1e6
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--before", type=Path, required=True, help="the other checkout")
    p.add_argument("--events", type=int, default=40_000)
    p.add_argument("--users", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=800, help="records per commit")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="DuckDB threads (0: default)")
    args = p.parse_args(argv)
    common.header("group commit: other checkout vs this one, same records, alternating")
    from nudge.store.commit import Commit

    _, records = stage_costs(encode_bodies(data.event_records(args.events, args.users), 100))
    versions = {"before": load_commit_class(args.before), "after": Commit}
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in versions}
    for i in range(args.reps):
        for label, cls in versions.items():
            r = run(cls, records, args.batch, args.threads)
            runs[label].append(r)
            print(f"  {label} run {i + 1}: {r[0]:,.0f} events/s, CPU {r[1]:.1f} µs/event",
                  flush=True)
    rows = [[label, common.median([r[0] for r in rs]), common.median([r[1] for r in rs])]
            for label, rs in runs.items()]
    print()
    print(common.table([f"commit path ({args.batch:,} records/commit)", "events/s (median)",
                        "CPU µs/event"], rows))
    print(f"# after ÷ before: {rows[1][1] / rows[0][1]:.2f}x events/s, "
          f"{rows[1][2] / rows[0][2]:.2f}x CPU per event; load average {common.loadavg()}")
    return {"runs": runs}


if __name__ == "__main__":
    main()
