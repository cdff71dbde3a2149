"""Read side of profiles: the unified profile view, the event timeline, the event catalog."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from nudge.errors import NotFound, ValidationError
from nudge.ingest.records import TOKEN_KINDS, Date
from nudge.store.account import AccountStore
from nudge.store.catalog import EPOCH, from_column_value

_JSON = msgspec.json.Decoder()
LOOKUP_KEYS = {"identity": "identity", "email": "email", "phone": "phone",
               "objectId": "object_id"}


def iso(v: dt.datetime | float | None) -> str | None:
    if v is None:
        return None
    if isinstance(v, int | float):
        v = EPOCH + dt.timedelta(seconds=v)
    return v.replace(tzinfo=dt.UTC).isoformat().replace("+00:00", "Z")


def wire_value(v: Any) -> Any:
    """A stored value as the upload API writes it (dates as ``$D_<epoch>``)."""
    if isinstance(v, Date):
        return f"$D_{int(v.epoch)}"
    if isinstance(v, dict):
        return {k: wire_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [wire_value(x) for x in v]
    return v


def find_user(store: AccountStore, query: dict[str, str]) -> int:
    """The profile a lookup (?identity= / ?email= / ?phone= / ?objectId=) names."""
    from nudge.ingest.upload import normalize_identifier

    given = [(LOOKUP_KEYS[k], v) for k, v in query.items() if k in LOOKUP_KEYS and v]
    if len(given) != 1:
        raise ValidationError("give exactly one of identity, email, phone, objectId",
                              field="identity")
    kind, value = given[0]
    try:
        value = normalize_identifier(kind, value)
    except Exception:  # noqa: BLE001 - a malformed identifier simply matches nobody
        raise NotFound("no such profile") from None
    uid = store.user_for(kind, value)
    if uid is None:
        raise NotFound("no such profile")
    return uid


def profile_view(store: AccountStore, uid: int) -> dict[str, Any]:
    rows = store.load_profiles([uid], store.cursor())
    if uid not in rows:
        raise NotFound("no such profile")
    row = rows[uid]
    idents: dict[str, list[str]] = {}
    tokens = []
    for kind, value in store.identifiers_of(uid):
        if kind in TOKEN_KINDS:
            tokens.append({"type": kind, "id": value})
        else:
            idents.setdefault(kind, []).append(value)
    with store.cursor() as cur:  # one scan: counts per event and the newest event's time
        per_event = cur.execute(
            "SELECT event, count(*), max(ts) FROM events WHERE user_id = ? GROUP BY event "
            "ORDER BY 2 DESC", [uid]).fetchall()
    counts = {e: n for e, n, _ in per_event}
    last = (max(t for _, _, t in per_event),) if per_event else None
    props = row.props
    subscribed = {ch: props.get(f"MSG-{ch}") is not False for ch in ("email", "sms", "whatsapp",
                                                                     "push")}
    kinds = {t["type"] for t in tokens}
    reach = {
        "email": bool(idents.get("email")) and subscribed["email"],
        "sms": bool(idents.get("phone")) and subscribed["sms"],
        "whatsapp": bool(idents.get("phone")) and subscribed["whatsapp"],
        "push": bool(kinds & {"fcm", "apns"}) and subscribed["push"],
        "webpush": "webpush" in kinds and subscribed["push"],
    }
    return {
        "id": uid,
        "identity": row.identity,
        "email": row.email,
        "phone": row.phone,
        "identifiers": {("objectId" if k == "object_id" else k): v for k, v in idents.items()},
        "push_tokens": tokens,
        "properties": {k: wire_value(v) for k, v in sorted(props.items())},
        "first_seen": iso(row.first_seen),
        "last_seen": iso(last[0] if last else row.last_seen),
        "platform": props.get("Platform"),
        "timezone": props.get("Timezone") or props.get("tz"),
        "reachability": reach,
        "event_counts": counts,
        "total_events": sum(counts.values()),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "predictions": _predictions(store, uid),
    }


def _predictions(store: AccountStore, uid: int) -> list[dict[str, Any]]:
    """The person's score and bucket for each trained predictive goal (docs/predict.md)."""
    from nudge.predict.conditions import user_scores

    return user_scores(store, uid)


def event_props(store: AccountStore, row: dict[str, Any]) -> dict[str, Any]:
    props = _JSON.decode(row["props"]) if row.get("props") else {}
    for col in store.catalog.by_scope("event"):
        v = row.get(col.column)
        if v is not None:
            props[col.name] = wire_value(from_column_value(v, col.type))
    return props


def timeline(store: AccountStore, uid: int, *, since: float | None, until: float | None,
             limit: int, cursor: str | None, event: str | None = None) -> dict[str, Any]:
    """A person's events, newest first, keyset-paged by (ts, seq)."""
    if not 1 <= limit <= 1000:
        raise ValidationError("limit must be 1-1000", field="limit")
    where = ["user_id = ?"]
    params: list[Any] = [uid]
    if since is not None:
        where.append("ts >= to_timestamp(?)::TIMESTAMP")
        params.append(since)
    if until is not None:
        where.append("ts < to_timestamp(?)::TIMESTAMP")
        params.append(until)
    if event:
        where.append("event = ?")
        params.append(event)
    if cursor:
        try:
            ts_us, seq = (int(x) for x in cursor.split(":"))
        except ValueError:
            raise ValidationError("bad cursor", field="cursor") from None
        where.append("(epoch_us(ts) < ? OR (epoch_us(ts) = ? AND seq < ?))")
        params += [ts_us, ts_us, seq]
    # Each table's own newest rows, then their merge: DuckDB pushes a top-N's running ts
    # bound into the table scan (a dynamic filter) but not through the events view's union
    # (the demo's busiest person, 4,866 events: 88 -> 33 ms CPU; docs/benchmarks.md).
    newest = (f"SELECT * FROM {{}} WHERE {' AND '.join(where)} "  # clauses are constants
              "ORDER BY ts DESC, seq DESC LIMIT ?")
    sql = (f"SELECT * FROM (SELECT * FROM ({newest.format('events_sorted')}) UNION ALL BY NAME "
           f"SELECT * FROM ({newest.format('events_recent')})) ORDER BY ts DESC, seq DESC LIMIT ?")
    params = [*params, limit + 1, *params, limit + 1, limit + 1]
    with store.cursor() as cur:
        res = cur.execute(sql, params)
        names = [d[0] for d in res.description]
        rows = [dict(zip(names, r, strict=True)) for r in res.fetchall()]
    more = len(rows) > limit
    rows = rows[:limit]
    events = [{"evtName": r["event"], "ts": int((r["ts"] - EPOCH).total_seconds()),
               "time": iso(r["ts"]), "msgId": r["message_id"], "evtData": event_props(store, r)}
              for r in rows]
    nxt = None
    if more and rows:
        last = rows[-1]
        nxt = f"{int((last['ts'] - EPOCH) / dt.timedelta(microseconds=1))}:{last['seq']}"
    return {"events": events, "next_cursor": nxt}


def event_catalog(store: AccountStore) -> dict[str, Any]:
    with store.cursor() as cur:
        events = cur.execute(
            "SELECT event, count, first_seen, last_seen FROM event_catalog "
            "ORDER BY count DESC, event").fetchall()
        props = cur.execute("SELECT event, name, type FROM event_properties "
                            "ORDER BY event, name, type").fetchall()
    by_event: dict[str, list[dict[str, Any]]] = {}
    for event, name, typ in props:
        col = store.catalog.get("event", name)
        stored = "column" if col is not None and col.type == typ else "json"
        by_event.setdefault(event, []).append({"name": name, "type": typ, "storage": stored})
    return {"events": [{"name": e, "count": n, "first_seen": iso(f), "last_seen": iso(last),
                        "properties": by_event.get(e, [])} for e, n, f, last in events]}
