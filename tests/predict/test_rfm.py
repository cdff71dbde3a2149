"""RFM computed by Nudge equals an independent pandas computation over the same purchases:
values, quintile scores (ties, single purchases), segments, people without purchases,
the report and its movement, and the ``rfm_segment`` / ``rfm_score`` segment conditions."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nudge.bulk import ingest_chunks
from nudge.config import Settings
from nudge.predict import rfm
from nudge.predict.names import RFM_SEGMENTS
from nudge.query.segments.evaluate import SegmentEngine
from nudge.query.segments.model import DefinitionError, parse
from nudge.store.account import AccountStore

DAY = 86400
NOW = float(int(time.time()) // DAY * DAY)


def segment_of(r: int, f: int) -> str:
    """The issue's map, written as its own if-chain (independent of names.RFM_SEGMENTS)."""
    if r == 5 and f >= 4:
        return "champions"
    if r in (3, 4) and f >= 4:
        return "loyal"
    if r >= 4 and f in (2, 3):
        return "potential_loyalists"
    if r == 5 and f == 1:
        return "new_customers"
    if r == 4 and f == 1:
        return "promising"
    if r == 3 and f == 3:
        return "need_attention"
    if r == 3 and f <= 2:
        return "about_to_sleep"
    if r <= 2 and f in (3, 4):
        return "at_risk"
    if r <= 2 and f == 5:
        return "cant_lose_them"
    assert r <= 2 and f <= 2
    return "hibernating"


def purchases() -> list[tuple[str, float, float | None]]:
    """(identity, ts, Amount or None). Many ties in counts, days and amounts; single buyers;
    buyers whose purchases are all older than the lookback; purchases without Amount."""
    rnd = random.Random(8)
    out: list[tuple[str, float, float | None]] = []
    for u in range(300):
        n = rnd.choice([1, 1, 1, 2, 2, 3, 4, 6, 9])
        for _ in range(n):
            day = rnd.choice([1, 2, 2, 5, 10, 30, 30, 60, 100, 200, 364, 400, 500])
            amount = rnd.choice([10.0, 10.0, 25.0, 40.5, 99.99, None])
            out.append((f"u{u}", NOW - day * DAY - rnd.choice([0, 3600]), amount))
    return out


def expected(data: list[tuple[str, float, float | None]], now: float) -> pd.DataFrame:
    df = pd.DataFrame(data, columns=["user", "ts", "amount"])
    df = df[(df.ts >= now - 365 * DAY) & (df.ts <= now)]
    g = df.groupby("user").agg(last=("ts", "max"), frequency=("ts", "size"),
                               monetary=("amount", lambda s: s.fillna(0).sum()))
    g["monetary"] = g.monetary.round(6)
    for col, score in (("last", "r"), ("frequency", "f"), ("monetary", "m")):
        cuts = np.quantile(g[col].to_numpy(), [0.2, 0.4, 0.6, 0.8], method="inverted_cdf")
        g[score] = 1 + sum((g[col] > c).astype(int) for c in cuts)
    g["segment"] = [segment_of(r, f) for r, f in zip(g.r, g.f, strict=True)]
    return g


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AccountStore]:
    tmp = tmp_path_factory.mktemp("rfm")
    s = AccountStore("rfm", tmp / "events.duckdb", Settings(data_dir=tmp, duckdb_threads=1))
    records: list[dict[str, Any]] = [
        {"type": "profile", "identity": f"u{u}", "ts": int(NOW - 600 * DAY),
         "profileData": {"Plan": "a" if u % 2 else "b"}} for u in range(320)]
    for i, (user, ts, amount) in enumerate(purchases()):
        data = {} if amount is None else {"Amount": amount}
        records.append({"type": "event", "identity": user, "ts": ts, "evtName": "Charged",
                        "evtData": data, "msgId": f"p{i}"})
    records.append({"type": "event", "identity": "u310", "ts": NOW - DAY,
                    "evtName": "App Launched", "evtData": {"Platform": "ios"}})
    stored, errors = ingest_chunks(s, iter([records]), s.settings.limits, total=len(records),
                                   quiet=True)
    assert not errors
    yield s
    s.close()


def _ours(store: AccountStore, now: float) -> pd.DataFrame:
    sql, params = rfm.rfm_sql(store.catalog, rfm.RfmSettings(), now)
    with store.cursor() as cur:
        rows = cur.execute(f"SELECT p.identity, x.* FROM ({sql}) x JOIN profiles p "
                           "USING (user_id)", params).fetchdf()
    return rows.set_index("identity").sort_index()


def test_the_segment_map_is_complete_and_non_overlapping() -> None:
    cells = [(r, f) for rs, fs in RFM_SEGMENTS.values() for r in rs for f in fs]
    assert sorted(cells) == [(r, f) for r in range(1, 6) for f in range(1, 6)]
    assert {(r, f): n for n, (rs, fs) in RFM_SEGMENTS.items() for r in rs for f in fs} == {
        (r, f): segment_of(r, f) for r in range(1, 6) for f in range(1, 6)}


@pytest.mark.parametrize("days_ago", [0, 45])
def test_values_scores_and_segments_equal_pandas(store: AccountStore, days_ago: int) -> None:
    now = NOW - days_ago * DAY
    want = expected(purchases(), now).sort_index()
    got = _ours(store, now)
    assert list(got.index) == list(want.index)
    assert (got.frequency.to_numpy() == want.frequency.to_numpy()).all()
    assert got.monetary.to_numpy() == pytest.approx(want.monetary.to_numpy())
    assert got.recency_days.to_numpy() == pytest.approx((now - want["last"].to_numpy()) / DAY)
    for col in ("r", "f", "m", "segment"):
        assert list(got[col]) == list(want[col]), col
    # The data really exercise ties and single purchases at the boundaries.
    assert (want.frequency == 1).sum() > 30
    assert want.groupby(["frequency"]).r.nunique().max() > 1
    assert want.duplicated(["last"]).sum() > 50


def test_equal_values_share_a_score(store: AccountStore) -> None:
    got = _ours(store, NOW)
    for value, score in (("frequency", "f"), ("monetary", "m"), ("last_ts", "r")):
        assert (got.groupby(value)[score].nunique() == 1).all()


def test_people_without_purchases_are_reported_separately(store: AccountStore) -> None:
    want = expected(purchases(), NOW)
    report = rfm.report(store, rfm.RfmSettings(), NOW)
    with store.cursor() as cur:
        people = cur.execute("SELECT count(*) FROM profiles").fetchone()[0]
    assert report["buyers"] == len(want)
    assert report["no_purchases"] == people - len(want) > 20  # incl. old-only buyers
    by_seg = want.groupby("segment").agg(users=("r", "size"), revenue=("monetary", "sum"))
    for row in report["segments"]:
        if row["segment"] in by_seg.index:
            assert row["users"] == by_seg.loc[row["segment"], "users"]
            assert row["revenue"] == pytest.approx(by_seg.loc[row["segment"], "revenue"])
        else:
            assert row["users"] == 0
    assert sum(c["users"] for c in report["grid"]) == len(want)
    assert report["cuts"]["f"] == list(np.quantile(want.frequency.to_numpy(), [0.2, 0.4, 0.6, 0.8],
                                                   method="inverted_cdf"))
    assert report["cuts"]["m"] == pytest.approx(list(np.quantile(
        want.monetary.to_numpy(), [0.2, 0.4, 0.6, 0.8], method="inverted_cdf")))
    assert rfm.for_user(store, rfm.RfmSettings(), NOW, 10**9)["segment"] == "no_purchases"


def test_movement_since_a_past_date(store: AccountStore) -> None:
    then, now = expected(purchases(), NOW - 60 * DAY), expected(purchases(), NOW)
    report = rfm.report(store, rfm.RfmSettings(), NOW, since=NOW - 60 * DAY)
    with store.cursor() as cur:
        people = [r[0] for r in cur.execute("SELECT identity FROM profiles").fetchall()]
    pairs = pd.Series([(then.segment.get(p, "no_purchases"), now.segment.get(p, "no_purchases"))
                       for p in people]).value_counts()
    assert {(m["from"], m["to"]): m["users"] for m in report["movement"]} == dict(pairs)


def _members(store: AccountStore, definition: dict[str, Any]) -> set[str]:
    engine = SegmentEngine(store)
    ids = engine.user_ids(parse(definition, NOW), now=NOW)
    with store.cursor() as cur:
        return {r[0] for r in cur.execute(
            "SELECT identity FROM profiles WHERE user_id IN (SELECT unnest(?::BIGINT[]))",
            [sorted(ids)]).fetchall()}


def test_segment_conditions(store: AccountStore) -> None:
    want = expected(purchases(), NOW)
    with store.cursor() as cur:
        everyone = {r[0] for r in cur.execute("SELECT identity FROM profiles").fetchall()}
    for names in (["champions"], ["at_risk", "hibernating"], ["no_purchases"],
                  ["no_purchases", "new_customers"]):
        expect = set(want.index[want.segment.isin(names)])
        if "no_purchases" in names:
            expect |= everyone - set(want.index)
        assert _members(store, {"rfm_segment": {"in": names}}) == expect, names
    assert _members(store, {"rfm_score": {"r": [4, 5], "m": [1, 2]}}) == set(
        want.index[want.r.isin([4, 5]) & want.m.isin([1, 2])])
    # Combined with other conditions, and the single-person check agrees.
    combined = {"and": [{"rfm_segment": {"in": ["hibernating", "about_to_sleep"]}},
                        {"profile": {"property": "Plan", "op": "eq", "value": "a"}}]}
    got = _members(store, combined)
    assert got and got == {u for u in want.index[want.segment.isin(
        ["hibernating", "about_to_sleep"])] if int(u[1:]) % 2}
    engine = SegmentEngine(store)
    node = parse(combined, NOW)
    for user in ("u1", "u2", "u3", "u301"):
        uid = store.user_for("identity", user)
        assert uid is not None
        assert engine.contains(node, uid, now=NOW) == (user in got)


def test_settings_are_checked_and_change_the_computation(store: AccountStore) -> None:
    with pytest.raises(Exception, match="lookback_days") as e:
        rfm.check_settings({"lookback_days": 0})
    assert getattr(e.value, "field", None) == "lookback_days"
    with pytest.raises(Exception, match="unknown field"):
        rfm.check_settings({"evnt": "Charged"})
    with pytest.raises(Exception, match="must be a number") as e:
        rfm.check_settings({"property": "Platform"}, store.catalog)  # a string property
    short = rfm.RfmSettings(lookback_days=30)
    sql, params = rfm.rfm_sql(store.catalog, short, NOW)
    with store.cursor() as cur:
        n = cur.execute(f"SELECT count(*) FROM ({sql})", params).fetchone()[0]
    df = pd.DataFrame(purchases(), columns=["user", "ts", "amount"])
    assert n == df[df.ts >= NOW - 30 * DAY].user.nunique()


def test_bad_conditions_name_the_field() -> None:
    for bad, field in (({"rfm_segment": {"in": ["champs"]}}, "$.rfm_segment.in[0]"),
                       ({"rfm_segment": {"in": []}}, "$.rfm_segment.in"),
                       ({"rfm_score": {"r": [6]}}, "$.rfm_score.r"),
                       ({"rfm_score": {}}, "$.rfm_score"),
                       ({"intent_bucket": {"goal": 1, "in": ["likely"]}},
                        "$.intent_bucket.in[0]"),
                       ({"intent_score": {"goal": 1, "op": ">=", "value": 2}},
                        "$.intent_score.value"),
                       ({"intent_score": {"goal": "x", "op": ">=", "value": 0.5}},
                        "$.intent_score.goal")):
        with pytest.raises(DefinitionError) as e:
            parse(bad, NOW)
        assert e.value.path == field
