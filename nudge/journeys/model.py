"""The journey definition: JSON (with a published JSON Schema) and a Python builder.

A journey is a directed graph of nodes that each person walks through::

    {"name": "Abandoned cart",
     "entry": {"event": "Added To Cart", "where": [...]},    # or {"segment_id": 3},
                                                            # {"segment": {...}}, {"api": true}
     "start": "wait",
     "nodes": [
       {"id": "wait", "type": "wait_event", "event": "Charged", "match": ["cart_id"],
        "timeout": {"minutes": 30}, "on_event": "done", "on_timeout": "push"},
       {"id": "push", "type": "send", "campaign_id": 7, "next": "day"},
       {"id": "day", "type": "delay", "duration": {"days": 1}, "next": "discount"},
       {"id": "discount", "type": "send", "campaign_id": 8, "next": "done"},
       {"id": "done", "type": "exit"}],
     "goal": {"event": "Charged"},                 # exits as converted
     "exit_when": [{"event": "Uninstalled"}],      # global exit criteria
     "reentry": {"mode": "never" | "after_exit" | "after", "after": {"days": 7},
                 "max_entries": 3},
     "max_users": 100000}

:func:`parse` turns the JSON into frozen nodes (every error a ``ValidationError`` naming
the field); ``validate.py`` checks the graph. :class:`JourneyBuilder` produces the same JSON
from Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nudge.engage.campaigns import Cap, QuietHours, _clock_time, _obj, bad, caps, duration
from nudge.engage.campaigns import quiet_hours as parse_quiet_hours
from nudge.query.segments.model import DefinitionError, Filter, _Parser

NODE_TYPES = ("send", "delay", "wait_event", "condition", "split", "update_profile",
              "webhook", "exit")
REENTRY = ("never", "after_exit", "after")
# Condition splits: a saved segment, any segment definition, one profile property filter,
# or an event (with property filters, at least N times) since the person entered.
CONDITIONS = ("segment_id", "segment", "profile", "did")
MAX_NODES = 200
MAX_ID = 32


@dataclass(frozen=True)
class EventMatch:
    event: str
    where: tuple[Filter, ...] = ()


@dataclass(frozen=True)
class Node:
    id: str
    type: str
    next: str | None = None  # send, delay, update_profile, webhook
    # delay
    seconds: float | None = None  # a fixed duration (hours, minutes, seconds)
    days: int = 0  # calendar days in the user's timezone (same wall time, DST-aware)
    until_time: int | None = None  # minutes after local midnight
    until_property: str | None = None
    offset: float = 0.0
    # wait_event
    wait: EventMatch | None = None
    match: tuple[str, ...] = ()
    timeout: float | None = None
    on_event: str | None = None
    on_timeout: str | None = None
    # condition
    segment: dict[str, Any] | None = None  # {"segment_id": n} or {"definition": {...}}
    did: EventMatch | None = None  # the event (with property filters) since entry
    did_count: int = 1  # ... at least this many times
    yes: str | None = None
    no: str | None = None
    # split
    branches: tuple[tuple[float, str | None], ...] = ()
    # send / update_profile / webhook
    campaign_id: int | None = None
    set: dict[str, Any] = field(default_factory=dict)
    url: str | None = None

    def targets(self) -> list[tuple[str, str | None]]:
        """(branch name, target node) for every outgoing edge this node must have."""
        if self.type == "exit":
            return []
        if self.type == "wait_event":
            return [("on_event", self.on_event), ("on_timeout", self.on_timeout)]
        if self.type == "condition":
            return [("yes", self.yes), ("no", self.no)]
        if self.type == "split":
            return [(f"branches[{i}].next", t) for i, (_, t) in enumerate(self.branches)]
        return [("next", self.next)]


@dataclass(frozen=True)
class Journey:
    name: str
    entry: dict[str, Any]
    entry_event: EventMatch | None
    start: str
    nodes: dict[str, Node]
    order: tuple[str, ...]  # node ids in definition order (for error paths)
    goal: EventMatch | None
    exit_when: tuple[EventMatch, ...]
    reentry: str
    reentry_after: float
    max_entries: int | None
    max_users: int | None
    quiet_hours: QuietHours | None = None  # replaces the sent campaigns' own (caps.py)
    caps: tuple[Cap, ...] = ()  # messages from this journey per person (caps.py)

    @property
    def segment_entry(self) -> bool:
        return "segment_id" in self.entry or "definition" in self.entry

    @property
    def date_entry(self) -> bool:
        return "date_property" in self.entry

    def exit_events(self) -> set[str]:
        out = {m.event for m in self.exit_when}
        if self.goal:
            out.add(self.goal.event)
        return out


def _str(v: Any, f: str, maxlen: int = 200) -> str:
    if not isinstance(v, str) or not v or len(v) > maxlen:
        raise bad(f, f"must be a non-empty string of at most {maxlen} characters")
    return v


def _filters(v: Any, f: str) -> tuple[Filter, ...]:
    try:
        return tuple(_Parser(0).filters(v, f))
    except DefinitionError as e:
        raise bad(e.path, e.message.split(": ", 1)[-1]) from None


def _event(v: Any, f: str, extra: tuple[str, ...] = ()) -> EventMatch:
    o = _obj(v, f, ("event", "where", *extra))
    return EventMatch(_str(o.get("event"), f"{f}.event"), _filters(o.get("where"), f"{f}.where"))


def _target(o: dict[str, Any], key: str, f: str) -> str | None:
    v = o.get(key)
    if v is None:
        return None
    return _str(v, f"{f}.{key}", MAX_ID)


def _segment(o: dict[str, Any], f: str) -> dict[str, Any]:
    if "segment_id" in o:
        sid = o["segment_id"]
        if not isinstance(sid, int) or isinstance(sid, bool) or sid < 1:
            raise bad(f"{f}.segment_id", "must be a positive integer")
        return {"segment_id": sid}
    d = o.get("segment")
    if not isinstance(d, dict):
        raise bad(f"{f}.segment", "must be a segment definition (an object)")
    try:
        _Parser(0).node(d, f"{f}.segment")
    except DefinitionError as e:
        raise bad(e.path, e.message.split(": ", 1)[-1]) from None
    return {"definition": d}


def _node(v: Any, f: str) -> Node:
    if not isinstance(v, dict):
        raise bad(f, "must be an object")
    nid = _str(v.get("id"), f"{f}.id", MAX_ID)
    if not all(c.isalnum() or c in "_-" for c in nid):
        raise bad(f"{f}.id", "may contain only letters, digits, '_' and '-'")
    t = v.get("type")
    if t not in NODE_TYPES:
        raise bad(f"{f}.type", f"must be one of {', '.join(NODE_TYPES)}")
    common = ("id", "type", "label")
    if t == "exit":
        _obj(v, f, common)
        return Node(nid, t)
    if t == "send":
        o = _obj(v, f, (*common, "campaign_id", "next"))
        cid = o.get("campaign_id")
        if not isinstance(cid, int) or isinstance(cid, bool) or cid < 1:
            raise bad(f"{f}.campaign_id", "must be the id of a campaign (its content, "
                      "channels, fallback and policy are used)")
        return Node(nid, t, next=_target(o, "next", f), campaign_id=cid)
    if t == "delay":
        o = _obj(v, f, (*common, "duration", "until_time", "until_property", "offset", "next"))
        kinds = [k for k in ("duration", "until_time", "until_property") if k in o]
        if len(kinds) != 1:
            raise bad(f, "a delay needs exactly one of duration, until_time, until_property")
        days, secs, until, prop, off = 0, None, None, None, 0.0
        if "duration" in o:
            d = _obj(o["duration"], f"{f}.duration",
                     ("weeks", "days", "hours", "minutes", "seconds"))
            days = 0
            for k, mult in (("weeks", 7), ("days", 1)):
                x = d.get(k, 0)
                if not isinstance(x, int) or isinstance(x, bool) or x < 0:
                    raise bad(f"{f}.duration.{k}", "must be a whole number >= 0")
                days += x * mult
            rest = {k: d[k] for k in ("hours", "minutes") if k in d}
            secs = duration(rest, f"{f}.duration") if rest else 0.0
            x = d.get("seconds", 0)
            if not isinstance(x, int | float) or isinstance(x, bool) or x < 0:
                raise bad(f"{f}.duration.seconds", "must be a number >= 0")
            secs += float(x)
            if days == 0 and secs <= 0:
                raise bad(f"{f}.duration", "must be positive")
        elif "until_time" in o:
            until = _clock_time(o["until_time"], f"{f}.until_time")
        else:
            prop = _str(o["until_property"], f"{f}.until_property")
            if "offset" in o:
                sign = -1.0 if isinstance(o["offset"], dict) and o["offset"].get("before") else 1.0
                raw = {k: x for k, x in o["offset"].items() if k != "before"} \
                    if isinstance(o["offset"], dict) else o["offset"]
                off = sign * duration(raw, f"{f}.offset")
        return Node(nid, t, next=_target(o, "next", f), seconds=secs, days=days,
                    until_time=until, until_property=prop, offset=off)
    if t == "wait_event":
        o = _obj(v, f, (*common, "event", "where", "match", "timeout", "on_event", "on_timeout"))
        m = o.get("match") or []
        if not isinstance(m, list) or not all(isinstance(x, str) and x for x in m):
            raise bad(f"{f}.match", "must be a list of entry event property names")
        if "timeout" not in o:
            raise bad(f"{f}.timeout", "is required (how long to wait)")
        return Node(nid, t, wait=_event({"event": o.get("event"), "where": o.get("where")}, f),
                    match=tuple(m), timeout=duration(o["timeout"], f"{f}.timeout"),
                    on_event=_target(o, "on_event", f), on_timeout=_target(o, "on_timeout", f))
    if t == "condition":
        o = _obj(v, f, (*common, *CONDITIONS, "yes", "no"))
        which = [k for k in CONDITIONS if k in o]
        if len(which) != 1:
            raise bad(f, f"a condition needs exactly one of {', '.join(CONDITIONS)}")
        seg: dict[str, Any] | None = None
        did: EventMatch | None = None
        count = 1
        if which[0] == "did":
            did = _event(o["did"], f"{f}.did", ("count",))
            c = o["did"].get("count", 1)
            if not isinstance(c, int) or isinstance(c, bool) or c < 1:
                raise bad(f"{f}.did.count", "must be a positive integer (at least that many "
                          "times since entry)")
            count = c
        elif which[0] == "profile":
            d = {"profile": o["profile"]}
            try:
                _Parser(0).node(d, f)  # errors name nodes[i].profile.<field>
            except DefinitionError as e:
                raise bad(e.path, e.message.split(": ", 1)[-1]) from None
            seg = {"definition": d}
        else:
            seg = _segment(o, f)
        return Node(nid, t, segment=seg, did=did, did_count=count, yes=_target(o, "yes", f),
                    no=_target(o, "no", f))
    if t == "split":
        o = _obj(v, f, (*common, "branches"))
        bs = o.get("branches")
        if not isinstance(bs, list) or len(bs) < 2:
            raise bad(f"{f}.branches", "must list at least 2 branches")
        out = []
        for i, b in enumerate(bs):
            bo = _obj(b, f"{f}.branches[{i}]", ("percent", "next", "name"))
            p = bo.get("percent")
            if not isinstance(p, int | float) or isinstance(p, bool) or not 0 < p <= 100:
                raise bad(f"{f}.branches[{i}].percent", "must be a number in (0, 100]")
            out.append((float(p), _target(bo, "next", f"{f}.branches[{i}]")))
        if abs(sum(p for p, _ in out) - 100.0) > 1e-6:
            raise bad(f"{f}.branches", "percentages must add up to 100")
        return Node(nid, t, branches=tuple(out))
    if t == "update_profile":
        o = _obj(v, f, (*common, "set", "next"))
        s = o.get("set")
        if not isinstance(s, dict) or not s or not all(isinstance(k, str) and k for k in s):
            raise bad(f"{f}.set", "must be an object of profile properties")
        for k, x in s.items():
            if not (x is None or isinstance(x, str | int | float | bool)):
                raise bad(f"{f}.set.{k}", "must be a string, number, boolean or null")
        return Node(nid, t, next=_target(o, "next", f), set=dict(s))
    o = _obj(v, f, (*common, "url", "next"))  # webhook
    url = o.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise bad(f"{f}.url", "must be an http(s) URL")
    return Node(nid, t, next=_target(o, "next", f), url=url)


ENTRIES = ("event", "segment_id", "segment", "date_property", "api")


def _date_entry(o: dict[str, Any]) -> dict[str, Any]:
    """``{"date_property", "offset"?: {"days"|"weeks", "before"?}, "at"?: "HH:MM"}``:
    enter on the property's calendar date shifted by whole days, at ``at`` (default 09:00)
    in the person's timezone."""
    prop = _str(o["date_property"], "entry.date_property")
    days = 0
    if o.get("offset") is not None:
        off = _obj(o["offset"], "entry.offset", ("days", "weeks", "before"))
        for k, mult in (("weeks", 7), ("days", 1)):
            x = off.get(k, 0)
            if not isinstance(x, int) or isinstance(x, bool) or x < 0:
                raise bad(f"entry.offset.{k}", "must be a whole number >= 0 (calendar days)")
            days += x * mult
        before = off.get("before", False)
        if not isinstance(before, bool):
            raise bad("entry.offset.before", "must be true or false")
        days = -days if before else days
    at = _clock_time(o.get("at", "09:00"), "entry.at")
    return {"date_property": prop, "offset_days": days, "at_minutes": at}


def _entry(v: Any) -> tuple[dict[str, Any], EventMatch | None]:
    o = _obj(v, "entry", ("event", "where", "segment_id", "segment", "date_property",
                          "offset", "at", "api"))
    kinds = [k for k in ENTRIES if k in o]
    if len(kinds) != 1:
        raise bad("entry", f"needs exactly one of {', '.join(ENTRIES)}")
    extra = {"offset", "at"} & set(o)
    if extra and kinds[0] != "date_property":
        raise bad(f"entry.{sorted(extra)[0]}", "is only for a date_property entry")
    if kinds[0] == "date_property":
        return _date_entry(o), None
    if kinds[0] == "event":
        m = _event(o, "entry")
        return {"event": m.event, "where": o.get("where") or []}, m
    if kinds[0] == "api":
        if o["api"] is not True:
            raise bad("entry.api", "must be true")
        return {"api": True}, None
    return _segment(o, "entry"), None


def parse(body: Any) -> Journey:
    """The definition as frozen nodes; raises ``ValidationError`` naming the field."""
    o = _obj(body, "", ("name", "entry", "start", "nodes", "goal", "exit_when", "reentry",
                        "max_users", "quiet_hours", "caps", "description"))
    name = _str(o.get("name"), "name")
    entry, entry_event = _entry(o.get("entry"))
    nodes_raw = o.get("nodes")
    if not isinstance(nodes_raw, list) or not nodes_raw:
        raise bad("nodes", "must be a non-empty list")
    if len(nodes_raw) > MAX_NODES:
        raise bad("nodes", f"at most {MAX_NODES} nodes")
    nodes: dict[str, Node] = {}
    for i, raw in enumerate(nodes_raw):
        n = _node(raw, f"nodes[{i}]")
        if n.id in nodes:
            raise bad(f"nodes[{i}].id", f"duplicate node id {n.id!r}")
        nodes[n.id] = n
    start = _str(o.get("start"), "start", MAX_ID)
    goal = _event(o["goal"], "goal") if o.get("goal") is not None else None
    ex = o.get("exit_when") or []
    if not isinstance(ex, list):
        raise bad("exit_when", "must be a list of {event, where}")
    exit_when = tuple(_event(x, f"exit_when[{i}]") for i, x in enumerate(ex))
    r = _obj(o.get("reentry") or {}, "reentry", ("mode", "after", "max_entries"))
    mode = r.get("mode", "never")
    if mode not in REENTRY:
        raise bad("reentry.mode", f"must be one of {', '.join(REENTRY)}")
    after = 0.0
    if mode == "after":
        if "after" not in r:
            raise bad("reentry.after", "is required with mode 'after'")
        after = duration(r["after"], "reentry.after")
    me = r.get("max_entries")
    if me is not None and (not isinstance(me, int) or isinstance(me, bool) or me < 1):
        raise bad("reentry.max_entries", "must be a positive integer")
    mu = o.get("max_users")
    if mu is not None and (not isinstance(mu, int) or isinstance(mu, bool) or mu < 1):
        raise bad("max_users", "must be a positive integer")
    return Journey(name, entry, entry_event, start, nodes, tuple(nodes), goal, exit_when, mode,
                   after, me, mu, parse_quiet_hours(o.get("quiet_hours"), "quiet_hours"),
                   caps(o.get("caps"), "caps"))


def json_schema() -> dict[str, Any]:
    """The published JSON Schema of a journey definition (``GET /1/journeys/schema``)."""
    dur = {"type": "object", "additionalProperties": False,
           "properties": {k: {"type": "number", "minimum": 0}
                          for k in ("weeks", "days", "hours", "minutes", "seconds")}}
    ev = {"type": "object", "required": ["event"], "additionalProperties": False,
          "properties": {"event": {"type": "string", "minLength": 1},
                         "where": {"type": "array", "items": {"type": "object"}}}}
    nid = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$"}
    base = {"id": nid, "label": {"type": "string"}}

    def node(t: str, props: dict[str, Any], required: list[str]) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": False,
                "required": ["id", "type", *required],
                "properties": {**base, "type": {"const": t}, **props}}

    nodes = [
        node("send", {"campaign_id": {"type": "integer", "minimum": 1}, "next": nid},
             ["campaign_id", "next"]),
        node("delay", {"duration": dur, "until_time": {"type": "string",
                                                       "pattern": "^[0-2][0-9]:[0-5][0-9]$"},
                       "until_property": {"type": "string"},
                       "offset": {**dur, "properties": {**dur["properties"],  # type: ignore
                                                        "before": {"type": "boolean"}}},
                       "next": nid}, ["next"]),
        node("wait_event", {"event": {"type": "string"}, "where": {"type": "array"},
                            "match": {"type": "array", "items": {"type": "string"}},
                            "timeout": dur, "on_event": nid, "on_timeout": nid},
             ["event", "timeout", "on_event", "on_timeout"]),
        node("condition", {"segment_id": {"type": "integer"}, "segment": {"type": "object"},
                           "profile": {"type": "object", "required": ["property", "op"]},
                           "did": {**ev, "properties": {**ev["properties"],  # type: ignore
                                                        "count": {"type": "integer",
                                                                  "minimum": 1}}},
                           "yes": nid, "no": nid}, ["yes", "no"]),
        node("split", {"branches": {"type": "array", "minItems": 2, "items": {
            "type": "object", "required": ["percent", "next"],
            "properties": {"percent": {"type": "number", "exclusiveMinimum": 0,
                                       "maximum": 100}, "next": nid,
                           "name": {"type": "string"}}}}}, ["branches"]),
        node("update_profile", {"set": {"type": "object", "minProperties": 1}, "next": nid},
             ["set", "next"]),
        node("webhook", {"url": {"type": "string", "pattern": "^https?://"}, "next": nid},
             ["url", "next"]),
        node("exit", {}, []),
    ]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://nudge.dev/schemas/journey.json",
        "title": "Nudge journey", "type": "object", "additionalProperties": False,
        "required": ["name", "entry", "start", "nodes"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "description": {"type": "string"},
            "entry": {"oneOf": [ev,
                                {"type": "object", "required": ["segment_id"],
                                 "properties": {"segment_id": {"type": "integer"}}},
                                {"type": "object", "required": ["segment"],
                                 "properties": {"segment": {"type": "object"}}},
                                {"type": "object", "required": ["date_property"],
                                 "additionalProperties": False,
                                 "properties": {
                                     "date_property": {"type": "string", "minLength": 1},
                                     "offset": {"type": "object", "additionalProperties": False,
                                                "properties": {
                                                    "days": {"type": "integer", "minimum": 0},
                                                    "weeks": {"type": "integer", "minimum": 0},
                                                    "before": {"type": "boolean"}}},
                                     "at": {"type": "string",
                                            "pattern": "^[0-2][0-9]:[0-5][0-9]$"}}},
                                {"type": "object", "required": ["api"],
                                 "properties": {"api": {"const": True}}}]},
            "start": nid,
            "nodes": {"type": "array", "minItems": 1, "maxItems": MAX_NODES,
                      "items": {"oneOf": nodes}},
            "goal": ev,
            "exit_when": {"type": "array", "items": ev},
            "reentry": {"type": "object", "additionalProperties": False, "properties": {
                "mode": {"enum": list(REENTRY)}, "after": dur,
                "max_entries": {"type": "integer", "minimum": 1}}},
            "max_users": {"type": "integer", "minimum": 1},
            "quiet_hours": {"type": "object", "required": ["start", "end"],
                            "additionalProperties": False, "properties": {
                                "start": {"type": "string"}, "end": {"type": "string"},
                                "action": {"enum": ["delay", "drop"]}}},
            "caps": {"type": "array", "maxItems": 20, "items": {
                "type": "object", "required": ["max", "per"], "additionalProperties": False,
                "properties": {"max": {"type": "integer", "minimum": 0}, "per": dur,
                               "channel": {"type": "string"}}}},
        },
    }


class JourneyBuilder:
    """Builds the same JSON as the API takes.

    >>> j = (JourneyBuilder("Cart").on_event("Added To Cart").start("w")
    ...      .wait_event("w", "Charged", timeout={"minutes": 30}, on_event="x",
    ...                  on_timeout="s", match=["cart_id"])
    ...      .send("s", campaign_id=7, next="x").exit("x").goal("Charged"))
    >>> j.to_json()["start"]
    'w'
    """

    def __init__(self, name: str) -> None:
        self._d: dict[str, Any] = {"name": name, "nodes": []}

    def _add(self, node: dict[str, Any]) -> JourneyBuilder:
        self._d["nodes"].append({k: v for k, v in node.items() if v is not None})
        return self

    def on_event(self, event: str, where: list[dict[str, Any]] | None = None) -> JourneyBuilder:
        self._d["entry"] = {"event": event, **({"where": where} if where else {})}
        return self

    def on_segment(self, segment_id: int) -> JourneyBuilder:
        self._d["entry"] = {"segment_id": segment_id}
        return self

    def on_date(self, date_property: str, offset: dict[str, Any] | None = None,
                at: str | None = None) -> JourneyBuilder:
        """Enter on a date property, e.g. ``on_date("renewal_date", {"days": 3,
        "before": True}, at="09:00")``."""
        self._d["entry"] = {"date_property": date_property,
                            **({"offset": offset} if offset else {}), **({"at": at} if at else {})}
        return self

    def on_api(self) -> JourneyBuilder:
        self._d["entry"] = {"api": True}
        return self

    def start(self, node_id: str) -> JourneyBuilder:
        self._d["start"] = node_id
        return self

    def send(self, id: str, campaign_id: int, next: str) -> JourneyBuilder:
        return self._add({"id": id, "type": "send", "campaign_id": campaign_id, "next": next})

    def delay(self, id: str, next: str, duration: dict[str, Any] | None = None,
              until_time: str | None = None, until_property: str | None = None,
              offset: dict[str, Any] | None = None) -> JourneyBuilder:
        return self._add({"id": id, "type": "delay", "duration": duration,
                          "until_time": until_time, "until_property": until_property,
                          "offset": offset, "next": next})

    def wait_event(self, id: str, event: str, timeout: dict[str, Any], on_event: str,
                   on_timeout: str, where: list[dict[str, Any]] | None = None,
                   match: list[str] | None = None) -> JourneyBuilder:
        return self._add({"id": id, "type": "wait_event", "event": event, "where": where,
                          "match": match, "timeout": timeout, "on_event": on_event,
                          "on_timeout": on_timeout})

    def condition(self, id: str, yes: str, no: str, segment_id: int | None = None,
                  segment: dict[str, Any] | None = None, profile: dict[str, Any] | None = None,
                  did: dict[str, Any] | None = None) -> JourneyBuilder:
        return self._add({"id": id, "type": "condition", "segment_id": segment_id,
                          "segment": segment, "profile": profile, "did": did, "yes": yes,
                          "no": no})

    def split(self, id: str, branches: list[tuple[float, str]]) -> JourneyBuilder:
        return self._add({"id": id, "type": "split",
                          "branches": [{"percent": p, "next": n} for p, n in branches]})

    def update_profile(self, id: str, set: dict[str, Any], next: str) -> JourneyBuilder:
        return self._add({"id": id, "type": "update_profile", "set": set, "next": next})

    def webhook(self, id: str, url: str, next: str) -> JourneyBuilder:
        return self._add({"id": id, "type": "webhook", "url": url, "next": next})

    def exit(self, id: str) -> JourneyBuilder:
        return self._add({"id": id, "type": "exit"})

    def goal(self, event: str, where: list[dict[str, Any]] | None = None) -> JourneyBuilder:
        self._d["goal"] = {"event": event, **({"where": where} if where else {})}
        return self

    def exit_when(self, event: str, where: list[dict[str, Any]] | None = None
                  ) -> JourneyBuilder:
        self._d.setdefault("exit_when", []).append(
            {"event": event, **({"where": where} if where else {})})
        return self

    def reentry(self, mode: str, after: dict[str, Any] | None = None,
                max_entries: int | None = None) -> JourneyBuilder:
        self._d["reentry"] = {k: v for k, v in (("mode", mode), ("after", after),
                                                 ("max_entries", max_entries)) if v is not None}
        return self

    def quiet_hours(self, start: str, end: str, action: str = "delay") -> JourneyBuilder:
        self._d["quiet_hours"] = {"start": start, "end": end, "action": action}
        return self

    def cap(self, max: int, per: dict[str, Any], channel: str | None = None
            ) -> JourneyBuilder:
        self._d.setdefault("caps", []).append(
            {"max": max, "per": per, **({"channel": channel} if channel else {})})
        return self

    def max_users(self, n: int) -> JourneyBuilder:
        self._d["max_users"] = n
        return self

    def to_json(self) -> dict[str, Any]:
        import copy

        return copy.deepcopy(self._d)
