"""Per-person features as of a cutoff, computed in one pass over the events before it.

For a goal and a cutoff time ``c`` every person with an event before ``c`` gets:

- **the goal's event** (with its filters): days since the last and the first one, the mean
  gap between them, counts in the last 7 / 30 / 90 / 365 days and ever, and the sum of the
  monetary property (RFM settings, ``Amount`` by default) in the last 90 days and ever;
- **the same event without filters** (only when the goal has filters): days since the
  last, counts in 30 days and ever, value ever;
- **activity**: days since the last and the first event of any kind (tenure), events in the
  last 1 / 7 / 30 / 90 days and ever, distinct active days in the last 7 / 30 / 90 days
  (sessions);
- **engagement with messages and other behaviour**: for the events Nudge's delivery writes
  back (``Message Sent``, ``Message Opened``, ``Message Clicked``, ``Campaign Converted``)
  when the account has them, and for its most frequent other events (up to ``TOP_EVENTS``),
  counts in the last 30 days and ever;
- **profile properties**: number and boolean properties as they are, strings with at most
  ``MAX_CATEGORIES`` distinct values as categories. (Profiles hold current values, not values
  as of ``c``; properties that only change because of the outcome would leak — such as a
  "total spent" updated on purchase — so choose profile properties with that in mind.)

``FeaturePlan`` fixes the columns at training time so that scoring computes the same ones.
SQL is built from the catalog's column names and parameters only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nudge.query.segments.compiler import Compiler, to_ts
from nudge.query.segments.model import EventSpec
from nudge.store.account import AccountStore

from .goals import DAY, Goal
from .rfm import load_settings

TOP_EVENTS = 15
# Events Nudge's own delivery writes back (nudge/engage). Sent / delivered / failed are not
# the person's activity: they count neither as activity for churn nor as "active".
DELIVERY_EVENTS = ("Message Sent", "Message Delivered", "Message Failed")
# Engagement with messages: always features when the account has them.
ENGAGEMENT_EVENTS = ("Message Sent", "Message Opened", "Message Clicked", "Campaign Converted")
MAX_CATEGORIES = 32
COUNT_WINDOWS = (7, 30, 90, 365)
ACTIVITY_WINDOWS = (1, 7, 30, 90)


@dataclass
class FeaturePlan:
    """The feature columns of one goal on one account."""

    goal_spec: EventSpec | None
    base_event: str | None  # the goal's event without filters, when it has filters
    money_column: str | None
    top_events: list[str]
    profile_numeric: list[tuple[str, str]]  # (property, column)
    profile_categorical: list[tuple[str, str, list[str]]]  # (property, column, categories)
    names: list[str] = field(default_factory=list)

    @property
    def categorical_mask(self) -> list[bool]:
        cats = {f"profile:{p}" for p, _, _ in self.profile_categorical}
        return [n in cats for n in self.names]


def plan_features(store: AccountStore, goal: Goal) -> FeaturePlan:
    """Choose the columns for ``goal`` from the account's catalog and data."""
    settings = load_settings(store)
    money = store.catalog.get("event", settings.property)
    spec = goal.spec
    with store.cursor() as cur:
        known = {r[0] for r in cur.execute("SELECT event FROM event_catalog").fetchall()}
        top = [e for e in ENGAGEMENT_EVENTS if e in known and (spec is None or
                                                                e != spec.event)]
        top += [r[0] for r in cur.execute(
            "SELECT event FROM event_catalog WHERE event <> ? ORDER BY count DESC, event "
            "LIMIT ?", [spec.event if spec else "", TOP_EVENTS]).fetchall() if r[0] not in top]
        numeric, categorical = [], []
        for col in sorted(store.catalog.by_scope("profile"), key=lambda c: c.name):
            if col.type in ("number", "boolean"):
                numeric.append((col.name, col.column))
            elif col.type == "string":
                cats = [r[0] for r in cur.execute(
                    f"SELECT DISTINCT {col.column} FROM profiles WHERE {col.column} IS NOT "
                    f"NULL LIMIT {MAX_CATEGORIES + 1}").fetchall()]
                if 2 <= len(cats) <= MAX_CATEGORIES:
                    categorical.append((col.name, col.column, sorted(cats)))
    plan = FeaturePlan(spec, spec.event if spec and spec.where else None,
                       money.column if money is not None and money.type == "number" else None,
                       top, numeric, categorical)
    plan.names = _select(plan, store, 0.0)[2]
    return plan


class _Select:
    """SELECT-list items and their parameters, in order."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.names: list[str] = []
        self.params: list[Any] = []

    def add(self, name: str, expr: str, params: list[Any] | None = None) -> None:
        self.items.append(f"{expr} AS f{len(self.items)}")
        self.names.append(name)
        self.params += params or []


def _select(plan: FeaturePlan, store: AccountStore, c: float
            ) -> tuple[list[str], list[Any], list[str]]:
    sel = _Select()
    ts_c = to_ts(c)
    days = "(epoch(?::TIMESTAMP) - epoch({})) / 86400.0"
    if plan.goal_spec is not None:
        cond, cparams = _predicate(store, plan.goal_spec, c)
        _event_block(sel, "goal", cond, cparams, c, plan.money_column, full=True)
        if plan.base_event is not None:
            _event_block(sel, "event", "e.event = ?", [plan.base_event], c, plan.money_column,
                         full=False)
    sel.add("days_since_last_event", days.format("max(e.ts)"), [ts_c])
    sel.add("tenure_days", days.format("min(e.ts)"), [ts_c])
    for d in ACTIVITY_WINDOWS:
        sel.add(f"events_{d}d", "count(*) FILTER (WHERE e.ts >= ?)", [to_ts(c - d * DAY)])
    sel.add("events_ever", "count(*)")
    for d in (7, 30, 90):
        sel.add(f"active_days_{d}d", "count(DISTINCT e.ts::DATE) FILTER (WHERE e.ts >= ?)",
                [to_ts(c - d * DAY)])
    for name in plan.top_events:
        sel.add(f"count_30d:{name}", "count(*) FILTER (WHERE e.event = ? AND e.ts >= ?)",
                [name, to_ts(c - 30 * DAY)])
        sel.add(f"count_ever:{name}", "count(*) FILTER (WHERE e.event = ?)", [name])
    derived = list(RATIOS) if plan.goal_spec is not None else []
    return sel.items, sel.params, sel.names + (
        [f"profile:{p}" for p, _ in plan.profile_numeric]
        + [f"profile:{p}" for p, _, _ in plan.profile_categorical]) + derived


# Rates and ratios of the goal's event that do not grow with a person's tenure, so that what
# is learned at earlier cutoffs (shorter histories) carries over to later ones; trees cannot
# form ratios of two features themselves. L = days since the last, F = since the first,
# D = distinct days with the event. Measured on CDNOW (docs/predict.md): without them the
# top-decile lift was 3.20, with them 3.24.
RATIOS = {
    "goal_days_per_tenure_day": lambda L, F, D: D / (F + 1),
    "goal_days_per_tenure_day_shrunk30": lambda L, F, D: D / (F + 30),
    "goal_days_per_tenure_day_shrunk90": lambda L, F, D: D / (F + 90),
    "goal_repeat_rate_over_span": lambda L, F, D: (D - 1) / (F - L + 30),
    "goal_span_fraction": lambda L, F, D: (F - L) / (F + 30),
    "goal_recency_over_tenure": lambda L, F, D: L / np.maximum(F, 1),
    "goal_overdue": lambda L, F, D: L / np.where(D > 1, (F - L) / np.maximum(D - 1, 1), np.nan),
}


def _predicate(store: AccountStore, spec: EventSpec, c: float) -> tuple[str, list[Any]]:
    """``e.event = ? AND <filters>`` through the segment compiler's filter code."""
    compiler = Compiler(store.catalog, c)
    parts, params = ["e.event = ?"], [spec.event]
    for f in spec.where:
        text, fparams = compiler.filter("event", f, "e")
        parts.append(text)
        params += fparams
    return " AND ".join(parts), params


def _event_block(sel: _Select, prefix: str, cond: str, cparams: list[Any], c: float,
                 money: str | None, *, full: bool) -> None:
    ts_c = to_ts(c)
    last = f"max(e.ts) FILTER (WHERE {cond})"
    first = f"min(e.ts) FILTER (WHERE {cond})"
    sel.add(f"{prefix}_days_since_last", f"(epoch(?::TIMESTAMP) - epoch({last})) / 86400.0",
            [ts_c, *cparams])
    if full:
        sel.add(f"{prefix}_days_since_first",
                f"(epoch(?::TIMESTAMP) - epoch({first})) / 86400.0", [ts_c, *cparams])
        sel.add(f"{prefix}_mean_gap_days",
                f"(epoch({last}) - epoch({first})) / 86400.0 / "
                f"nullif(count(*) FILTER (WHERE {cond}) - 1, 0)", cparams * 3)
        for d in COUNT_WINDOWS:
            sel.add(f"{prefix}_count_{d}d", f"count(*) FILTER (WHERE {cond} AND e.ts >= ?)",
                    [*cparams, to_ts(c - d * DAY)])
        # Distinct days with the event: repeat purchases made on the same day count once
        # (as repeat-buying models count them).
        sel.add(f"{prefix}_days_with_event_365d",
                f"count(DISTINCT e.ts::DATE) FILTER (WHERE {cond} AND e.ts >= ?)",
                [*cparams, to_ts(c - 365 * DAY)])
        sel.add(f"{prefix}_days_with_event_ever",
                f"count(DISTINCT e.ts::DATE) FILTER (WHERE {cond})", cparams)
    else:
        sel.add(f"{prefix}_count_30d", f"count(*) FILTER (WHERE {cond} AND e.ts >= ?)",
                [*cparams, to_ts(c - 30 * DAY)])
    sel.add(f"{prefix}_count_ever", f"count(*) FILTER (WHERE {cond})", cparams)
    if money is not None:
        if full:
            sel.add(f"{prefix}_value_90d",
                    f"coalesce(sum(e.{money}) FILTER (WHERE {cond} AND e.ts >= ?), 0)",
                    [*cparams, to_ts(c - 90 * DAY)])
        sel.add(f"{prefix}_value_ever", f"coalesce(sum(e.{money}) FILTER (WHERE {cond}), 0)",
                cparams)


def features_at(store: AccountStore, plan: FeaturePlan, c: float,
                active_within_days: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(user ids, feature matrix) of everyone with an event before ``c`` (and, with
    ``active_within_days``, an event in that many days before ``c``)."""
    items, params, names = _select(plan, store, c)
    assert names == plan.names, "the account's data changed the feature plan"
    having = ""
    if active_within_days is not None:
        having = (" HAVING max(e.ts) FILTER (WHERE e.event NOT IN "
                  f"({', '.join('?' * len(DELIVERY_EVENTS))})) >= ?")
    agg = (f"SELECT e.user_id, {', '.join(items)} FROM events e WHERE e.ts < ? "
           f"GROUP BY e.user_id{having}")
    params = params + [to_ts(c)]
    if active_within_days is not None:
        params += [*DELIVERY_EVENTS, to_ts(c - active_within_days * DAY)]
    prof = [f"p.{col}" for _, col in plan.profile_numeric] + \
        [f"p.{col}" for _, col, _ in plan.profile_categorical]
    sql = (f"SELECT a.*{''.join(', ' + p for p in prof)} FROM ({agg}) a "
           "LEFT JOIN profiles p ON p.user_id = a.user_id ORDER BY a.user_id")
    with store.cursor() as cur:
        table = cur.execute(sql, params).arrow()
    if not hasattr(table, "column"):
        table = table.read_all()
    ids = table.column(0).to_numpy()
    n_num = len(names) - len(plan.profile_categorical) - (
        len(RATIOS) if plan.goal_spec is not None else 0)
    cols = [_as_float(table.column(i + 1)) for i in range(n_num)]
    for j, (_, _, cats) in enumerate(plan.profile_categorical):
        index = {v: float(k) for k, v in enumerate(cats)}
        values = table.column(1 + n_num + j).to_pylist()
        cols.append(np.array([index.get(v, np.nan) for v in values], dtype=np.float64))
    if plan.goal_spec is not None:
        last, first, days = (cols[names.index(n)] for n in (
            "goal_days_since_last", "goal_days_since_first", "goal_days_with_event_ever"))
        with np.errstate(divide="ignore", invalid="ignore"):
            cols += [np.asarray(fn(last, first, days), dtype=np.float64)
                     for fn in RATIOS.values()]
    x = np.column_stack(cols) if cols else np.empty((len(ids), 0))
    return ids.astype(np.int64), x


def _as_float(col: Any) -> np.ndarray:
    filled = pc.fill_null(col.cast(pa.float64()), float("nan"))
    return np.asarray(filled.to_numpy(), dtype=np.float64)


def outcome_users(store: AccountStore, goal: Goal, start: float, end: float) -> np.ndarray:
    """Ids of people who did the goal's event (for churn: anything but deliveries of our
    messages) in [start, end)."""
    with store.cursor() as cur:
        if goal.spec is None:
            rows = cur.execute(
                "SELECT DISTINCT user_id FROM events WHERE ts >= ? AND ts < ? AND event NOT IN "
                f"({', '.join('?' * len(DELIVERY_EVENTS))})",
                [to_ts(start), to_ts(end), *DELIVERY_EVENTS]).fetchall()
        else:
            cond, params = _predicate(store, goal.spec, start)
            rows = cur.execute(f"SELECT DISTINCT e.user_id FROM events e WHERE {cond} "
                               "AND e.ts >= ? AND e.ts < ?",
                               params + [to_ts(start), to_ts(end)]).fetchall()
    return np.array(sorted(r[0] for r in rows), dtype=np.int64)
