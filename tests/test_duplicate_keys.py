"""The duplicate-key check of request bodies against an independent oracle.

``check_duplicate_keys`` counts keys in the raw text with a fast upper bound and falls back to
an exact pass; the oracle is Python's own JSON parser with an ``object_pairs_hook`` that sees
every key. Bodies are generated as text, with the cases that could fool a byte count: quotes,
colons and backslashes inside strings, escaped key spellings, whitespace around colons.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nudge.errors import ValidationError
from nudge.ingest.validate import check_duplicate_keys

# String literals as they may appear in JSON text (some equal after decoding: "a", "\u0061").
STRINGS = ['"a"', '"b"', '"\\u0061"', '""', '":"', '"\\":"', '"\\\\"', '"x\\" :y"', '" : "',
           '"\\\\\\":"', '"a\\\\"', '"\\u0022:"']
assert all(isinstance(json.loads(x), str) for x in STRINGS)
WS = st.sampled_from(["", "", " ", "\n", " \t ", "\r\n"])
SCALARS = st.one_of(st.sampled_from(STRINGS), st.sampled_from(["1", "-2.5", "true", "null"]))


def _obj(members: list[tuple[str, str, str, str]]) -> str:
    """An object's text; whitespace before the key, between key and colon, after the colon."""
    return "{" + ",".join(f"{a}{k}{b}:{a}{v}" for a, k, b, v in members) + "}"


JSON_TEXT = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(st.tuples(WS, st.sampled_from(STRINGS), WS, inner), max_size=5).map(_obj)),
    max_leaves=12)


def has_duplicate(text: str) -> bool:
    found = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal found
        keys = [k for k, _ in items]
        found = found or len(keys) != len(set(keys))
        return dict(items)

    json.loads(text, object_pairs_hook=pairs)
    return found


@settings(max_examples=500, deadline=None)
@given(JSON_TEXT)
def test_duplicate_keys_found_exactly(text: str) -> None:
    body = text.encode()
    decoded = msgspec.json.decode(body)
    try:
        check_duplicate_keys(body, decoded)
        rejected = False
    except ValidationError:
        rejected = True
    assert rejected == has_duplicate(text)


def test_duplicate_key_in_an_event_is_found() -> None:
    body = b'{"d": [{"type": "event", "evtData": {"a": 1, "b": ":", "a": 2}}]}'
    with pytest.raises(ValidationError, match="duplicate key"):
        check_duplicate_keys(body, msgspec.json.decode(body))
