"""Backups: a consistent, encrypted snapshot of the control store and every account store.

Layout of a backup directory::

    manifest.json                  what is inside: accounts, row counts and checksums,
                                   the id of the master key it needs (never the key)
    control.db.enc                 the SQLite control store (online backup API), encrypted
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

PostgreSQL control stores are not copied (use ``pg_dump``; docs/privacy.md): ``backup``
refuses with that message unless ``--skip-control`` is given.
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
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nudge.config import Settings
from nudge.errors import NudgeError
from nudge.privacy import storage
from nudge.privacy.keys import Keyring, master_key_id
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

def _copy_sqlite(url: str, dst: Path) -> None:
    if not url.startswith("sqlite:///"):
        raise BackupError("the control store is not SQLite: back it up with its own tools "
                          "(pg_dump for PostgreSQL), then run backup with --skip-control")
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
    """Writer thread: checkpoint, copy the file, count and checksum what was copied."""
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
            _copy_sqlite(settings.control_database_url, plain)
            encrypt_file(plain, dest / "control.db.enc", _backup_key(keyring.master))
        finally:
            plain.unlink(missing_ok=True)
        manifest["control"] = "control.db.enc"
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
    if not url.startswith("sqlite:///"):
        raise BackupError("restore writes a SQLite control store; NUDGE_CONTROL_URL is not "
                          "SQLite")
    data.mkdir(parents=True, exist_ok=True)
    control_path = Path(url[len("sqlite:///"):])
    progress("control store")
    decrypt_file(src / manifest["control"], control_path, _backup_key(master))
    storage.fsync(control_path)
    from nudge.store import control as control_store

    keyring = Keyring(control_store.connect(url), master)
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

