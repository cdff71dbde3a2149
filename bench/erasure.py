"""GDPR erasure latency on a 10M-event account store, beside bare DuckDB deletes.

    python -m bench.erasure --dir /tmp/pv/seg10m [--reps 5]

Two copies of the ``bench/datasets.py`` account store (encrypted, as servers open them):

- **nudge**: ``erase_on_writer`` (the path ``POST /1/gdpr/erase`` takes, on the writer
  thread): find the person and everything merged into them, delete their events from both
  events tables, profile, identifiers, merges, suppression, fix the event catalog, forget them
  in memory, CHECKPOINT;
- **duckdb**: the same rows deleted by hand on the other copy (``DELETE ... WHERE user_id =
  ?`` on both events tables, profiles and identities, in one transaction) and a CHECKPOINT.

Each round erases a different person of about the same activity on both sides (the heaviest
users first); figures are medians.

Then the **rewrite** that crypto-shreds what the erasures left in the file
(``nudge/privacy/shred.py``: CHECKPOINT, a new key, ``COPY FROM DATABASE`` into a fresh
encrypted file, fsync, swap, the old key destroyed, reopen), beside the floor any rewrite
has: copying the same file byte for byte (``shutil.copyfile`` + fsync). ``--rewrites`` runs.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench import datasets
from bench.common import header, loadavg, median, ratio, table
from bench.encryption import KEY, stores
from nudge.config import load_settings
from nudge.privacy import shred, storage
from nudge.privacy.gdpr import Subject, erase_on_writer
from nudge.privacy.keys import keyring_for
from nudge.store.account import AccountStore
from nudge.tenancy.accounts import AccountDirectory


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--dir", help="data set directory (bench/datasets.py; built if missing)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--rewrites", type=int, default=3)
    args = p.parse_args(argv)
    header(f"GDPR erasure: one person at a time in a {args.events:,}-event store")
    directory = Path(args.dir or Path(tempfile.gettempdir()) /
                     f"nudge-bench-segments-{args.users}-{args.events}")
    datasets.build(directory, args.users, args.events)
    work = Path(tempfile.gettempdir()) / f"nudge-bench-encryption-{args.events}"
    work.mkdir(exist_ok=True)
    _, enc = stores(directory / "nudge.duckdb", work)
    tmp = Path(tempfile.mkdtemp(prefix="nudge-bench-erasure-"))
    try:
        ours_path, ref_path = tmp / "ours.duckdb", tmp / "ref.duckdb"
        shutil.copyfile(enc, ours_path)
        shutil.copyfile(enc, ref_path)
        settings = load_settings({}, merge_fanout=0)
        ours = AccountStore("bench", ours_path, settings, KEY)
        ref = AccountStore("bench-ref", ref_path, settings, KEY)
        cur = ref.writer_cursor
        heavy = cur.execute("SELECT p.user_id, p.identity, p.event_count FROM profiles p "
                            "ORDER BY p.event_count DESC LIMIT ?", [2 * args.reps]).fetchall()
        print(f"# people erased: {', '.join(f'{n:,}' for _, _, n in heavy)} events each; "
              f"load {loadavg()}", flush=True)
        t_ours: list[float] = []
        t_ref: list[float] = []
        rows = []
        for r in range(args.reps):
            a, b = heavy[2 * r], heavy[2 * r + 1]
            # Alternate which side erases the heavier of the pair, and which runs first.
            mine, theirs = (a, b) if r % 2 == 0 else (b, a)
            for side in (("ours", "ref") if r % 2 == 0 else ("ref", "ours")):
                if side == "ours":
                    t = time.perf_counter()
                    _, deleted = ours.run_on_writer(lambda m=mine: erase_on_writer(
                        ours, [Subject("identity", m[1], 0)])).result()
                    t_ours.append(time.perf_counter() - t)
                    assert deleted["events"] == mine[2], (deleted, mine)
                else:
                    t = time.perf_counter()
                    ref.run_on_writer(lambda u=theirs[0]: _bare_delete(ref, u)).result()
                    t_ref.append(time.perf_counter() - t)
            rows.append([r + 1, f"{mine[2]:,}", t_ours[-1] * 1000, f"{theirs[2]:,}",
                         t_ref[-1] * 1000])
        ref.close()
        print(table(["round", "nudge: events", "nudge ms", "duckdb: events", "duckdb ms"],
                    rows))
        mo, mr = median(t_ours) * 1000, median(t_ref) * 1000
        print(f"\n# median: nudge {mo:.0f} ms, bare DuckDB deletes {mr:.0f} ms "
              f"({ratio(mo, mr)}); load {loadavg()}")
        _rewrites(ours, tmp, args.rewrites)
        ours.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _rewrites(store: AccountStore, tmp: Path, n: int) -> None:
    """The rewrite after erasure, timed on the writer, beside a byte copy of the file."""
    settings = load_settings({}, data_dir=tmp / "control")
    keyring = keyring_for(settings)
    account = AccountDirectory(keyring.engine).create("bench-shred").account
    store.account_id = account.id  # the file keys belong to a real account row
    events = store.writer_cursor.execute("SELECT count(*) FROM events").fetchone()[0]
    t_ours: list[float] = []
    t_copy: list[float] = []
    rows = []
    for r in range(n):
        for side in (("ours", "copy") if r % 2 == 0 else ("copy", "ours")):
            if side == "ours":
                t = time.perf_counter()
                result = store.run_on_writer(lambda: shred.rewrite_on_writer(store, keyring)
                                             ).result()
                t_ours.append(time.perf_counter() - t)
            else:
                t = time.perf_counter()
                shutil.copyfile(store.path, tmp / "copy.duckdb")
                storage.fsync(tmp / "copy.duckdb")
                t_copy.append(time.perf_counter() - t)
                (tmp / "copy.duckdb").unlink()
        rows.append([r + 1, f"{result['bytes_before'] / 1e6:,.0f}",
                     f"{result['bytes_after'] / 1e6:,.0f}", t_ours[-1] * 1000,
                     t_copy[-1] * 1000])
    print(f"\n## Rewrite under a new key ({events:,} events)")
    print(table(["round", "MB before", "MB after", "rewrite ms", "file copy ms"], rows))
    mo, mc = median(t_ours) * 1000, median(t_copy) * 1000
    print(f"\n# median: rewrite {mo:.0f} ms, byte copy {mc:.0f} ms ({ratio(mo, mc)}); "
          f"load {loadavg()}")
    keyring.engine.dispose()


def _bare_delete(store: AccountStore, uid: int) -> None:
    cur = store.writer_cursor
    cur.execute("BEGIN TRANSACTION")
    for t in ("events_recent", "events_sorted", "profiles", "identities"):
        cur.execute(f"DELETE FROM {t} WHERE user_id = ?", [uid])  # our table names
    cur.execute("COMMIT")
    cur.execute("CHECKPOINT")


if __name__ == "__main__":
    main()
