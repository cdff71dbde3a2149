"""Prometheus metrics of the ingest path (exposed at /metrics)."""

from prometheus_client import Counter, Histogram

RECORDS = Counter("nudge_ingest_records_total", "Records accepted (stored or deduplicated)",
                  ["kind"])
REJECTS = Counter("nudge_ingest_rejects_total", "Records or requests rejected", ["code"])
REQUESTS = Counter("nudge_ingest_requests_total", "Ingest requests", ["endpoint", "status"])
COMMIT_SECONDS = Histogram("nudge_commit_seconds", "Group commit latency",
                           buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                    2.5, 5))
COMMIT_RECORDS = Histogram("nudge_commit_records", "Records per group commit",
                           buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 20000))
LOG_SKIPPED = Counter("nudge_ingest_log_skipped_records_total",
                      "Logged records that no commit accepted (each is logged as an error)")
