"""Flows (``POST /1/analytics/flows``) against the plain-Python reference
(tests/analytics_paths_reference.py): nodes, links, ends and the most common sequences.

One server for the module; sessions with repeats and inactivity gaps, uploaded shuffled
(out of time order) and partly compacted.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from analytics_paths_reference import US, Ev, flow_graph, flow_paths, is_event
from analytics_reference import local, post, rejected, start_server

from conftest import NudgeServer

MINUTE, HOUR = 60, 3_600
LO, HI = local(2026, 10, 27), local(2026, 11, 3)
NAMES = ["Home", "Search", "View", "Cart", "Buy", "Ping"]


def generate(seed: int = 31) -> list[Ev]:
    """Sessions of a few to a dozen events, minutes apart (with repeats: ``View View``),
    separated by hours; a few gaps sit right at 30 minutes."""
    rng = random.Random(seed)
    events = []
    for i in range(60):
        t = LO - 2 * HOUR + rng.randrange(7 * 24 * HOUR)
        for _ in range(rng.randint(1, 6)):
            prev = None
            for _ in range(rng.randint(1, 12)):
                name = prev if prev and rng.random() < 0.25 else \
                    rng.choices(NAMES, [10, 10, 30, 12, 5, 8])[0]
                props = {"n": len(events)}
                if name == "View":
                    props["p"] = rng.randint(0, 3)
                events.append(Ev(f"w{i:02d}", t * US, 0, name, props))
                prev = name
                t += rng.choice([1, 30, 5 * MINUTE, 20 * MINUTE, 30 * MINUTE, 30 * MINUTE + 1])
            t += rng.randint(1, 30) * HOUR
    return events


@pytest.fixture(scope="module")
def data() -> list[Ev]:
    return generate()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, data: list[Ev]) -> Iterator[NudgeServer]:
    server = start_server(tmp_path_factory.mktemp("flows"))
    try:
        order = list(range(len(data)))
        random.Random(4).shuffle(order)
        for n, i in enumerate(order):  # seq = arrival order
            e = data[i]
            data[i] = Ev(e.user, e.t, n, e.event, e.props)
        for k in range(0, len(order), 250):
            batch = [data[i] for i in order[k:k + 250]]
            r = server.upload([{"type": "event", "identity": e.user, "ts": e.t // US,
                                "evtName": e.event, "evtData": e.props} for e in batch])
            assert r.status_code == 200 and r.json()["processed"] == len(batch), r.text
        yield server
    finally:
        server.stop()


def check(out: dict[str, Any], paths: list[tuple[str, ...]], direction: str, steps: int,
          top: int) -> None:
    nodes, links, ends = flow_graph(paths, direction, steps, top)
    key = {n["id"]: (n["step"], n["event"]) for n in out["nodes"]}
    assert {key[n["id"]]: n["paths"] for n in out["nodes"]} == dict(nodes)
    assert {key[n["id"]]: n["ends"] for n in out["nodes"] if n["ends"]} == dict(ends)
    assert {(key[lk["source"]], key[lk["target"]]): lk["value"] for lk in out["links"]} == \
        dict(links)
    assert out["paths"] == len(paths)
    for n in out["nodes"]:
        assert n.get("other", False) == (n["event"] is None)


def sequences(paths: list[tuple[str, ...]], direction: str, steps: int, limit: int
              ) -> list[dict[str, Any]]:
    """Most common paths; ties by names, a missing step ("") sorting first."""
    counts = Counter(paths)

    def padded(p: tuple[str, ...]) -> tuple[str, ...]:
        pad = ("",) * (steps + 1 - len(p))
        return p + pad if direction == "after" else pad + p

    ranked = sorted(counts, key=lambda p: (-counts[p], padded(p)))[:limit]
    return [{"events": list(p), "paths": counts[p]} for p in ranked]


@pytest.mark.parametrize(("direction", "steps", "top", "gap"), [
    ("after", 4, 2, 30 * MINUTE), ("before", 3, 3, 30 * MINUTE), ("after", 6, 10, 10 * MINUTE),
    ("before", 1, 1, HOUR)])
def test_matches_reference(srv: NudgeServer, data: list[Ev], direction: str, steps: int,
                           top: int, gap: int) -> None:
    out = post(srv, "flows", {"event": "View", "direction": direction, "steps": steps,
                              "top": top, "session_gap": {"minutes": gap / 60},
                              "sequences": 8, "from": LO, "to": HI})
    paths = flow_paths(data, is_event("View"), direction, steps, gap * US, LO * US, HI * US)
    check(out, paths, direction, steps, top)
    assert out["sequences"] == sequences(paths, direction, steps, 8)
    assert out["users"] == len({e.user for e in data if e.event == "View"
                                and LO * US <= e.t < HI * US})
    assert any(n.get("other") for n in out["nodes"]) or top >= len(NAMES)


def test_anchor_filter_and_exclude(srv: NudgeServer, data: list[Ev]) -> None:
    out = post(srv, "flows", {"event": "View", "where": [{"property": "p", "op": "gte",
                                                          "value": 2}],
                              "exclude": ["Ping", "Home"], "steps": 3, "top": 3,
                              "from": LO, "to": HI})
    paths = flow_paths(data, is_event("View", p=lambda v: v >= 2), "after", 3, 30 * MINUTE * US,
                       LO * US, HI * US, {"Ping", "Home"})
    check(out, paths, "after", 3, 3)
    assert out["sequences"] == sequences(paths, "after", 3, 10)
    assert not any(n["event"] in ("Ping", "Home") for n in out["nodes"])


def test_segment_filter(srv: NudgeServer, data: list[Ev]) -> None:
    buyers = {e.user for e in data if e.event == "Buy"}
    out = post(srv, "flows", {"event": "View", "steps": 2, "top": 3, "from": LO, "to": HI,
                              "segment": {"did": {"event": "Buy"}}})
    mine = [e for e in data if e.user in buyers]
    paths = flow_paths(mine, is_event("View"), "after", 2, 30 * MINUTE * US, LO * US, HI * US)
    check(out, paths, "after", 2, 3)
    assert 0 < out["users"] < len({e.user for e in data if e.event == "View"})


def test_repeats_collapse_and_gap_splits() -> None:
    """The reference's own rules on a hand-made stream (the server follows it above)."""
    seq = [("View", 0), ("View", 10), ("Cart", 20), ("Cart", 30), ("View", 40),
           ("Buy", 40 + 31 * MINUTE), ("View", 50 + 31 * MINUTE)]
    evs = [Ev("u", t * US, i, name) for i, (name, t) in enumerate(seq)]
    assert flow_paths(evs, is_event("View"), "after", 4, 30 * MINUTE * US, 0, 10**12) == \
        [("View", "Cart", "View"), ("View",)]


def test_empty(srv: NudgeServer) -> None:
    out = post(srv, "flows", {"event": "Nothing", "from": LO, "to": HI})
    assert (out["paths"], out["users"], out["nodes"], out["links"], out["sequences"]) == \
        (0, 0, [], [], [])


@pytest.mark.parametrize(("body", "field"), [
    ({"steps": 11}, "steps"), ({"steps": 0}, "steps"), ({"direction": "sideways"}, "direction"),
    ({"session_gap": {"minutes": 0}}, "session_gap.minutes"), ({"top": 0}, "top"),
    ({"exclude": ["View"]}, "exclude[0]"), ({"exclude": [3]}, "exclude[0]"),
    ({"event": None}, "event"), ({"from": HI, "to": LO}, "from"), ({"sequences": 1000},
                                                                    "sequences"),
    ({"where": [{"property": "p", "op": "near"}]}, "where[0].op"), ({"depth": 3}, "depth"),
])
def test_bad_requests_name_the_field(srv: NudgeServer, body: dict[str, Any], field: str) -> None:
    assert rejected(srv, "flows", {"event": "View", "from": LO, "to": HI, **body}) == field
