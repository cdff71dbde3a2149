"""What the SDK reports to ``on_error`` when a record does not reach Nudge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

#: Why a record was not stored:
#:
#: - ``"rejected"``: the server refused this record (``code`` is the server's per-record
#:   code, e.g. 511 for a bad event name). Sending it again will fail again.
#: - ``"failed"``: its batch could not be delivered (``code`` is the HTTP status of the last
#:   attempt, or 0 when there was no response), after retries when the error was transient.
#: - ``"dropped"``: the SDK never sent it (queue full, client closed, record too large).
Reason = Literal["rejected", "failed", "dropped"]

#: ``code`` of a record that got no HTTP response (connection error, timeout, dropped).
NO_RESPONSE = 0


@dataclass(frozen=True, slots=True)
class RecordError:
    """One record that was not stored, with the reason.

    ``record`` is the exact wire record (including its ``msgId``), so an application may
    persist it and send it again later without creating a duplicate.
    """

    record: dict[str, Any]
    code: int
    message: str
    reason: Reason

    @property
    def retryable(self) -> bool:
        """True when sending the same record again later may succeed."""
        return self.reason != "rejected" and self.code != 413

    def __str__(self) -> str:
        return f"{self.reason} ({self.code}): {self.message} [msgId={self.record.get('msgId')}]"
