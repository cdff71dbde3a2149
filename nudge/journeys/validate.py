"""Graph checks of a journey: every problem is reported with the node id and the reason.

- a branch that is missing or points to no node (``missing branch``);
- a node no path from ``start`` reaches (``unreachable``);
- a cycle with no delay or wait in it (``cycle without a delay``): a person would loop
  forever within one instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nudge.errors import ValidationError

from .model import Journey, parse

WAITING = ("delay", "wait_event")


@dataclass(frozen=True)
class Problem:
    node: str | None
    field: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "field": self.field, "reason": self.reason}


def problems(j: Journey) -> list[Problem]:
    out: list[Problem] = []
    index = {nid: i for i, nid in enumerate(j.order)}
    if j.start not in j.nodes:
        out.append(Problem(None, "start", f"no node {j.start!r}"))
    for nid in j.order:
        n = j.nodes[nid]
        for branch, target in n.targets():
            f = f"nodes[{index[nid]}].{branch}"
            if target is None:
                out.append(Problem(nid, f, f"missing branch {branch!r}"))
            elif target not in j.nodes:
                out.append(Problem(nid, f, f"branch {branch!r} points to no node {target!r}"))
    if j.start in j.nodes:
        seen = {j.start}
        stack = [j.start]
        while stack:
            for _, t in j.nodes[stack.pop()].targets():
                if t in j.nodes and t not in seen:
                    seen.add(t)
                    stack.append(t)
        out += [Problem(nid, f"nodes[{index[nid]}]", "unreachable from start")
                for nid in j.order if nid not in seen]
    out += _instant_cycles(j, index)
    return out


def _instant_cycles(j: Journey, index: dict[str, int]) -> list[Problem]:
    """Cycles in the graph of edges leaving non-waiting nodes (Tarjan-free: DFS colours)."""
    edges = {nid: [t for _, t in n.targets() if t in j.nodes and j.nodes[t].type not in WAITING]
             for nid, n in j.nodes.items() if n.type not in WAITING}
    colour: dict[str, int] = {}
    found: list[Problem] = []
    reported: set[str] = set()

    def visit(start: str) -> None:
        stack = [(start, iter(edges.get(start, ())))]
        colour[start] = 1
        path = [start]
        while stack:
            nid, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[nid] = 2
                stack.pop()
                path.pop()
                continue
            c = colour.get(nxt, 0)
            if c == 1 and nxt not in reported:
                loop = path[path.index(nxt):]
                reported.add(nxt)
                found.append(Problem(nxt, f"nodes[{index[nxt]}]",
                                     "cycle without a delay: " + " -> ".join([*loop, nxt])))
            elif c == 0:
                colour[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(edges.get(nxt, ()))))

    for nid in edges:
        if colour.get(nid, 0) == 0:
            visit(nid)
    return found


def validate(body: Any) -> Journey:
    """Parse and check; the first problem is raised as a 400 naming the node and field."""
    j = parse(body)
    ps = problems(j)
    if ps:
        p = ps[0]
        raise JourneyInvalid(ps, f"{p.field}: node {p.node!r}: {p.reason}" if p.node
                             else f"{p.field}: {p.reason}", field=p.field)
    return j


class JourneyInvalid(ValidationError):
    code = "invalid_journey"

    def __init__(self, ps: list[Problem], message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.problems = ps

    def to_dict(self) -> dict[str, object]:
        out = super().to_dict()
        out["node"] = self.problems[0].node
        out["problems"] = [p.to_dict() for p in self.problems]
        return out
