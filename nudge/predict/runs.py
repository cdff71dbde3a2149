"""Training runs with progress, and the stored models, in the control store.

A run trains one goal (train.py) and records its stage and progress (0..1) as it goes, so
``GET /1/predict/goals/{id}/train`` and the CLI can show it. One run per goal at a time in a
process; a run a crashed process left ``running`` is reported as ``interrupted``.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.clock import clock
from nudge.errors import Conflict, NotFound, NudgeError
from nudge.store.account import AccountStore
from nudge.store.control import predict_models, predict_runs

from .goals import Goal
from .train import Progress, train_goal

log = logging.getLogger("nudge.predict")
_RUNNING: set[tuple[str, int]] = set()  # (account, goal) trained in this process now
_LOCK = threading.Lock()


class TrainingRuns:
    """Runs and models of one account."""

    def __init__(self, engine: Engine, account_id: str) -> None:
        self.engine = engine
        self.account_id = account_id

    # -- running ----------------------------------------------------------------------------
    def _claim(self, goal_id: int) -> None:
        with _LOCK:
            if (self.account_id, goal_id) in _RUNNING:
                raise Conflict("this goal is being trained already")
            _RUNNING.add((self.account_id, goal_id))

    def _release(self, goal_id: int) -> None:
        with _LOCK:
            _RUNNING.discard((self.account_id, goal_id))

    def start(self, store: AccountStore, goal: Goal, trigger: str,
              now: float | None = None) -> int:
        """Start training in a background thread; returns the run id at once."""
        self._claim(goal.id)
        try:
            run_id = self._new_run(goal.id, trigger)
        except BaseException:
            self._release(goal.id)
            raise
        threading.Thread(target=self._execute, args=(run_id, store, goal, now, None),
                         name=f"train-{self.account_id}-{goal.id}", daemon=True).start()
        return run_id

    def run(self, store: AccountStore, goal: Goal, trigger: str, now: float | None = None,
            progress: Progress | None = None) -> dict[str, Any]:
        """Train now, in this thread (CLI, scheduler); returns the finished run."""
        self._claim(goal.id)
        try:
            run_id = self._new_run(goal.id, trigger)
        except BaseException:
            self._release(goal.id)
            raise
        self._execute(run_id, store, goal, now, progress)
        return self.get(run_id)

    def _new_run(self, goal_id: int, trigger: str) -> int:
        with self.engine.begin() as conn:
            return int(conn.execute(predict_runs.insert().values(
                goal_id=goal_id, account_id=self.account_id, status="running",
                stage="starting", progress=0.0, trigger=trigger,
                started_at=clock.now())).inserted_primary_key[0])

    def _execute(self, run_id: int, store: AccountStore, goal: Goal, now: float | None,
                 progress: Progress | None) -> None:
        def report(stage: str, fraction: float) -> None:
            with self.engine.begin() as conn:
                conn.execute(predict_runs.update().where(predict_runs.c.id == run_id)
                             .values(stage=stage, progress=fraction))
            if progress is not None:
                progress(stage, fraction)

        try:
            record = train_goal(store, goal, now, report)
            with self.engine.begin() as conn:
                model_id = conn.execute(predict_models.insert().values(
                    goal_id=goal.id, account_id=self.account_id,
                    trained_at=record["trained_at"], as_of=record["as_of"],
                    features=json.dumps(record["features"]),
                    metrics=json.dumps(record["metrics"]),
                    path=record["path"])).inserted_primary_key[0]
                conn.execute(predict_runs.update().where(predict_runs.c.id == run_id).values(
                    status="done", stage="done", progress=1.0, finished_at=clock.now(),
                    model_id=model_id))
        except Exception as e:  # noqa: BLE001 - recorded on the run, shown to the user
            if not isinstance(e, NudgeError):
                log.exception("training goal %s of account %s failed", goal.id,
                              self.account_id)
            message = e.message if isinstance(e, NudgeError) else f"internal error: {e!r}"
            with self.engine.begin() as conn:
                conn.execute(predict_runs.update().where(predict_runs.c.id == run_id).values(
                    status="failed", stage="failed", finished_at=clock.now(),
                    error=message))
        finally:
            self._release(goal.id)

    # -- reading ----------------------------------------------------------------------------
    def _run_dict(self, r: Any) -> dict[str, Any]:
        status = r.status
        if status == "running" and (self.account_id, r.goal_id) not in _RUNNING:
            status = "interrupted"  # the process that ran it is gone
        return {"id": r.id, "goal": r.goal_id, "status": status, "stage": r.stage,
                "progress": r.progress, "trigger": r.trigger, "started_at": r.started_at,
                "finished_at": r.finished_at, "error": r.error, "model": r.model_id}

    def get(self, run_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(predict_runs).where(
                predict_runs.c.id == run_id,
                predict_runs.c.account_id == self.account_id)).first()
        if r is None:
            raise NotFound("no such training run")
        return self._run_dict(r)

    def latest_run(self, goal_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(predict_runs).where(
                predict_runs.c.goal_id == goal_id,
                predict_runs.c.account_id == self.account_id)
                .order_by(predict_runs.c.id.desc()).limit(1)).first()
        return None if r is None else self._run_dict(r)

    def latest_model(self, goal_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(predict_models).where(
                predict_models.c.goal_id == goal_id,
                predict_models.c.account_id == self.account_id)
                .order_by(predict_models.c.id.desc()).limit(1)).first()
        if r is None:
            return None
        return {"id": r.id, "goal": r.goal_id, "trained_at": r.trained_at, "as_of": r.as_of,
                "features": json.loads(r.features), "metrics": json.loads(r.metrics)}
