"""A Python builder that produces segment definition JSON (the same the API takes).

    from nudge.query.segments.builder import did, did_not, prop, last
    seg = (did("Charged", prop("Amount") > 500, at_least=3, window=last(days=30))
           & (prop.profile("City") == "Paris") & did_not("App Uninstalled"))
    seg.to_json()   # {"and": [{"did": {...}}, {"profile": {...}}, {"did_not": {...}}]}

Builders only construct the JSON; ``model.parse`` validates it like any other definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Condition:
    body: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return self.body

    def __and__(self, other: Condition) -> Condition:
        return all_of(self, other)

    def __or__(self, other: Condition) -> Condition:
        return any_of(self, other)

    def __invert__(self) -> Condition:
        return Condition({"not": self.body})


def _flat(kind: str, conds: tuple[Condition, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for c in conds:
        out += c.body[kind] if set(c.body) == {kind} else [c.body]
    return out


def all_of(*conds: Condition) -> Condition:
    return Condition({"and": _flat("and", conds)})


def any_of(*conds: Condition) -> Condition:
    return Condition({"or": _flat("or", conds)})


def not_(cond: Condition) -> Condition:
    return ~cond


# -- windows and durations -------------------------------------------------------------------
def duration(*, minutes: float = 0, hours: float = 0, days: float = 0,
             weeks: float = 0) -> dict[str, float]:
    given = {k: v for k, v in (("minutes", minutes), ("hours", hours), ("days", days),
                               ("weeks", weeks)) if v}
    if len(given) != 1:
        raise ValueError("give exactly one of minutes, hours, days, weeks")
    return given


def last(**kw: float) -> dict[str, Any]:
    return {"last": duration(**kw)}


def between(start: str | float, end: str | float) -> dict[str, Any]:
    return {"between": [start, end]}


def first_days(days: float) -> dict[str, Any]:
    return {"first_days_after_first_seen": days}


# -- property filters ----------------------------------------------------------------------
class prop:  # noqa: N801 - reads as a function in definitions
    """``prop("Amount") > 500`` builds an event-property filter; ``prop.profile("City")``
    builds a profile condition with the same operators."""

    def __init__(self, name: str, *, _profile: bool = False) -> None:
        self.name = name
        self._profile = _profile

    @classmethod
    def profile(cls, name: str) -> prop:
        return cls(name, _profile=True)

    def _f(self, op: str, value: Any = None, has_value: bool = True) -> Any:
        f: dict[str, Any] = {"property": self.name, "op": op}
        if has_value:
            f["value"] = list(value) if isinstance(value, tuple | set) else value
        return Condition({"profile": f}) if self._profile else f

    def __eq__(self, v: Any) -> Any:  # type: ignore[override]
        return self._f("eq", v)

    def __ne__(self, v: Any) -> Any:  # type: ignore[override]
        return self._f("neq", v)

    def __gt__(self, v: Any) -> Any:
        return self._f("gt", v)

    def __ge__(self, v: Any) -> Any:
        return self._f("gte", v)

    def __lt__(self, v: Any) -> Any:
        return self._f("lt", v)

    def __le__(self, v: Any) -> Any:
        return self._f("lte", v)

    __hash__ = None  # type: ignore[assignment]

    def is_in(self, *values: Any) -> Any:
        return self._f("in", values)

    def not_in(self, *values: Any) -> Any:
        return self._f("not_in", values)

    def contains(self, v: str) -> Any:
        return self._f("contains", v)

    def not_contains(self, v: str) -> Any:
        return self._f("not_contains", v)

    def starts_with(self, v: str) -> Any:
        return self._f("starts_with", v)

    def between(self, lo: Any, hi: Any) -> Any:
        return self._f("between", [lo, hi])

    def exists(self) -> Any:
        return self._f("exists", has_value=False)

    def not_exists(self) -> Any:
        return self._f("not_exists", has_value=False)

    def more_than_days_ago(self, days: float) -> Any:
        return self._f("before_days_ago", days)

    def within_last_days(self, days: float) -> Any:
        return self._f("after_days_ago", days)

    def within_next_days(self, days: float) -> Any:
        return self._f("within_next_days", days)

    def anniversary_within_days(self, days: float) -> Any:
        return self._f("anniversary_within_days", days)


# -- conditions ---------------------------------------------------------------------------
def _spec(event: str, where: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"event": event}
    if where:
        out["where"] = list(where)
    return out


def did(event: str, *where: dict[str, Any], at_least: int | None = None,
        at_most: int | None = None, exactly: int | None = None,
        window: dict[str, Any] | None = None) -> Condition:
    body = _spec(event, where)
    counts = [(op, n) for op, n in ((">=", at_least), ("<=", at_most), ("=", exactly))
              if n is not None]
    if len(counts) > 1:
        raise ValueError("give at most one of at_least, at_most, exactly")
    if counts:
        body["count"] = {"op": counts[0][0], "value": counts[0][1]}
    if window:
        body["window"] = window
    return Condition({"did": body})


def did_not(event: str, *where: dict[str, Any], window: dict[str, Any] | None = None
            ) -> Condition:
    body = _spec(event, where)
    if window:
        body["window"] = window
    return Condition({"did_not": body})


class aggregate:  # noqa: N801
    """``aggregate("sum", "Charged", "Amount", window=last(days=90)) >= 5000``."""

    def __init__(self, fn: str, event: str, property: str, *where: dict[str, Any],
                 window: dict[str, Any] | None = None) -> None:
        self.body = {**_spec(event, where), "property": property, "fn": fn}
        if window:
            self.body["window"] = window

    def _c(self, op: str, v: float) -> Condition:
        return Condition({"aggregate": {**self.body, "op": op, "value": v}})

    def __ge__(self, v: float) -> Condition:
        return self._c(">=", v)

    def __gt__(self, v: float) -> Condition:
        return self._c(">", v)

    def __le__(self, v: float) -> Condition:
        return self._c("<=", v)

    def __lt__(self, v: float) -> Condition:
        return self._c("<", v)

    def __eq__(self, v: float) -> Condition:  # type: ignore[override]
        return self._c("=", v)

    __hash__ = None  # type: ignore[assignment]


def first_time(event: str, *where: dict[str, Any], window: dict[str, Any]) -> Condition:
    return Condition({"first_time": {**_spec(event, where), "window": window}})


def last_did(event: str, *where: dict[str, Any], more_than: dict[str, float] | None = None,
             less_than: dict[str, float] | None = None) -> Condition:
    body = _spec(event, where)
    if (more_than is None) == (less_than is None):
        raise ValueError("give exactly one of more_than, less_than")
    body["more_than" if more_than else "less_than"] = more_than or less_than
    return Condition({"last_did": body})


def sequence(first: str | dict[str, Any], then: str | dict[str, Any], *,
             within: dict[str, float] | None = None, window: dict[str, Any] | None = None,
             then_happened: bool = True) -> Condition:
    body: dict[str, Any] = {
        "first": {"event": first} if isinstance(first, str) else first,
        "then": {"event": then} if isinstance(then, str) else then,
    }
    if within:
        body["within"] = within
    if window:
        body["window"] = window
    if not then_happened:
        body["then_happened"] = False
    return Condition({"sequence": body})


def event(name: str, *where: dict[str, Any]) -> dict[str, Any]:
    """An event with filters, for ``sequence``."""
    return _spec(name, where)


def reachable(channel: str) -> Condition:
    return Condition({"reachable": {"channel": channel}})


def in_segment(segment_id: int, member: bool = True) -> Condition:
    body: dict[str, Any] = {"id": segment_id}
    if not member:
        body["member"] = False
    return Condition({"segment": body})
