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

import msgspec
import pyarrow as pa

from nudge.store.account import AccountStore
from nudge.store.catalog import from_column_value

from .campaigns import CampaignSpec, Variant
from .templates import UNSUBSCRIBE_PLACEHOLDER, Template, template_key

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
        props = self.props
        for p in TZ_PROPS:
            tz = props.get(p)
            if type(tz) is str and (_ZONES.get(tz) or _valid_zone(tz)):
                return tz
        return default

    def context(self) -> dict[str, Any]:
        return {**self.props, "id": self.user_id, "identity": self.identity,
                "email": self.email, "phone": self.phone}


def profile_props(spec: CampaignSpec) -> set[str] | None:
    """The profile properties the campaign's templates read (None: the whole profile)."""
    key = id(spec)
    hit = _PROPS.get(key)
    if hit is not None and hit[0] is spec:
        return hit[1]
    wanted: set[str] | None = set()
    for v in spec.variants:
        for fields in v.content.values():
            for t in fields.values():
                for tt in (t if isinstance(t, list) else [t]):
                    for path in getattr(tt, "paths", ()):
                        if path[0] != "profile":
                            continue
                        if len(path) < 2 or not isinstance(path[1], str) or wanted is None:
                            wanted = None
                        else:
                            wanted.add(path[1])
    if len(_PROPS) > 1000:
        _PROPS.clear()
    _PROPS[key] = (spec, wanted)
    return wanted


_PROPS: dict[int, tuple[CampaignSpec, set[str] | None]] = {}
_JSON = msgspec.json.Decoder()


def load_recipients(store: AccountStore, uids: list[int], props: set[str] | None = None,
                    tokens: bool = True, full: bool = True) -> dict[int, Recipient]:
    """Profiles and newest push tokens of ``uids``, in one or two queries.

    ``full`` loads every property; otherwise only ``props`` (and the timezone properties)
    are read — from their typed columns, and from the JSON overflow only for rows that
    have one — which is what makes audience expansion cheap per recipient.
    """
    if not uids:
        return {}
    out: dict[int, Recipient] = {}
    with store.cursor() as cur:
        if full:
            for uid, p in store.load_profiles(uids, cur).items():
                out[uid] = Recipient(uid, p.identity, p.email, p.phone, p.props)
        else:
            out = _light_recipients(store, cur, uids, set(props or ()) | set(TZ_PROPS))
        if tokens:
            for uid, kind, value in cur.execute(
                    "SELECT user_id, kind, value FROM identities WHERE kind IN "
                    "('fcm', 'apns', 'webpush') AND user_id IN (SELECT unnest(?::BIGINT[])) "
                    "ORDER BY created_at", [uids]).fetchall():
                r = out.get(uid)
                if r is not None:
                    r.tokens[kind] = value  # ordered by created_at: the newest wins
    return out


def _light_recipients(store: AccountStore, cur: Any, uids: list[int],
                      wanted: set[str]) -> dict[int, Recipient]:
    """Recipients with only the ``wanted`` properties, built column by column: one Arrow
    result, each column converted to Python once, no per-row tuples."""
    typed = [(name, c.column, c.type) for name in sorted(wanted)
             if (c := store.catalog.get("profile", name)) is not None]
    cols = "".join(f", {c}" for _, c, _ in typed)  # names from our catalog
    # The ids as an Arrow table registered on this cursor (its own connection): half the
    # CPU of binding a 5,000-element list parameter.
    cur.register("batch_user_ids", pa.table({"user_id": pa.array(uids, pa.int64())}))
    try:
        t = cur.execute(f"SELECT user_id, identity, email, phone, props{cols} FROM profiles "
                        "WHERE user_id IN (SELECT user_id FROM batch_user_ids)").arrow()
        if not isinstance(t, pa.Table):  # DuckDB 1.5 returns a RecordBatchReader
            t = t.read_all()
    finally:
        cur.unregister("batch_user_ids")
    ids = t.column(0).to_pylist()
    props: list[dict[str, Any]] = [{} for _ in ids]
    for i, (name, _, typ) in enumerate(typed):
        col = t.column(5 + i)
        if col.null_count == len(col):
            continue
        values = col.to_pylist()
        convert = typ in ("date", "number")
        for pr, v in zip(props, values, strict=True):
            if v is not None:
                pr[name] = from_column_value(v, typ) if convert else v
    overflow = t.column(4)
    if overflow.null_count < len(overflow):
        for pr, extra in zip(props, overflow.to_pylist(), strict=True):
            if extra is not None:
                e = _JSON.decode(extra)
                for name in wanted:
                    if name in e:
                        pr[name] = e[name]
    return dict(zip(ids, map(Recipient, ids, t.column(1).to_pylist(), t.column(2).to_pylist(),
                             t.column(3).to_pylist(), props), strict=True))


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


def render(variant: Variant, channel: str, ctx: dict[str, Any],
           memo: bool = True) -> dict[str, Any]:
    """Render the variant's content for ``channel`` (raises TemplateError)."""
    out: dict[str, Any] = {}
    for name, t in variant.content[channel].items():
        if isinstance(t, list):
            out[name] = [p.render(ctx, memo) for p in t]
        elif isinstance(t, Template):
            out[name] = t.render(ctx, memo)
    # MJML is rendered to HTML by the email channel (channels/email.py, render_mjml).
    if channel == "webhook":
        try:
            out["body"] = json.loads(out["body"], strict=False)  # link placeholders
        except ValueError:
            pass  # a plain-text body is sent as a JSON string
    return out


_MISSING = ("missing",)
# Profile context keys that come from the recipient's own fields (they win over properties
# of the same name, as in Recipient.context).
_FIELDS = {"id": "user_id", "identity": "identity", "email": "email", "phone": "phone"}


def _tag(v: Any) -> Any:
    return v if type(v) is str else template_key({"v": v}, ("v",))


class ContentCache:
    """Rendered content as stored in the outbox (JSON text), memoized per (variant,
    channel) on the values the templates read: recipients who look the same to the
    templates share one render and one JSON encoding.

    The memo key is built without a per-recipient context: the values that are the same for
    every recipient of a call (event, data, campaign, unsubscribe link) are keyed once per
    call (``Contents``), and each profile value a template reads is taken straight from the
    recipient. The context is built only when the key misses, for the render itself; a
    template that reads no profile value renders once per call."""

    MAX = 100_000

    def __init__(self) -> None:
        # (variant, channel) -> (memo, the profile paths read, other paths read)
        self._plans: dict[tuple[int, str], tuple[dict[tuple[Any, ...], str],
                                                 tuple[tuple[Any, ...], ...],
                                                 tuple[tuple[Any, ...], ...]]] = {}

    def plan(self, variant: Variant, channel: str) -> tuple[
            dict[tuple[Any, ...], str], tuple[tuple[Any, ...], ...], tuple[tuple[Any, ...], ...]]:
        k = (id(variant), channel)
        hit = self._plans.get(k)
        if hit is None:
            ps: set[tuple[Any, ...]] = set()
            for t in variant.content[channel].values():
                for tt in (t if isinstance(t, list) else [t]):
                    ps.update(tt.paths)
            ordered = sorted(ps, key=str)
            hit = self._plans[k] = ({}, tuple(p for p in ordered if p[0] == "profile"),
                                    tuple(p for p in ordered if p[0] != "profile"))
        return hit

    def contents(self, campaign_id: int | None, spec: CampaignSpec,
                 event: dict[str, Any] | None, data: dict[str, Any] | None) -> Contents:
        """The renderer of one call (one event and per-call data for all its recipients)."""
        return Contents(self, campaign_id, spec, event, data)


class Contents:
    """Content JSON for the recipients of one ``build_rows`` call (see ContentCache)."""

    def __init__(self, cache: ContentCache, campaign_id: int | None, spec: CampaignSpec,
                 event: dict[str, Any] | None, data: dict[str, Any] | None) -> None:
        self.cache = cache
        self.campaign_id, self.spec, self.event, self.data = campaign_id, spec, event, data
        # (variant, channel) -> (memo, profile getters, the call's constant key part)
        self._plans: dict[tuple[int, str], tuple[dict[tuple[Any, ...], str],
                                                 tuple[tuple[Any, ...], ...], Any]] = {}

    def _plan(self, variant: Variant, channel: str) -> tuple[
            dict[tuple[Any, ...], str], tuple[tuple[Any, ...], ...], Any]:
        memo, prof_paths, other = self.cache.plan(variant, channel)
        static = {"event": self.event or {}, "data": self.data or {},
                  "campaign": {"id": self.campaign_id, "name": self.spec.name,
                               "variant": variant.name},
                  "unsubscribe_url": UNSUBSCRIBE_PLACEHOLDER}
        getters: Any = tuple(((p[1], _FIELDS.get(p[1]), p[2:]) if len(p) >= 2
                              and isinstance(p[1], str) else None) for p in prof_paths)
        if all(g is not None and g[1] is None and not g[2] for g in getters):
            getters = [g[0] for g in getters]  # names of properties, read straight from props
        plan = self._plans[(id(variant), channel)] = (
            memo, getters, tuple(template_key(static, p) for p in other))
        return plan

    def json(self, variant: Variant, channel: str, r: Recipient) -> str:
        """The rendered content of (variant, channel) for ``r``, as JSON text (raises
        TemplateError)."""
        plan = self._plans.get((id(variant), channel))
        memo, getters, static = plan if plan is not None else self._plan(variant, channel)
        props = r.props
        if type(getters) is list:  # profile properties by name only: the common case
            key = (static, *[v if type(v := props.get(n, _MISSING)) is str else _tag(v)
                             for n in getters])
        else:
            key = (static, *[self._value(r, props, g) for g in getters])
        text = memo.get(key)
        if text is None:
            ctx = context(self.campaign_id, self.spec, variant, r, self.event, self.data)
            text = json.dumps(render(variant, channel, ctx, memo=False), separators=(",", ":"))
            if len(memo) >= ContentCache.MAX:
                memo.clear()
            memo[key] = text
        return text

    @staticmethod
    def _value(r: Recipient, props: dict[str, Any], g: tuple[Any, ...] | None) -> Any:
        if g is None:  # the whole profile (a dynamic lookup, a loop over it)
            return template_key({"p": r.context()}, ("p",))
        name, attr, rest = g
        v = getattr(r, attr) if attr is not None else props.get(name, _MISSING)
        if rest:
            return template_key({"v": v}, ("v", *rest))
        return v if type(v) is str else _tag(v)
