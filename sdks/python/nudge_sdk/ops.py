"""Profile property operations and date values.

Use them as values in :meth:`nudge_sdk.Client.profile`::

    client.profile("u1", {
        "Plan": "pro",                       # plain value: set
        "Logins": nudge_sdk.incr(1),
        "First Seen": nudge_sdk.set_once(nudge_sdk.date(signup_at)),
        "Tags": nudge_sdk.add(["beta"]),
        "Trial": nudge_sdk.unset(),
    })
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

Scalar = str | int | float


def set_value(value: Any) -> dict[str, Any]:
    """Set the property explicitly (the same as a plain value, spelled out)."""
    return {"$set": value}


def set_once(value: Any) -> dict[str, Any]:
    """Set the property only if the profile does not have it yet."""
    return {"$setOnce": value}


def unset() -> dict[str, Any]:
    """Remove the property from the profile."""
    return {"$unset": True}


def incr(by: int | float = 1) -> dict[str, Any]:
    """Add ``by`` to a numeric property (a missing property counts as 0)."""
    return {"$incr": _number(by, "incr")}


def decr(by: int | float = 1) -> dict[str, Any]:
    """Subtract ``by`` from a numeric property (a missing property counts as 0)."""
    return {"$decr": _number(by, "decr")}


def add(values: Scalar | Iterable[Scalar]) -> dict[str, Any]:
    """Add one value or several to a multi-valued property (a set of strings)."""
    return {"$add": _values(values)}


def remove(values: Scalar | Iterable[Scalar]) -> dict[str, Any]:
    """Remove one value or several from a multi-valued property."""
    return {"$remove": _values(values)}


def date(value: dt.datetime | dt.date | int | float) -> str:
    """A date-typed property value: ``"$D_<epoch seconds>"``.

    Naive datetimes and plain dates are taken as UTC: a server's data is rarely in the
    machine's local time zone, and guessing wrong would shift every date silently.
    """
    return f"$D_{epoch_seconds(value)}"


def epoch_seconds(value: dt.datetime | dt.date | int | float) -> int:
    """Whole seconds since the epoch for a datetime, date or number (naive means UTC)."""
    if isinstance(value, bool):
        raise TypeError("expected a datetime, date or epoch seconds, not bool")
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp())
    if isinstance(value, dt.date):
        return int(dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp())
    raise TypeError(f"expected a datetime, date or epoch seconds, not {type(value).__name__}")


def _number(value: Any, op: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{op}() needs a number, not {type(value).__name__}")
    return value


def _values(values: Scalar | Iterable[Scalar]) -> list[Scalar]:
    # A lone string is one value, not an iterable of characters.
    if isinstance(values, str | int | float):
        return [values]
    return list(values)
