"""Journey reports: counts per node and exit reason, and one person's path.

Exact, read from ``journey_entries`` and ``journey_steps``.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.store import control

E, S = control.journey_entries, control.journey_steps


def journey_report(engine: Engine, journey_id: int) -> dict[str, Any]:
    """``{"entered", "active", "at_node": {node: n}, "exited": {reason: n}, "converted",
    "conversion_rate", "by_version": [...], "steps": {node: {outcome: n}}}``"""
    with engine.connect() as conn:
        by_v = conn.execute(sa.select(
            E.c.version, sa.func.count(),
            sa.func.sum(sa.case((E.c.status == "active", 1), else_=0)),
            sa.func.sum(sa.case((E.c.converted_at.is_not(None), 1), else_=0)))
            .where(E.c.journey_id == journey_id).group_by(E.c.version)
            .order_by(E.c.version)).fetchall()
        at_node: dict[str, int] = dict(conn.execute(sa.select(E.c.node, sa.func.count()).where(
            E.c.journey_id == journey_id, E.c.status == "active").group_by(E.c.node)).fetchall())
        exited: dict[str, int] = dict(conn.execute(
            sa.select(E.c.exit_reason, sa.func.count())
            .where(E.c.journey_id == journey_id, E.c.status == "exited")
            .group_by(E.c.exit_reason)).fetchall())
        steps: dict[str, dict[str, int]] = {}
        for node, outcome, n in conn.execute(sa.select(S.c.node, S.c.outcome, sa.func.count())
                                             .where(S.c.journey_id == journey_id)
                                             .group_by(S.c.node, S.c.outcome)):
            steps.setdefault(node, {})[outcome or ""] = n
    entered = sum(r[1] for r in by_v)
    converted = sum(int(r[3] or 0) for r in by_v)
    return {"journey_id": journey_id, "entered": entered,
            "active": sum(int(r[2] or 0) for r in by_v), "at_node": at_node,
            "exited": exited, "converted": converted,
            "conversion_rate": converted / entered if entered else None,
            "by_version": [{"version": r[0], "entered": r[1], "active": int(r[2] or 0),
                            "converted": int(r[3] or 0)} for r in by_v],
            "steps": steps}


def user_path(engine: Engine, journey_id: int, user_id: int) -> list[dict[str, Any]]:
    """Every entry of one person with its steps in order."""
    with engine.connect() as conn:
        entries = conn.execute(sa.select(E).where(E.c.journey_id == journey_id,
                                                  E.c.user_id == user_id)
                               .order_by(E.c.id)).fetchall()
        out = []
        for en in entries:
            steps = conn.execute(sa.select(S.c.node, S.c.outcome, S.c.at).where(
                S.c.entry_id == en.id).order_by(S.c.id)).fetchall()
            out.append({"entry_id": en.id, "version": en.version, "status": en.status,
                        "node": en.node if en.status == "active" else None,
                        "state": en.state if en.status == "active" else None,
                        "due_at": en.due_at, "entered_at": en.entered_at,
                        "exited_at": en.exited_at, "exit_reason": en.exit_reason,
                        "converted_at": en.converted_at,
                        "occurrence": _occurrence(en.context),
                        "steps": [{"node": s.node, "outcome": s.outcome, "at": s.at}
                                  for s in steps]})
    return out


def _occurrence(context: str | None) -> str | None:
    """A date-property entry's occurrence (the shifted date), else None."""
    if not context or "$occurrence" not in context:
        return None
    v = json.loads(context).get("$occurrence")
    return str(v) if v is not None else None
