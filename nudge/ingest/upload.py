"""The native upload API wire format (CleverTap's ``/1/upload`` shape).

``{"d": [{"type": "event"|"profile"|"token", "identity"|"objectId"|"email"|"phone": ...,
"ts": epoch seconds, "evtName", "evtData" | "profileData" | "tokenData"}]}``
"""

from __future__ import annotations

import math
import sys
from itertools import chain
from typing import Any

from nudge.clock import clock
from nudge.config import Limits
from nudge.errors import ValidationError
from nudge.ingest.records import (
    E_IDENTITY,
    E_LIMIT,
    E_SHAPE,
    E_VALUE,
    TOKEN_KINDS,
    ProfileOp,
    Record,
    RecordError,
    RecordInvalid,
)
from nudge.ingest.validate import (
    check_name,
    check_ts,
    derive_message_id,
    normalize_props,
    normalize_value,
    require,
)

_MAX_DOUBLE = sys.float_info.max
# Wire key -> identifier kind.
_ID_KEYS = {"identity": "identity", "objectId": "object_id", "email": "email", "phone": "phone"}
# profileData keys that are identifiers too (CleverTap puts Email/Phone/Identity there).
PROFILE_ID_PROPS = {"Identity": "identity", "Email": "email", "Phone": "phone"}
_OPS = {"$set": "set", "$setOnce": "set_once", "$set_once": "set_once", "$unset": "unset",
        "$delete": "unset", "$incr": "incr", "$decr": "decr", "$add": "add", "$remove": "remove"}
_KNOWN_KEYS = {"type", "ts", "evtName", "evtData", "profileData", "tokenData", "msgId", *_ID_KEYS}


def parse_upload(data: Any, limits: Limits) -> tuple[list[Record], list[RecordError]]:
    """Split a decoded upload body into valid records and per-record errors."""
    if not isinstance(data, dict) or not isinstance(data.get("d"), list):
        raise ValidationError('body must be an object with a list "d"', field="d")
    items = data["d"]
    if not items:
        raise ValidationError('"d" is empty', field="d")
    if len(items) > limits.max_records:
        raise ValidationError(f'"d" has {len(items)} records; at most {limits.max_records}',
                              field="d")
    return parse_records(items, 0, clock.now(), limits)


# Fields an event record may have to take the fast path of parse_records.
_FAST_KEYS = frozenset(("type", "ts", "evtName", "evtData", "msgId", "identity", "objectId"))


def parse_records(items: list[Any], offset: int, now: float, limits: Limits,
                  ) -> tuple[list[Record], list[RecordError]]:
    """Parse upload records; ``offset`` is the index of the first one (for error reports).

    The common record -- an event with one plain identity or objectId and flat properties of
    short strings, numbers and booleans -- is checked in bulk, field by field across the
    batch (``_bulk_events``), or if that finds anything unusual, record by record without a
    function call per field (``_fast_event``); whatever else (profiles, tokens, dates,
    lists, nested values, anything invalid) goes through ``parse_record``, which applies the
    same rules one by one and words the errors. ``tests/test_ingest_fast_parse.py`` checks
    all three give the same records and errors.
    """
    max_name, max_props = limits.max_name_len, limits.max_properties
    max_ts = now + limits.future_skew_s  # check_ts reads the clock again: it decides the rest
    short = limits.max_string_bytes // 4  # strings this short can't exceed the byte limit
    fast_keys = _FAST_KEYS
    out: list[Record | None] = [None] * len(items)
    fast = [j for j, item in enumerate(items) if type(item) is dict
            and item.get("type") == "event" and fast_keys.issuperset(item)]
    if fast:
        evs = [items[j] for j in fast]
        recs = _bulk_events(evs, [offset + j for j in fast], now, limits, max_ts)
        if recs is None:  # some record needs a closer look: one by one
            recs = [_fast_event(e, offset + j, now, max_name, max_props, short, max_ts)
                    for j, e in zip(fast, evs, strict=True)]
        for j, rec in zip(fast, recs, strict=True):
            out[j] = rec
    errors: list[RecordError] = []
    for j, rec in enumerate(out):
        if rec is None:
            try:
                out[j] = parse_record(items[j], offset + j, now, limits)
            except RecordInvalid as e:
                errors.append(RecordError(offset + j, e.code, e.error))
    return [r for r in out if r is not None], errors


_NONE = type(None)
_ID_TYPES = frozenset((str,))
_TS_TYPES = frozenset((int, float, _NONE))
_DATA_TYPES = frozenset((dict, _NONE))
_VALUE_TYPES = frozenset((str, int, float, bool, _NONE))


def _bulk_events(evs: list[dict[str, Any]], indices: list[int], now: float, limits: Limits,
                 max_ts: float) -> list[Record] | None:
    """Plain event records checked field by field across the batch, not record by record.

    Each check looks at one field of every record at once (the set of value types, the
    longest string, the distinct names), so the per-record Python left is building the
    Record. Returns None as soon as any record needs the one-by-one path (which then also
    words its error); the records are then never half-built.
    """
    short = limits.max_string_bytes // 4
    ident = [e.get("identity") for e in evs]
    if None in ident:
        objid = [e.get("objectId") for e in evs]
        if any((a is None) == (b is None) for a, b in zip(ident, objid, strict=True)):
            return None
        keys = ["identity" if a is not None else "object_id" for a in ident]
        ident = [a if a is not None else b for a, b in zip(ident, objid, strict=True)]
    else:
        if any("objectId" in e for e in evs):
            return None
        keys = None
    if (set(map(type, ident)) != _ID_TYPES or min(map(len, ident)) == 0
            or max(map(len, ident)) > short
            or any(v[0].isspace() or v[-1].isspace() for v in ident)):
        return None
    ts = [e.get("ts") for e in evs]
    types = set(map(type, ts))
    if not types <= _TS_TYPES:
        return None
    if _NONE in types:
        ts = [now if t is None else t for t in ts]
    if float in types and not all(math.isfinite(t) for t in ts if type(t) is float):
        return None
    if min(ts) < 0 or max(ts) > max_ts:
        return None
    names = [e.get("evtName") for e in evs]
    if set(map(type, names)) != _ID_TYPES:
        return None
    for name in set(names):
        if not 0 < len(name) <= limits.max_name_len or not name.isprintable() or name[0] == "$":
            return None
    datas = [e.get("evtData") for e in evs]
    types = set(map(type, datas))
    if not types <= _DATA_TYPES:
        return None
    props = [{} if d is None else d for d in datas] if _NONE in types else datas
    if max(map(len, props)) > limits.max_properties:
        return None
    for k in set().union(*props):
        if type(k) is not str or not 0 < len(k) <= limits.max_name_len or not k.isprintable():
            return None
    values = list(chain.from_iterable(map(dict.values, props)))
    types = set(map(type, values))
    if not types <= _VALUE_TYPES:
        return None
    if str in types:
        strs = [v for v in values if type(v) is str]
        if max(map(len, strs)) > short or "\0$D_" in "\0" + "\0".join(strs):
            return None
    if float in types and not all(map(math.isfinite, [v for v in values if type(v) is float])):
        return None
    if int in types:
        ints = [v for v in values if type(v) is int]
        if min(ints) < -_MAX_DOUBLE or max(ints) > _MAX_DOUBLE:
            return None
    mids = [e.get("msgId") for e in evs]
    given = [m for m in mids if m is not None]
    if given and (set(map(type, given)) != _ID_TYPES or min(map(len, given)) == 0
                  or max(map(len, given)) > 128):
        return None
    out = []
    for j, (e, v, t, name, p, m) in enumerate(zip(evs, ident, ts, names, props, mids,
                                                   strict=True)):
        ids = {"identity" if keys is None else keys[j]: v}
        t = float(t)
        if m is None:
            m = derive_message_id("event", sorted(ids.items()), t, name, e.get("evtData"),
                                  None, None)
        out.append(Record(kind="event", ids=ids, ts=t, message_id=m, index=indices[j],
                          event=name, props=p))
    return out


def _fast_event(item: dict[str, Any], index: int, now: float, max_name: int, max_props: int,
                short: int, max_ts: float) -> Record | None:
    """The record if it is a plain, valid event; None if parse_record must decide."""
    ident = item.get("identity")
    if ident is None:
        ident, kind = item.get("objectId"), "object_id"
    elif "objectId" in item:
        return None
    else:
        kind = "identity"
    if (type(ident) is not str or not 0 < len(ident) <= short or ident[0].isspace()
            or ident[-1].isspace()):
        return None
    ts = item.get("ts")
    if ts is None:
        ts = now
    elif (type(ts) is not int and type(ts) is not float) or not 0 <= ts <= max_ts:
        return None
    name = item.get("evtName")
    if (type(name) is not str or not 0 < len(name) <= max_name or not name.isprintable()
            or name[0] == "$"):
        return None
    data = item.get("evtData")
    if data is None:
        props: dict[str, Any] = {}
    elif type(data) is not dict or len(data) > max_props:
        return None
    else:
        for k, v in data.items():
            if type(k) is not str or not 0 < len(k) <= max_name or not k.isprintable():
                return None
            t = type(v)
            if t is str:
                if len(v) > short or v.startswith("$D_"):
                    return None
            elif t is float:
                if not math.isfinite(v):
                    return None
            elif t is int:
                if not -_MAX_DOUBLE <= v <= _MAX_DOUBLE:
                    return None
            elif t is not bool and v is not None:
                return None
        props = data
    ids = {kind: ident}
    msg_id = item.get("msgId")
    if msg_id is None:
        msg_id = derive_message_id("event", sorted(ids.items()), float(ts), name, data, None,
                                   None)
    elif type(msg_id) is not str or not 0 < len(msg_id) <= 128:
        return None
    return Record(kind="event", ids=ids, ts=float(ts), message_id=msg_id, index=index,
                  event=name, props=props)


def identifiers(item: dict[str, Any], limits: Limits) -> dict[str, str]:
    ids: dict[str, str] = {}
    for key, kind in _ID_KEYS.items():
        v = item.get(key)
        if v is None:
            continue
        if type(v) is int:
            v = str(v)
        if type(v) is not str or not 0 < len(v.encode()) <= limits.max_string_bytes:
            raise RecordInvalid(E_IDENTITY, f"{key} must be a non-empty string of at most "
                                            f"{limits.max_string_bytes} bytes")
        ids[kind] = normalize_identifier(kind, v)
    return ids


def bounded_identifier(kind: str, value: str, key: str, limits: Limits) -> str:
    """An identifier found inside profileData/traits: same size limit as a top-level one."""
    if not 0 < len(value.encode()) <= limits.max_string_bytes:
        raise RecordInvalid(E_IDENTITY, f"{key} must be a non-empty string of at most "
                                        f"{limits.max_string_bytes} bytes")
    return normalize_identifier(kind, value)


def normalize_identifier(kind: str, value: str) -> str:
    if kind == "identity" or kind == "object_id":
        if value and not value[0].isspace() and not value[-1].isspace():
            return value  # the common case: nothing to normalize
    value = value.strip()
    if kind == "email":
        if "@" not in value:
            raise RecordInvalid(E_IDENTITY, f"email {value!r} is not an email address")
        return value.lower()
    if kind == "phone":
        digits = "".join(c for c in value if c.isdigit())
        if len(digits) < 6:
            raise RecordInvalid(E_IDENTITY, f"phone {value!r} is not a phone number")
        return ("+" if value.startswith("+") else "") + digits
    if not value:
        raise RecordInvalid(E_IDENTITY, f"{kind} is empty")
    return value


def parse_record(item: Any, index: int, now: float, limits: Limits) -> Record:
    require(isinstance(item, dict), "record must be an object")
    if not _KNOWN_KEYS.issuperset(item):
        raise RecordInvalid(E_SHAPE, f"unknown field(s) {sorted(set(item) - _KNOWN_KEYS)}")
    kind = item.get("type")
    require(kind in ("event", "profile", "token"),
            'type must be "event", "profile" or "token"')
    ids = identifiers(item, limits)
    ts = check_ts(item["ts"], limits) if item.get("ts") is not None else now
    msg_id = item.get("msgId")
    if msg_id is not None and (type(msg_id) is not str or not 0 < len(msg_id) <= 128):
        raise RecordInvalid(E_SHAPE, "msgId must be a string of 1-128 characters")
    rec = Record(kind=kind, ids=ids, ts=ts, message_id="", index=index)
    if kind == "event":
        require("profileData" not in item and "tokenData" not in item,
                "an event record takes evtName/evtData only")
        rec.event = check_name(item.get("evtName"), "evtName", limits)
        if rec.event.startswith("$"):
            raise RecordInvalid(E_SHAPE, "evtName must not start with '$' (reserved)")
        # Only an absent/null evtData means "no properties"; [] or 0 is a shape error.
        evt_data = item.get("evtData")
        rec.props = normalize_props({} if evt_data is None else evt_data, limits)
    elif kind == "profile":
        require(isinstance(item.get("profileData"), dict), "profileData must be an object")
        rec.ops = profile_ops(item["profileData"], ids, limits)
    else:
        rec.token = token(item.get("tokenData"))
    require(bool(ids), "record needs an identifier: identity, objectId, email or phone",
            E_IDENTITY)
    # Identifiers read from profileData may only arrive now; check again after parsing.
    rec.message_id = msg_id or derive_message_id(
        kind, sorted(ids.items()), ts, rec.event, item.get("evtData"), item.get("profileData"),
        item.get("tokenData"))
    return rec


def profile_ops(data: dict[str, Any], ids: dict[str, str], limits: Limits) -> list[ProfileOp]:
    """Turn profileData into operations; identifier properties also become identifiers."""
    require(len(data) <= limits.max_properties, f"more than {limits.max_properties} properties",
            E_LIMIT)  # same code as too many event properties
    ops: list[ProfileOp] = []
    for name, raw in data.items():
        check_name(name, "profile property name", limits)
        if name in PROFILE_ID_PROPS and isinstance(raw, str | int) and not isinstance(raw, bool):
            kind = PROFILE_ID_PROPS[name]
            ids.setdefault(kind, bounded_identifier(kind, str(raw), name, limits))
            continue
        ops.append(profile_op(name, raw, limits))
    return ops


def profile_op(name: str, raw: Any, limits: Limits) -> ProfileOp:
    if isinstance(raw, dict) and len(raw) == 1 and next(iter(raw)) in _OPS:
        key, value = next(iter(raw.items()))
        op = _OPS[key]
        if op == "unset":
            return ProfileOp("unset", name)
        if op in ("incr", "decr"):
            require(isinstance(value, int | float) and not isinstance(value, bool),
                    f"{key} on {name!r} needs a number", E_VALUE)
            return ProfileOp("incr", name, value if op == "incr" else -value)
        if op in ("add", "remove"):
            items = value if isinstance(value, list) else [value]
            require(all(isinstance(v, str | int | float) and not isinstance(v, bool)
                        for v in items), f"{key} on {name!r} needs strings or numbers", E_VALUE)
            return ProfileOp(op, name, [str(normalize_value(v, name, limits)) for v in items])
        return ProfileOp(op, name, normalize_value(value, name, limits))
    return ProfileOp("set", name, normalize_value(raw, name, limits))


def token(data: Any) -> tuple[str, str]:
    require(isinstance(data, dict), "tokenData must be an object")
    kind, tok = data.get("type"), data.get("id")
    require(kind in TOKEN_KINDS, f"tokenData.type must be one of {list(TOKEN_KINDS)}")
    if kind == "webpush" and isinstance(tok, dict):
        import msgspec

        tok = msgspec.json.encode(tok).decode()
    require(isinstance(tok, str) and 0 < len(tok) <= 4096, "tokenData.id must be a string")
    return kind, tok
