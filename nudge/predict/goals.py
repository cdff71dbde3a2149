"""Predictive goals: what to predict, checked, and stored per account in the control store.

A goal is either an **event goal** — "does the person do ``event`` (matching ``where``, the
segment language's event filters) within ``horizon_days`` / before ``deadline``" — or a
**churn goal** — "does the person do nothing at all in the next ``horizon_days``", asked of
people active in the last ``active_within_days``::

    {"name": "Electronics buyers", "event": "Charged",
     "where": [{"property": "Category", "op": "eq", "value": "Electronics"}],
     "horizon_days": 14}
    {"name": "Buy by May 24th", "event": "Charged", "deadline": "2027-05-24T00:00:00Z"}
    {"name": "Churn", "kind": "churn", "horizon_days": 30, "active_within_days": 90}

Optional: ``retrain_every_hours`` (the in-process schedule), ``training_cutoffs`` (how many
past cutoffs to learn from, default 12) and ``cutoff_step_days`` (their spacing, default
the horizon, at most 14 days).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.clock import clock
from nudge.errors import NotFound, ValidationError
from nudge.query.segments.model import DefinitionError, Did, EventSpec, parse
from nudge.store.control import predict_goals

DAY = 86400.0
KINDS = ("event", "churn")
FIELDS = ("name", "kind", "event", "where", "horizon_days", "deadline", "active_within_days",
          "retrain_every_hours", "training_cutoffs", "cutoff_step_days")
MAX_HORIZON_DAYS = 366


@dataclass(frozen=True)
class Goal:
    id: int
    account_id: str
    name: str
    kind: str
    spec: EventSpec | None  # the outcome event (event goals)
    horizon_days: float | None
    deadline: float | None
    active_within_days: float
    retrain_every_hours: float | None
    training_cutoffs: int
    cutoff_step_days: float | None
    definition: dict[str, Any]
    created_at: float = 0.0
    updated_at: float = 0.0

    def horizon(self, now: float) -> float:
        """The prediction horizon in seconds as of ``now`` (a deadline comes closer)."""
        if self.deadline is not None:
            left = self.deadline - now
            if left <= 0:
                raise ValidationError("the goal's deadline has passed", field="deadline")
            return left
        assert self.horizon_days is not None
        return self.horizon_days * DAY

    def step(self, now: float) -> float:
        if self.cutoff_step_days is not None:
            return self.cutoff_step_days * DAY
        return min(self.horizon(now), 14 * DAY)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, **self.definition, "kind": self.kind,
                "created_at": self.created_at, "updated_at": self.updated_at}


def _number(body: dict[str, Any], key: str, lo: float, hi: float, *,
            integer: bool = False) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
            or (integer and not float(v).is_integer()) or not lo <= v <= hi:
        kind = "a whole number" if integer else "a number"
        raise ValidationError(f"{key} must be {kind} between {lo:g} and {hi:g}", field=key)
    return float(v)


def _time(v: Any, key: str) -> float:
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    if isinstance(v, str):
        try:
            t = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()
    raise ValidationError(f"{key} must be an ISO 8601 date or epoch seconds", field=key)


def check_goal(body: Any, now: float | None, goal_id: int = 0, account_id: str = "") -> Goal:
    """Validate a goal definition; raises ValidationError naming the offending field.
    ``now=None``: a stored goal, whose deadline may have passed since."""
    if not isinstance(body, dict):
        raise ValidationError("a goal is a JSON object", field="body")
    for k in body:
        if k not in FIELDS:
            raise ValidationError(f"unknown field {k!r}; allowed: {', '.join(FIELDS)}", field=k)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise ValidationError("name must be 1-200 characters", field="name")
    kind = body.get("kind", "event")
    if kind not in KINDS:
        raise ValidationError(f"kind must be one of {list(KINDS)}", field="kind")
    spec = None
    if kind == "event":
        if "event" not in body:
            raise ValidationError("event is required: the event the goal predicts",
                                  field="event")
        try:
            node = parse({"did": {k: body[k] for k in ("event", "where") if k in body}},
                         now or 0.0)
        except DefinitionError as e:
            field = e.path.removeprefix("$.did.")
            raise ValidationError(f"{field}: {str(e).split(': ', 1)[-1]}",
                                  field=field) from None
        assert isinstance(node, Did)
        spec = node.spec
    else:
        for k in ("event", "where", "deadline"):
            if k in body:
                raise ValidationError(f"{k} does not apply to a churn goal (no activity at "
                                      "all within horizon_days)", field=k)
    horizon = _number(body, "horizon_days", 1, MAX_HORIZON_DAYS)
    deadline = _time(body["deadline"], "deadline") if "deadline" in body else None
    if (horizon is None) == (deadline is None):
        raise ValidationError("give exactly one of horizon_days or deadline",
                              field="horizon_days")
    if deadline is not None and now is not None:
        if deadline <= now:
            raise ValidationError("deadline must be in the future", field="deadline")
        if deadline - now > MAX_HORIZON_DAYS * DAY:
            raise ValidationError(f"deadline must be within {MAX_HORIZON_DAYS} days",
                                  field="deadline")
    active = _number(body, "active_within_days", 1, 3660)
    if active is not None and kind != "churn":
        raise ValidationError("active_within_days applies to churn goals only",
                              field="active_within_days")
    return Goal(
        id=goal_id, account_id=account_id, name=name.strip(), kind=kind, spec=spec,
        horizon_days=horizon, deadline=deadline, active_within_days=active or 90.0,
        retrain_every_hours=_number(body, "retrain_every_hours", 1, 24 * 365),
        training_cutoffs=int(_number(body, "training_cutoffs", 1, 24, integer=True) or 12),
        cutoff_step_days=_number(body, "cutoff_step_days", 1, MAX_HORIZON_DAYS),
        definition=dict(body))


class GoalDirectory:
    """CRUD of one account's goals. Other accounts' goals answer 404."""

    def __init__(self, engine: Engine, account_id: str) -> None:
        self.engine = engine
        self.account_id = account_id

    def _goal(self, r: Any) -> Goal:
        goal = check_goal(json.loads(r.definition), None, r.id, r.account_id)
        return Goal(**{**goal.__dict__, "created_at": r.created_at,
                       "updated_at": r.updated_at})

    def get(self, goal_id: int) -> Goal:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(predict_goals).where(
                predict_goals.c.id == goal_id, predict_goals.c.account_id == self.account_id,
                predict_goals.c.deleted_at.is_(None))).first()
        if r is None:
            raise NotFound("no such goal")
        return self._goal(r)

    def list(self) -> list[Goal]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(predict_goals).where(
                predict_goals.c.account_id == self.account_id,
                predict_goals.c.deleted_at.is_(None)).order_by(predict_goals.c.id)).all()
        return [self._goal(r) for r in rows]

    def create(self, body: Any) -> Goal:
        goal = check_goal(body, clock.now())
        now = clock.now()
        with self.engine.begin() as conn:
            gid = conn.execute(predict_goals.insert().values(
                account_id=self.account_id, name=goal.name, definition=json.dumps(body),
                created_at=now, updated_at=now)).inserted_primary_key[0]
        return self.get(int(gid))

    def update(self, goal_id: int, body: Any) -> Goal:
        self.get(goal_id)
        goal = check_goal(body, clock.now())
        with self.engine.begin() as conn:
            conn.execute(predict_goals.update().where(predict_goals.c.id == goal_id).values(
                name=goal.name, definition=json.dumps(body), updated_at=clock.now()))
        return self.get(goal_id)

    def delete(self, goal_id: int) -> None:
        self.get(goal_id)
        with self.engine.begin() as conn:
            conn.execute(predict_goals.update().where(predict_goals.c.id == goal_id)
                         .values(deleted_at=clock.now()))
