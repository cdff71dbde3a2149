"""RFM and intent conditions of the segment language, compiled to set queries.

``rfm_segment`` / ``rfm_score`` compute RFM live (rfm.py) inside the segment's query;
``intent_bucket`` / ``intent_score`` read the goal's stored scores (``predict_scores`` in the
account store, replaced atomically after each training). The account's settings are read
only when a definition has one of these conditions, so other segments pay nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nudge.query.segments.compiler import Sql
from nudge.query.segments.model import Intent, Rfm
from nudge.store.account import AccountStore

from . import rfm
from .names import NO_PURCHASES

if TYPE_CHECKING:
    from nudge.query.segments.compiler import Compiler

SCORES_TABLE = "predict_scores"
_CMP = {">=": ">=", ">": ">", "<=": "<=", "<": "<", "=": "=", "!=": "<>"}


class PredictSource:
    """What the compiler needs to know about an account's predictions, read on first use."""

    def __init__(self, store: AccountStore) -> None:
        self.store = store
        self._settings: rfm.RfmSettings | None = None
        self._scored: set[int] | None = None

    def rfm_settings(self) -> rfm.RfmSettings:
        if self._settings is None:
            self._settings = rfm.load_settings(self.store)
        return self._settings

    def scored_goals(self) -> set[int]:
        if self._scored is None:
            self._scored = scored_goals(self.store)
        return self._scored


def scored_goals(store: AccountStore) -> set[int]:
    """Goals that have scores in the account store."""
    with store.cursor() as cur:
        exists = cur.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = "
                             "'acct' AND table_name = ?", [SCORES_TABLE]).fetchone()[0]
        if not exists:
            return set()
        return {int(r[0]) for r in cur.execute(
            f"SELECT DISTINCT goal_id FROM {SCORES_TABLE}").fetchall()}


def user_scores(store: AccountStore, user_id: int) -> list[dict[str, Any]]:
    """One person's score and bucket for every trained goal (shown on the profile)."""
    if not scored_goals(store):
        return []
    with store.cursor() as cur:
        rows = cur.execute(f"SELECT goal_id, score, bucket FROM {SCORES_TABLE} "
                           "WHERE user_id = ? ORDER BY goal_id", [user_id]).fetchall()
    return [{"goal": int(g), "score": float(s), "bucket": b} for g, s, b in rows]


def _source(compiler: Compiler) -> PredictSource | None:
    return compiler.predict if isinstance(compiler.predict, PredictSource) else None


def rfm_members(compiler: Compiler, node: Rfm) -> Sql:
    source = _source(compiler)
    settings = source.rfm_settings() if source else rfm.RfmSettings()
    sql, params = rfm.rfm_sql(compiler.catalog, settings, compiler.now, compiler.events)
    where: list[str] = []
    args: list[Any] = []
    negated = False
    if node.segments:
        named = [s for s in node.segments if s != NO_PURCHASES]
        if NO_PURCHASES in node.segments:
            # Members = everyone except the buyers outside the named segments.
            negated = True
            if named:
                where.append(f"segment NOT IN ({', '.join('?' * len(named))})")
                args += named
        else:
            where.append(f"segment IN ({', '.join('?' * len(named))})")
            args += named
    for key in ("r", "f", "m"):
        scores = getattr(node, key)
        if scores:
            where.append(f"{key} IN ({', '.join(str(int(x)) for x in scores)})")
    if compiler.user_id is not None:
        where.append("user_id = ?")
        args.append(compiler.user_id)
    text = f"SELECT user_id FROM ({sql})"
    if where:
        text += " WHERE " + " AND ".join(where)
    return Sql(text, params + args, negated=negated)


def intent_members(compiler: Compiler, node: Intent) -> Sql:
    source = _source(compiler)
    if source is None or node.goal not in source.scored_goals():
        # A goal without scores (never trained, or deleted) has no members.
        return Sql("SELECT user_id FROM profiles WHERE false")
    where = ["goal_id = ?"]
    args: list[Any] = [node.goal]
    if node.buckets:
        where.append(f"bucket IN ({', '.join('?' * len(node.buckets))})")
        args += list(node.buckets)
    else:
        assert node.op is not None
        where.append(f"score {_CMP[node.op]} ?")
        args.append(node.value)
    if compiler.user_id is not None:
        where.append("user_id = ?")
        args.append(compiler.user_id)
    # Scores are keyed by the internal id at training time; a profile merged away since
    # then no longer exists, and is not a member.
    where.append("user_id IN (SELECT user_id FROM profiles)")
    return Sql(f"SELECT user_id FROM {SCORES_TABLE} WHERE {' AND '.join(where)}", args)
