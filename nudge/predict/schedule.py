"""Retraining on a schedule: a simple in-process timer thread.

Every ``NUDGE_PREDICT_SCHEDULE_S`` seconds the server looks at every account's goals; a goal
with ``retrain_every_hours`` whose latest model is older than that (or that has none) is
trained, one goal at a time, in this thread. It is a timer in the server process, not a
distributed scheduler: with the server down nothing is retrained, and training starts again
at the next look after a restart.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from nudge.clock import clock

from .goals import GoalDirectory
from .runs import TrainingRuns

log = logging.getLogger("nudge.predict")


class RetrainSchedule:
    def __init__(self, nudge: Any) -> None:
        self.nudge = nudge
        self.interval = nudge.settings.predict_schedule_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> RetrainSchedule:
        if self.interval > 0:
            self._thread = threading.Thread(target=self._loop, name="predict-schedule",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the schedule must survive a bad account
                log.exception("predict schedule failed")

    def tick(self) -> int:
        """Train every due goal now; returns how many were trained."""
        engine = self.nudge.accounts.engine
        trained = 0
        for account in self.nudge.accounts.list():
            runs = TrainingRuns(engine, account.id)
            for goal in GoalDirectory(engine, account.id).list():
                if self._stop.is_set() or goal.retrain_every_hours is None:
                    continue
                model = runs.latest_model(goal.id)
                due = model is None or (
                    clock.now() - model["trained_at"] >= goal.retrain_every_hours * 3600)
                last = runs.latest_run(goal.id)
                if not due or (last and last["status"] == "running"):
                    continue
                if last and last["status"] == "failed" and last["finished_at"] and \
                        clock.now() - last["finished_at"] < goal.retrain_every_hours * 3600:
                    continue  # failed recently (e.g. not enough data): wait a period
                log.info("retraining goal %s of account %s on schedule", goal.id, account.id)
                runs.run(self.nudge.stores.get(account.id), goal, "schedule")
                trained += 1
        return trained
