"""DDL of an account store. Fixed columns only; property columns are added by the catalog."""

from __future__ import annotations

EVENT_COLUMNS = """
    seq BIGINT NOT NULL,
    message_id VARCHAR NOT NULL,
    user_id BIGINT NOT NULL,
    event VARCHAR NOT NULL,
    ts TIMESTAMP NOT NULL,
    ingested_at TIMESTAMP NOT NULL,
    props JSON
"""

PROFILE_FIXED = ("user_id", "identity", "email", "phone", "first_seen", "last_seen",
                 "event_count", "first_event_seq", "created_at", "updated_at", "props")

DDL = [
    # Recent events, in arrival order; compaction moves them into events_sorted.
    f"CREATE TABLE IF NOT EXISTS events_recent ({EVENT_COLUMNS})",
    # Older events, appended in runs sorted by (event, ts) so zone maps prune by event+time.
    f"CREATE TABLE IF NOT EXISTS events_sorted ({EVENT_COLUMNS})",
    "CREATE OR REPLACE VIEW events AS "
    "SELECT * FROM events_sorted UNION ALL BY NAME SELECT * FROM events_recent",
    """CREATE TABLE IF NOT EXISTS profiles (
        user_id BIGINT NOT NULL,
        identity VARCHAR, email VARCHAR, phone VARCHAR,
        first_seen TIMESTAMP, last_seen TIMESTAMP,
        event_count BIGINT NOT NULL DEFAULT 0,
        first_event_seq BIGINT,
        created_at TIMESTAMP NOT NULL, updated_at TIMESTAMP NOT NULL,
        props JSON)""",
    """CREATE TABLE IF NOT EXISTS identities (
        kind VARCHAR NOT NULL, value VARCHAR NOT NULL, user_id BIGINT NOT NULL,
        created_at TIMESTAMP NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS profile_merges (
        from_id BIGINT NOT NULL, to_id BIGINT NOT NULL, merged_at TIMESTAMP NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS property_catalog (
        scope VARCHAR NOT NULL, name VARCHAR NOT NULL, column_name VARCHAR NOT NULL,
        type VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS event_catalog (
        event VARCHAR PRIMARY KEY, count BIGINT NOT NULL,
        first_seen TIMESTAMP NOT NULL, last_seen TIMESTAMP NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS event_properties (
        event VARCHAR NOT NULL, name VARCHAR NOT NULL, type VARCHAR NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    # The sorted runs of events_sorted (seq ranges) and per-event statistics of each, which
    # plan their merges (nudge/store/runs.py).
    """CREATE TABLE IF NOT EXISTS event_runs (
        seq_lo BIGINT NOT NULL, seq_hi BIGINT NOT NULL, rows BIGINT NOT NULL, stats JSON)""",
    # Message ids of profile/token records, so that the dedup window survives a restart for
    # them too (event ids are read back from the events tables).
    """CREATE TABLE IF NOT EXISTS record_ids (
        message_id VARCHAR NOT NULL, ingested_at TIMESTAMP NOT NULL)""",
]
