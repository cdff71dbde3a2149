"""The published JSON Schema agrees with the parser, and the builder produces valid JSON."""

from __future__ import annotations

import json
import time

import jsonschema
import pytest

from nudge.query.segments import builder as b
from nudge.query.segments.model import _KINDS, FILTER_OPS, DefinitionError, parse
from nudge.query.segments.schema import SEGMENT_SCHEMA

NOW = time.time()
VALID = [
    b.did("Charged", b.prop("Amount") > 500, at_least=3, window=b.last(days=30)).to_json(),
    b.did_not("App Uninstalled", window=b.between("2026-01-01T00:00:00Z", NOW - 10)).to_json(),
    (b.aggregate("sum", "Charged", "Amount", window=b.last(days=90)) >= 5000).to_json(),
    b.first_time("Charged", window=b.last(days=7)).to_json(),
    b.last_did("App Launched", more_than=b.duration(days=14)).to_json(),
    b.sequence("Added To Cart", b.event("Charged", b.prop("Items") >= 1),
               within=b.duration(hours=24), then_happened=False).to_json(),
    (b.prop.profile("Signup Date").more_than_days_ago(30)).to_json(),
    (b.prop.profile("Tags").is_in("vip", "beta") | ~b.reachable("email")).to_json(),
    (b.in_segment(3) & b.in_segment(4, member=False)).to_json(),
    b.did("Launched", b.prop("Platform").not_exists(), window=b.first_days(7)).to_json(),
]
INVALID = [
    {"did": {"event": "E", "where": [{"property": "a", "op": "zz", "value": 1}]}},
    {"did": {"event": "E", "count": {"op": ">=", "value": -1}}},
    {"profile": {"property": "a", "op": "exists", "value": 1}},
    {"and": []},
    {"sequence": {"first": {"event": "A"}}},
    {"did": {"event": "E", "window": {"last": {"days": 0}}}},
    {"nope": {}},
]


@pytest.mark.parametrize("definition", VALID)
def test_builder_output_parses_and_validates(definition: dict) -> None:  # type: ignore[type-arg]
    parse(definition, NOW)
    jsonschema.validate(definition, SEGMENT_SCHEMA)


@pytest.mark.parametrize("definition", INVALID)
def test_schema_and_parser_both_refuse(definition: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(DefinitionError):
        parse(definition, NOW)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(definition, SEGMENT_SCHEMA)


def test_schema_names_every_condition_and_operator() -> None:
    text = json.dumps(SEGMENT_SCHEMA)
    assert all(f'"{kind}"' in text for kind in _KINDS)
    assert all(f'"{op}"' in text for op in FILTER_OPS)
    jsonschema.Draft202012Validator.check_schema(SEGMENT_SCHEMA)
