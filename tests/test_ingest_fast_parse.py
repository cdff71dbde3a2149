"""The fast path of ``parse_records`` gives exactly the records (and errors) of the
one-by-one ``parse_record`` it stands in for.

Each case is parsed both ways: ``parse_records`` (fast path where the shape allows, the
rest handed to ``parse_record``) and ``parse_record`` alone; records must be equal field by
field (message ids too, derived ones included) and errors must carry the same code and text.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from nudge import demo
from nudge.clock import clock
from nudge.config import load_settings
from nudge.ingest.records import Record, RecordError, RecordInvalid
from nudge.ingest.upload import _FAST_KEYS, _bulk_events, _fast_event, parse_record, parse_records

LIMITS = load_settings().limits
NOW = float(int(clock.now()))  # check_ts compares with the clock itself


def reference(items: list[Any]) -> tuple[list[Record], list[RecordError]]:
    records, errors = [], []
    for i, item in enumerate(items):
        try:
            records.append(parse_record(item, i, NOW, LIMITS))
        except RecordInvalid as e:
            errors.append(RecordError(i, e.code, e.error))
    return records, errors


def both(items: list[Any]) -> tuple[Any, Any]:
    return parse_records(copy.deepcopy(items), 0, NOW, LIMITS), reference(copy.deepcopy(items))


def fast_taken(item: Any) -> bool:
    s = LIMITS.max_string_bytes // 4
    return (isinstance(item, dict) and item.get("type") == "event"
            and _FAST_KEYS.issuperset(item) and _fast_event(
        copy.deepcopy(item), 0, NOW, LIMITS.max_name_len, LIMITS.max_properties, s,
        NOW + LIMITS.future_skew_s) is not None)


def ev(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"type": "event", "identity": "u1", "ts": 1_700_000_000,
                            "evtName": "Viewed", "evtData": {"a": 1}}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()

CASES = [
    # (case, whether the fast path itself takes it)
    (ev(), True),
    (ev(msgId="m-1"), True),
    (ev(ts=_DROP), True),  # ts defaults to now
    (ev(ts=1_700_000_000.25), True),
    (ev(identity=_DROP, objectId="dev-1"), True),
    (ev(evtData=_DROP), True),
    (ev(evtData=None), True),
    (ev(evtData={"s": "x", "n": 2.5, "i": -3, "b": False, "z": None, "big": 2**60}), True),
    (ev(evtData={"s": "é" * 128}), True),  # 128 chars = 256 bytes: short enough either way
    # everything below leaves the fast path; parse_record decides
    (ev(identity=_DROP, objectId="dev-1", identity2=None), False),  # unknown field
    (ev(objectId="dev-1"), False),  # two identifiers
    (ev(identity=" u1 "), False),
    (ev(identity=""), False),
    (ev(identity=123), False),
    (ev(identity="x" * 600), False),
    (ev(email="A@B.com"), False),
    (ev(ts=-1), False),
    (ev(ts=True), False),
    (ev(ts="1700000000"), False),
    (ev(ts=NOW + 10 * 86400), False),
    (ev(ts=math.inf), False),
    (ev(evtName="$internal"), False),
    (ev(evtName=""), False),
    (ev(evtName="x" * 121), False),
    (ev(evtName="bad\nname"), False),
    (ev(evtName=7), False),
    (ev(evtData=[]), False),
    (ev(evtData=0), False),
    (ev(evtData={"d": "$D_1700000000"}), False),
    (ev(evtData={"d": "$D_nope"}), False),
    (ev(evtData={"l": ["a", 1]}), False),
    (ev(evtData={"o": {"k": {"k": 1}}}), False),
    (ev(evtData={"s": "é" * 300}), False),  # 600 bytes: over the limit
    (ev(evtData={"s": "a" * 200}), False),  # 200 bytes: allowed, decided by parse_record
    (ev(evtData={"": 1}), False),
    (ev(evtData={"k" * 121: 1}), False),
    (ev(evtData={"tab\tname": 1}), False),
    (ev(evtData={"inf": math.inf}), False),
    (ev(evtData={"nan": math.nan}), False),
    (ev(evtData={"huge": 10**400}), False),
    (ev(evtData={f"p{i}": i for i in range(300)}), False),
    (ev(msgId=""), False),
    (ev(msgId=5), False),
    (ev(msgId="m" * 129), False),
    (ev(profileData={"a": 1}), False),
    ({"type": "profile", "identity": "u1", "profileData": {"City": "X"}}, False),
    ({"type": "token", "identity": "u1", "tokenData": {"type": "fcm", "id": "t"}}, False),
    ({"type": "event"}, False),
    ("not an object", False),
]


@pytest.mark.parametrize(("item", "fast"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_each_case_matches_parse_record(item: Any, fast: bool) -> None:
    assert fast_taken(item) is fast
    got, want = both([item])
    assert got == want


def test_a_mixed_batch_keeps_indices_and_order() -> None:
    items = [item for item, _ in CASES]
    (records, errors), want = both(items)
    assert (records, errors) == want
    assert errors, "the table has invalid cases"
    assert [r.index for r in records] == sorted(r.index for r in records)
    # An offset shifts every index (bulk import reports file rows).
    shifted, bad = parse_records(copy.deepcopy(items), 1000, NOW, LIMITS)
    assert [r.index for r in shifted] == [r.index + 1000 for r in records]
    assert [e.index for e in bad] == [e.index + 1000 for e in errors]


def test_demo_records_match_parse_record() -> None:
    chunk = next(iter(demo.generate(300, 6000, seed=3, now=NOW, chunk_size=5000)))
    assert sum(fast_taken(r) for r in chunk) > len(chunk) // 2  # the demo takes the fast path
    got, want = both(chunk)
    assert got == want
    assert not got[1]


def test_bulk_check_takes_whole_batches_and_leaves_odd_ones_to_the_record_path() -> None:
    chunk = next(iter(demo.generate(300, 6000, seed=5, now=NOW, chunk_size=5000)))
    events = [r for r in chunk if r["type"] == "event"]
    max_ts = NOW + LIMITS.future_skew_s
    bulk = _bulk_events(copy.deepcopy(events), list(range(len(events))), NOW, LIMITS, max_ts)
    assert bulk is not None  # the demo's events are all plain
    assert bulk == reference(events)[0]
    # One record of any odd kind makes the bulk check hand the batch to the record path.
    for odd, _ in CASES:
        if isinstance(odd, dict) and odd.get("type") == "event" and _FAST_KEYS.issuperset(odd):
            batch = [*events[:50], odd]
            got = _bulk_events(copy.deepcopy(batch), list(range(51)), NOW, LIMITS, max_ts)
            if not fast_taken(odd):
                assert got is None, odd
            else:
                assert got == reference(batch)[0]
