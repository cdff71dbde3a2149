"""Building wire records (the ``/1/upload`` record shape) from SDK calls.

Records are validated for *shape* here, at the call site, so that programming errors
(no identifier, a value that is not JSON) raise where they are made. Content rules (name
lengths, string sizes, ...) belong to the server, which reports them per record.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from nudge_sdk.ops import date, epoch_seconds

Timestamp = dt.datetime | dt.date | int | float
Properties = Mapping[str, Any]

# SDK keyword -> wire key, in the order they are written to the record.
ID_KEYS = {"identity": "identity", "object_id": "objectId", "email": "email", "phone": "phone"}


def identifiers(
    identity: str | int | None = None,
    object_id: str | None = None,
    email: str | None = None,
    phone: str | None = None,
) -> dict[str, str]:
    """The wire identifier keys of a record; at least one identifier is required."""
    given = {"identity": identity, "object_id": object_id, "email": email, "phone": phone}
    ids: dict[str, str] = {}
    for name, value in given.items():
        if value is None:
            continue
        # Numeric user ids are common; the server stores identifiers as strings anyway.
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        ids[ID_KEYS[name]] = value
    if not ids:
        raise ValueError("a record needs an identifier: identity, object_id, email or phone")
    return ids


def event_record(
    ids: dict[str, str],
    event: str,
    properties: Properties | None = None,
    ts: Timestamp | None = None,
    msg_id: str | None = None,
) -> dict[str, Any]:
    """An ``{"type": "event", ...}`` record."""
    if not isinstance(event, str) or not event:
        raise ValueError(f"event name must be a non-empty string, got {event!r}")
    return {
        "type": "event",
        **ids,
        "ts": timestamp(ts),
        "evtName": event,
        "evtData": properties_copy(properties),
        "msgId": message_id(msg_id),
    }


def profile_record(
    ids: dict[str, str],
    properties: Properties | None = None,
    ts: Timestamp | None = None,
    msg_id: str | None = None,
) -> dict[str, Any]:
    """A ``{"type": "profile", ...}`` record; ``properties`` may use the ops helpers."""
    return {
        "type": "profile",
        **ids,
        "ts": timestamp(ts),
        "profileData": properties_copy(properties),
        "msgId": message_id(msg_id),
    }


def timestamp(ts: Timestamp | None) -> int:
    """Epoch seconds for the record's ``ts`` (now when not given)."""
    return int(time.time()) if ts is None else epoch_seconds(ts)


def message_id(msg_id: str | None) -> str:
    """The record's idempotency id: the caller's own, or a fresh random one.

    It is fixed when the record is built, so every retry of the record carries the same
    id and the server stores it once.
    """
    if msg_id is None:
        return uuid.uuid4().hex
    if not isinstance(msg_id, str) or not 0 < len(msg_id) <= 128:
        raise ValueError("msg_id must be a string of 1-128 characters")
    return msg_id


def properties_copy(properties: Properties | None) -> dict[str, Any]:
    """A JSON-ready deep copy of the properties.

    Copying means the caller may reuse or mutate its dict right after the call without
    changing a record that is still waiting in the queue.
    """
    if properties is None:
        return {}
    if not isinstance(properties, Mapping):
        raise TypeError(f"properties must be a mapping, not {type(properties).__name__}")
    return _mapping(properties, "")


def _mapping(value: Mapping[Any, Any], path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise TypeError(f"property name {path}{key!r} must be a string")
        out[key] = _value(item, path + key)
    return out


def _value(value: Any, path: str) -> Any:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        # JSON has no NaN/Infinity; the server would reject the whole request.
        if not math.isfinite(value):
            raise ValueError(f"property {path!r}: {value} is not a finite number")
        return value
    if isinstance(value, dt.datetime | dt.date):
        return date(value)
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return _value(float(value), path)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return _mapping(value, path + ".")
    if isinstance(value, list | tuple | set | frozenset):
        return [_value(v, path) for v in value]
    raise TypeError(f"property {path!r}: {type(value).__name__} is not supported "
                    "(use str, int, float, bool, None, datetime, lists or dicts)")


def encode(record: dict[str, Any]) -> bytes:
    """The record as compact UTF-8 JSON, ready to be joined into a request body."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()
