"""Suppression: a person is kept but no longer processed or contacted.

The suppressed internal user ids of an account live in its own (encrypted) database, table
``suppressions``, and in memory on the open :class:`~nudge.store.account.AccountStore`
(``store.suppressed``), so the two checks that matter are set lookups:

- the commit path drops events of a suppressed person (``Commit.run``);
- every channel asks :func:`is_suppressed` before sending (the delivery policy).

Suppression belongs to a profile and covers every profile merged into it: a device that logs
in as a suppressed person is theirs from then on, so its events are dropped too. (The other
direction is not carried: an anonymous profile suppressed on its own that later merges into a
person who is not suppressed does not suppress that person.)
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nudge.store.account import AccountStore

DDL = """CREATE TABLE IF NOT EXISTS suppressions (
    user_id BIGINT PRIMARY KEY, created_at TIMESTAMP NOT NULL)"""

_open: weakref.WeakValueDictionary[str, AccountStore] = weakref.WeakValueDictionary()
_lock = threading.Lock()


def load(store: AccountStore, cur: Any) -> set[int]:
    """Create the table if needed and return the suppressed ids; registers the open store
    so that :func:`is_suppressed` can answer by account id."""
    cur.execute(DDL)
    ids = {int(r[0]) for r in cur.execute("SELECT user_id FROM suppressions").fetchall()}
    with _lock:
        _open[store.account_id] = store
    return ids


def suppressed_in(store: AccountStore, user_id: int) -> bool:
    sup = store.suppressed
    return bool(sup) and (user_id in sup or store.identity.final(user_id) in sup)


def is_suppressed(account_id: str, user_id: int) -> bool:
    """Whether a person of an account is suppressed (every channel must refuse them).

    Answers from the account's open store (the server opens every store at start); an
    account whose store is not open in this process raises ``LookupError`` rather than
    answering "not suppressed".

    >>> is_suppressed(account.id, 42)   # doctest: +SKIP
    False
    """
    store = _open.get(account_id)
    if store is None:
        raise LookupError(f"the store of account {account_id} is not open in this process")
    return suppressed_in(store, user_id)


def suppress(store: AccountStore, user_ids: list[int]) -> int:
    """Suppress people (writer thread). Returns how many were newly suppressed."""
    new = sorted({store.identity.final(u) for u in user_ids} - store.suppressed)
    if new:
        store.writer_cursor.execute(
            "INSERT OR IGNORE INTO suppressions SELECT unnest(?::BIGINT[]), now()", [new])
        store.suppressed.update(new)
    return len(new)


def unsuppress(store: AccountStore, user_ids: list[int]) -> int:
    """Lift suppression (writer thread). Returns how many were suppressed before."""
    ids = {store.identity.final(u) for u in user_ids} | set(user_ids)
    gone = sorted(ids & store.suppressed)
    if gone:
        store.writer_cursor.execute(
            "DELETE FROM suppressions WHERE user_id IN (SELECT unnest(?::BIGINT[]))", [gone])
        store.suppressed.difference_update(gone)
    return len(gone)


def suppressed_subset(account_id: str, user_ids: list[int]) -> set[int]:
    """The suppressed ones among ``user_ids`` (the delivery policy's suppression check)."""
    return {u for u in user_ids if is_suppressed(account_id, u)}


def register_with_policy() -> None:
    """Make every channel refuse suppressed people (nudge/engage/policy.py)."""
    try:
        from nudge.engage import policy
    except ImportError:  # the delivery area is not installed in this build
        return
    policy.register_suppression(suppressed_subset)
