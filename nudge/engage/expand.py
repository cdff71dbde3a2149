"""Audience expansion: segment → recipients → render → policy → outbox, resumable.

One occurrence of a campaign is a ``campaign_runs`` row. Expansion:

1. **snapshot**: the segment is evaluated once on the live store and its member ids are
   written to an Arrow file (written to a temporary name, fsynced, renamed), so the
   audience is fixed for the occurrence and a resumed run sees the same list;
2. **expanding**: the ids are processed in batches of ``NUDGE_ENGAGE_EXPAND_BATCH``; each
   batch's outbox rows *and* the run's cursor are committed in one control-store
   transaction. After kill -9 the run resumes at its cursor; a batch that was half done is
   redone, and the unique idempotency keys make its already-inserted rows no-ops.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import sqlalchemy as sa

from nudge.clock import clock
from nudge.query.segments.evaluate import SegmentEngine
from nudge.query.segments.model import parse
from nudge.query.segments.saved import SegmentDirectory
from nudge.store import control

from . import outbox
from .campaigns import CampaignSpec
from .compose import ContentCache, address, load_recipients, profile_props
from .directory import Campaign, CampaignDirectory, spec_of
from .policy import PolicyGate
from .service import Engage
from .templates import TemplateError

log = logging.getLogger("nudge.engage")
R = control.campaign_runs


def audience_node(engage: Engage, account_id: str, spec: CampaignSpec) -> Any:
    saved = SegmentDirectory(engage.engine, account_id)
    a = spec.audience or {}
    if "segment_id" in a:
        return saved, parse(saved.get(int(a["segment_id"])).definition, clock.now())
    return saved, parse(a.get("definition"), clock.now())


def segment_engine(engage: Engage, account_id: str, saved: SegmentDirectory) -> SegmentEngine:
    return SegmentEngine(engage.stores.get(account_id), engage.timezone(account_id), saved.node)


def audience_ids(engage: Engage, account_id: str, spec: CampaignSpec) -> list[int]:
    saved, node = audience_node(engage, account_id, spec)
    eng = segment_engine(engage, account_id, saved)
    return sorted(eng.user_ids(node))


class Expander:
    def __init__(self, engage: Engage) -> None:
        self.engage = engage
        self.dir = engage.settings.data_dir / "engage"

    def start_run(self, c: Campaign, occurrence: str) -> int:
        """The run of (campaign, occurrence), created once."""
        with self.engage.engine.begin() as conn:
            r = conn.execute(sa.select(R.c.id).where(R.c.campaign_id == c.id,
                                                     R.c.occurrence == occurrence)).first()
            if r is not None:
                return int(r[0])
            return int(conn.execute(R.insert().values(
                account_id=c.account_id, campaign_id=c.id, occurrence=occurrence,
                status="snapshot", created_at=clock.now())).inserted_primary_key[0])

    def unfinished(self) -> list[int]:
        with self.engage.engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(R.c.id).where(R.c.status != "done")
                                               .order_by(R.c.id))]

    def run(self, run_id: int) -> None:
        """Snapshot (if not yet) and expand to the end, or until the campaign is paused or
        stopped (a paused campaign's run resumes when it is sent again)."""
        with self.engage.engine.connect() as conn:
            run = conn.execute(sa.select(R).where(R.c.id == run_id)).one()
        camp_dir = CampaignDirectory(self.engage.engine, run.account_id)
        c = camp_dir.get(run.campaign_id)
        if c.status in ("stopped", "completed"):
            self._finish(run_id)
            return
        spec = spec_of(c)
        path = Path(run.audience_path) if run.audience_path else None
        if run.status == "snapshot" or path is None or not path.exists():
            path = self._snapshot(run, spec)
        ids = ipc.open_file(pa.memory_map(str(path))).read_all().column(0).to_pylist()
        batch = self.engage.settings.engage_expand_batch
        pos = run.cursor
        while pos < len(ids):
            c = camp_dir.get(run.campaign_id)
            if c.status in ("paused", "stopped") or self.engage.stopping:
                return
            chunk = ids[pos:pos + batch]
            rows = self.rows(c, spec, run.occurrence, chunk)
            pos += len(chunk)
            with self.engage.engine.begin() as conn:
                outbox.insert(conn, rows)
                conn.execute(R.update().where(R.c.id == run_id).values(cursor=pos))
            self.engage.notify()
        self._finish(run_id)

    def _finish(self, run_id: int) -> None:
        with self.engage.engine.begin() as conn:
            conn.execute(R.update().where(R.c.id == run_id).values(status="done",
                                                                   finished_at=clock.now()))

    def _snapshot(self, run: Any, spec: CampaignSpec) -> Path:
        ids = audience_ids(self.engage, run.account_id, spec)
        d = self.dir / run.account_id
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"run-{run.id}.arrow"
        tmp = path.with_suffix(".tmp")
        table = pa.table({"user_id": pa.array(ids, pa.int64())})
        with pa.OSFile(str(tmp), "wb") as f, ipc.new_file(f, table.schema) as w:
            w.write_table(table)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        with self.engage.engine.begin() as conn:
            conn.execute(R.update().where(R.c.id == run.id).values(
                status="expanding", audience_path=str(path), total=len(ids)))
        log.info("audience snapshot", extra={"run": run.id, "recipients": len(ids)})
        return path

    def rows(self, c: Campaign, spec: CampaignSpec, occurrence: str, uids: list[int],
             event: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
             send_at: float | None = None, meta: dict[str, Any] | None = None
             ) -> list[dict[str, Any]]:
        """Outbox rows for these users: variant, policy, channel, rendered content."""
        return build_rows(self.engage, c, spec, occurrence, uids, event, data, send_at, meta)


def build_rows(engage: Engage, c: Campaign, spec: CampaignSpec, occurrence: str,
               uids: list[int], event: dict[str, Any] | None = None,
               data: dict[str, Any] | None = None, send_at: float | None = None,
               meta: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Outbox rows for these users: variant, policy, channel, rendered content (with the
    cyclic garbage collector paused: ``outbox.paused_gc``)."""
    with outbox.paused_gc():
        return _build_rows(engage, c, spec, occurrence, uids, event, data, send_at, meta)


def _build_rows(engage: Engage, c: Campaign, spec: CampaignSpec, occurrence: str,
                uids: list[int], event: dict[str, Any] | None,
                data: dict[str, Any] | None, send_at: float | None,
                meta: dict[str, Any] | None) -> list[dict[str, Any]]:
    account_id = c.account_id
    now = clock.now()
    store = engage.stores.get(account_id)
    props = profile_props(spec)
    recipients = load_recipients(store, uids, props, full=props is None,
                                 tokens=bool({"push", "webpush"} & set(spec.channels)))
    contents = _content_cache(spec).contents(c.id, spec, event, data)
    gate = PolicyGate(engage.engine, account_id, engage.policies.get(account_id), spec, c.id,
                      now)
    gate.prepare(uids)
    default_tz = engage.timezone(account_id)
    user_tz_at = spec.schedule.get("at") if spec.schedule.get("user_timezone") else None
    base_meta = dict(meta or {})
    if event is not None or data is not None:
        base_meta["ctx"] = {"event": event, "data": data}
    # Per channel: the fallback channels after it (the same for every recipient).
    rests = {ch: list(spec.channels[i + 1:]) for i, ch in enumerate(spec.channels)}
    # One variant and no control group: every recipient gets it, no hash needed.
    only = spec.variants[0] if len(spec.variants) == 1 and spec.control_percent <= 0 else None
    rows: list[dict[str, Any]] = []
    common: dict[str, Any] = {
        "account_id": account_id, "campaign_id": c.id, "occurrence": occurrence,
        "category": spec.category, "transactional": spec.transactional, "now": now}
    # A message's row is this one with its own key, person, channel, content and time.
    pending = outbox.row(key="", user_id=0, variant="", channel="", to=None, content=None,
                         meta=None, status="pending", reason=None, at=now, **common)
    prefix = outbox.idem_prefix(c.id, occurrence)
    for uid in uids:
        r = recipients.get(uid)
        variant = only if only is not None else spec.variant_for(c.id, uid)
        vname = "control" if variant is None else variant.name
        key = f"{prefix}{uid}:{vname}"  # outbox.idem_key
        if r is None:  # merged away or erased since the snapshot
            rows.append(outbox.row(key=key, user_id=uid, variant=vname,
                                   channel=spec.channels[0], to=None, content=None, meta=None,
                                   status="skipped", reason="no profile", at=now, **common))
            continue
        if variant is None:
            rows.append(outbox.row(key=key, user_id=uid, variant=vname,
                                   channel=spec.channels[0], to=None, content=None, meta=None,
                                   status="control", reason=None, at=now, **common))
            continue
        tz = r.timezone(default_tz)
        d = gate.decide(uid, lambda ch, r=r: address(spec, ch, r)[0] is not None, tz)
        if d.channel is None:
            rows.append(outbox.row(key=key, user_id=uid, variant=vname,
                                   channel=spec.channels[0], to=None, content=None,
                                   meta={"tried": d.tried} if d.tried else None,
                                   status="skipped", reason=d.reason, at=now, **common))
            continue
        to, ch_meta = address(spec, d.channel, r)
        try:
            content = contents.json(variant, d.channel, r)
        except TemplateError as e:
            rows.append(outbox.row(key=key, user_id=uid, variant=vname, channel=d.channel,
                                   to=None, content=None, meta=None, status="skipped",
                                   reason=f"render: {e.message}"[:200], at=now, **common))
            continue
        at = d.send_at
        if send_at is not None:
            at = max(at, send_at)
        if user_tz_at is not None:
            at = max(at, local_wall_time(user_tz_at, tz))
        m = dict(base_meta, **ch_meta) if base_meta or ch_meta else {}
        rest = rests[d.channel]
        if rest:
            m["fallback"] = list(rest)
        if d.tried:
            m["tried"] = d.tried
        gate.record(uid, d.channel)
        rows.append({**pending, "idem_key": key, "user_id": uid, "variant": vname,
                     "channel": d.channel, "to_addr": to, "content": content,
                     "meta": json.dumps(m) if m else None, "next_attempt_at": at})
    return rows


_CACHES: dict[int, tuple[CampaignSpec, ContentCache]] = {}


def _content_cache(spec: CampaignSpec) -> ContentCache:
    """One content memo per campaign version (specs are cached per version)."""
    hit = _CACHES.get(id(spec))
    if hit is None or hit[0] is not spec:
        if len(_CACHES) > 200:
            _CACHES.clear()
        hit = _CACHES[id(spec)] = (spec, ContentCache())
    return hit[1]


def local_wall_time(utc_at: float, tz: str) -> float:
    """The moment the wall-clock time of ``utc_at`` (read in UTC) occurs in zone ``tz``."""
    import datetime as dt
    from zoneinfo import ZoneInfo

    wall = dt.datetime.fromtimestamp(utc_at, dt.UTC).replace(tzinfo=None)
    return wall.replace(tzinfo=ZoneInfo(tz)).timestamp()
