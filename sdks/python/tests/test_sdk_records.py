"""Record building: the wire shape of what track/profile/identify send."""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from decimal import Decimal

import nudge_sdk
import pytest
from nudge_sdk import records


def event(**kw):  # type: ignore[no-untyped-def]
    ids = records.identifiers(kw.pop("identity", "u1"), kw.pop("object_id", None),
                              kw.pop("email", None), kw.pop("phone", None))
    return records.event_record(ids, kw.pop("name", "Charged"), **kw)


def test_event_record_shape() -> None:
    rec = event(properties={"Amount": 10}, ts=1_700_000_000)
    assert rec == {"type": "event", "identity": "u1", "ts": 1_700_000_000,
                   "evtName": "Charged", "evtData": {"Amount": 10}, "msgId": rec["msgId"]}
    assert re.fullmatch(r"[0-9a-f]{32}", rec["msgId"])


def test_profile_record_shape_with_ops() -> None:
    ids = records.identifiers("u1", email="a@example.com")
    rec = records.profile_record(ids, {
        "Name": "Ada",
        "Logins": nudge_sdk.incr(2),
        "Credits": nudge_sdk.decr(1.5),
        "First": nudge_sdk.set_once("web"),
        "Trial": nudge_sdk.unset(),
        "Tags": nudge_sdk.add(["a", "b"]),
        "Old": nudge_sdk.remove("x"),
        "Plan": nudge_sdk.set_value({"tier": 1}),
    })
    assert rec["type"] == "profile"
    assert rec["identity"] == "u1" and rec["email"] == "a@example.com"
    assert rec["profileData"] == {
        "Name": "Ada", "Logins": {"$incr": 2}, "Credits": {"$decr": 1.5},
        "First": {"$setOnce": "web"}, "Trial": {"$unset": True},
        "Tags": {"$add": ["a", "b"]}, "Old": {"$remove": ["x"]}, "Plan": {"$set": {"tier": 1}},
    }


def test_identifiers() -> None:
    assert records.identifiers(None, object_id="dev-1") == {"objectId": "dev-1"}
    assert records.identifiers(42) == {"identity": "42"}
    assert records.identifiers("u1", "d", "e@x.io", "+15550100") == {
        "identity": "u1", "objectId": "d", "email": "e@x.io", "phone": "+15550100"}
    with pytest.raises(ValueError, match="identifier"):
        records.identifiers(None)
    with pytest.raises(ValueError, match="identity"):
        records.identifiers("  ")
    with pytest.raises(ValueError, match="email"):
        records.identifiers("u1", email=True)  # type: ignore[arg-type]


def test_timestamps() -> None:
    assert event(ts=dt.datetime(2024, 1, 1))["ts"] == 1_704_067_200  # naive = UTC
    aware = dt.datetime(2024, 1, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert event(ts=aware)["ts"] == 1_704_067_200
    assert event(ts=1_704_067_200.9)["ts"] == 1_704_067_200
    assert abs(event()["ts"] - dt.datetime.now(dt.UTC).timestamp()) < 5


def test_dates() -> None:
    assert nudge_sdk.date(dt.datetime(2024, 1, 1, tzinfo=dt.UTC)) == "$D_1704067200"
    assert nudge_sdk.date(dt.date(2024, 1, 1)) == "$D_1704067200"
    assert nudge_sdk.date(1_704_067_200.5) == "$D_1704067200"
    with pytest.raises(TypeError):
        nudge_sdk.date("2024-01-01")  # type: ignore[arg-type]


def test_properties_are_copied_and_made_json() -> None:
    props = {"when": dt.datetime(2024, 1, 1), "price": Decimal("9.50"), "qty": Decimal("3"),
             "id": uuid.UUID(int=1), "tags": ("a", "b"), "nested": {"d": dt.date(2024, 1, 1)}}
    rec = event(properties=props)
    props["tags"] = ("changed",)
    assert rec["evtData"] == {
        "when": "$D_1704067200", "price": 9.5, "qty": 3,
        "id": "00000000-0000-0000-0000-000000000001", "tags": ["a", "b"],
        "nested": {"d": "$D_1704067200"}}
    assert records.encode(rec).startswith(b'{"type":"event"')


def test_bad_properties_raise_at_the_call() -> None:
    with pytest.raises(ValueError, match="finite"):
        event(properties={"x": math.nan})
    with pytest.raises(TypeError, match="object"):
        event(properties={"x": object()})
    with pytest.raises(TypeError, match="string"):
        event(properties={1: "x"})
    with pytest.raises(TypeError, match="mapping"):
        event(properties=["x"])
    with pytest.raises(ValueError, match="event name"):
        event(name="")


def test_ops_type_checks() -> None:
    with pytest.raises(TypeError):
        nudge_sdk.incr("1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        nudge_sdk.decr(True)


def test_msg_id() -> None:
    assert event(msg_id="order-17")["msgId"] == "order-17"
    assert event()["msgId"] != event()["msgId"]
    with pytest.raises(ValueError):
        event(msg_id="x" * 129)


def test_identify_needs_an_identifier_to_link() -> None:
    client = nudge_sdk.Client("acct", "pass", sync_mode=True)
    try:
        with pytest.raises(ValueError, match="object_id"):
            client.identify("u1")
    finally:
        client.close()


def test_client_config_is_checked() -> None:
    with pytest.raises(ValueError):
        nudge_sdk.Client("acct", "pass", batch_size=1001)
    with pytest.raises(ValueError):
        nudge_sdk.Client("", "pass")
    with pytest.raises(ValueError):
        nudge_sdk.Client("acct", "pass", flush_interval=0)
