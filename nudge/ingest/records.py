"""The normalized record every wire format is turned into before it reaches the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Identifier kinds, in order of strength. ``identity`` is the customer's own user id;
# ``object_id`` is a device / anonymous id; push tokens are identifiers too so that a
# provider's "token invalid" report can find its profile.
IDENTIFIER_KINDS = ("identity", "email", "phone", "object_id")
TOKEN_KINDS = ("fcm", "apns", "webpush")


@dataclass(frozen=True, slots=True)
class Date:
    """A date-typed property value (``$D_<epoch>`` on the wire), seconds since the epoch."""

    epoch: float


@dataclass(frozen=True, slots=True)
class ProfileOp:
    """One profile property operation: set, set_once, unset, incr, add, remove."""

    op: str
    name: str
    value: Any = None


@dataclass(slots=True)
class Record:
    """One validated record. ``index`` is its position in the request, for error reports."""

    kind: str  # "event" | "profile" | "token"
    ids: dict[str, str]
    ts: float
    message_id: str
    index: int = 0
    event: str | None = None
    props: dict[str, Any] = field(default_factory=dict)
    ops: list[ProfileOp] = field(default_factory=list)
    token: tuple[str, str] | None = None  # (kind, token)
    merge_allowed: bool = False
    # Explicit merges (Segment ``alias``, POST /1/profiles/merge): profiles found under these
    # identifiers are merged into the record's profile even if identified.
    merge_from: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RecordError:
    index: int
    code: int
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "code": self.code, "error": self.error}


@dataclass(slots=True)
class BatchResult:
    processed: int = 0
    errors: list[RecordError] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        if not self.errors:
            status = "success"
        elif self.processed:
            status = "partial"
        else:
            status = "fail"
        return {"status": status, "processed": self.processed,
                "unprocessed": [e.to_dict() for e in sorted(self.errors, key=lambda e: e.index)]}


class RecordInvalid(Exception):
    """A single record is rejected; the rest of its batch goes on."""

    def __init__(self, code: int, error: str) -> None:
        super().__init__(error)
        self.code = code
        self.error = error


# Per-record error codes (stable, documented in docs/api.md).
E_SHAPE = 510  # missing/wrong field
E_NAME = 511  # event or property name invalid
E_VALUE = 512  # property value invalid or too long
E_TS = 513  # timestamp out of range
E_IDENTITY = 514  # no identifier / invalid identifier
E_LIMIT = 515  # too many properties / too deep
E_CONFLICT = 520  # would merge two identified profiles
