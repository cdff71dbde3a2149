"""Starts due occurrences (one-time and cron campaigns), resumes interrupted expansions, and
marks campaigns completed once everything they queued reached a final state."""

from __future__ import annotations

import asyncio
import logging

import sqlalchemy as sa

from nudge.clock import clock
from nudge.store import control

from .campaigns import next_cron
from .directory import Campaign, CampaignDirectory, _campaign, spec_of
from .expand import Expander
from .service import Engage

log = logging.getLogger("nudge.engage")
C = control.campaigns
TICK_S = 1.0  # due occurrences start within a second; /send and edits kick it at once


class Scheduler:
    def __init__(self, engage: Engage) -> None:
        self.engage = engage
        self.expander = Expander(engage)
        self.kick = asyncio.Event()

    def close(self) -> None:
        pass

    async def run(self) -> None:
        for run_id in await asyncio.to_thread(self.expander.unfinished):
            await self._expand(run_id)
        while not self.engage.stopping:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("engage scheduler tick failed")
            self.kick.clear()
            try:
                await asyncio.wait_for(self.kick.wait(), TICK_S)
            except TimeoutError:
                pass

    async def tick(self) -> None:
        for c in await asyncio.to_thread(self._due):
            run_id = await asyncio.to_thread(self._start, c)
            if run_id is not None:
                await self._expand(run_id)
        # Runs of campaigns resumed after a pause.
        for run_id in await asyncio.to_thread(self._resumable):
            await self._expand(run_id)
        await asyncio.to_thread(self._complete)

    async def _expand(self, run_id: int) -> None:
        try:
            await asyncio.to_thread(self.expander.run, run_id)
        except Exception:
            log.exception("expansion of run %s failed; retried on the next tick", run_id)

    def _due(self) -> list[Campaign]:
        now = clock.now()
        with self.engage.engine.connect() as conn:
            return [_campaign(r) for r in conn.execute(sa.select(C).where(
                C.c.status.in_(("scheduled", "running")), C.c.next_run_at.is_not(None),
                C.c.next_run_at <= now, C.c.deleted_at.is_(None)))]

    def _start(self, c: Campaign) -> int | None:
        """Create the occurrence's run and move the campaign's schedule on, together."""
        spec = spec_of(c)
        assert c.next_run_at is not None
        occurrence = f"t{int(c.next_run_at)}"
        nxt = next_cron(spec.schedule, c.next_run_at) if c.kind == "recurring" else None
        run_id = self.expander.start_run(c, occurrence)
        with self.engage.engine.begin() as conn:
            conn.execute(C.update().where(C.c.id == c.id, C.c.next_run_at == c.next_run_at)
                         .values(next_run_at=nxt, status="running"))
        return run_id

    def _resumable(self) -> list[int]:
        r = control.campaign_runs
        with self.engage.engine.connect() as conn:
            return [x[0] for x in conn.execute(
                sa.select(r.c.id).join(C, C.c.id == r.c.campaign_id).where(
                    r.c.status != "done", C.c.status == "running"))]

    def _complete(self) -> None:
        """One-time and finished recurring campaigns whose runs are done and whose messages
        are all final become completed."""
        r, o = control.campaign_runs, control.outbox
        with self.engage.engine.begin() as conn:
            candidates = [row.id for row in conn.execute(sa.select(C.c.id).where(
                C.c.status == "running", C.c.kind.in_(("one_time", "recurring")),
                C.c.next_run_at.is_(None)))]
            for cid in candidates:
                open_runs = conn.execute(sa.select(sa.func.count()).select_from(r).where(
                    r.c.campaign_id == cid, r.c.status != "done")).scalar_one()
                any_run = conn.execute(sa.select(sa.func.count()).select_from(r).where(
                    r.c.campaign_id == cid)).scalar_one()
                active = conn.execute(sa.select(sa.func.count()).select_from(o).where(
                    o.c.campaign_id == cid, o.c.status.in_(("pending", "sending")))
                ).scalar_one()
                if any_run and not open_runs and not active:
                    conn.execute(C.update().where(C.c.id == cid).values(status="completed"))


def directory(engage: Engage, account_id: str) -> CampaignDirectory:
    return CampaignDirectory(engage.engine, account_id)
