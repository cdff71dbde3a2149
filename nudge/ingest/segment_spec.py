"""The Segment spec wire format: ``/v1/track|identify|alias|page|screen|group|batch``.

Traffic from Segment- and RudderStack-style libraries is accepted unchanged. Mapping:
- ``userId`` -> identity, ``anonymousId`` -> objectId (device / anonymous id);
- track -> event ``event`` with ``properties``; page -> ``Page Viewed``; screen ->
  ``Screen Viewed`` (``name``/``category`` added to the properties);
- identify -> profile set of ``traits`` (``email``/``phone`` traits are identifiers too);
- group -> profile properties ``Group`` and ``Group <trait>``;
- alias -> explicit merge of ``previousId``'s profile into ``userId``'s;
- ``context`` is kept on events as flattened ``context.*`` properties (ip, userAgent, locale,
  timezone, app, os, device, page, campaign/UTM, library, ...).

Timestamps (ISO 8601) follow the spec's clock-skew correction: when ``sentAt`` is present,
``ts = receivedAt - (sentAt - originalTimestamp)`` where originalTimestamp is
``originalTimestamp`` or else ``timestamp``; without ``sentAt`` the given timestamp is used,
and without any, ``receivedAt``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from nudge.clock import clock
from nudge.config import Limits
from nudge.errors import ValidationError
from nudge.ingest.records import (
    E_IDENTITY,
    E_LIMIT,
    E_SHAPE,
    E_TS,
    ProfileOp,
    Record,
    RecordError,
    RecordInvalid,
)
from nudge.ingest.upload import bounded_identifier, normalize_identifier
from nudge.ingest.validate import (
    check_name,
    check_ts,
    derive_message_id,
    normalize_props,
    normalize_value,
    require,
)

CALL_TYPES = ("track", "identify", "alias", "page", "screen", "group")
_CONTEXT_SKIP = {"traits"}
_MAX_CONTEXT_KEYS = 40


def parse_call(call_type: str, msg: Any, limits: Limits) -> Record:
    """One call (a single endpoint's body). Raises ValidationError on a bad call."""
    try:
        return parse_message(msg, call_type, 0, clock.now(), None, limits)
    except RecordInvalid as e:
        raise ValidationError(e.error, field=call_type) from None


def parse_batch(body: Any, limits: Limits) -> tuple[list[Record], list[RecordError]]:
    if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
        raise ValidationError('body must be an object with a list "batch"', field="batch")
    items = body["batch"]
    if len(items) > limits.max_records:
        raise ValidationError(f'"batch" has {len(items)} messages; at most {limits.max_records}',
                              field="batch")
    now = clock.now()
    sent_at = body.get("sentAt")
    shared_context = body.get("context") if isinstance(body.get("context"), dict) else None
    records, errors = [], []
    for i, msg in enumerate(items):
        try:
            if isinstance(msg, dict) and shared_context and "context" not in msg:
                msg = {**msg, "context": shared_context}
            records.append(parse_message(msg, None, i, now, sent_at, limits))
        except RecordInvalid as e:
            errors.append(RecordError(i, e.code, e.error))
    return records, errors


def parse_time(value: Any, field: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise RecordInvalid(E_TS, f"{field} must be an ISO 8601 timestamp")
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RecordInvalid(E_TS, f"{field} {value!r} is not an ISO 8601 timestamp") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def event_time(msg: dict[str, Any], received: float, batch_sent_at: Any, limits: Limits) -> float:
    original = msg.get("originalTimestamp", msg.get("timestamp"))
    sent_at = msg.get("sentAt", batch_sent_at)
    if original is None:
        return received
    orig = parse_time(original, "timestamp")
    if sent_at is not None:
        orig = received - (parse_time(sent_at, "sentAt") - orig)
    return check_ts(orig, limits, field="timestamp")


def parse_message(msg: Any, call_type: str | None, index: int, now: float, batch_sent_at: Any,
                  limits: Limits) -> Record:
    require(isinstance(msg, dict), "message must be an object")
    kind = call_type or msg.get("type")
    require(kind in CALL_TYPES, f"type must be one of {list(CALL_TYPES)}")
    ids: dict[str, str] = {}
    for key, id_kind in (("userId", "identity"), ("anonymousId", "object_id")):
        v = msg.get(key)
        if v is None or v == "":
            continue
        if isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        require(isinstance(v, str) and len(v.encode()) <= limits.max_string_bytes,
                f"{key} must be a string", E_IDENTITY)
        ids[id_kind] = normalize_identifier(id_kind, v)
    require(bool(ids), "userId or anonymousId is required", E_IDENTITY)
    ts = event_time(msg, now, batch_sent_at, limits)
    message_id = msg.get("messageId")
    if message_id is not None:
        require(isinstance(message_id, str) and 0 < len(message_id) <= 128,
                "messageId must be a string of 1-128 characters")
    else:
        message_id = derive_message_id(kind, sorted(ids.items()), ts, msg.get("event"),
                                       msg.get("properties"), msg.get("traits"))
    rec = Record(kind="event", ids=ids, ts=ts, message_id=message_id, index=index)
    props = msg.get("properties") or {}
    require(isinstance(props, dict), "properties must be an object")
    if kind == "track":
        rec.event = check_name(msg.get("event"), "event", limits)
        rec.props = normalize_props(props, limits)
    elif kind in ("page", "screen"):
        rec.event = "Page Viewed" if kind == "page" else "Screen Viewed"
        extra = {k: msg[k] for k in ("name", "category") if isinstance(msg.get(k), str)}
        rec.props = normalize_props({**props, **extra}, limits)
    elif kind == "identify":
        rec.kind = "profile"
        # context may be null or not an object in hand-made calls: that is no server error.
        context = msg.get("context")
        context_traits = context.get("traits") if isinstance(context, dict) else None
        rec.ops = _trait_ops(msg.get("traits") or context_traits or {}, "", ids, limits)
    elif kind == "group":
        rec.kind = "profile"
        group = msg.get("groupId")
        require(isinstance(group, str | int) and group != "", "groupId is required")
        rec.ops = [ProfileOp("set", "Group", str(group)),
                   *_trait_ops(msg.get("traits") or {}, "Group ", None, limits)]
    else:  # alias
        prev = msg.get("previousId")
        require(isinstance(prev, str) and prev != "", "previousId is required")
        require("identity" in ids, "alias needs userId", E_IDENTITY)
        rec.kind = "profile"
        rec.merge_from = [("identity", prev), ("object_id", prev)]
    if rec.kind == "event":
        rec.props.update(_context_props(msg.get("context"), limits))
    return rec


def _trait_ops(traits: Any, prefix: str, ids: dict[str, str] | None,
               limits: Limits) -> list[ProfileOp]:
    require(isinstance(traits, dict), "traits must be an object", E_SHAPE)
    # The same limit as properties of a profile record (traits are profile properties).
    require(len(traits) <= limits.max_properties,
            f"more than {limits.max_properties} traits", E_LIMIT)
    ops = []
    for name, value in traits.items():
        if ids is not None and name.lower() in ("email", "phone") and isinstance(value, str):
            ids.setdefault(name.lower(), bounded_identifier(name.lower(), value, name, limits))
            continue
        full = check_name(prefix + name, "trait", limits)
        ops.append(ProfileOp("set", full, normalize_value(value, full, limits)))
    return ops


def _context_props(context: Any, limits: Limits) -> dict[str, Any]:
    if not isinstance(context, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in context.items():
        if key in _CONTEXT_SKIP:
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                if isinstance(v, str | int | float | bool):
                    out[f"context.{key}.{sub}"] = v
        elif isinstance(value, str | int | float | bool):
            out[f"context.{key}"] = value
        if len(out) >= _MAX_CONTEXT_KEYS:
            break
    try:
        return normalize_props(out, limits)
    except RecordInvalid:
        return {}
