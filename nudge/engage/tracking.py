"""Tracking links and delivery events written back to profiles.

Links carry an HMAC-SHA256 under a key derived from the account's data key, so only URLs
we put into a message redirect (no open redirect), and unsubscribe tokens cannot be forged
for another user, channel or category:

- click:       ``/1/t/c/<account>/<message>?u=<url>&s=<sig(c, message, url)>``
- open pixel:  ``/1/t/o/<account>/<message>.gif?s=<sig(o, message)>``
- unsubscribe: ``/1/t/u/<account>/<token>`` (GET: preference page; POST: RFC 8058 one click)
- callbacks:   ``/1/t/callback/<provider>/<account>/<sig(cb, provider)>``

Every stage becomes an event on the recipient's profile through the normal store write path
(``Message Sent``, ``Message Delivered``, ``Message Failed``, ``Message Opened``,
``Message Clicked``, ``Unsubscribed``, ``Campaign Converted``) with ``campaign_id``,
``variant``, ``channel`` and ``message_id`` properties; each has a derived message id, so a
repeated callback or click is stored once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from typing import Any
from urllib.parse import quote

from nudge.clock import clock
from nudge.ingest.records import Record
from nudge.privacy.keys import Keyring
from nudge.store.account import AccountStore

from .templates import TRACK_PREFIX, UNSUBSCRIBE_PLACEHOLDER

log = logging.getLogger("nudge.engage")
STAGE_EVENTS = {"sent": "Message Sent", "delivered": "Message Delivered",
                "failed": "Message Failed", "opened": "Message Opened",
                "clicked": "Message Clicked", "unsubscribed": "Unsubscribed",
                "converted": "Campaign Converted"}


class Signer:
    """HMAC signatures for one server (keys derived per account, cached)."""

    def __init__(self, keyring: Keyring, public_url: str) -> None:
        self.keyring = keyring
        self.public_url = public_url.rstrip("/")
        self._keys: dict[str, bytes] = {}

    def key(self, account_id: str) -> bytes:
        k = self._keys.get(account_id)
        if k is None:
            k = hmac.new(self.keyring.data_key(account_id), b"nudge-engage-links",
                         hashlib.sha256).digest()
            self._keys[account_id] = k
        return k

    def sig(self, account_id: str, *parts: object) -> str:
        msg = "\x1f".join(str(p) for p in parts).encode()
        return hmac.new(self.key(account_id), msg, hashlib.sha256).hexdigest()[:32]

    def check(self, account_id: str, sig: str, *parts: object) -> bool:
        return hmac.compare_digest(self.sig(account_id, *parts), sig or "")

    # -- links ---------------------------------------------------------------------------
    def click_url(self, account_id: str, message_id: int, url: str) -> str:
        s = self.sig(account_id, "c", message_id, url)
        return (f"{self.public_url}/1/t/c/{account_id}/{message_id}"
                f"?u={quote(url, safe='')}&s={s}")

    def open_url(self, account_id: str, message_id: int) -> str:
        return f"{self.public_url}/1/t/o/{account_id}/{message_id}.gif?s=" \
               f"{self.sig(account_id, 'o', message_id)}"

    def unsubscribe_token(self, account_id: str, user_id: int, channel: str, category: str,
                          message_id: int | None) -> str:
        payload = json.dumps([user_id, channel, category, message_id],
                             separators=(",", ":")).encode()
        b = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{b}.{self.sig(account_id, 'u', b)}"

    def read_unsubscribe(self, account_id: str, token: str) -> tuple[int, str, str, int | None]:
        from nudge.errors import ValidationError

        b, _, s = token.partition(".")
        if not self.check(account_id, s, "u", b):
            raise ValidationError("the unsubscribe link is not valid", field="token")
        uid, channel, category, mid = json.loads(base64.urlsafe_b64decode(b + "=" * (-len(b) % 4)))
        return int(uid), str(channel), str(category), mid

    def unsubscribe_url(self, account_id: str, user_id: int, channel: str, category: str,
                        message_id: int | None) -> str:
        return f"{self.public_url}/1/t/u/{account_id}/" \
               f"{self.unsubscribe_token(account_id, user_id, channel, category, message_id)}"

    def callback_url(self, account_id: str, provider: str) -> str:
        return f"{self.public_url}/1/t/callback/{provider}/{account_id}/" \
               f"{self.sig(account_id, 'cb', provider)}"

    # -- content ---------------------------------------------------------------------------
    def finalize(self, account_id: str, message_id: int, user_id: int, channel: str,
                 category: str, content: dict[str, Any]) -> dict[str, Any]:
        """Replace link placeholders with signed URLs; add the email open pixel and the
        one-click unsubscribe URL (the email channel turns it into RFC 2369 / RFC 8058
        headers)."""
        unsub = self.unsubscribe_url(account_id, user_id, channel, category, message_id)

        def fix(v: Any) -> Any:
            if isinstance(v, str):
                if UNSUBSCRIBE_PLACEHOLDER in v:
                    v = v.replace(UNSUBSCRIBE_PLACEHOLDER, unsub)
                while TRACK_PREFIX in v:
                    i = v.index(TRACK_PREFIX)
                    j = v.find("\x00", i + len(TRACK_PREFIX))
                    if j < 0:
                        break
                    url = v[i + len(TRACK_PREFIX):j]
                    v = v[:i] + self.click_url(account_id, message_id, url) + v[j + 1:]
                return v
            if isinstance(v, list):
                return [fix(x) for x in v]
            if isinstance(v, dict):
                return {k: fix(x) for k, x in v.items()}
            return v

        out = {k: fix(v) for k, v in content.items()}
        if channel == "email":
            pixel = (f'<img src="{self.open_url(account_id, message_id)}" width="1" '
                     'height="1" alt="" style="display:none">')
            if "html" in out:
                html = out["html"]
                out["html"] = (html.replace("</body>", pixel + "</body>") if "</body>" in html
                               else html + pixel)
            out["unsubscribe_url"] = unsub  # the email channel adds List-Unsubscribe(-Post)
        elif channel in ("push", "webpush", "inapp"):
            out["open_url"] = self.open_url(account_id, message_id)
        return out


def tracking_record(identifier: tuple[str, str], stage: str, message_id: int,
                    props: dict[str, Any], ts: float | None = None) -> Record:
    kind, value = identifier
    return Record(kind="event", ids={kind: value}, ts=clock.now() if ts is None else ts,
                  message_id=f"nudge-msg:{message_id}:{stage}", event=STAGE_EVENTS[stage],
                  props={k: v for k, v in props.items() if v is not None})


def identifiers(store: AccountStore, uids: list[int]) -> dict[int, tuple[str, str]]:
    """One identifier per user (identity first) to address tracking events to."""
    from .compose import IDENTIFIER_KINDS

    if not uids:
        return {}
    rank = {k: i for i, k in enumerate(IDENTIFIER_KINDS)}
    out: dict[int, tuple[str, str]] = {}
    with store.cursor() as cur:
        rows = cur.execute("SELECT user_id, kind, value FROM identities WHERE user_id IN "
                           "(SELECT unnest(?::BIGINT[]))", [list(set(uids))]).fetchall()
    for uid, kind, value in rows:
        if kind in rank and (uid not in out or rank[kind] < rank[out[uid][0]]):
            out[uid] = (kind, value)
    return out


def write_events(store: AccountStore, items: list[tuple[int, str, int, dict[str, Any]]],
                 ts: float | None = None) -> None:
    """Queue tracking events (user, stage, message id, props) for the next group commit;
    failures are logged (tracking never blocks delivery)."""
    if not items:
        return
    ids = identifiers(store, [u for u, *_ in items])
    records = [tracking_record(ids[u], stage, mid, props, ts)
               for u, stage, mid, props in items if u in ids]
    for i, r in enumerate(records):
        r.index = i
    if not records:
        return
    fut = store.submit_nowait(records)
    fut.add_done_callback(lambda f: f.exception() and log.warning(
        "tracking events not stored for account %s: %s", store.account_id, f.exception()))
