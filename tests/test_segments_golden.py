"""Golden tests: definition → SQL snapshots (tests/golden/segments/<case>.sql), one or more per
node type and filter operator.

Each snapshot holds the definition, its explanation, the bound parameters and the SQL. The
test compiles the definition and compares with the snapshot, then runs the snapshot's own SQL
and parameters on a real account store holding a small fixed dataset and checks that it
returns exactly the members the plain-Python reference evaluator computes. Rewrite the
snapshots after an intended compiler change with ``NUDGE_UPDATE_GOLDEN=1`` (and review the
diff).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from segments_cases import cases, reference, saved_definitions, upload_records
from segments_reference import Reference

from nudge.config import Limits, Settings
from nudge.ingest.upload import parse_upload
from nudge.query.segments.evaluate import SegmentEngine
from nudge.query.segments.explain import explain
from nudge.query.segments.model import _KINDS, FILTER_OPS, parse
from nudge.store.account import AccountStore

GOLDEN = Path(__file__).parent / "golden" / "segments"
UPDATE = os.environ.get("NUDGE_UPDATE_GOLDEN") == "1"
NOW = 1_700_000_000  # 2023-11-14 22:13:20 UTC; snapshots hold times relative to it
CASES = cases(NOW, charged_30d=1, paris=2)
SAVED = {1: saved_definitions()["charged_30d"], 2: saved_definitions()["paris"]}


def _reference() -> Reference:
    return reference(NOW, NOW, SAVED)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AccountStore]:
    tmp = tmp_path_factory.mktemp("golden")
    s = AccountStore("golden", tmp / "events.duckdb", Settings(data_dir=tmp, duckdb_threads=1))
    recs, errors = parse_upload({"d": upload_records(NOW)}, Limits())
    assert not errors, errors
    assert s.write(recs).errors == [None] * len(recs)
    try:
        yield s
    finally:
        s.close()


# -- snapshot files ------------------------------------------------------------------------
def _param_out(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return {"timestamp": v.isoformat()}
    return v


def _param_in(v: Any) -> Any:
    if isinstance(v, dict):
        return dt.datetime.fromisoformat(v["timestamp"])
    return v


def render(definition: Any, explanation: str, sql: str, params: list[Any]) -> str:
    return (f"-- definition: {json.dumps(definition, ensure_ascii=False)}\n"
            f"-- explanation: {explanation}\n"
            f"-- params: {json.dumps([_param_out(p) for p in params], ensure_ascii=False)}\n"
            f"{sql}\n")


def load(path: Path) -> tuple[str, list[Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    params = next(ln for ln in lines if ln.startswith("-- params: "))[len("-- params: "):]
    sql = "\n".join(ln for ln in lines if not ln.startswith("-- "))
    return sql, [_param_in(p) for p in json.loads(params)]


def _run(store: AccountStore, sql: str, params: list[Any]) -> set[str]:
    """Run a members query (with the referenced saved segments as tables) → identities."""
    engine = SegmentEngine(store)
    with store.cursor() as cur:
        for seg_id, d in SAVED.items():
            ref = engine.compiler(NOW).members(parse(d, NOW))
            cur.register(f"_segment_{seg_id}",
                         cur.execute(ref.text, ref.params).arrow().read_all())
        rows = cur.execute(f"SELECT p.identity FROM ({sql}) m JOIN profiles p USING (user_id)",
                           params).fetchall()
    return {r[0] for r in rows}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sql_snapshot(case: str, store: AccountStore) -> None:
    definition = CASES[case]
    node = parse(definition, NOW)
    sql = SegmentEngine(store).sql(node, now=NOW)
    text = render(definition, explain(node), sql.text, sql.params)
    path = GOLDEN / f"{case}.sql"
    if UPDATE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no snapshot {path.name}; run with NUDGE_UPDATE_GOLDEN=1"
    assert path.read_text(encoding="utf-8") == text
    # The snapshot's own SQL runs and returns exactly the documented members.
    snap_sql, snap_params = load(path)
    assert _run(store, snap_sql, snap_params) == _reference().members(definition)


def test_cases_cover_every_node_kind_and_operator() -> None:
    kinds: set[str] = set()
    ops: set[str] = set()

    def walk(d: Any) -> None:
        if isinstance(d, dict):
            kinds.update(k for k in d if k in _KINDS)
            if "op" in d and "property" in d:
                ops.add(d["op"])
            for v in d.values():
                walk(v)
        elif isinstance(d, list):
            for v in d:
                walk(v)

    walk(list(CASES.values()))
    assert kinds == set(_KINDS)
    assert ops >= set(FILTER_OPS)


def test_root_lists_each_member_once(store: AccountStore) -> None:
    """Complements are compiled without DISTINCT (they are only subtracted or intersected);
    one that NOT turns into the positive root must still list each member once."""
    sql = SegmentEngine(store).sql(parse(CASES["not_did_not"], NOW), now=NOW)
    with store.cursor() as cur:
        ids = [r[0] for r in cur.execute(sql.text, sql.params).fetchall()]
        charged = cur.execute("SELECT count(*) FROM events WHERE event = 'Charged'").fetchone()
    assert charged[0] > len(set(ids)) > 0  # some member did it more than once
    assert len(ids) == len(set(ids))


def test_no_stale_snapshots() -> None:
    assert {p.stem for p in GOLDEN.glob("*.sql")} == set(CASES)


def test_injection_text_never_reaches_sql(store: AccountStore) -> None:
    """User text is bound, and property names become catalog column names (or constants)."""
    for case in ("injection_event_name", "injection_unknown_names", "injection_profile_value",
                 "injection_profile_name"):
        sql = SegmentEngine(store).sql(parse(CASES[case], NOW), now=NOW)
        for text in ("DROP", "OR 1=1", "'1'='1", "OR true"):
            assert text not in sql.text, (case, sql.text)
