"""Bulk import (JSONL, CSV, Parquet) and export (Parquet) of an account's data.

Imports go through the same validation, dedup and identity resolution as the HTTP API, in
large group commits, with a progress bar. Exports stream record batches to Parquet, with the
catalog's typed columns renamed back to property names.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import gc
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from nudge.clock import clock
from nudge.config import Limits
from nudge.errors import ValidationError
from nudge.ingest.records import Record, RecordError
from nudge.ingest.upload import parse_records
from nudge.store.account import AccountStore

CHUNK = 20_000
BULK_CHECKPOINT_THRESHOLD = "1GB"
BULK_COMPACT_ROWS = 4_000_000
ID_COLUMNS = ("identity", "objectId", "email", "phone")
_DECODER = msgspec.json.Decoder()


def progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.completed:,.0f}/{task.total:,.0f}"), TimeRemainingColumn())


# A chunk validated elsewhere (``nudge demo`` parses in its generator process): the records,
# the rejected ones, and how many upload records the chunk had.
Parsed = tuple[list[Record], list[RecordError], int]


def ingest_chunks(store: AccountStore, chunks: Iterator[list[dict[str, Any]]] | Iterator[Parsed],
                  limits: Limits, *, total: int | None = None, label: str = "importing",
                  quiet: bool = False, bulk: bool = False, parsed: bool = False,
                  ) -> tuple[int, list[RecordError]]:
    """Validate and write chunks of upload-format records; returns (stored, errors).

    With ``parsed``, chunks are ``Parsed`` tuples, validated by the same ``parse_records``
    in another process. Parsing the next chunk overlaps with the previous chunk's commit on
    the writer thread.
    With ``bulk``, DuckDB checkpoints only at the end instead of every 16 MB of WAL (a
    checkpoint rewrites the tables' changed row groups, which big commits make costly); a
    crash meanwhile replays a longer WAL but loses nothing committed.
    """
    with bulk_mode(store) if bulk else contextlib.nullcontext():
        return _ingest(store, chunks, limits, total, label, quiet, parsed)


@contextlib.contextmanager
def bulk_mode(store: AccountStore) -> Iterator[None]:
    """A big load: DuckDB checkpoints once at the end, recent events are compacted every
    ``BULK_COMPACT_ROWS`` (and at the end), Python's cyclic GC is paused."""
    gc_was_on = gc.isenabled()
    _on_writer(store, f"SET checkpoint_threshold = '{BULK_CHECKPOINT_THRESHOLD}'")
    # Fewer, bigger sorted runs: every compaction re-sorts and re-writes what it moves, and
    # 250k-row runs are merged again later (a default demo: 8 compactions + merges -> 1).
    compact_rows, store.compact_rows = store.compact_rows, max(store.compact_rows,
                                                               BULK_COMPACT_ROWS)
    # Python's cyclic GC rescans the millions of live records and dicts of a load over
    # and over (~40% of parsing time, measured); nothing here makes cycles, so it is
    # paused for the load and run once at the end.
    gc.disable()
    try:
        yield
        if store.next_seq - 1 - store.compacted_through >= compact_rows:
            store.compact_now()  # before the checkpoint, which then writes sorted rows only
    finally:
        store.compact_rows = compact_rows
        if gc_was_on:
            gc.enable()
            gc.collect()
        _on_writer(store, "RESET checkpoint_threshold")
        _on_writer(store, "CHECKPOINT")


def _on_writer(store: AccountStore, sql: str) -> None:
    store.run_on_writer(lambda: store.writer_cursor.execute(sql)).result()


def _ingest(store: AccountStore, chunks: Iterator[Any], limits: Limits,
            total: int | None, label: str, quiet: bool, parsed: bool,
            ) -> tuple[int, list[RecordError]]:
    stored, errors, offset = 0, [], 0
    pending = None
    with progress() as bar:
        task = bar.add_task(label, total=total)
        if quiet:
            bar.stop()
        for chunk in chunks:
            if parsed:
                records, bad, n = chunk
            else:
                records, bad = parse_records(chunk, offset, clock.now(), limits)
                n = len(chunk)
            errors.extend(bad)
            offset += n
            if pending is not None:
                stored += _settle(pending, errors)
            pending = store.submit_nowait(records)
            bar.update(task, advance=n)
        if pending is not None:
            stored += _settle(pending, errors)
    return stored, errors


def _settle(fut: Any, errors: list[RecordError]) -> int:
    result = fut.result()
    bad = [e for e in result.errors if e is not None]
    errors.extend(bad)
    return len(result.errors) - len(bad)


# -- import ---------------------------------------------------------------------------------
def import_file(store: AccountStore, path: Path, kind: str, limits: Limits) -> tuple[int, int]:
    if kind not in ("auto", "events", "profiles"):
        raise ValidationError("kind must be auto, events or profiles", field="kind")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        rows: Iterator[dict[str, Any]] = _jsonl_rows(path)
        total = sum(1 for _ in path.open("rb"))
    elif suffix == ".csv":
        rows = _csv_rows(path)
        total = max(0, sum(1 for _ in path.open("rb")) - 1)
    elif suffix == ".parquet":
        rows = _parquet_rows(path)
        total = pq.ParquetFile(path).metadata.num_rows
    else:
        raise ValidationError(f"unsupported file type {suffix!r}: use .jsonl, .csv or .parquet",
                              field="file")
    records = (_as_record(r, kind) for r in rows)
    stored, errors = ingest_chunks(store, _chunked(records), limits, total=total,
                                   label=f"importing {path.name}", bulk=True)
    for e in errors[:20]:
        print(f"row {e.index + 1}: [{e.code}] {e.error}")
    if len(errors) > 20:
        print(f"... and {len(errors) - 20} more rejected rows")
    print(f"imported {stored:,} records, rejected {len(errors):,}")
    return stored, len(errors)


def _chunked(items: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                yield _DECODER.decode(line)


def _csv_rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            yield {k: _csv_value(v) for k, v in row.items() if v not in ("", None)}


def _csv_value(v: str) -> Any:
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    return v


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK):
        for row in batch.to_pylist():
            yield {k: _parquet_value(v) for k, v in row.items() if v is not None}


def _parquet_value(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=dt.UTC)
        return f"$D_{int(v.timestamp())}"
    return v


def _as_record(row: dict[str, Any], kind: str) -> dict[str, Any]:
    """A flat row (CSV/Parquet) or an upload record (JSONL) as an upload record."""
    if "type" in row and ("evtData" in row or "profileData" in row or "tokenData" in row):
        return row
    is_event = kind == "events" or (kind == "auto" and "evtName" in row)
    out: dict[str, Any] = {k: row.pop(k) for k in ID_COLUMNS if k in row}
    if isinstance(row.get("ts"), str) and not row["ts"].startswith("$D_"):
        out["ts"] = dt.datetime.fromisoformat(row.pop("ts").replace("Z", "+00:00")).timestamp()
    elif "ts" in row:
        ts = row.pop("ts")
        out["ts"] = int(ts[3:]) if isinstance(ts, str) else ts
    if "msgId" in row:
        out["msgId"] = str(row.pop("msgId"))
    row.pop("type", None)
    if is_event:
        out.update(type="event", evtName=row.pop("evtName", None), evtData=row)
    else:
        out.update(type="profile", profileData=row)
    return out


# -- export ---------------------------------------------------------------------------------
def export_parquet(store: AccountStore, what: str, out: Path) -> int:
    if what == "events":
        sql = ("SELECT e.* EXCLUDE (props), e.props AS _overflow, p.identity "
               "FROM events e LEFT JOIN profiles p USING (user_id) ORDER BY e.ts, e.seq")
        scope = "event"
    elif what == "profiles":
        sql = "SELECT * EXCLUDE (props), props AS _overflow FROM profiles ORDER BY user_id"
        scope = "profile"
    else:
        raise ValidationError("what must be events or profiles", field="what")
    names = {c.column: c.name for c in store.catalog.by_scope(scope)}
    n = 0
    with store.cursor() as cur:
        reader = cur.execute(sql).fetch_record_batch(100_000)
        writer = None
        try:
            for batch in reader:
                table = pa.Table.from_batches([batch])
                table = table.rename_columns([names.get(c, c) for c in table.column_names])
                if writer is None:
                    writer = pq.ParquetWriter(out, table.schema)
                writer.write_table(table)
                n += table.num_rows
        finally:
            if writer is not None:
                writer.close()
    if writer is None:  # nothing to export: still write a valid, empty file
        pq.write_table(pa.table({}), out)
    return n


__all__ = ["bulk_mode", "export_parquet", "import_file", "ingest_chunks", "io"]
