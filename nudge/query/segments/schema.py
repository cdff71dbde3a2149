"""The published JSON Schema of segment definitions (docs/segments.md, GET /1/segments/schema).

``model.parse`` is the authority; tests check that definitions the parser accepts validate
against this schema and that the schema names every condition and operator the parser has.
"""

from __future__ import annotations

from typing import Any

from nudge.predict.names import BUCKETS, RFM_SEGMENT_NAMES

from .model import AGG_FNS, CHANNELS, COUNT_OPS, FILTER_OPS, UNITS

_duration: dict[str, Any] = {
    "type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
    "properties": {u: {"type": "number", "exclusiveMinimum": 0} for u in UNITS},
}
_time = {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]}
_window = {
    "type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
    "properties": {
        "last": {"$ref": "#/$defs/duration"},
        "between": {"type": "array", "prefixItems": [_time, _time], "minItems": 2,
                    "maxItems": 2},
        "first_days_after_first_seen": {"type": "number", "exclusiveMinimum": 0},
    },
}
_scalar = {"type": ["string", "number", "boolean"]}
_filter = {
    "type": "object", "required": ["property", "op"], "additionalProperties": False,
    "properties": {
        "property": {"type": "string", "minLength": 1, "maxLength": 512},
        "op": {"enum": list(FILTER_OPS)},
        "value": {"oneOf": [_scalar, {"type": "array", "items": _scalar, "minItems": 1}]},
    },
    # exists / not_exists take no value; every other operator needs one.
    "if": {"properties": {"op": {"enum": ["exists", "not_exists"]}}},
    "then": {"not": {"required": ["value"]}},
    "else": {"required": ["value"]},
}
_where = {"type": "array", "items": {"$ref": "#/$defs/filter"}}
_event = {"type": "string", "minLength": 1, "maxLength": 512}
_spec = {"type": "object", "required": ["event"], "additionalProperties": False,
         "properties": {"event": _event, "where": _where}}


def _one(name: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": [name], "additionalProperties": False,
            "properties": {name: body}}


_conditions = [
    _one("did", {"type": "object", "required": ["event"], "additionalProperties": False,
                 "properties": {"event": _event, "where": _where, "window": _window,
                                "count": {"type": "object", "required": ["op", "value"],
                                          "additionalProperties": False,
                                          "properties": {"op": {"enum": list(COUNT_OPS)},
                                                         "value": {"type": "integer",
                                                                   "minimum": 0}}}}}),
    _one("did_not", {"type": "object", "required": ["event"], "additionalProperties": False,
                     "properties": {"event": _event, "where": _where, "window": _window}}),
    _one("aggregate", {"type": "object",
                       "required": ["event", "property", "fn", "op", "value"],
                       "additionalProperties": False,
                       "properties": {"event": _event, "where": _where, "window": _window,
                                      "property": {"type": "string"},
                                      "fn": {"enum": list(AGG_FNS)},
                                      "op": {"enum": list(COUNT_OPS)},
                                      "value": {"type": "number"}}}),
    _one("first_time", {"type": "object", "required": ["event", "window"],
                        "additionalProperties": False,
                        "properties": {"event": _event, "where": _where, "window": _window}}),
    _one("last_did", {"type": "object", "required": ["event"], "additionalProperties": False,
                      "minProperties": 2, "maxProperties": 3,
                      "properties": {"event": _event, "where": _where,
                                     "more_than": {"$ref": "#/$defs/duration"},
                                     "less_than": {"$ref": "#/$defs/duration"}}}),
    _one("sequence", {"type": "object", "required": ["first", "then"],
                      "additionalProperties": False,
                      "properties": {"first": _spec, "then": _spec,
                                     "within": {"$ref": "#/$defs/duration"},
                                     "window": _window, "then_happened": {"type": "boolean"}}}),
    _one("profile", {"$ref": "#/$defs/filter"}),
    _one("reachable", {"type": "object", "required": ["channel"], "additionalProperties": False,
                       "properties": {"channel": {"enum": list(CHANNELS)}}}),
    _one("segment", {"type": "object", "required": ["id"], "additionalProperties": False,
                     "properties": {"id": {"type": "integer", "minimum": 0},
                                    "member": {"type": "boolean"}}}),
    _one("rfm_segment", {"type": "object", "required": ["in"], "additionalProperties": False,
                         "properties": {"in": {"type": "array", "minItems": 1,
                                               "items": {"enum": list(RFM_SEGMENT_NAMES)}}}}),
    _one("rfm_score", {"type": "object", "minProperties": 1, "additionalProperties": False,
                       "properties": {k: {"type": "array", "minItems": 1,
                                          "items": {"type": "integer", "minimum": 1,
                                                    "maximum": 5}} for k in ("r", "f", "m")}}),
    _one("intent_bucket", {"type": "object", "required": ["goal", "in"],
                           "additionalProperties": False,
                           "properties": {"goal": {"type": "integer", "minimum": 1},
                                          "in": {"type": "array", "minItems": 1,
                                                 "items": {"enum": list(BUCKETS)}}}}),
    _one("intent_score", {"type": "object", "required": ["goal", "op", "value"],
                          "additionalProperties": False,
                          "properties": {"goal": {"type": "integer", "minimum": 1},
                                         "op": {"enum": list(COUNT_OPS)},
                                         "value": {"type": "number", "minimum": 0,
                                                   "maximum": 1}}}),
    _one("and", {"type": "array", "minItems": 1, "items": {"$ref": "#"}}),
    _one("or", {"type": "array", "minItems": 1, "items": {"$ref": "#"}}),
    _one("not", {"$ref": "#"}),
]

SEGMENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://nudge.dev/schemas/segment.json",
    "title": "Nudge segment definition",
    "oneOf": _conditions,
    "$defs": {"duration": _duration, "filter": _filter},
}
