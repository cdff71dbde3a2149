"""``/1/channels`` (sealed provider configuration) and ``/1/inbox`` (in-app inbox, identity
verification, Server-Sent Events) against a real server; channels built from the stored
configuration send to the local provider servers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from pathlib import Path

import httpx
import pytest

import nudge.engage.channel_config as channel_config_module
from conftest import NudgeServer, nudge_cli
from nudge.engage.channel_config import ChannelDirectory
from nudge.engage.channels.inapp import InAppChannel
from nudge.errors import NotFound
from nudge.privacy.keys import Keyring, load_master_key
from nudge.store import control
from tests.engage.providers import (  # the autouse fixture: channels built here too
    TwilioServer,
    allow_private_networks,  # noqa: F401
    message,
)


def directory_of(srv: NudgeServer) -> ChannelDirectory:
    """The server's control store and keyring, opened from this (another) process, as a
    separate delivery worker would."""
    d = srv.data_dir.resolve()
    engine = control.connect(f"sqlite:///{d / 'control.db'}")
    return ChannelDirectory(engine, Keyring(engine, load_master_key("", d.parent /
                                                                    f"{d.name}.master-key")))


def put(srv: NudgeServer, channel: str, body: dict, headers: dict | None = None):
    return httpx.put(f"{srv.url}/1/channels/{channel}", json=body,
                     headers=headers or srv.headers)


def test_channel_config_is_sealed_validated_and_never_returned(nudge_server: NudgeServer,
                                                               tmp_path: Path) -> None:
    srv = nudge_server
    with TwilioServer() as twilio:
        config = twilio.channel_config()
        r = put(srv, "sms", config)
        assert r.status_code == 200, r.text
        view = r.json()
        assert view["provider"] == "twilio" and view["secrets_set"] == ["auth_token"]
        assert view["config"]["account_sid"] == twilio.account_sid
        got = httpx.get(f"{srv.url}/1/channels/sms", headers=srv.headers).json()
        assert twilio.auth_token not in json.dumps(got)
        assert got["providers"][0]["secrets_set"] == ["auth_token"]
        listed = httpx.get(f"{srv.url}/1/channels", headers=srv.headers).json()["channels"]
        assert [(c["channel"], c["provider"]) for c in listed] == [("sms", "twilio")]
        # at rest: neither the token nor the SID is in the control store file in the clear
        raw = b"".join(p.read_bytes() for p in srv.data_dir.glob("control.db*"))
        assert twilio.auth_token.encode() not in raw and twilio.account_sid.encode() not in raw

        # the delivery side builds the channel from the stored config and it sends
        directory = directory_of(srv)

        async def send_one(to: str):
            ch = directory.build(srv.account_id, "sms")
            return ch, await ch.send(message("sms", to, {"body": "hello"}))
        ch1, result = asyncio.run(send_one("+14155550123"))
        assert result.outcome == "sent" and twilio.accepted[-1].form["To"] == "+14155550123"
        # a changed configuration is picked up (rebuilt), an unchanged one is cached
        assert directory.build(srv.account_id, "sms") is ch1
        assert put(srv, "sms", {**config, "from": "+15005550009"}).status_code == 200
        channel_config_module.RECHECK_S = 0.0
        try:
            ch2, result = asyncio.run(send_one("+14155550124"))
        finally:
            channel_config_module.RECHECK_S = 2.0
        assert ch2 is not ch1 and twilio.accepted[-1].form["From"] == "+15005550009"

    # bad input: 400 naming the field, nothing changed
    for body, field in (({**config, "account_sid": "AC-bad!"}, "config.account_sid"),
                        ({"provider": "nexmo"}, "provider"),
                        ({**config, "timeout_s": "soon"}, "config.timeout_s")):
        r = put(srv, "sms", body)
        assert r.status_code == 400 and r.json()["field"] == field, r.text
        assert "auth_token" not in r.json()["message"] or config["auth_token"] not in r.text
    r = put(srv, "pigeon", {})
    assert r.status_code == 400 and r.json()["field"] == "channel"
    assert httpx.get(f"{srv.url}/1/channels/sms", headers=srv.headers).json()[
        "providers"][0]["config"]["from"] == "+15005550009"
    assert put(srv, "sms", config, headers={"X-Nudge-Account-Id": srv.account_id,
                                            "X-Nudge-Passcode": "wrong"}).status_code == 401

    # another account sees none of it
    other = json.loads(nudge_cli(srv.data_dir, "accounts", "create", "other", "--json"))
    oh = {"X-Nudge-Account-Id": other["id"], "X-Nudge-Passcode": other["passcode"]}
    assert httpx.get(f"{srv.url}/1/channels", headers=oh).json() == {"channels": []}
    assert httpx.delete(f"{srv.url}/1/channels/sms", headers=oh).status_code == 404

    assert httpx.delete(f"{srv.url}/1/channels/sms", headers=srv.headers).json() == {
        "deleted": 1}
    assert httpx.get(f"{srv.url}/1/channels/sms", headers=srv.headers).json()[
        "providers"] == []
    with pytest.raises(NotFound):
        directory_of(srv).build(srv.account_id, "sms")


def test_generated_secrets_are_shown_once(nudge_server: NudgeServer) -> None:
    srv = nudge_server
    r = put(srv, "webhook", {"url": "https://hooks.example/in"})
    assert r.status_code == 200, r.text
    secret = r.json()["generated"]["secret"]
    assert len(secret) >= 32
    again = httpx.get(f"{srv.url}/1/channels/webhook", headers=srv.headers).text
    assert secret not in again and '"secrets_set":["secret"]' in again.replace(" ", "")
    r = put(srv, "webpush", {"subscriber": "mailto:ops@shop.example"})
    assert r.status_code == 200, r.text
    key = r.json()["vapid_public_key"]
    got = httpx.get(f"{srv.url}/1/channels/webpush", headers=srv.headers).json()
    assert got["providers"][0]["vapid_public_key"] == key
    assert "generated" not in r.json()  # the VAPID private key never leaves the server
    stored = directory_of(srv).config(srv.account_id, "webpush")["vapid_private_key"]
    assert stored not in json.dumps(got) and stored not in r.text
    # both push providers can be configured side by side
    from tests.engage.providers import FcmServer
    fcm = FcmServer()
    assert put(srv, "push", fcm.channel_config()).status_code == 200
    got = httpx.get(f"{srv.url}/1/channels/push", headers=srv.headers).json()
    assert [p["provider"] for p in got["providers"]] == ["fcm"]
    assert "PRIVATE KEY" not in json.dumps(got)
    assert got["providers"][0]["secrets_set"] == ["service_account"]


# -- inbox -------------------------------------------------------------------------------------
def _setup_inbox(srv: NudgeServer) -> tuple[str, ChannelDirectory]:
    r = put(srv, "inapp", {"ttl_days": 7})
    assert r.status_code == 200, r.text
    secret = r.json()["generated"]["identity_secret"]
    up = srv.upload([{"type": "profile", "identity": u, "ts": int(time.time()),
                      "profileData": {"name": u}} for u in ("ada", "bo")])
    assert up.status_code == 200, up.text
    return secret, directory_of(srv)


def _deliver(directory: ChannelDirectory, srv: NudgeServer, identity: str, title: str,
             mid: str | None = None) -> str:
    uid = _uid(srv, identity)
    m = message("inapp", "", {"title": title, "body": f"{title}!", "layout": "card"},
                account_id=srv.account_id, user_id=uid, meta={"campaign_id": "12"})
    if mid:
        m = type(m)(**{**m.__dict__, "id": mid})

    async def go():
        ch = directory.build(srv.account_id, "inapp")
        assert isinstance(ch, InAppChannel)
        return await ch.send(m)
    assert asyncio.run(go()).outcome == "sent"
    return m.id


def _uid(srv: NudgeServer, identity: str) -> int:
    r = httpx.get(f"{srv.url}/1/profile", params={"identity": identity}, headers=srv.headers)
    assert r.status_code == 200, r.text
    return int(r.json()["profile"]["id"])


def _hash(secret: str, identity: str) -> str:
    return hmac.new(secret.encode(), identity.encode(), hashlib.sha256).hexdigest()


def test_inbox_identity_verification_paging_read_dismiss(nudge_server: NudgeServer) -> None:
    srv = nudge_server
    secret, directory = _setup_inbox(srv)
    ids = [_deliver(directory, srv, "ada", f"m{i}") for i in range(5)]
    bo_id = _deliver(directory, srv, "bo", "for bo")
    again = _deliver(directory, srv, "ada", "m4", mid=ids[-1])  # a retried send: no copy
    assert again == ids[-1]

    def client(identity: str, user_hash: str | None, **params):
        headers = {"X-Nudge-Identity": identity}
        if user_hash is not None:
            headers["X-Nudge-User-Hash"] = user_hash
        return httpx.get(f"{srv.url}/1/inbox", params=params, headers=headers,
                         auth=(srv.write_key, ""))

    r = client("ada", _hash(secret, "ada"), limit=2)
    assert r.status_code == 200, r.text
    page = r.json()
    assert [m["content"]["title"] for m in page["messages"]] == ["m4", "m3"]
    assert page["unread"] == 5 and page["next"] is not None
    assert page["messages"][0]["meta"]["campaign_id"] == "12"
    assert page["messages"][0]["campaign_id"] == "12"
    rest = client("ada", _hash(secret, "ada"), limit=10, before=page["next"]).json()
    assert [m["content"]["title"] for m in rest["messages"]] == ["m2", "m1", "m0"]
    assert rest["next"] is None

    # the write key alone, a wrong hash, or another user's hash read nothing
    assert client("ada", None).status_code == 401
    assert client("ada", "0" * 64).status_code == 401
    assert client("ada", _hash(secret, "bo")).status_code == 401
    assert client("ada", _hash("another-secret-xxxxxx", "ada")).status_code == 401
    # the write key presented as a passcode carries no inbox permission
    r = httpx.get(f"{srv.url}/1/inbox", headers={"X-Nudge-Account-Id": srv.account_id,
                                                 "X-Nudge-Passcode": srv.write_key,
                                                 "X-Nudge-Identity": "ada"})
    assert r.status_code in (401, 403) and "messages" not in r.json()
    # the server passcode reads any user's inbox
    r = httpx.get(f"{srv.url}/1/inbox", headers={**srv.headers, "X-Nudge-Identity": "bo"})
    assert [m["id"] for m in r.json()["messages"]] == [bo_id]

    h = {"X-Nudge-Identity": "ada", "X-Nudge-User-Hash": _hash(secret, "ada")}
    auth = (srv.write_key, "")
    r = httpx.post(f"{srv.url}/1/inbox/{ids[0]}/read", headers=h, auth=auth)
    assert r.status_code == 200 and r.json()["message"]["read"] and r.json()["unread"] == 4
    read_at = r.json()["message"]["read_at"]
    r = httpx.post(f"{srv.url}/1/inbox/{ids[0]}/read", headers=h, auth=auth)
    assert r.json()["message"]["read_at"] == read_at  # idempotent
    r = httpx.post(f"{srv.url}/1/inbox/{ids[1]}/dismiss", headers=h, auth=auth)
    assert r.status_code == 200 and r.json()["unread"] == 3
    titles = [m["content"]["title"] for m in client("ada", _hash(secret, "ada")).json()[
        "messages"]]
    assert titles == ["m4", "m3", "m2", "m0"]
    unread = client("ada", _hash(secret, "ada"), unread_only="true").json()["messages"]
    assert [m["content"]["title"] for m in unread] == ["m4", "m3", "m2"]
    # ada cannot touch bo's message; bad input is a 400 naming the field
    assert httpx.post(f"{srv.url}/1/inbox/{bo_id}/read", headers=h, auth=auth
                      ).status_code == 404
    assert client("ada", _hash(secret, "ada"), limit=0).json()["field"] == "limit"
    assert httpx.get(f"{srv.url}/1/inbox", auth=auth).json()["field"] == "identity"
    # an identity with no profile yet has an empty inbox
    r = client("nobody", _hash(secret, "nobody"))
    assert r.status_code == 200 and r.json() == {"messages": [], "unread": 0, "next": None}


def test_inbox_stream_pushes_new_messages(nudge_server: NudgeServer) -> None:
    srv = nudge_server
    secret, directory = _setup_inbox(srv)
    _deliver(directory, srv, "ada", "before connecting")
    events: list[tuple[str, dict]] = []
    got_ready, got_message = threading.Event(), threading.Event()

    def listen() -> None:
        params = {"write_key": srv.write_key, "identity": "ada",
                  "user_hash": _hash(secret, "ada")}
        with httpx.stream("GET", f"{srv.url}/1/inbox/stream", params=params,
                          timeout=httpx.Timeout(10, read=20)) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            event = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    events.append((event or "", json.loads(line[6:])))
                    if event == "ready":
                        got_ready.set()
                    if event == "message":
                        got_message.set()
                        return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert got_ready.wait(15)
    _deliver(directory, srv, "bo", "not for ada")
    mid = _deliver(directory, srv, "ada", "live one")
    assert got_message.wait(15)
    t.join(5)
    assert events[0] == ("ready", {"unread": 1})
    assert [(e, d["id"], d["content"]["title"]) for e, d in events[1:]] == [
        ("message", mid, "live one")]
    # a stream without a valid user_hash is refused before it starts
    r = httpx.get(f"{srv.url}/1/inbox/stream", params={"write_key": srv.write_key,
                                                       "identity": "ada", "user_hash": "00"})
    assert r.status_code == 401
