"""Message contents and addresses sealed in the control store.

An outbox row's address, rendered content and meta (which can hold the triggering event and
per-call data) are one AES-256-GCM value under the account's data key
(``Keyring.seal``), bound to the row's idempotency key, in the ``content`` column;
``to_addr`` and ``meta`` stay NULL. One encryption per message instead of three: at 20k
messages per second per core each one costs; a batch shares one cipher object and one
``os.urandom`` call for its nonces (``seal_outbox_rows``). Inbox rows seal ``content`` and
``meta``, bound to their message id. So a copy of ``control.db`` names nobody, and a sealed value
copied to another row or account does not open.

Rows written before sealing (plain JSON) still read: a value without the sealed prefix is
taken as it is.

The outbox is written by code that has no keyring at hand (the journeys engine calls
``outbox.insert``), so the delivery service registers its keyring per control-store engine
(``register``) and ``outbox.insert`` finds it from the connection.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy.engine import Engine

from nudge.privacy.keys import Keyring

PREFIX = "v1:"  # nudge.privacy.keys' sealed-value prefix
_KEYRINGS: weakref.WeakKeyDictionary[Engine, Keyring] = weakref.WeakKeyDictionary()


def register(engine: Engine, keyring: Keyring) -> None:
    _KEYRINGS[engine] = keyring


def keyring_of(engine: Engine) -> Keyring:
    k = _KEYRINGS.get(engine)
    if k is None:
        raise RuntimeError("no keyring registered for this control store: outbox rows are "
                           "sealed (nudge.engage.sealing.register)")
    return k


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


# -- outbox ------------------------------------------------------------------------------------
_encode = msgspec.json.Encoder().encode


def _needs_seal(row: dict[str, Any]) -> bool:
    content = row.get("content")
    return not (row.get("to_addr") is None and row.get("meta") is None
                and (content is None or is_sealed(content)))  # else: nothing, or sealed


def _envelope(row: dict[str, Any]) -> bytes:
    # content and meta are JSON text already: spliced, not decoded and encoded again.
    content, meta = row.get("content"), row.get("meta")
    return b"".join((b'{"t":', _encode(row.get("to_addr")),
                     b',"c":', content.encode() if content is not None else b"null",
                     b',"m":', meta.encode() if meta is not None else b"null", b"}"))


def seal_outbox_row(keyring: Keyring, row: dict[str, Any]) -> dict[str, Any]:
    """Seal (in place) the address, content and meta of an ``outbox.row`` dict."""
    if not _needs_seal(row):
        return row
    row["content"] = keyring.seal(row["account_id"], "outbox:" + row["idem_key"],
                                  _envelope(row))
    row["to_addr"] = None
    row["meta"] = None
    return row


def seal_outbox_rows(keyring: Keyring, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``seal_outbox_row`` for a batch, as copies (the given dicts are left as they are):
    one cipher and one random-nonce call per account in the batch (``Keyring.seal_many``)
    instead of one of each per message. Each row's value is still bound to its own
    idempotency key."""
    out = list(rows)
    todo: dict[str, list[int]] = {}
    for i, r in enumerate(out):
        if _needs_seal(r):
            todo.setdefault(r["account_id"], []).append(i)
    for account_id, idx in todo.items():
        sealed = keyring.seal_many(account_id, ["outbox:" + out[i]["idem_key"] for i in idx],
                                   [_envelope(out[i]) for i in idx])
        for i, value in zip(idx, sealed, strict=True):
            out[i] = {**out[i], "content": value, "to_addr": None, "meta": None}
    return out


def open_outbox(keyring: Keyring, account_id: str, idem_key: str, to_addr: str | None,
                content: str | None, meta: str | None
                ) -> tuple[str | None, str | None, str | None]:
    """``(to_addr, content JSON, meta JSON)`` of a stored row, sealed or not."""
    if not is_sealed(content):
        return to_addr, content, meta
    assert content is not None
    env = json.loads(keyring.open(account_id, "outbox:" + idem_key, content))
    c, m = env.get("c"), env.get("m")
    return (env.get("t"), None if c is None else json.dumps(c),
            None if m is None else json.dumps(m))


# -- inbox -------------------------------------------------------------------------------------
def seal_text(keyring: Keyring, account_id: str, purpose: str, text: str) -> str:
    return keyring.seal(account_id, purpose, text.encode())


def open_text(keyring: Keyring, account_id: str, purpose: str, value: str) -> str:
    if not is_sealed(value):
        return value
    return keyring.open(account_id, purpose, value).decode()


# -- GDPR access export ------------------------------------------------------------------------
def open_person_row(keyring: Keyring, table: str, account_id: str,
                    row: dict[str, Any]) -> dict[str, Any]:
    """A control-store row about one person with its sealed message fields opened (for the
    GDPR access export); rows of other tables are returned unchanged."""
    if table == "outbox" and is_sealed(row.get("content")):
        to, content, meta = open_outbox(keyring, account_id, row["idem_key"],
                                        row.get("to_addr"), row["content"], row.get("meta"))
        return {**row, "to_addr": to, "content": content, "meta": meta}
    if table == "inbox_messages":
        purpose = "inbox:" + str(row["message_id"])
        return {**row, **{k: open_text(keyring, account_id, f"{purpose}:{k}", row[k])
                          for k in ("content", "meta") if isinstance(row.get(k), str)}}
    return row
