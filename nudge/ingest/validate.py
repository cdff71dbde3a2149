"""Validation of record contents against the limits in docs/api.md.

Functions raise RecordInvalid for one record; request-level problems are raised by the wire
format modules as ValidationError / PayloadTooLarge.
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
from typing import Any

import msgspec

from nudge.clock import clock
from nudge.config import Limits
from nudge.ingest.records import (
    E_LIMIT,
    E_NAME,
    E_SHAPE,
    E_TS,
    E_VALUE,
    Date,
    RecordInvalid,
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DATE = re.compile(r"^\$D_(-?\d{1,12})$")
# Every JSON string token, with the colon if it is an object key. Matching whole tokens from
# the left means a quote or colon inside a string value can never be mistaken for a key.
_STRING_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"(\s*:)?', re.S)
# A quote, JSON whitespace, then a colon (the quote-colon pairs are counted with bytes.count).
_KEY_END_SPACED = re.compile(rb'"[ \t\n\r]+:')
_ENCODER = msgspec.json.Encoder(order="sorted")
_MAX_DOUBLE = sys.float_info.max


def _now_plus(skew: int) -> float:
    return clock.now() + skew


def check_name(name: Any, what: str, limits: Limits) -> str:
    # Hot path: names repeat in every record, so the common case is three C-level checks.
    if type(name) is str and 0 < len(name) <= limits.max_name_len and name.isprintable():
        return name
    if not isinstance(name, str) or not name:
        raise RecordInvalid(E_NAME, f"{what} must be a non-empty string")
    if len(name) > limits.max_name_len:
        raise RecordInvalid(E_NAME, f"{what} {name[:40]!r}... is longer than "
                                    f"{limits.max_name_len} characters")
    if _CONTROL.search(name):
        raise RecordInvalid(E_NAME, f"{what} {name!r} contains control characters")
    return name  # printable-check failed only on unusual but allowed characters


def check_ts(ts: Any, limits: Limits, *, field: str = "ts") -> float:
    """Epoch seconds between 1970 and now + the allowed clock skew."""
    t = type(ts)
    if (t is int or t is float) and 0 <= ts <= _now_plus(limits.future_skew_s):
        return float(ts)
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise RecordInvalid(E_TS, f"{field} must be epoch seconds (a number)")
    if ts < 0:
        raise RecordInvalid(E_TS, f"{field} {ts} is before 1970")
    if ts > clock.now() + limits.future_skew_s:
        raise RecordInvalid(E_TS, f"{field} {ts} is more than {limits.future_skew_s}s in the "
                                  "future (milliseconds instead of seconds?)")
    return float(ts)


def normalize_value(value: Any, name: str, limits: Limits, depth: int = 1) -> Any:
    """Check one property value and turn ``$D_<epoch>`` strings into Date."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        # An int beyond the double range would fail the whole group commit when stored.
        if not (-_MAX_DOUBLE <= value <= _MAX_DOUBLE if type(value) is int
                else math.isfinite(value)):
            raise RecordInvalid(E_VALUE, f"property {name!r}: number must be finite")
        return value
    if isinstance(value, str):
        limit = limits.max_string_bytes
        if len(value) * 4 > limit and len(value.encode()) > limit:
            raise RecordInvalid(E_VALUE, f"property {name!r}: string longer than "
                                         f"{limits.max_string_bytes} bytes")
        if value.startswith("$D_"):
            m = _DATE.match(value)
            if not m:
                raise RecordInvalid(E_VALUE, f"property {name!r}: bad date {value!r}, "
                                             "expected $D_<epoch seconds>")
            return Date(float(m.group(1)))
        return value
    if depth >= limits.max_depth:
        raise RecordInvalid(E_LIMIT, f"property {name!r}: nested deeper than {limits.max_depth}")
    if isinstance(value, list):
        if len(value) > limits.max_list_items:
            raise RecordInvalid(E_LIMIT, f"property {name!r}: more than "
                                         f"{limits.max_list_items} items")
        return [normalize_value(v, name, limits, depth + 1) for v in value]
    if isinstance(value, dict):
        return normalize_props(value, limits, depth + 1, prefix=name + ".")
    raise RecordInvalid(E_VALUE, f"property {name!r}: unsupported value")


def normalize_props(props: Any, limits: Limits, depth: int = 1, prefix: str = "") -> dict[str, Any]:
    """Check a property object in place (it is our own decoded copy) and return it."""
    if type(props) is not dict:
        raise RecordInvalid(E_SHAPE, "properties must be an object")
    if len(props) > limits.max_properties:
        raise RecordInvalid(E_LIMIT, f"more than {limits.max_properties} properties")
    short = limits.max_string_bytes // 4  # strings this short can't exceed the byte limit
    max_name = limits.max_name_len
    for k, v in props.items():
        if type(k) is not str or not 0 < len(k) <= max_name or not k.isprintable():
            check_name(k, f"property name {prefix}".rstrip(), limits)
        t = type(v)
        if t is str:
            if len(v) <= short and not v.startswith("$D_"):
                continue
        elif t is bool or v is None or (t is int and -_MAX_DOUBLE <= v <= _MAX_DOUBLE):
            continue
        elif t is float and math.isfinite(v):
            continue
        props[k] = normalize_value(v, prefix + k, limits, depth)
    return props


def check_duplicate_keys(body: bytes, decoded: Any) -> None:
    """Reject JSON whose objects repeat a key (the last would silently win).

    msgspec keeps the last duplicate, so compare the number of keys in the text with the
    number of keys that survived decoding.
    """
    decoded_keys = _count_keys(decoded)
    # Fast path (bytes.count runs at memchr speed; the exact pass costs ~10x the decode):
    # every key in the text ends in '"' + whitespace + ':', and elsewhere only string values
    # can hold those bytes, so this count is at least the number of keys in the text. If it
    # equals the keys that survived decoding, no key was repeated.
    spaced = 0
    if b'" ' in body or b'"\n' in body or b'"\t' in body or b'"\r' in body:
        spaced = len(_KEY_END_SPACED.findall(body))
    if body.count(b'":') + spaced == decoded_keys:
        return
    in_text = sum(1 for colon in _STRING_TOKEN.findall(body) if colon)
    if in_text != decoded_keys:
        from nudge.errors import ValidationError

        raise ValidationError("JSON object has a duplicate key", field="body")


def _count_keys(value: Any) -> int:
    """Keys of every object in a decoded JSON value (iterative: no call per object)."""
    if type(value) is not dict and type(value) is not list:
        return 0
    n = 0
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        v = pop()
        if type(v) is dict:
            n += len(v)
            v = v.values()
        for x in v:
            t = type(x)
            if t is dict or t is list:
                push(x)
    return n


def derive_message_id(*parts: Any) -> str:
    """A stable id for a record that came without one, so a retried upload is stored once."""
    return hashlib.blake2b(_ENCODER.encode(parts), digest_size=16).hexdigest()


def require(cond: bool, message: str, code: int = E_SHAPE) -> None:
    if not cond:
        raise RecordInvalid(code, message)
