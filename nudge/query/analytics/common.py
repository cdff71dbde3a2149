"""What every report shares: request checking with field paths, time ranges in the account's
timezone, event property filters, and the optional segment filter.

Reports are JSON requests validated here (422 naming the field on bad input) and compiled to
parameterized SQL; event names and values are always bound parameters, and columns come from
the property catalog (the segment compiler's ``filter``), never from input text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import duckdb

from nudge.clock import clock
from nudge.errors import NudgeError
from nudge.query.segments.compiler import Compiler, to_ts
from nudge.query.segments.evaluate import SegmentEngine
from nudge.query.segments.model import DefinitionError, Filter, _Parser, parse
from nudge.store.account import AccountStore

INTERVALS = ("minute", "hour", "day", "week", "month")


class ReportError(NudgeError):
    status = 422
    code = "invalid_report"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field=field)


@dataclass
class Report:
    """One report request's context: the store, the account's timezone, ``now``."""

    store: AccountStore
    timezone: str
    engine: SegmentEngine
    now: float

    @classmethod
    def for_store(cls, store: AccountStore, timezone: str = "UTC",
                  load_saved: Callable[[int], Any] | None = None,
                  now: float | None = None) -> Report:
        return cls(store, timezone, SegmentEngine(store, timezone, load_saved),
                   clock.now() if now is None else now)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    # -- request checking -----------------------------------------------------------------
    def field(self, body: dict[str, Any], name: str, kind: type | tuple[type, ...],
              default: Any = ..., path: str = "") -> Any:
        """``body[name]`` of the given type, or a 422 naming ``path + name``."""
        full = f"{path}{name}"
        if name not in body or body[name] is None:
            if default is ...:
                raise ReportError(full, "is required")
            return default
        v = body[name]
        if isinstance(v, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise ReportError(full, "has the wrong type")
        if not isinstance(v, kind):
            raise ReportError(full, "has the wrong type")
        return v

    def choice(self, body: dict[str, Any], name: str, options: tuple[str, ...],
               default: str | None = None, path: str = "") -> str:
        v = self.field(body, name, str, default, path)
        if v not in options:
            raise ReportError(f"{path}{name}", f"must be one of {list(options)}")
        return v  # type: ignore[no-any-return]

    def positive_int(self, body: dict[str, Any], name: str, default: int | None = None,
                     maximum: int = 10_000, path: str = "") -> int:
        v = self.field(body, name, int, default, path)
        if not 1 <= v <= maximum:
            raise ReportError(f"{path}{name}", f"must be between 1 and {maximum}")
        return v  # type: ignore[no-any-return]

    def time_range(self, body: dict[str, Any]) -> tuple[float, float]:
        """``from``/``to`` (ISO 8601 or epoch seconds); ``to`` defaults to now."""
        lo = self._time(body, "from")
        hi = self._time(body, "to") if body.get("to") is not None else self.now
        if lo is None:
            raise ReportError("from", "is required")
        if hi <= lo:
            raise ReportError("from", "must be before to")
        return lo, hi

    def _time(self, body: dict[str, Any], name: str) -> float | None:
        v = body.get(name)
        if v is None:
            return None
        try:
            return _Parser(self.now).time(v, name)
        except DefinitionError:
            raise ReportError(name, "must be an ISO 8601 time or epoch seconds") from None

    # -- SQL pieces ----------------------------------------------------------------------
    def compiler(self) -> Compiler:
        return Compiler(self.store.catalog, self.now, self.timezone)

    def event_filters(self, where: Any, path: str, alias: str = "e") -> tuple[str, list[Any]]:
        """``AND``-joined SQL for a list of event property filters (may be ``true``)."""
        if where is None:
            return "true", []
        try:
            filters = _Parser(self.now).filters(where, path)
        except DefinitionError as e:
            raise ReportError(e.path, e.message.split(": ", 1)[-1]) from None
        return self.filters_sql("event", filters, path, alias)

    def profile_filters(self, where: Any, path: str, alias: str = "p") -> tuple[str, list[Any]]:
        if where is None:
            return "true", []
        try:
            filters = _Parser(self.now).filters(where, path)
        except DefinitionError as e:
            raise ReportError(e.path, e.message.split(": ", 1)[-1]) from None
        return self.filters_sql("profile", filters, path, alias)

    def filters_sql(self, scope: str, filters: tuple[Filter, ...], path: str,
                    alias: str) -> tuple[str, list[Any]]:
        comp = self.compiler()
        parts, params = [], []
        for i, f in enumerate(filters):
            comp.path = f"{path}[{i}]"
            try:
                text, p = comp.filter(scope, f, alias)
            except DefinitionError as e:
                raise ReportError(e.path, e.message.split(": ", 1)[-1]) from None
            parts.append(text)
            params += p
        return (" AND ".join(parts) or "true"), params

    def segment_table(self, cur: duckdb.DuckDBPyConnection, body: dict[str, Any]) -> str | None:
        """Register the members of ``body["segment"]`` (a definition, or ``{"id": N}`` of a
        saved one) as a table on ``cur``; returns its name, or None without a filter."""
        seg = body.get("segment")
        if seg is None:
            return None
        try:
            node = parse(seg if "id" not in seg else {"segment": seg}, self.now) \
                if isinstance(seg, dict) else parse(seg, self.now)
        except DefinitionError as e:
            raise ReportError("segment" + e.path[1:], e.message.split(": ", 1)[-1]) from None
        ids = self.engine.user_ids(node, now=self.now)
        import pyarrow as pa

        cur.register("_report_segment", pa.table({"user_id": pa.array(sorted(ids), pa.int64())}))
        return "_report_segment"

    def ts(self, epoch: float) -> dt.datetime:
        return to_ts(epoch)

    def local_sql(self, column: str = "e.ts") -> str:
        """SQL for a UTC timestamp column as wall-clock time in the account's zone."""
        return f"timezone(?, {column}::TIMESTAMPTZ)"
