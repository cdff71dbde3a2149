"""Message contents and addresses sealed in the control store.

An outbox row's address, rendered content and meta (which can hold the triggering event and
per-call data) are one AES-256-GCM value under the account's data key
(``Keyring.seal``), bound to the row's idempotency key, in the ``content`` column;
``to_addr`` and ``meta`` stay NULL. One encryption per message instead of three: at 20k
messages per second per core each one costs. Inbox rows seal ``content`` and ``meta``,
bound to their message id. So a copy of ``control.db`` names nobody, and a sealed value
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
from typing import Any

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
def seal_outbox_row(keyring: Keyring, row: dict[str, Any]) -> dict[str, Any]:
    """Seal (in place) the address, content and meta of an ``outbox.row`` dict."""
    to, content, meta = row.get("to_addr"), row.get("content"), row.get("meta")
    if to is None and meta is None and (content is None or is_sealed(content)):
        return row  # nothing to seal, or sealed already
    # content and meta are JSON text already: spliced, not decoded and encoded again.
    env = ('{"t":' + json.dumps(to) + ',"c":' + (content or "null") + ',"m":'
           + (meta or "null") + "}")
    row["content"] = keyring.seal(row["account_id"], "outbox:" + row["idem_key"],
                                  env.encode())
    row["to_addr"] = None
    row["meta"] = None
    return row


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
