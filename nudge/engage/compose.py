"""Recipients (profile, addresses, timezone) and rendered content for one channel.

Addresses come from the live account store: ``email`` and ``phone`` profile columns, push
and web push tokens from the identity map (kinds ``fcm``, ``apns``, ``webpush``); the
webhook channel posts to the campaign's URL and the in-app inbox addresses the profile.
A user's timezone is the profile property ``timezone`` (IANA name), else the account's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nudge.store.account import AccountStore

from .campaigns import CampaignSpec, Variant
from .templates import UNSUBSCRIBE_PLACEHOLDER, Template

TOKEN_KINDS = ("fcm", "apns", "webpush")
IDENTIFIER_KINDS = ("identity", "email", "phone", "object_id")
TZ_PROPS = ("timezone", "tz", "Timezone")
_ZONES: dict[str, bool] = {}


def _valid_zone(tz: Any) -> bool:
    if not isinstance(tz, str):
        return False
    ok = _ZONES.get(tz)
    if ok is None:
        try:
            ZoneInfo(tz)
            ok = True
        except (ZoneInfoNotFoundError, ValueError):
            ok = False
        _ZONES[tz] = ok
    return ok


@dataclass
class Recipient:
    user_id: int
    identity: str | None = None
    email: str | None = None
    phone: str | None = None
    props: dict[str, Any] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # newest token per kind
    identifier: tuple[str, str] | None = None  # to write tracking events back

    def timezone(self, default: str) -> str:
        for p in TZ_PROPS:
            tz = self.props.get(p)
            if _valid_zone(tz):
                return str(tz)
        return default

    def context(self) -> dict[str, Any]:
        return {**self.props, "id": self.user_id, "identity": self.identity,
                "email": self.email, "phone": self.phone}


def load_recipients(store: AccountStore, uids: list[int]) -> dict[int, Recipient]:
    """Profiles, newest push tokens and one identifier per user, in three queries."""
    if not uids:
        return {}
    with store.cursor() as cur:
        profiles = store.load_profiles(uids, cur)
        rows = cur.execute(
            "SELECT user_id, kind, value FROM identities "
            "WHERE user_id IN (SELECT unnest(?::BIGINT[])) ORDER BY created_at",
            [uids]).fetchall()
    out: dict[int, Recipient] = {}
    for uid, p in profiles.items():
        out[uid] = Recipient(uid, p.identity, p.email, p.phone, p.props)
    rank = {k: i for i, k in enumerate(IDENTIFIER_KINDS)}
    for uid, kind, value in rows:
        r = out.get(uid)
        if r is None:
            continue
        if kind in TOKEN_KINDS:
            r.tokens[kind] = value  # ordered by created_at: the newest wins
        elif kind in rank and (r.identifier is None or rank[kind] < rank[r.identifier[0]]):
            r.identifier = (kind, value)
    return out


def address(spec: CampaignSpec, channel: str, r: Recipient) -> tuple[str | None, dict[str, Any]]:
    """The address on ``channel`` (None: unreachable) and channel meta (token kind)."""
    if channel == "email":
        return r.email, {}
    if channel in ("sms", "whatsapp"):
        return r.phone, {}
    if channel == "push":
        for kind in ("fcm", "apns"):
            if kind in r.tokens:
                return r.tokens[kind], {"token_kind": kind}
        return None, {}
    if channel == "webpush":
        return r.tokens.get("webpush"), {}
    if channel == "webhook":
        return spec.webhook_url, {}
    return str(r.user_id), {}  # inapp


def context(campaign_id: int | None, spec: CampaignSpec, variant: Variant, r: Recipient,
            event: dict[str, Any] | None = None,
            data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"profile": r.context(), "event": event or {}, "data": data or {},
            "campaign": {"id": campaign_id, "name": spec.name, "variant": variant.name},
            "unsubscribe_url": UNSUBSCRIBE_PLACEHOLDER}


def render(variant: Variant, channel: str, ctx: dict[str, Any]) -> dict[str, Any]:
    """Render the variant's content for ``channel`` (raises TemplateError)."""
    out: dict[str, Any] = {}
    for name, t in variant.content[channel].items():
        if isinstance(t, list):
            out[name] = [p.render(ctx) for p in t]
        elif isinstance(t, Template):
            out[name] = t.render(ctx)
    # MJML is rendered to HTML by the email channel (channels/email.py, render_mjml).
    if channel == "webhook":
        try:
            out["body"] = json.loads(out["body"], strict=False)  # link placeholders
        except ValueError:
            pass  # a plain-text body is sent as a JSON string
    return out
