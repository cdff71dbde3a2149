"""Backups: a consistent, encrypted snapshot of the control store and every account store.

Layout of a backup directory::

    manifest.json                  what is inside: accounts, row counts and checksums,
                                   the id of the master key it needs (never the key)
    control.db.enc                 the control store as a SQLite file (SQLite: online backup
                                   API; PostgreSQL: a logical copy of one snapshot), encrypted
                                   with AES-256-GCM under a key derived from the master key
    accounts/<id>/events.duckdb    each account database, copied byte for byte: it is
                                   already encrypted by DuckDB with the account's data key

Consistency: the control store is copied first with SQLite's online backup API (a
transactionally consistent copy while the server writes). Then each account store is copied
on its writer thread after a CHECKPOINT, so no commit, compaction or erasure runs during the
copy and the file holds every acknowledged record (the WAL is empty after the checkpoint).
Accounts created after the control snapshot are not in the backup.

Restore refuses a non-empty data directory, checks the master key before writing anything
(a wrong key fails loudly: the control store does not decrypt), then verifies every
account's row counts and checksums against the manifest by opening it with the restored
keys.

A PostgreSQL control store is copied logically (every table of ``nudge.store.control``, in
one snapshot transaction) into the same encrypted SQLite file; ``restore`` writes it back
into SQLite or into an empty PostgreSQL database, whichever ``NUDGE_CONTROL_URL`` names.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nudge.config import Settings
from nudge.errors import NudgeError
from nudge.privacy import storage
from nudge.privacy.keys import Keyring, master_key_id
from nudge.store import control
from nudge.store.account import AccountStore

FORMAT = "nudge-backup-1"
CHUNK = 1 << 20
_MAGIC = b"NUDGEBK1"
Progress = Callable[[str], None]


class BackupError(NudgeError):
    """A backup cannot be written or restored (the message says why)."""


# -- checksums ---------------------------------------------------------------------------------

def table_checksums(cur: duckdb.DuckDBPyConnection) -> dict[str, dict[str, int]]:
    """Row count and an order-independent content checksum of every table in the database."""
    out = {}
    tables = [r[0] for r in cur.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "ORDER BY 1").fetchall()]
    for table in tables:
        # Table names come from the database's own catalog, quoted as identifiers.
        quoted = '"' + table.replace('"', '""') + '"'
        n, h = cur.execute(f"SELECT count(*), coalesce(sum(hash(t)), 0)::VARCHAR "
                           f"FROM {quoted} t").fetchone()
        out[table] = {"rows": int(n), "checksum": int(h) % (1 << 63)}
    return out


# -- encryption of the control store copy -------------------------------------------------------

def _backup_key(master: bytes) -> bytes:
    return HKDF(SHA256(), 32, salt=None, info=b"nudge-backup-control").derive(master)


def encrypt_file(src: Path, dst: Path, key: bytes) -> None:
    """Chunked AES-256-GCM; each chunk bound to its index and to whether it is the last."""
    aes = AESGCM(key)
    with open(src, "rb") as f, open(dst, "wb") as out:
        out.write(_MAGIC)
        index = 0
        chunk = f.read(CHUNK)
        while True:
            nxt = f.read(CHUNK)
            last = not nxt
            nonce = os.urandom(12)
            ct = aes.encrypt(nonce, chunk, struct.pack(">Q?", index, last))
            out.write(struct.pack(">I", len(ct)) + nonce + ct)
            if last:
                break
            chunk, index = nxt, index + 1
        out.flush()
        os.fsync(out.fileno())


def decrypt_file(src: Path, dst: Path, key: bytes) -> None:
    aes = AESGCM(key)
    with open(src, "rb") as f, open(dst, "wb") as out:
        if f.read(len(_MAGIC)) != _MAGIC:
            raise BackupError(f"{src} is not a Nudge backup file")
        index, last = 0, False
        while not last:
            head = f.read(4)
            if len(head) != 4:
                raise BackupError(f"{src} is truncated")
            (size,) = struct.unpack(">I", head)
            nonce, ct = f.read(12), f.read(size)
            last = not f.peek(1)
            try:
                out.write(aes.decrypt(nonce, ct, struct.pack(">Q?", index, last)))
            except InvalidTag:
                raise BackupError(f"{src} does not decrypt with this master key (or it was "
                                  "altered)") from None
            index += 1


# -- backup ------------------------------------------------------------------------------------

def _copy_control(url: str, dst: Path) -> dict[str, int]:
    """Copy the control store into the SQLite file ``dst``; returns rows per table.

    SQLite: the online backup API. PostgreSQL: a logical copy of every table of
    ``nudge.store.control`` in one REPEATABLE READ, READ ONLY transaction — one snapshot, so
    as consistent as ``pg_dump`` while the server writes — into a SQLite file of the same
    schema (which is what a backup holds and ``restore`` reads, for either database).
    """
    if url.startswith("sqlite:///"):
        _copy_sqlite(url, dst)
        return {}
    if not url.startswith("postgresql"):
        raise BackupError(f"cannot back up a control store at {url.split(':', 1)[0]}: "
                          "SQLite and PostgreSQL are supported")
    src = sa.create_engine(url)
    out = sa.create_engine(f"sqlite:///{dst}")
    try:
        control.metadata.create_all(out)
        with src.connect().execution_options(isolation_level="REPEATABLE READ") as s_conn, \
                out.begin() as d_conn:
            with s_conn.begin():
                s_conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                return copy_tables(s_conn, d_conn)
    finally:
        src.dispose()
        out.dispose()


def copy_tables(src: sa.Connection, dst: sa.Connection, batch: int = 5000) -> dict[str, int]:
    """Copy every control-store table's rows from ``src`` to ``dst`` (parents first)."""
    counts = {}
    for table in control.metadata.sorted_tables:
        n = 0
        result = src.execution_options(yield_per=batch).execute(
            sa.select(table).order_by(*table.primary_key.columns))
        for part in result.mappings().partitions(batch):
            dst.execute(table.insert(), [dict(r) for r in part])
            n += len(part)
        counts[table.name] = n
    return counts


def _restore_into(url: str, plain: Path) -> None:
    """Copy the decrypted SQLite control store ``plain`` into the (empty) database at
    ``url`` and move its id sequences past the copied ids."""
    dst = control.connect(url)  # creates the tables
    src = sa.create_engine(f"sqlite:///{plain}")
    try:
        with dst.begin() as d_conn:
            for table in control.metadata.sorted_tables:
                if d_conn.execute(sa.select(sa.func.count()).select_from(table)).scalar():
                    raise BackupError(f"the control store at NUDGE_CONTROL_URL is not empty "
                                      f"(table {table.name}): restore only into an empty one")
            with src.connect() as s_conn:
                copy_tables(s_conn, d_conn)
            if d_conn.dialect.name == "postgresql":
                for table in control.metadata.sorted_tables:
                    for col in table.primary_key.columns:
                        if col.autoincrement is True or (
                                col.autoincrement == "auto" and isinstance(col.type, sa.Integer)
                                and len(table.primary_key.columns) == 1):
                            d_conn.execute(sa.text(
                                "SELECT setval(pg_get_serial_sequence(:t, :c), "
                                f"coalesce((SELECT max({col.name}) FROM {table.name}), 0) + 1, "
                                "false) WHERE pg_get_serial_sequence(:t, :c) IS NOT NULL"),
                                {"t": table.name, "c": col.name})  # names from our schema
    finally:
        src.dispose()
        dst.dispose()


def _copy_sqlite(url: str, dst: Path) -> None:
    src = sqlite3.connect(url[len("sqlite:///"):])
    try:
        out = sqlite3.connect(dst)
        try:
            src.backup(out)
        finally:
            out.close()
    finally:
        src.close()


def _snapshot_account(store: AccountStore, dst: Path) -> dict[str, Any]:
    """Writer thread: checkpoint, copy the file, count and checksum what was copied.

    Requests acknowledged from the ingest log but not yet committed are committed first, so
    the copy holds every record acknowledged before the backup reached this account."""
    store.commit_queued()
    cur = store.writer_cursor
    cur.execute("CHECKPOINT")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(store.path, dst)
    storage.fsync(dst)
    return {"tables": table_checksums(cur), "bytes": dst.stat().st_size,
            "sha256": _sha256(dst)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def backup(settings: Settings, keyring: Keyring, open_store: Callable[[str], AccountStore],
           account_ids: Callable[[], list[str]], dest: Path, *, skip_control: bool = False,
           progress: Progress = lambda _: None) -> dict[str, Any]:
    """Write a backup of the data directory to ``dest`` (a new or empty directory)."""
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty")
    if dest.resolve().is_relative_to(settings.data_dir.resolve()):
        raise BackupError("the backup directory must be outside the data directory")
    dest.mkdir(parents=True, exist_ok=True)
    started = time.time()
    manifest: dict[str, Any] = {"format": FORMAT, "created_at": started,
                                "master_key_id": master_key_id(keyring.master), "accounts": {}}
    ids = account_ids()
    stores = {a: open_store(a) for a in ids}  # creates missing data keys before the copy
    if not skip_control:
        progress("control store")
        plain = dest / "control.db.tmp"
        try:
            rows = _copy_control(settings.control_database_url, plain)
            encrypt_file(plain, dest / "control.db.enc", _backup_key(keyring.master))
        finally:
            plain.unlink(missing_ok=True)
        manifest["control"] = "control.db.enc"
        manifest["control_source"] = settings.control_database_url.split(":", 1)[0]
        if rows:
            manifest["control_rows"] = rows
    for i, account_id in enumerate(ids, 1):
        progress(f"account {i}/{len(ids)} {account_id}")
        store = stores[account_id]
        target = dest / "accounts" / account_id / "events.duckdb"
        manifest["accounts"][account_id] = store.run_on_writer(
            lambda s=store, t=target: _snapshot_account(s, t)).result()
    manifest["seconds"] = round(time.time() - started, 3)
    path = dest / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    storage.fsync(path)
    storage.fsync(dest)
    return manifest


# -- restore -----------------------------------------------------------------------------------

def read_manifest(src: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((src / "manifest.json").read_text())
    except FileNotFoundError:
        raise BackupError(f"{src} holds no manifest.json: not a Nudge backup") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{src}: unknown backup format {manifest.get('format')!r}")
    return manifest


def restore(settings: Settings, master: bytes, src: Path,
            progress: Progress = lambda _: None) -> dict[str, Any]:
    """Restore a backup into an empty (or missing) data directory and verify it."""
    manifest = read_manifest(src)
    if master_key_id(master) != manifest["master_key_id"]:
        raise BackupError(f"this backup needs the master key with id {manifest['master_key_id']}"
                          f"; the configured one has id {master_key_id(master)}")
    data = settings.data_dir
    if data.exists() and any(data.iterdir()):
        raise BackupError(f"{data} is not empty: restore only into an empty data directory")
    if "control" not in manifest:
        raise BackupError("this backup has no control store (taken with --skip-control): "
                          "restore the control store first, then copy the account files")
    url = settings.control_database_url
    if not url.startswith(("sqlite:///", "postgresql")):
        raise BackupError("restore writes a SQLite or PostgreSQL control store; "
                          f"NUDGE_CONTROL_URL is {url.split(':', 1)[0]}")
    data.mkdir(parents=True, exist_ok=True)
    progress("control store")
    if url.startswith("sqlite:///"):
        control_path = Path(url[len("sqlite:///"):])
        decrypt_file(src / manifest["control"], control_path, _backup_key(master))
        storage.fsync(control_path)
    else:
        plain = data / "control-restore.tmp"
        try:
            decrypt_file(src / manifest["control"], plain, _backup_key(master))
            _restore_into(url, plain)
        finally:
            plain.unlink(missing_ok=True)
    keyring = Keyring(control.connect(url), master)
    checked = {}
    for account_id, expected in manifest["accounts"].items():
        progress(f"account {account_id}")
        dst = settings.accounts_dir / account_id / "events.duckdb"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / "accounts" / account_id / "events.duckdb", dst)
        storage.fsync(dst)
        if _sha256(dst) != expected["sha256"]:
            raise BackupError(f"account {account_id}: the copied file does not match the "
                              "backup's checksum")
        con = duckdb.connect(":memory:")
        try:
            storage.attach(con, dst, keyring.duckdb_key(account_id), "acct", read_only=True)
            con.execute("USE acct")
            got = table_checksums(con)
        finally:
            con.close()
        if got != expected["tables"]:
            raise BackupError(f"account {account_id}: restored tables differ from the backup")
        checked[account_id] = sum(t["rows"] for t in got.values())
    keyring.engine.dispose()
    return {"accounts": checked, "created_at": manifest["created_at"]}

