"""Typed settings: environment ``NUDGE_*`` > defaults. Bad values fail loudly at start.

Every setting is documented in docs/configuration.md (a test checks that).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from nudge.errors import ConfigError


@dataclass(frozen=True)
class Limits:
    """Ingest limits (see docs/api.md)."""

    max_body_bytes: int = 5 * 1024 * 1024
    max_records: int = 1000
    max_name_len: int = 120
    max_string_bytes: int = 512
    max_properties: int = 256
    max_depth: int = 3
    max_list_items: int = 100
    future_skew_s: int = 3600
    max_inflight_per_account: int = 64


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./data")
    control_url: str = ""  # default: sqlite in data_dir
    log_level: str = "info"
    limits: Limits = field(default_factory=Limits)
    dedup_window_s: int = 24 * 3600
    dedup_max_ids: int = 5_000_000
    commit_max_records: int = 20_000
    # Ingest log (nudge/ingest/log.py): HTTP uploads are acknowledged once in the log and
    # drained into DuckDB in large commits; beyond max_backlog logged-but-unapplied records,
    # or once the oldest of them has waited max_lag_ms, requests wait for their commit again
    # (bounds freshness). Segment size before rotation. On by default since the bound is in
    # time: freshness matched the commit-acknowledged path at the same load, at >= its
    # throughput and 0.76x its CPU per event (docs/benchmarks.md, session 14).
    ingest_log: bool = True
    ingest_log_max_backlog: int = 20_000
    ingest_log_max_lag_ms: int = 500
    ingest_log_segment_bytes: int = 64 * 1024 * 1024
    compact_threshold_rows: int = 250_000
    # Background merging of sorted runs (nudge/store/runs.py): runs of one size tier merged
    # together (0: never merge), rows moved per writer step, and under load at most
    # 1 / (1 + ratio) of the writer's time spent merging.
    merge_fanout: int = 4
    merge_step_rows: int = 250_000
    merge_busy_ratio: int = 3
    max_typed_columns: int = 400
    duckdb_memory_limit: str = ""  # empty: DuckDB's default (80% of RAM)
    duckdb_threads: int = 0  # 0: DuckDB's default (all cores)
    # Master key (base64 of 32 bytes) that wraps every account's data key; or a file holding
    # it. Neither set: a key file next to (never inside) the data directory, created once.
    master_key: str = ""
    master_key_file: str = ""
    # Auth (docs/security.md): HTTPS when both are set; dashboard session timeouts; rate
    # limits per account and per API key or session (requests per minute; 0: no limit).
    tls_cert: str = ""
    tls_key: str = ""
    session_idle_s: int = 30 * 60
    session_absolute_s: int = 12 * 3600
    rate_limit_account_per_minute: int = 120_000
    rate_limit_key_per_minute: int = 60_000
    # Privacy (docs/privacy.md): after an erasure the account file is rewritten under a new
    # key within this many seconds (erasures meanwhile share one rewrite; 0: at once).
    erasure_rewrite_delay_s: int = 600
    # Origins allowed to call /v1/* and /sdk/* from browsers: "*" or comma-separated.
    cors_origins: str = "*"
    # Engage (docs/engagement.md): delivery workers per process, messages each claims at a
    # time, attempts before dead-letter, provider call timeout, first retry delay (doubles),
    # how often idle workers look for due messages, a claimed message's lease, audience
    # expansion batch, and the public base URL used in tracking and unsubscribe links.
    engage_workers: int = 2
    engage_claim_batch: int = 200
    engage_channel_concurrency: int = 64
    engage_max_attempts: int = 6
    engage_send_timeout_ms: int = 10_000
    engage_backoff_ms: int = 2_000
    engage_poll_ms: int = 1_000
    engage_lease_s: int = 120
    engage_expand_batch: int = 5_000
    # Let providers, webhooks and web push endpoints resolve to private, loopback or link-local
    # addresses (refused by default: the SSRF guard, nudge/engage/channels/netguard.py).
    engage_allow_private_networks: bool = False
    journey_poll_ms: int = 250  # issue 7: journeys (docs/journeys.md)
    journey_step_batch: int = 1_000
    journey_entry_batch: int = 5_000
    journey_segment_poll_s: int = 60
    journey_lease_s: int = 30
    journey_date_poll_s: int = 60
    public_url: str = "http://127.0.0.1:8080"
    # Predict (docs/predict.md): OpenMP threads per model fit, and how often the in-process
    # scheduler looks for goals due for retraining (0: no scheduler in this process).
    predict_threads: int = 1
    predict_schedule_s: int = 60

    @property
    def control_database_url(self) -> str:
        return self.control_url or f"sqlite:///{self.data_dir / 'control.db'}"

    @property
    def master_key_path(self) -> Path:
        if self.master_key_file:
            return Path(self.master_key_file)
        d = self.data_dir.resolve()
        return d.parent / f"{d.name}.master-key"

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert and self.tls_key)

    @property
    def accounts_dir(self) -> Path:
        return self.data_dir / "accounts"


def _coerce(name: str, raw: str, kind: type) -> object:
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return kind(raw)
    except ValueError:
        raise ConfigError(
            f"environment variable {name}={raw!r} is not a valid {kind.__name__}") from None


def _from_env(cls: type, prefix: str, env: dict[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for f in fields(cls):
        if f.name == "limits":
            continue
        name = prefix + f.name.upper()
        if name in env:
            kind = {"Path": Path, "str": str, "int": int, "bool": bool}[
                f.type if isinstance(f.type, str) else f.type.__name__
            ]
            values[f.name] = _coerce(name, env[name], kind)
    return values


def load_settings(env: dict[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from ``NUDGE_*`` (limits from ``NUDGE_LIMIT_*``), then explicit overrides."""
    env = dict(os.environ) if env is None else env
    limits = Limits(**_from_env(Limits, "NUDGE_LIMIT_", env))  # type: ignore[arg-type]
    values = _from_env(Settings, "NUDGE_", env)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "data_dir" in values:
        values["data_dir"] = Path(str(values["data_dir"]))
    settings = Settings(limits=limits, **values)  # type: ignore[arg-type]
    for f in fields(Limits):
        if getattr(limits, f.name) <= 0:
            raise ConfigError(f"NUDGE_LIMIT_{f.name.upper()} must be positive")
    return settings
