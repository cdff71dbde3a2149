"""The control store: accounts and API keys (later users, segments, campaigns, ...).

SQLAlchemy 2 Core over SQLite (WAL) by default; a ``postgresql+psycopg://`` URL works
unchanged because only portable types and statements are used here.
"""

from __future__ import annotations

import json
import operator
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


# -- engage: campaigns and the message delivery service (nudge/engage/) -----------------------
campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # one_time | recurring | api | trigger
    sa.Column("status", sa.String(16), nullable=False),  # draft | scheduled | running | ...
    sa.Column("definition", sa.Text, nullable=False),  # JSON, checked by engage/campaigns.py
    sa.Column("next_run_at", sa.Float, nullable=True),  # scheduler: next occurrence due
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("deleted_at", sa.Float, nullable=True),
)
sa.Index("ix_campaigns_account", campaigns.c.account_id)
sa.Index("ix_campaigns_due", campaigns.c.status, campaigns.c.next_run_at)

# One occurrence of a campaign's audience expansion; ``cursor`` advances in the same
# transaction as the outbox rows it covers, so expansion resumes exactly after a crash.
campaign_runs = sa.Table(
    "campaign_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(32), nullable=False),
    sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaigns.id"), nullable=False),
    sa.Column("occurrence", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # snapshot | expanding | done
    sa.Column("audience_path", sa.Text, nullable=True),
    sa.Column("total", sa.Integer, nullable=False, server_default="0"),
    sa.Column("cursor", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.UniqueConstraint("campaign_id", "occurrence", name="uq_campaign_runs_occurrence"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(32), nullable=False),
    # (campaign, occurrence, user, variant[, fallback step]): unique, so no retry, resumed
    # expansion or restart can create a second message for the same send.
    sa.Column("idem_key", sa.String(200), nullable=False, unique=True),
    sa.Column("campaign_id", sa.Integer, nullable=True),
    sa.Column("occurrence", sa.String(64), nullable=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("variant", sa.String(32), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("category", sa.String(64), nullable=False, server_default="general"),
    sa.Column("transactional", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("to_addr", sa.Text, nullable=True),
    sa.Column("content", sa.Text, nullable=True),  # rendered, JSON
    sa.Column("meta", sa.Text, nullable=True),  # JSON: fallbacks, inaction check, ...
    # pending | sending | sent | delivered | failed | rejected | unreachable | dead |
    # skipped | control
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(200), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Column("provider_id", sa.String(200), nullable=True),
    sa.Column("parent_id", sa.Integer, nullable=True),  # the message this one falls back from
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("sent_at", sa.Float, nullable=True),
    sa.Column("delivered_at", sa.Float, nullable=True),
    sa.Column("opened_at", sa.Float, nullable=True),
    sa.Column("clicked_at", sa.Float, nullable=True),
    sa.Column("converted_at", sa.Float, nullable=True),
    sa.Column("revenue", sa.Float, nullable=True),
)
sa.Index("ix_outbox_due", outbox.c.status, outbox.c.next_attempt_at)
sa.Index("ix_outbox_user", outbox.c.account_id, outbox.c.user_id, outbox.c.created_at)
sa.Index("ix_outbox_campaign", outbox.c.campaign_id, outbox.c.status)
# Only sent messages have a provider id (callbacks look them up by it): a partial index, so
# queuing a message adds no entry (nudge.engage.outbox.upgrade_indexes migrates old files).
sa.Index("ix_outbox_provider", outbox.c.provider_id,
         sqlite_where=outbox.c.provider_id.isnot(None),
         postgresql_where=outbox.c.provider_id.isnot(None))

# Subscription state per (user, channel, category); "*" = every category. No row: subscribed.
subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("account_id", sa.String(32), primary_key=True),
    sa.Column("user_id", sa.BigInteger, primary_key=True),
    sa.Column("channel", sa.String(16), primary_key=True),
    sa.Column("category", sa.String(64), primary_key=True),
    sa.Column("subscribed", sa.Boolean, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# Account-wide delivery policy (global frequency caps, default quiet hours), JSON.
engage_policies = sa.Table(
    "engage_policies",
    metadata,
    sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("definition", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# Outbound event webhooks: committed events matching (event, filters) are POSTed, signed.
event_webhooks = sa.Table(
    "event_webhooks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("definition", sa.Text, nullable=False),  # JSON: url, event, where
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("deleted_at", sa.Float, nullable=True),
)

# -- auth (issue 6): dashboard users, memberships, sessions, MFA, login throttle, audit -------
# See nudge/tenancy/{users,sessions,mfa,roles,audit}.py and docs/security.md.
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),  # lower-cased
    # Argon2id PHC string; or an imported legacy PBKDF2-HMAC-SHA1 hash until next login.
    sa.Column("password_hash", sa.String(400), nullable=False),
    # The account whose data key seals this user's TOTP seed (the account it was created in).
    sa.Column("home_account_id", sa.String(32), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("totp_secret", sa.Text, nullable=True),  # sealed (Keyring.seal)
    sa.Column("totp_pending", sa.Text, nullable=True),  # sealed, enrollment not confirmed
    sa.Column("totp_last_step", sa.Integer, nullable=True),  # one-time use of codes
    sa.Column("mfa_enabled_at", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("password_changed_at", sa.Float, nullable=False),
    sa.Column("last_login_at", sa.Float, nullable=True),
    sa.Column("disabled_at", sa.Float, nullable=True),
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
sa.Index("ix_memberships_account", memberships.c.account_id)

recovery_codes = sa.Table(
    "recovery_codes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("code_hash", sa.String(64), nullable=False),  # SHA-256 of an 80-bit code
    sa.Column("used_at", sa.Float, nullable=True),
)
sa.Index("ix_recovery_codes_user", recovery_codes.c.user_id)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # SHA-256 of the cookie token
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    # "mfa": password checked, TOTP pending; "enroll": must enroll MFA first; "full".
    sa.Column("stage", sa.String(8), nullable=False),
    sa.Column("csrf_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_seen_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("source_ip", sa.String(64), nullable=True),
    sa.Column("user_agent", sa.String(300), nullable=True),
)
sa.Index("ix_sessions_user", sessions.c.user_id)

login_throttle = sa.Table(
    "login_throttle",
    metadata,
    # "email:<sha256>" or "ip:<address>": rows exist for unknown emails too.
    sa.Column("key", sa.String(80), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("last_failure_at", sa.Float, nullable=False),
    sa.Column("locked_until", sa.Float, nullable=True),
)

password_resets = sa.Table(
    "password_resets",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("used_at", sa.Float, nullable=True),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(32), nullable=True),  # null: not about one account
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),  # "user:<email>", "key:<prefix>", "cli"
    sa.Column("action", sa.String(80), nullable=False),
    sa.Column("target", sa.String(300), nullable=False, server_default=""),
    sa.Column("detail", sa.Text, nullable=False, server_default="{}"),  # JSON, never secrets
    sa.Column("source_ip", sa.String(64), nullable=True),
    sa.Column("user_agent", sa.String(300), nullable=True),
)
sa.Index("ix_audit_account_at", audit_log.c.account_id, audit_log.c.at)
# -- end auth ---------------------------------------------------------------------------------

# -- channels (issue 5, item 1): provider configs and the in-app inbox -------------------------
# See nudge/engage/channel_config.py, nudge/engage/inbox.py and docs/channels.md.
channel_configs = sa.Table(
    "channel_configs",
    metadata,
    sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("channel", sa.String(16), primary_key=True),
    sa.Column("provider", sa.String(32), primary_key=True),
    # JSON of the provider configuration, sealed (Keyring.seal, purpose "channel:<name>").
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

inbox_messages = sa.Table(
    "inbox_messages",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),  # stream cursor
    sa.Column("account_id", sa.String(32), nullable=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("message_id", sa.String(64), nullable=False),  # the outbox message id
    sa.Column("campaign_id", sa.String(64), nullable=True),
    sa.Column("meta", sa.Text, nullable=False),  # JSON: campaign, variant, tracking ids
    sa.Column("content", sa.Text, nullable=False),  # JSON: title, body, layout, data
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("read_at", sa.Float, nullable=True),
    sa.Column("dismissed_at", sa.Float, nullable=True),
    # A retried send of the same outbox message finds its row instead of adding a second.
    sa.UniqueConstraint("account_id", "message_id", name="uq_inbox_message"),
)
sa.Index("ix_inbox_user", inbox_messages.c.account_id, inbox_messages.c.user_id,
         inbox_messages.c.seq)
# -- end channels -----------------------------------------------------------------------------


# -- privacy (issue 6): GDPR request trail (nudge/privacy/gdpr.py) ----------------------------
# One row per access / erase / suppress / unsuppress request with its receipt. People are
# named only by keyed hashes (HMAC under the account's data key), never by identifier.
gdpr_requests = sa.Table(
    "gdpr_requests",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("subjects", sa.Text, nullable=False),  # JSON list of "<kind>:<hmac>"
    sa.Column("receipt", sa.Text, nullable=False),  # JSON: found, ids, counts deleted
    sa.Column("created_at", sa.Float, nullable=False),
)
sa.Index("ix_gdpr_requests_account", gdpr_requests.c.account_id, gdpr_requests.c.created_at)

# Crypto-shredding (nudge/privacy/shred.py): each account *file* has its own random DuckDB
# key, wrapped by the master key like data keys (associated data: account and generation).
# An erasure rewrites the file under a new key (state "pending" until the new file is in
# place, then "active") and the old row is deleted: what was erased before is unreadable.
account_file_keys = sa.Table(
    "account_file_keys",
    metadata,
    sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("generation", sa.Integer, primary_key=True),
    sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
    sa.Column("master_key_id", sa.String(16), nullable=False),
    sa.Column("state", sa.String(8), nullable=False),  # active | pending
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("rewrapped_at", sa.Float, nullable=True),
)
# Rewrites owed after erasures, one row per account: erasures until due_at share one rewrite.
store_rewrites = sa.Table(
    "store_rewrites",
    metadata,
    sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("requested_at", sa.Float, nullable=False),
    sa.Column("due_at", sa.Float, nullable=False),
    sa.Column("erasures", sa.Integer, nullable=False),
)
# API rate limits shared by every server process (nudge/tenancy/ratelimit.py): one GCRA
# "theoretical arrival time" (a token bucket as one timestamp) per account and per key.
rate_buckets = sa.Table(
    "rate_buckets",
    metadata,
    sa.Column("key", sa.String(80), primary_key=True),
    sa.Column("tat", sa.Float, nullable=False),
)
# -- end privacy ------------------------------------------------------------------------------


# -- predict (issue 8): predictive goals, their trained models and training runs --------------
# (nudge/predict/goals.py, train.py). Scores themselves live in the account store.
predict_goals = sa.Table(
    "predict_goals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("definition", sa.Text, nullable=False),  # JSON, checked by predict/goals.py
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("deleted_at", sa.Float, nullable=True),
)
sa.Index("ix_predict_goals_account", predict_goals.c.account_id)

predict_models = sa.Table(
    "predict_models",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("goal_id", sa.Integer, sa.ForeignKey("predict_goals.id"), nullable=False),
    sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("trained_at", sa.Float, nullable=False),
    sa.Column("as_of", sa.Float, nullable=False),  # the "now" scores were computed for
    sa.Column("features", sa.Text, nullable=False),  # JSON list of feature names
    sa.Column("metrics", sa.Text, nullable=False),  # JSON: auc, lift, calibration, ...
    sa.Column("path", sa.String(500), nullable=False),  # model file in the account's dir
)
sa.Index("ix_predict_models_goal", predict_models.c.goal_id)

predict_runs = sa.Table(
    "predict_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("goal_id", sa.Integer, sa.ForeignKey("predict_goals.id"), nullable=False),
    sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # running, done, failed
    sa.Column("stage", sa.String(200), nullable=False),
    sa.Column("progress", sa.Float, nullable=False),  # 0..1
    sa.Column("trigger", sa.String(16), nullable=False),  # api, cli, schedule
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("model_id", sa.Integer, nullable=True),
)
sa.Index("ix_predict_runs_goal", predict_runs.c.goal_id)
# -- end predict ------------------------------------------------------------------------------


# -- journeys (issue 7): definitions, immutable versions, per-user state, step executions -----
# See nudge/journeys/ and docs/journeys.md. An entry's node/state/due_at change in the same
# transaction as the journey_steps row (unique step_key) and any outbox rows of that step.
journeys = sa.Table(
    "journeys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # draft|published|paused|stopped
    sa.Column("definition", sa.Text, nullable=False),  # the draft (next version)
    sa.Column("version", sa.Integer, nullable=False, server_default="0"),  # newest published
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("deleted_at", sa.Float, nullable=True),
)
sa.Index("ix_journeys_account", journeys.c.account_id)

journey_versions = sa.Table(
    "journey_versions",
    metadata,
    sa.Column("journey_id", sa.Integer, sa.ForeignKey("journeys.id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("definition", sa.Text, nullable=False),
    sa.Column("published_at", sa.Float, nullable=False),
)

journey_entries = sa.Table(
    "journey_entries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(32), nullable=False),
    sa.Column("journey_id", sa.Integer, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    # What caused the entry (event message id, segment poll, API request): unique per
    # journey, so a redelivered event or a retried API call never enters twice.
    sa.Column("entry_key", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # active | exited
    sa.Column("node", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # ready | delay | wait
    sa.Column("seq", sa.Integer, nullable=False, server_default="0"),  # steps run so far
    sa.Column("due_at", sa.Float, nullable=True),  # ready: now; delay/wait: timer
    sa.Column("wait_event", sa.String(200), nullable=True),
    sa.Column("context", sa.Text, nullable=True),  # JSON: the entry event's properties
    sa.Column("entered_at", sa.Float, nullable=False),
    sa.Column("exited_at", sa.Float, nullable=True),
    sa.Column("exit_reason", sa.String(64), nullable=True),
    sa.Column("converted_at", sa.Float, nullable=True),
    sa.UniqueConstraint("journey_id", "entry_key", name="uq_journey_entry_key"),
)
sa.Index("ix_journey_entries_due", journey_entries.c.status, journey_entries.c.due_at)
sa.Index("ix_journey_entries_user", journey_entries.c.account_id, journey_entries.c.user_id,
         journey_entries.c.status)
sa.Index("ix_journey_entries_journey", journey_entries.c.journey_id, journey_entries.c.status,
         journey_entries.c.node)
sa.Index("ix_journey_entries_journey_user", journey_entries.c.journey_id,
         journey_entries.c.user_id)

journey_steps = sa.Table(
    "journey_steps",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(32), nullable=False),
    sa.Column("journey_id", sa.Integer, nullable=False),
    sa.Column("entry_id", sa.Integer, nullable=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("node", sa.String(64), nullable=False),
    # j<journey>:v<version>:e<entry>:<seq>:<node>: each step of an entry runs once, ever
    # (seq makes a loop's second pass through a node a different step).
    sa.Column("step_key", sa.String(200), nullable=False, unique=True),
    sa.Column("outcome", sa.String(64), nullable=True),  # branch taken, message key, ...
    sa.Column("at", sa.Float, nullable=False),
)
sa.Index("ix_journey_steps_entry", journey_steps.c.entry_id)

# Row-level claims: an engine (one per server process) claims due entries before running
# their steps, so two processes on one control store never both run the same user's step.
# A claim lapses at expires_at (a crashed process's claims are taken over then).
journey_leases = sa.Table(
    "journey_leases",
    metadata,
    sa.Column("entry_id", sa.Integer, primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

# Date-property entry: how far each journey's occurrences have been entered (occurrences
# in (scanned_to, now] are entered on the next scan, also after downtime).
journey_date_scans = sa.Table(
    "journey_date_scans",
    metadata,
    sa.Column("journey_id", sa.Integer, primary_key=True),
    sa.Column("scanned_to", sa.Float, nullable=False),
)
# -- end journeys -----------------------------------------------------------------------------

# -- dashboard boards (issue 9, nudge/web/boards.py) --------------------------------------------
# A board is a name per account; each item is a saved analytics report (kind + its JSON body),
# run live when the board is opened.
dashboard_board_items = sa.Table(
    "dashboard_board_items", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(64), nullable=False),
    sa.Column("board", sa.String(200), nullable=False),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # the report's JSON body
    sa.Column("chart", sa.String(16), nullable=False, server_default="line"),
    sa.Column("created_by", sa.String(200), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)
sa.Index("ix_dashboard_board_items_account", dashboard_board_items.c.account_id,
         dashboard_board_items.c.board)
# -- end dashboard boards ------------------------------------------------------------------------

# -- engage delivery across processes (issue 5): shared send rates, live-bus watermarks -------
# Send-rate limits per (account, channel) as one GCRA "theoretical arrival time", reserved by
# every process with one UPDATE ... RETURNING (nudge/engage/ratelimit.py).
send_rates = sa.Table(
    "send_rates",
    metadata,
    sa.Column("account_id", sa.String(32), primary_key=True),
    sa.Column("channel", sa.String(16), primary_key=True),
    sa.Column("tat", sa.Float, nullable=False),
)

# How far each consumer of committed events (engage triggers, ...) has processed an account's
# events (``seq``); replayed from the account store after a crash (nudge/engage/feed.py).
event_feed_watermarks = sa.Table(
    "event_feed_watermarks",
    metadata,
    sa.Column("consumer", sa.String(32), primary_key=True),
    sa.Column("account_id", sa.String(32), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
# -- end engage delivery across processes ------------------------------------------------------

# -- dashboard: ingestion health per account (nudge/ingest/reject_counts.py) -------------------
# Records rejected at ingest, per account and reason code, with the latest message; kept
# across restarts (the /metrics counter is per process and not per account).
ingest_rejects = sa.Table(
    "ingest_rejects",
    metadata,
    sa.Column("account_id", sa.String(32), primary_key=True),
    sa.Column("code", sa.Integer, primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("example", sa.String(200), nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
# -- end dashboard ingestion health ------------------------------------------------------------

# -- subscription categories (issue 9 settings / issue 5 policy, nudge/engage/categories.py) ----
# The account's list of subscription categories: ``key`` is what campaigns (``category``)
# and subscription rows name and never changes; ``name`` and ``description`` are what the
# dashboard and the recipient's preference page show. Archived categories stay (old
# campaigns and subscription rows keep meaning) but new campaigns cannot pick them.
subscription_categories = sa.Table(
    "subscription_categories",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("key", sa.String(64), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.String(1000), nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("archived_at", sa.Float, nullable=True),
    sa.UniqueConstraint("account_id", "key", name="uq_subscription_categories_key"),
)
# -- end subscription categories -----------------------------------------------------------------


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


def dialect_insert(conn: sa.Connection, table: sa.Table) -> Any:
    """An INSERT in the connection's dialect, for ``on_conflict_do_nothing`` /
    ``on_conflict_do_update`` (SQLite and PostgreSQL spell upserts the same way)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    return insert(table)


def in_ids(conn: sa.Connection, column: Any, ids: list[int]) -> Any:
    """``column IN ids`` with the whole list as one bound value (a JSON array read through
    ``json_each`` on SQLite, an array on PostgreSQL): a batch of thousands of ids is one
    short statement, compiled once and cached, instead of one bound name per id."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == sa.any_(sa.literal([int(i) for i in ids], ARRAY(sa.BigInteger)))
    values = sa.func.json_each(sa.literal(json.dumps([int(i) for i in ids])))
    return column.in_(sa.select(sa.column("value", sa.BigInteger)).select_from(values))


def insert_ignore(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]],
                  keys: tuple[str, ...]) -> int:
    """Insert ``rows`` (dicts with the same columns), skipping those whose ``keys`` exist
    already; returns how many were inserted. The one "insert if absent" of the control
    store, correct on SQLite and PostgreSQL under concurrent writers.

    On SQLite through the DB-API's ``executemany``: SQLAlchemy's per-row parameter
    processing cost more than the inserts themselves (the campaign outbox and the journey
    engine insert tens of thousands of rows at a time); the column names are our own."""
    if not rows:
        return 0
    if conn.dialect.name == "sqlite":
        # A column NULL in every row (and NULL by default) is left out: fewer values to bind
        # per row (an outbox row's sealed fields, a pending message's reason, ...).
        cols = [c for c in rows[0] if not (table.c[c].nullable and table.c[c].server_default
                                           is None and all(r[c] is None for r in rows))]
        sql = (f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES "
               f"({', '.join('?' * len(cols))}) ON CONFLICT ({', '.join(keys)}) DO NOTHING")
        values = operator.itemgetter(*cols) if len(cols) > 1 else lambda r: (r[cols[0]],)
        cur = conn.connection.driver_connection.executemany(  # type: ignore[union-attr]
            sql, map(values, rows))
    else:
        cur = conn.execute(dialect_insert(conn, table).on_conflict_do_nothing(
            index_elements=list(keys)), rows)
    n = cur.rowcount
    return int(n) if n is not None and n >= 0 else len(rows)
