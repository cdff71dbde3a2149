"""Campaign report: per variant and channel, counts at each stage, conversion rates with 95%
confidence intervals, the lift over the control group, and revenue.

Read from the outbox (one row per message decision), so the counts are exact. A variant's
conversion rate is converted / targeted users (messages that were sent, whatever happened
next); the control group's is converted / users held out. Intervals are Wilson score
intervals for each rate and a normal (Wald) interval for the difference to control.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.store import control

OB = control.outbox
Z95 = 1.959963984540054
SENT_STATES = ("sent", "delivered")


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    if n == 0:
        return None
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, centre - half), min(1.0, centre + half))


def diff_interval(k1: int, n1: int, k0: int, n0: int,
                  z: float = Z95) -> tuple[float, float, float] | None:
    if not n1 or not n0:
        return None
    p1, p0 = k1 / n1, k0 / n0
    se = math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
    return (p1 - p0, p1 - p0 - z * se, p1 - p0 + z * se)


def by_occurrence(engine: Engine, account_id: str, campaign_id: int) -> list[dict[str, Any]]:
    """A recurring campaign's occurrences, oldest first, each with its own counts:
    ``{"occurrence", "at", "queued", "sent", "failed", "skipped", "pending", "opened",
    "clicked", "converted", "revenue"}`` (control-group rows are not messages)."""
    q = sa.select(OB.c.occurrence, OB.c.status, sa.func.count().label("n"),
                  sa.func.count(OB.c.opened_at).label("opened"),
                  sa.func.count(OB.c.clicked_at).label("clicked"),
                  sa.func.count(OB.c.converted_at).label("converted"),
                  sa.func.coalesce(sa.func.sum(OB.c.revenue), 0.0).label("revenue"),
                  ).where(OB.c.account_id == account_id, OB.c.campaign_id == campaign_id,
                          OB.c.status != "control").group_by(OB.c.occurrence, OB.c.status)
    out: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for r in conn.execute(q):
            o = out.setdefault(r.occurrence, {
                "occurrence": r.occurrence,
                "at": float(r.occurrence[1:]) if r.occurrence[:1] == "t" else None,
                "queued": 0, "sent": 0, "failed": 0, "skipped": 0, "pending": 0,
                "opened": 0, "clicked": 0, "converted": 0, "revenue": 0.0})
            o["queued"] += r.n
            key = ("sent" if r.status in SENT_STATES else "skipped" if r.status == "skipped"
                   else "pending" if r.status in ("pending", "sending") else "failed")
            o[key] += r.n
            for k in ("opened", "clicked", "converted", "revenue"):
                o[k] += getattr(r, k)
    return sorted(out.values(), key=lambda o: (o["at"] is None, o["at"] or 0, o["occurrence"]))


def campaign_report(engine: Engine, account_id: str, campaign_id: int) -> dict[str, Any]:
    q = sa.select(OB.c.variant, OB.c.channel, OB.c.status, OB.c.reason,
                  sa.func.count().label("n"),
                  sa.func.count(OB.c.opened_at).label("opened"),
                  sa.func.count(OB.c.clicked_at).label("clicked"),
                  sa.func.count(OB.c.converted_at).label("converted"),
                  sa.func.coalesce(sa.func.sum(OB.c.revenue), 0.0).label("revenue"),
                  ).where(OB.c.account_id == account_id, OB.c.campaign_id == campaign_id
                          ).group_by(OB.c.variant, OB.c.channel, OB.c.status, OB.c.reason)
    base = (OB.c.account_id == account_id, OB.c.campaign_id == campaign_id)
    users_q = sa.select(OB.c.variant, sa.func.count(sa.distinct(OB.c.user_id))).where(
        *base, OB.c.status.in_((*SENT_STATES, "control"))).group_by(OB.c.variant)
    conv_q = sa.select(OB.c.variant, sa.func.count(sa.distinct(OB.c.user_id)),
                       sa.func.coalesce(sa.func.sum(OB.c.revenue), 0.0)).where(
        *base, OB.c.converted_at.is_not(None)).group_by(OB.c.variant)
    with engine.connect() as conn:
        rows = list(conn.execute(q))
        users: dict[str, int] = {v: n for v, n in conn.execute(users_q).all()}
        conv = {v: (n, rev) for v, n, rev in conn.execute(conv_q)}
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    per_variant: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for name in set(users) | set(conv):
        per_variant[name]["users"] = users.get(name, 0)
        per_variant[name]["converted"], per_variant[name]["revenue"] = conv.get(name, (0, 0.0))

    def cell(variant: str, channel: str) -> dict[str, Any]:
        c = cells.get((variant, channel))
        if c is None:
            c = cells[(variant, channel)] = {
                "variant": variant, "channel": channel, "queued": 0, "skipped": {},
                "pending": 0, "sent": 0, "delivered": 0, "failed": 0, "dead": 0,
                "opened": 0, "clicked": 0, "converted": 0, "revenue": 0.0}
        return c

    for r in rows:
        if r.status == "control":
            continue
        c = cell(r.variant, r.channel)
        c["queued"] += r.n
        if r.status == "skipped":
            c["skipped"][r.reason or "skipped"] = c["skipped"].get(r.reason or "skipped", 0) + r.n
            continue
        if r.status in ("pending", "sending"):
            c["pending"] += r.n
        elif r.status in SENT_STATES:
            c["sent"] += r.n
            if r.status == "delivered":
                c["delivered"] += r.n
        elif r.status == "dead":
            c["dead"] += r.n
            c["failed"] += r.n
        else:  # rejected, unreachable
            c["failed"] += r.n
        for k in ("opened", "clicked", "converted"):
            c[k] += getattr(r, k)
        c["revenue"] += r.revenue
    control_row = per_variant.get("control")
    variants = []
    for name, pv in sorted(per_variant.items()):
        n, k = int(pv["users"]), int(pv["converted"])
        v: dict[str, Any] = {"variant": name, "users": n, "converted": k,
                             "conversion_rate": (k / n) if n else None,
                             "conversion_ci95": wilson(k, n), "revenue": pv["revenue"]}
        if name != "control" and control_row is not None:
            d = diff_interval(k, n, int(control_row["converted"]), int(control_row["users"]))
            if d is not None:
                v["lift_vs_control"] = {"difference": d[0], "ci95": [d[1], d[2]],
                                        "significant": d[1] > 0 or d[2] < 0}
        variants.append(v)
    return {"campaign_id": campaign_id,
            "by_variant_channel": sorted(cells.values(),
                                         key=lambda c: (c["variant"], c["channel"])),
            "variants": variants}
