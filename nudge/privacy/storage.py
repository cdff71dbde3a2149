"""Encrypted account databases: every account file is opened through :func:`attach`.

DuckDB encrypts a database file (data blocks, write-ahead log and, with
``temp_file_encryption``, spill files) with AES-256-GCM when it is attached with an
``ENCRYPTION_KEY``. Writing encrypted files needs the crypto module of the httpfs extension;
it is loaded from the ``duckdb-extension-httpfs`` wheel's installed path — never downloaded.

An existing *unencrypted* account file (from a version before encryption at rest) is
migrated on first open: copied into a new encrypted file, which then replaces it. The old
plaintext file is unlinked; its blocks may survive in the filesystem's free space, which
is outside DuckDB's and our control (docs/privacy.md says so).
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path

import duckdb

from nudge.errors import ConfigError

log = logging.getLogger("nudge.privacy")

_EXTENSION: str | None = None


def httpfs_extension_path() -> str:
    """Path of the httpfs extension shipped in the ``duckdb-extension-httpfs`` wheel."""
    global _EXTENSION
    if _EXTENSION is None:
        try:
            import duckdb_extension_httpfs as wheel
        except ImportError:
            raise ConfigError("encryption at rest needs the duckdb-extension-httpfs package "
                              f"(the same version as duckdb {duckdb.__version__})") from None
        found = glob.glob(os.path.join(os.path.dirname(wheel.__file__), "extensions", "*",
                                       "httpfs.duckdb_extension"))
        if not found:
            raise ConfigError("duckdb-extension-httpfs is installed but holds no extension")
        _EXTENSION = found[0]
    return _EXTENSION


def load_crypto(con: duckdb.DuckDBPyConnection) -> None:
    """Make ``con`` able to write encrypted files (and encrypt its spill files)."""
    con.execute(f"LOAD {_literal(httpfs_extension_path())}")
    con.execute("SET temp_file_encryption = true")


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _check_key(key: str) -> None:
    # Keys are ours (hex digests from the keyring); refuse anything else before it is
    # pasted into ATTACH, which takes no parameters.
    if len(key) < 32 or not all(c in "0123456789abcdef" for c in key):
        raise ConfigError("an account database key must be at least 32 lowercase hex digits")


def is_encrypted(path: Path) -> bool:
    """Whether the DuckDB file at ``path`` is encrypted (False for a missing file)."""
    if not path.exists():
        return False
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"ATTACH {_literal(str(path))} AS probe (READ_ONLY)")
        return False
    except duckdb.Error as e:
        if "without a key" in str(e) or "encrypted" in str(e):
            return True
        raise
    finally:
        con.close()


def attach(con: duckdb.DuckDBPyConnection, path: Path, key: str | None, alias: str,
           read_only: bool = False) -> None:
    """ATTACH the account file at ``path`` as ``alias``, encrypted with ``key``.

    ``key=None`` opens an unencrypted file (store-level unit tests and the reference runs of
    benchmarks only; servers and the CLI always pass the account's key).
    """
    target = _literal(str(path))
    if key is None:
        con.execute(f"ATTACH {target} AS {alias}" + (" (READ_ONLY)" if read_only else ""))
        return
    _check_key(key)
    load_crypto(con)
    if path.exists() and not is_encrypted(path):
        if read_only:
            raise ConfigError(f"{path} is not encrypted; open it once read-write to migrate")
        migrate_to_encrypted(con, path, key)
    opts = f"ENCRYPTION_KEY '{key}'" + (", READ_ONLY" if read_only else "")
    try:
        con.execute(f"ATTACH {target} AS {alias} ({opts})")
    except duckdb.InvalidInputException as e:
        if "Wrong encryption key" in str(e):
            raise ConfigError(f"{path}: wrong encryption key (is this the master key that "
                              "wrapped this account's data key?)") from None
        raise


def migrate_to_encrypted(con: duckdb.DuckDBPyConnection, path: Path, key: str) -> None:
    """Replace the unencrypted file at ``path`` by an encrypted copy (crash-safe)."""
    tmp = path.with_name(path.name + ".encrypting")
    for leftover in (tmp, Path(str(tmp) + ".wal")):
        leftover.unlink(missing_ok=True)  # a migration interrupted before its rename
    log.warning("encrypting unencrypted account database %s", path)
    con.execute(f"ATTACH {_literal(str(path))} AS plain_src")  # replays its WAL if any
    try:
        con.execute(f"ATTACH {_literal(str(tmp))} AS enc_dst (ENCRYPTION_KEY '{key}')")
        try:
            con.execute("COPY FROM DATABASE plain_src TO enc_dst")
            con.execute("CHECKPOINT enc_dst")
        finally:
            con.execute("DETACH enc_dst")
        con.execute("CHECKPOINT plain_src")
    finally:
        con.execute("DETACH plain_src")
    fsync(tmp)
    os.replace(tmp, path)
    Path(str(path) + ".wal").unlink(missing_ok=True)
    fsync(path.parent)


def rewrite_path(path: Path) -> Path:
    """Where the rewrite of the account file at ``path`` is built (nudge/privacy/shred.py)."""
    return path.with_name(path.name + ".rekey")


def remove_partial_rewrite(path: Path) -> None:
    """Delete what a rewrite cut short left beside ``path`` (never the file itself)."""
    tmp = rewrite_path(path)
    for leftover in (tmp, Path(str(tmp) + ".wal")):
        leftover.unlink(missing_ok=True)


def key_opens(path: Path, key: str) -> bool:
    """Whether ``key`` is the encryption key of the DuckDB file at ``path`` (read-only probe;
    the file must not be attached in this process)."""
    _check_key(key)
    con = duckdb.connect(":memory:")
    try:
        load_crypto(con)
        con.execute(f"ATTACH {_literal(str(path))} AS probe (ENCRYPTION_KEY '{key}', READ_ONLY)")
        return True
    except duckdb.Error as e:
        if "Wrong encryption key" in str(e):
            return False
        raise
    finally:
        con.close()


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_account_file(data_dir: Path, account_id: str,
                      read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """A connection on an account's file with the server stopped (tools and tests).

    The key comes from the control store and the master key exactly as the server gets it.
    Tables are reachable unqualified (``USE acct``).
    """
    from nudge.config import load_settings
    from nudge.privacy.keys import keyring_for

    settings = load_settings(data_dir=data_dir)
    keyring = keyring_for(settings)
    con = duckdb.connect(":memory:")
    try:
        path = settings.accounts_dir / account_id / "events.duckdb"
        attach(con, path, keyring.duckdb_key(account_id, path), "acct", read_only=read_only)
        con.execute("USE acct")
    except BaseException:
        con.close()
        raise
    return con
