"""The batch paths of audience expansion (no server): rendered content memoized without a
per-recipient context (compose.Contents) renders exactly what a plain render of the full
context gives, and a batch of outbox rows sealed together (sealing.seal_outbox_rows) opens
row by row, bound to each row's idempotency key; the outbox's provider index is partial."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nudge.engage import outbox, sealing
from nudge.engage.campaigns import parse_campaign
from nudge.engage.compose import ContentCache, Recipient, context, render
from nudge.privacy.keys import KeyError_, Keyring
from nudge.store import control

SUBJECT = ("{{ profile.first_name | default: 'there' }} <{{ profile.email }}> #{{ profile.id }}"
           " {{ profile.address.city }} {{ profile.vip }} {{ event.sku }} {{ campaign.variant }}")


def test_contents_match_a_full_render_for_every_recipient_and_call() -> None:
    spec = parse_campaign({"name": "c", "channels": ["email"], "audience": {"definition": {}},
                           "variants": [{"name": "A", "percent": 50,
                                         "content": {"email": {"subject": SUBJECT,
                                                               "text": "{{ profile }}"}}},
                                        {"name": "B", "percent": 50,
                                         "content": {"email": {"subject": "{{ data.x }}",
                                                               "html": "<p>hi</p>"}}}]})
    people = [
        Recipient(1, "p1", "ann@x.org", None, {"first_name": "Ann", "address": {"city": "Oslo"}}),
        # the same values the templates read, but another id and address: not shared
        Recipient(2, "p2", "bob@x.org", None, {"first_name": "Ann", "address": {"city": "Oslo"}}),
        # a property named like a recipient field does not win over the field
        Recipient(3, "p3", "cy@x.org", None, {"email": "shadow@x.org", "vip": True}),
        Recipient(4, "p4", None, None, {"vip": 1, "address": {"city": ["a"]}}),
        Recipient(5, "p5", None, None, {}),
    ]
    cache = ContentCache()
    for event, data in (({"sku": "S1"}, {"x": 1}), ({"sku": "S2"}, {"x": "two"}), (None, None)):
        contents = cache.contents(7, spec, event, data)
        for variant in spec.variants:
            for r in people + people:  # the second time from the memo
                want = render(variant, "email", context(7, spec, variant, r, event, data),
                              memo=False)
                assert json.loads(contents.json(variant, "email", r)) == want
    got = json.loads(cache.contents(7, spec, {"sku": "S2"}, None).json(
        spec.variants[0], "email", people[2]))
    assert got["subject"] == "there <cy@x.org> #3  true S2 A"


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    eng = control.connect(f"sqlite:///{tmp_path / 'control.db'}")
    with eng.begin() as c:
        for acct in ("a1", "a2"):
            c.execute(control.accounts.insert().values(id=acct, name=acct, created_at=0.0))
    return Keyring(eng, os.urandom(32))


def _row(account: str, uid: int, to: str | None, content: str | None) -> dict[str, object]:
    return outbox.row(account_id=account, key=outbox.idem_key(1, "o", uid, "A"), campaign_id=1,
                      occurrence="o", user_id=uid, variant="A", channel="email",
                      category="general", transactional=False, to=to, content=content,
                      meta={"fallback": ["sms"]} if uid % 2 else None, status="pending",
                      reason=None, at=0.0, now=0.0)


def test_a_sealed_batch_opens_row_by_row_and_not_swapped(keyring: Keyring) -> None:
    rows = [_row("a1" if u < 3 else "a2", u, f"u{u}@x.org", json.dumps({"s": f"hi {u}"}))
            for u in range(5)]
    rows.append(_row("a1", 8, None, None))  # a skipped row: nothing to seal
    before = [dict(r) for r in rows]
    sealed = sealing.seal_outbox_rows(keyring, rows)
    assert rows == before  # the caller's dicts are not changed
    assert sealed[-1] == rows[-1]
    assert len({r["content"] for r in sealed[:5]}) == 5  # each its own nonce
    for r, plain in zip(sealed[:5], rows, strict=False):
        assert r["to_addr"] is None and r["meta"] is None and sealing.is_sealed(r["content"])
        to, content, meta = sealing.open_outbox(keyring, r["account_id"], r["idem_key"], None,
                                                r["content"], None)
        assert (to, json.loads(content or ""), meta and json.loads(meta)) == (
            plain["to_addr"], json.loads(plain["content"]),
            plain["meta"] and json.loads(plain["meta"]))
        # the same as a value sealed alone
        alone = sealing.seal_outbox_row(keyring, dict(plain))
        assert sealing.open_outbox(keyring, r["account_id"], r["idem_key"], None,
                                   alone["content"], None) == (to, content, meta)
    with pytest.raises(KeyError_):  # another row's content does not open under this key
        sealing.open_outbox(keyring, "a1", sealed[0]["idem_key"], None, sealed[1]["content"],
                            None)
    with pytest.raises(KeyError_):  # nor in another account
        sealing.open_outbox(keyring, "a2", sealed[0]["idem_key"], None, sealed[0]["content"],
                            None)


def test_provider_index_is_partial_used_and_upgraded(tmp_path: Path) -> None:
    """Queued messages add no ``ix_outbox_provider`` entry; callbacks still find a sent one
    through it; an outbox from before (a full index) is upgraded in place."""
    eng = control.connect(f"sqlite:///{tmp_path / 'control.db'}")
    lookup = "SELECT id FROM outbox WHERE provider_id = ?"

    def index_sql() -> str:
        with eng.connect() as conn:
            return str(conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE "
                                            "name = 'ix_outbox_provider'").scalar())

    with eng.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_outbox_provider")
        conn.exec_driver_sql("CREATE INDEX ix_outbox_provider ON outbox (provider_id)")
    assert "WHERE" not in index_sql()
    outbox.upgrade_indexes(eng)
    outbox.upgrade_indexes(eng)  # idempotent
    assert "WHERE provider_id IS NOT NULL" in index_sql()
    with eng.begin() as conn:
        control.insert_ignore(conn, control.outbox, [
            {**_row("a1", u, None, None), "provider_id": "p-7" if u == 7 else None}
            for u in range(10)], ("idem_key",))
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + lookup, ("p-7",)).fetchall()
        assert "ix_outbox_provider" in str(plan)
        assert conn.exec_driver_sql(lookup, ("p-7",)).fetchall() == [(8,)]
        assert conn.exec_driver_sql("SELECT count(*) FROM outbox INDEXED BY ix_outbox_provider "
                                    "WHERE provider_id IS NOT NULL").scalar() == 1
