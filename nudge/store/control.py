"""The control store: accounts and API keys (later users, segments, campaigns, ...).

SQLAlchemy 2 Core over SQLite (WAL) by default; a ``postgresql+psycopg://`` URL works
unchanged because only portable types and statements are used here.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

metadata = sa.MetaData()

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"),
    sa.Column("created_at", sa.Float, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), nullable=False),
    # passcode: server-side secret; write: public key for client SDKs (ingest only).
    sa.Column("kind", sa.String(16), nullable=False),
    # Only a SHA-256 of the key is stored: keys are 160-bit random tokens, so a slow
    # password hash buys nothing and would cost every request.
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(12), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
)
sa.Index("ix_api_keys_account", api_keys.c.account_id)


segments = sa.Table(
    "segments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("definition", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("deleted_at", sa.Float, nullable=True),
)
sa.Index("ix_segments_account", segments.c.account_id)

segment_versions = sa.Table(
    "segment_versions",
    metadata,
    sa.Column("segment_id", sa.Integer, sa.ForeignKey("segments.id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("definition", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Envelope encryption (nudge/privacy/keys.py): each account's random 256-bit data key, only
# ever stored wrapped (AES-256-GCM) by the master key, which is never stored here.
account_keys = sa.Table(
    "account_keys",
    metadata,
    sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
    # First 8 bytes of SHA-256 of the master key that wrapped it (hex): a wrong master key is
    # recognised before anything is decrypted with it.
    sa.Column("master_key_id", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("rewrapped_at", sa.Float, nullable=True),
)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def connect(url: str) -> Engine:
    """Open (and create if needed) the control store at ``url``."""
    engine = sa.create_engine(url, future=True, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    metadata.create_all(engine)
    return engine
