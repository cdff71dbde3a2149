"""Profile rows in memory and the operations a profile record applies to them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nudge.ingest.records import ProfileOp


@dataclass
class ProfileRow:
    user_id: int
    identity: str | None = None
    email: str | None = None
    phone: str | None = None
    first_seen: float | None = None
    last_seen: float | None = None
    event_count: int = 0
    first_event_seq: int | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    props: dict[str, Any] = field(default_factory=dict)

    def apply(self, op: ProfileOp) -> None:
        """Apply one operation. Multi-value properties are lists of strings, order kept."""
        props, name = self.props, op.name
        if op.op == "set":
            if op.value is None:
                props.pop(name, None)
            else:
                props[name] = op.value
        elif op.op == "set_once":
            if props.get(name) is None and op.value is not None:
                props[name] = op.value
        elif op.op == "unset":
            props.pop(name, None)
        elif op.op == "incr":
            cur = props.get(name)
            base = cur if isinstance(cur, int | float) and not isinstance(cur, bool) else 0
            props[name] = base + op.value
        elif op.op == "add":
            cur = _as_list(props.get(name))
            props[name] = cur + [v for v in op.value if v not in cur]
        elif op.op == "remove":
            cur = _as_list(props.get(name))
            remaining = [v for v in cur if v not in op.value]
            if remaining:
                props[name] = remaining
            else:
                props.pop(name, None)
        else:  # pragma: no cover - parse_upload only produces the ops above
            raise ValueError(op.op)

    def absorb(self, loser: ProfileRow) -> None:
        """Merge ``loser`` into this profile: this profile's values win."""
        for k, v in loser.props.items():
            self.props.setdefault(k, v)
        self.identity = self.identity or loser.identity
        self.email = self.email or loser.email
        self.phone = self.phone or loser.phone
        self.first_seen = _min(self.first_seen, loser.first_seen)
        self.last_seen = _max(self.last_seen, loser.last_seen)
        self.first_event_seq = _min(self.first_event_seq, loser.first_event_seq)
        self.event_count += loser.event_count
        self.created_at = (min(self.created_at, loser.created_at) if self.created_at
                           else loser.created_at)

    def saw_events(self, count: int, first: float, last: float, first_seq: int) -> None:
        self.event_count += count
        self.first_seen = _min(self.first_seen, first)
        self.last_seen = _max(self.last_seen, last)
        self.first_event_seq = _min(self.first_event_seq, first_seq)


def _as_list(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, list):
        return [str(x) for x in v]
    return [str(v)]


def _min(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else min(a, b)


def _max(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else max(a, b)
