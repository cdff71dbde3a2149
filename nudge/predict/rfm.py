"""RFM: recency, frequency and monetary value of every buyer, computed live from events.

For each person with at least one purchase event (``Charged`` by default) in the lookback
(365 days by default) before ``now``:

- recency = days since their last purchase, frequency = number of purchases,
  monetary = sum of the monetary property (``Amount``; events without it count 0), rounded
  to 6 decimals so that equal totals tie whatever order they were summed in;
- each gets a 1-5 score against the quintile cut points of all buyers: the classic
  (inverted-CDF) quantiles at 0.2, 0.4, 0.6, 0.8 — the smallest value with at least that
  share of buyers at or below it, always a value that occurs (DuckDB ``quantile_disc``,
  numpy ``method="inverted_cdf"``). Score = 1 + the number of cut points the value is above
  (for R the time of the last purchase is compared, so more recent = higher). Equal values
  always get the same score; a value equal to a cut point falls in the lower quintile, like
  ``pd.cut(x, [-inf, *cuts, inf])``. (Interpolated quantiles were tried first: DuckDB's and
  numpy's interpolation round differently, which moved values equal to a cut point across
  it; cut points that are data values have no such ambiguity.)
- the (R, F) cell names the segment (``names.RFM_SEGMENTS``).

People without a purchase in the lookback are not scored and are reported on their own
(``no_purchases``). Nothing is pre-computed: one aggregate over the purchase events,
which the (event, ts) layout narrows to the lookback's row groups.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa

from nudge.errors import ValidationError
from nudge.query.segments.compiler import to_ts
from nudge.store.account import AccountStore
from nudge.store.catalog import PropertyCatalog

from .names import NO_PURCHASES, RFM_SEGMENTS

META_KEY = "rfm_settings"
QUANTILES = (0.2, 0.4, 0.6, 0.8)
DAY = 86400.0


@dataclass(frozen=True)
class RfmSettings:
    """Which event is a purchase, which of its properties is its value, how far back."""

    event: str = "Charged"
    property: str = "Amount"
    lookback_days: float = 365.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_settings(body: Any, catalog: PropertyCatalog | None = None,
                   base: RfmSettings | None = None) -> RfmSettings:
    """Validate ``{"event"?, "property"?, "lookback_days"?}`` (missing keys keep ``base``)."""
    if not isinstance(body, dict):
        raise ValidationError("body must be an object", field="body")
    for k in body:
        if k not in ("event", "property", "lookback_days"):
            raise ValidationError(f"unknown field {k!r}; allowed: event, property, "
                                  "lookback_days", field=k)
    cur = base or RfmSettings()
    out = {**cur.to_dict(), **body}
    for k in ("event", "property"):
        v = out[k]
        if not isinstance(v, str) or not v.strip() or len(v) > 512:
            raise ValidationError(f"{k} must be a non-empty string (at most 512 characters)",
                                  field=k)
    days = out["lookback_days"]
    if isinstance(days, bool) or not isinstance(days, int | float) or not math.isfinite(days) \
            or not 1 <= days <= 3660:
        raise ValidationError("lookback_days must be a number of days between 1 and 3660",
                              field="lookback_days")
    if catalog is not None:
        col = catalog.get("event", out["property"])
        if col is not None and col.type != "number":
            raise ValidationError(f"property {out['property']!r} is {col.type}; the monetary "
                                  "property must be a number", field="property")
    return RfmSettings(out["event"], out["property"], float(days))


def load_settings(store: AccountStore) -> RfmSettings:
    with store.cursor() as cur:
        row = cur.execute("SELECT value FROM meta WHERE key = ?", [META_KEY]).fetchone()
    return RfmSettings(**json.loads(row[0])) if row else RfmSettings()


def save_settings(store: AccountStore, settings: RfmSettings) -> RfmSettings:
    """Store the account's RFM settings (on the writer thread, like every write)."""
    text = json.dumps(settings.to_dict())

    def write() -> None:
        store.writer_cursor.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                    [META_KEY, text])

    store.run_on_writer(write).result()
    return settings


def _segment_case() -> str:
    """``CASE WHEN r IN (5) AND f IN (4, 5) THEN 'champions' ...`` from the constant map."""
    arms = " ".join(
        f"WHEN r IN ({', '.join(map(str, rs))}) AND f IN ({', '.join(map(str, fs))}) "
        f"THEN '{name}'" for name, (rs, fs) in RFM_SEGMENTS.items())
    return f"CASE {arms} END"


def _score(value: str, cuts: str) -> str:
    return "1 + " + " + ".join(f"({value} > {cuts}[{i}])::INTEGER"
                               for i in range(1, len(QUANTILES) + 1))


def rfm_sql(catalog: PropertyCatalog, settings: RfmSettings, now: float,
            events: str = "events") -> tuple[str, list[Any]]:
    """A query of every buyer's ``user_id, last_ts, recency_days, frequency, monetary, r, f,
    m, segment`` as of ``now``. Column names come from the catalog, values are parameters."""
    col = catalog.get("event", settings.property)
    # Rounded to 6 decimals: a float sum depends on the order of its terms, and equal totals
    # must tie exactly against the cut points, whatever order the scan delivered them in.
    money = f"round(coalesce(sum(e.{col.column}), 0), 6)" \
        if col is not None and col.type == "number" else "0.0"
    qs = "[" + ", ".join(map(str, QUANTILES)) + "]"
    sql = (
        "WITH buyers AS MATERIALIZED ("
        f"SELECT e.user_id, max(e.ts) AS last_ts, count(*) AS frequency, "
        f"{money}::DOUBLE AS monetary FROM {events} e "
        "WHERE e.event = ? AND e.ts >= ? AND e.ts <= ? GROUP BY e.user_id), "
        f"cuts AS (SELECT quantile_disc(epoch(last_ts), {qs}) AS qr, "
        f"quantile_disc(frequency, {qs}) AS qf, quantile_disc(monetary, {qs}) AS qm "
        "FROM buyers), "
        "scored AS (SELECT b.user_id, b.last_ts, "
        "(epoch(?::TIMESTAMP) - epoch(b.last_ts)) / 86400.0 AS recency_days, "
        "b.frequency, b.monetary, "
        f"{_score('epoch(b.last_ts)', 'c.qr')} AS r, {_score('b.frequency', 'c.qf')} AS f, "
        f"{_score('b.monetary', 'c.qm')} AS m FROM buyers b, cuts c) "
        f"SELECT *, {_segment_case()} AS segment FROM scored")
    params = [settings.event, to_ts(now - settings.lookback_days * DAY), to_ts(now),
              to_ts(now)]
    return sql, params


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat().replace("+00:00", "Z")


def report(store: AccountStore, settings: RfmSettings, now: float,
           since: float | None = None) -> dict[str, Any]:
    """Counts and revenue per segment, the R x F grid, people without purchases, and (with
    ``since``) how many people moved from each segment then to each segment now."""
    sql, params = rfm_sql(store.catalog, settings, now)
    qs = "[" + ", ".join(map(str, QUANTILES)) + "]"
    with store.cursor() as cur:
        total = int(cur.execute("SELECT count(*) FROM profiles").fetchone()[0])
        # Score everyone once; every figure below is read from that one result (running the
        # RFM query per figure tripled the report's time).
        scored = cur.execute(sql, params).arrow()
        if isinstance(scored, pa.RecordBatchReader):
            scored = scored.read_all()
        cur.register("_rfm_now", scored)
        rows = cur.execute(
            "SELECT segment, count(*), sum(monetary), avg(recency_days), avg(frequency), "
            "avg(monetary) FROM _rfm_now GROUP BY segment").fetchall()
        grid = cur.execute("SELECT r, f, count(*) FROM _rfm_now GROUP BY r, f").fetchall()
        cuts = cur.execute(
            f"SELECT quantile_disc(epoch(last_ts), {qs}), quantile_disc(frequency, {qs}), "
            f"quantile_disc(monetary, {qs}) FROM _rfm_now").fetchone()
        moves = None
        if since is not None:
            old_sql, old_params = rfm_sql(store.catalog, settings, since)
            moves = cur.execute(
                f"SELECT coalesce(o.segment, '{NO_PURCHASES}') AS was, "
                f"coalesce(n.segment, '{NO_PURCHASES}') AS now, count(*) "
                f"FROM profiles p LEFT JOIN ({old_sql}) o ON o.user_id = p.user_id "
                "LEFT JOIN _rfm_now n ON n.user_id = p.user_id GROUP BY ALL",
                old_params).fetchall()
        cur.unregister("_rfm_now")
    by_name = {r[0]: r for r in rows}
    buyers = sum(r[1] for r in rows)
    segments = []
    for name in RFM_SEGMENTS:
        r = by_name.get(name)
        segments.append({"segment": name, "users": int(r[1]) if r else 0,
                         "revenue": float(r[2]) if r else 0.0,
                         "avg_recency_days": r[3] if r else None,
                         "avg_frequency": r[4] if r else None,
                         "avg_monetary": r[5] if r else None})
    out: dict[str, Any] = {
        "settings": settings.to_dict(), "as_of": _iso(now), "buyers": buyers,
        "no_purchases": total - buyers, "segments": segments,
        "grid": [{"r": int(r), "f": int(f), "users": int(n)} for r, f, n in sorted(grid)],
        "cuts": {"r": None, "f": None, "m": None} if cuts is None or cuts[0] is None else
                {"r": [_iso(x) for x in cuts[0]], "f": cuts[1], "m": cuts[2]},
    }
    if moves is not None:
        assert since is not None
        out["since"] = _iso(since)
        out["movement"] = [{"from": a, "to": b, "users": int(n)}
                           for a, b, n in sorted(moves) if n]
    return out


def for_user(store: AccountStore, settings: RfmSettings, now: float,
             user_id: int) -> dict[str, Any]:
    """One person's values, scores and segment (``no_purchases`` without a purchase)."""
    sql, params = rfm_sql(store.catalog, settings, now)
    with store.cursor() as cur:
        row = cur.execute(f"SELECT recency_days, frequency, monetary, r, f, m, segment "
                          f"FROM ({sql}) WHERE user_id = ?", params + [user_id]).fetchone()
    if row is None:
        return {"segment": NO_PURCHASES, "recency_days": None, "frequency": 0,
                "monetary": 0.0, "r": None, "f": None, "m": None}
    keys = ("recency_days", "frequency", "monetary", "r", "f", "m", "segment")
    return dict(zip(keys, row, strict=True))
