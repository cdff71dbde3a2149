"""Campaign definitions: JSON in, a checked immutable :class:`CampaignSpec` out.

Every error names the JSON field (``content.email.subject``, ``variants[1].percent``) and is
raised before anything is stored. The spec is re-parsed from the stored JSON whenever a
campaign is used, so what runs is always what was checked.

Kinds: ``one_time`` (now or at ``schedule.at``, optionally at that wall-clock time in each
user's timezone), ``recurring`` (``schedule.cron`` in ``schedule.timezone``), ``api``
(``POST /1/send`` to given identities, transactional), ``trigger`` (a live event with
property filters, optionally "and did not do B within N minutes").
"""

from __future__ import annotations

import datetime as dt
import json
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from nudge.errors import ValidationError
from nudge.query.segments.model import UNITS, DefinitionError, Filter, _Parser

from .templates import Template, compile_template

KINDS = ("one_time", "recurring", "api", "trigger")
CHANNELS = ("email", "push", "webpush", "sms", "whatsapp", "webhook", "inapp")
# channel -> (templated fields, required fields)
FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "email": (("subject", "html", "text", "mjml", "from_", "reply_to"), ("subject",)),
    "push": (("title", "body", "deep_link", "image"), ("body",)),
    "webpush": (("title", "body", "url", "icon"), ("body",)),
    "sms": (("body",), ("body",)),
    "whatsapp": (("template", "language", "params"), ("template",)),
    "webhook": (("body",), ("body",)),
    "inapp": (("title", "body", "deep_link", "image", "button", "layout"), ("body",)),
}
# How the SDKs show an in-app message ("inbox": only listed in the inbox, no pop-up).
INAPP_LAYOUTS = ("banner", "modal", "toast", "inbox")
MAX_VARIANTS = 10


def bad(field: str, why: str) -> ValidationError:
    return ValidationError(f"{field}: {why}", field=field)


@dataclass(frozen=True)
class Variant:
    name: str
    percent: float
    content: dict[str, dict[str, Any]]  # channel -> field -> Template | list[Template] | str


@dataclass(frozen=True)
class Trigger:
    event: str
    where: tuple[Filter, ...]
    unless_event: str | None = None
    unless_within: float = 0.0


@dataclass(frozen=True)
class QuietHours:
    start: int  # minutes after local midnight
    end: int
    action: str  # "delay" | "drop"

    def contains(self, minute: int) -> bool:
        if self.start <= self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end  # wraps midnight


@dataclass(frozen=True)
class Cap:
    max: int
    seconds: float
    channel: str = "*"


@dataclass(frozen=True)
class Conversion:
    event: str
    within: float
    revenue_property: str | None


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    kind: str
    audience: dict[str, Any] | None  # {"segment_id": n} | {"definition": {...}} | None
    channels: tuple[str, ...]
    fallback_after: float | None  # next channel if not opened/clicked within (seconds)
    variants: tuple[Variant, ...]
    control_percent: float
    schedule: dict[str, Any]
    trigger: Trigger | None
    category: str
    transactional: bool
    caps: tuple[Cap, ...]
    quiet_hours: QuietHours | None
    conversion: Conversion | None
    webhook_url: str | None

    def variant_for(self, campaign_id: int, user_id: int) -> Variant | None:
        """Deterministic split by a hash of (campaign, user); None = control group."""
        bucket = zlib.crc32(f"{campaign_id}:{user_id}".encode()) % 10_000 / 100.0
        if bucket < self.control_percent:
            return None
        edge = self.control_percent
        for v in self.variants:
            edge += v.percent
            if bucket < edge:
                return v
        return self.variants[-1]


def _obj(v: Any, field: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise bad(field, "must be an object")
    for k in v:
        if k not in allowed:
            raise bad(f"{field}.{k}" if field else k,
                      f"unknown field; allowed: {', '.join(allowed)}")
    return v


def duration(v: Any, field: str) -> float:
    try:
        return _Parser(0).duration(v, field)
    except DefinitionError as e:
        raise bad(e.path, e.message.split(": ", 1)[-1]) from None


def _clock_time(v: Any, field: str) -> int:
    if not isinstance(v, str) or len(v) != 5 or v[2] != ":":
        raise bad(field, 'must be "HH:MM"')
    try:
        h, m = int(v[:2]), int(v[3:])
    except ValueError:
        raise bad(field, 'must be "HH:MM"') from None
    if not (0 <= h < 24 and 0 <= m < 60):
        raise bad(field, 'must be "HH:MM" between 00:00 and 23:59')
    return h * 60 + m


def timezone(v: Any, field: str) -> str:
    if not isinstance(v, str):
        raise bad(field, "must be an IANA timezone name")
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise bad(field, f"unknown timezone {v!r}") from None
    return v


def parse_time(v: Any, field: str) -> float:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        try:
            t = dt.datetime.fromisoformat(v)
        except ValueError:
            raise bad(field, "must be an ISO 8601 time or epoch seconds") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.UTC)
        return t.timestamp()
    raise bad(field, "must be an ISO 8601 time or epoch seconds")


def quiet_hours(v: Any, field: str) -> QuietHours | None:
    if v is None:
        return None
    o = _obj(v, field, ("start", "end", "action"))
    action = o.get("action", "delay")
    if action not in ("delay", "drop"):
        raise bad(f"{field}.action", 'must be "delay" or "drop"')
    start = _clock_time(o.get("start"), f"{field}.start")
    end = _clock_time(o.get("end"), f"{field}.end")
    if start == end:
        raise bad(f"{field}.end", "must differ from start")
    return QuietHours(start, end, action)


def caps(v: Any, field: str, channel_allowed: bool = True) -> tuple[Cap, ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or len(v) > 20:
        raise bad(field, "must be a list of at most 20 caps")
    out = []
    for i, c in enumerate(v):
        f = f"{field}[{i}]"
        o = _obj(c, f, ("max", "per", "channel") if channel_allowed else ("max", "per"))
        n = o.get("max")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise bad(f"{f}.max", "must be a non-negative integer")
        ch = o.get("channel", "*")
        if ch != "*" and ch not in CHANNELS:
            raise bad(f"{f}.channel", f"must be \"*\" or one of {', '.join(CHANNELS)}")
        out.append(Cap(n, duration(o.get("per"), f"{f}.per"), ch))
    return tuple(out)


def _content(v: Any, field: str, channels: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    o = _obj(v, field, CHANNELS)
    out: dict[str, dict[str, Any]] = {}
    for ch, spec in o.items():
        templated, required = FIELDS[ch]
        f = f"{field}.{ch}"
        s = _obj(spec, f, templated)
        for r in required:
            if r not in s:
                raise bad(f"{f}.{r}", "is required")
        if ch == "email" and not ({"html", "text", "mjml"} & set(s)):
            raise bad(f"{f}.html", "one of html, text or mjml is required")
        if ch == "inapp" and "layout" in s and s["layout"] not in INAPP_LAYOUTS:
            raise bad(f"{f}.layout", f"must be one of {', '.join(INAPP_LAYOUTS)}")
        fields: dict[str, Any] = {}
        for name, src in s.items():
            if ch == "whatsapp" and name == "params":
                if not isinstance(src, list):
                    raise bad(f"{f}.params", "must be a list of template strings")
                fields[name] = [compile_template(p, f"{f}.params[{i}]")
                                for i, p in enumerate(src)]
            else:
                fields[name] = compile_template(src, f"{f}.{name}")
        out[ch] = fields
    return out


def _trigger(v: Any, field: str) -> Trigger:
    o = _obj(v, field, ("event", "where", "unless"))
    event = o.get("event")
    if not isinstance(event, str) or not event:
        raise bad(f"{field}.event", "must be an event name")
    try:
        where = _Parser(0).filters(o.get("where"), f"{field}.where")
    except DefinitionError as e:
        raise bad(e.path, e.message.split(": ", 1)[-1]) from None
    for i, flt in enumerate(where):
        if flt.op.endswith("_days") or flt.op.endswith("days_ago"):
            raise bad(f"{field}.where[{i}].op", "relative-date operators are not available "
                                                "for triggers")
    if o.get("unless") is None:
        return Trigger(event, where)
    u = _obj(o["unless"], f"{field}.unless", ("event", "within"))
    ue = u.get("event")
    if not isinstance(ue, str) or not ue:
        raise bad(f"{field}.unless.event", "must be an event name")
    return Trigger(event, where, ue, duration(u.get("within"), f"{field}.unless.within"))


def _schedule(kind: str, v: Any, field: str) -> dict[str, Any]:
    if v is None:
        if kind == "recurring":
            raise bad(field, "recurring campaigns need schedule.cron")
        return {}
    o = _obj(v, field, ("at", "user_timezone", "cron", "timezone", "until"))
    out: dict[str, Any] = {}
    if "at" in o:
        if kind != "one_time":
            raise bad(f"{field}.at", "only one_time campaigns are scheduled at a time")
        out["at"] = parse_time(o["at"], f"{field}.at")
        ut = o.get("user_timezone", False)
        if not isinstance(ut, bool):
            raise bad(f"{field}.user_timezone", "must be true or false")
        out["user_timezone"] = ut
    if "cron" in o:
        if kind != "recurring":
            raise bad(f"{field}.cron", "only recurring campaigns have a cron schedule")
        try:
            CronSim(o["cron"], dt.datetime(2026, 1, 1))
        except (CronSimError, TypeError, ValueError) as e:
            raise bad(f"{field}.cron", f"invalid cron expression: {e}") from None
        out["cron"] = o["cron"]
        out["timezone"] = timezone(o.get("timezone", "UTC"), f"{field}.timezone")
        if "until" in o:
            out["until"] = parse_time(o["until"], f"{field}.until")
    elif kind == "recurring":
        raise bad(f"{field}.cron", "is required for recurring campaigns")
    return out


def next_cron(schedule: dict[str, Any], after: float) -> float | None:
    """The first occurrence strictly after ``after`` (epoch seconds), in the schedule's zone."""
    tz = ZoneInfo(schedule["timezone"])
    start = dt.datetime.fromtimestamp(after, tz).replace(tzinfo=None)
    for local in CronSim(schedule["cron"], start):
        t = local.replace(tzinfo=tz).timestamp()
        if t > after:
            until = schedule.get("until")
            return None if until is not None and t > until else t
    return None  # pragma: no cover - CronSim iterates forever


def parse_campaign(body: Any) -> CampaignSpec:
    """Check a campaign definition (the JSON body of POST/PUT /1/campaigns)."""
    o = _obj(body, "", ("name", "kind", "audience", "channels", "fallback_after", "content",
                        "variants", "control_percent", "schedule", "trigger", "category",
                        "transactional", "caps", "quiet_hours", "conversion", "webhook_url"))
    name = o.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise bad("name", "must be a non-empty string of at most 200 characters")
    kind = o.get("kind", "one_time")
    if kind not in KINDS:
        raise bad("kind", f"must be one of {', '.join(KINDS)}")
    channels = o.get("channels")
    if (not isinstance(channels, list) or not channels or len(set(channels)) != len(channels)
            or any(c not in CHANNELS for c in channels)):
        raise bad("channels", f"must be an ordered list of distinct channels from "
                              f"{', '.join(CHANNELS)} (later ones are fallbacks)")
    channels_t = tuple(channels)
    audience = o.get("audience")
    if audience is not None:
        a = _obj(audience, "audience", ("segment_id", "definition"))
        if len(a) != 1:
            raise bad("audience", "give segment_id or definition")
        if "segment_id" in a and (not isinstance(a["segment_id"], int)
                                  or isinstance(a["segment_id"], bool)):
            raise bad("audience.segment_id", "must be an integer")
    elif kind in ("one_time", "recurring"):
        raise bad("audience", "is required (a saved segment_id or an inline definition)")
    base = _content(o.get("content", {}), "content", channels_t)
    raw_variants = o.get("variants")
    control = o.get("control_percent", 0)
    if isinstance(control, bool) or not isinstance(control, int | float) or not 0 <= control < 100:
        raise bad("control_percent", "must be a number from 0 to less than 100")
    variants: list[Variant] = []
    if raw_variants is None:
        variants.append(Variant("A", 100.0 - control, base))
    else:
        if not isinstance(raw_variants, list) or not 1 <= len(raw_variants) <= MAX_VARIANTS:
            raise bad("variants", f"must be a list of 1 to {MAX_VARIANTS} variants")
        names = set()
        for i, rv in enumerate(raw_variants):
            f = f"variants[{i}]"
            vo = _obj(rv, f, ("name", "percent", "content"))
            vn = vo.get("name")
            if not isinstance(vn, str) or not vn or len(vn) > 32 or vn in names \
                    or vn == "control":
                raise bad(f"{f}.name", "must be a unique name of 1-32 characters (not "
                                       "'control')")
            names.add(vn)
            pct = vo.get("percent")
            if isinstance(pct, bool) or not isinstance(pct, int | float) or not 0 < pct <= 100:
                raise bad(f"{f}.percent", "must be a number in (0, 100]")
            content = dict(base)
            content.update(_content(vo.get("content", {}), f"{f}.content", channels_t))
            variants.append(Variant(vn, float(pct), content))
        total = sum(v.percent for v in variants) + control
        if abs(total - 100) > 1e-6:
            raise bad("variants", f"variant percents plus control_percent must add up to 100 "
                                  f"(they add up to {total:g})")
    webhook_url = o.get("webhook_url")
    if "webhook" in channels_t:
        parts = urlsplit(webhook_url) if isinstance(webhook_url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise bad("webhook_url", "an http(s) URL is required for the webhook channel")
    for v in variants:
        for ch in channels_t:
            if ch not in v.content:
                where = "content" if raw_variants is None else f"variants[{variants.index(v)}]"
                raise bad(f"{where}.{ch}", f"content for channel {ch!r} is missing")
    trigger = None
    if kind == "trigger":
        if o.get("trigger") is None:
            raise bad("trigger", "is required for trigger campaigns")
        trigger = _trigger(o["trigger"], "trigger")
    elif o.get("trigger") is not None:
        raise bad("trigger", "only trigger campaigns have a trigger")
    category = o.get("category", "general")
    if not isinstance(category, str) or not category or len(category) > 64 or category == "*":
        raise bad("category", "must be a category name of 1-64 characters")
    transactional = o.get("transactional", kind == "api")
    if not isinstance(transactional, bool):
        raise bad("transactional", "must be true or false")
    conversion = None
    if o.get("conversion") is not None:
        co = _obj(o["conversion"], "conversion", ("event", "within", "revenue_property"))
        if not isinstance(co.get("event"), str) or not co["event"]:
            raise bad("conversion.event", "must be an event name")
        rp = co.get("revenue_property")
        if rp is not None and not isinstance(rp, str):
            raise bad("conversion.revenue_property", "must be a property name")
        conversion = Conversion(co["event"], duration(co.get("within", {"days": 1}),
                                                      "conversion.within"), rp)
    fallback_after = None
    if o.get("fallback_after") is not None:
        fallback_after = duration(o["fallback_after"], "fallback_after")
    return CampaignSpec(
        name=name.strip(), kind=kind, audience=audience, channels=channels_t,
        fallback_after=fallback_after, variants=tuple(variants), control_percent=float(control),
        schedule=_schedule(kind, o.get("schedule"), "schedule"), trigger=trigger,
        category=category, transactional=transactional,
        caps=caps(o.get("caps"), "caps", channel_allowed=False),
        quiet_hours=quiet_hours(o.get("quiet_hours"), "quiet_hours"), conversion=conversion,
        webhook_url=webhook_url if "webhook" in channels_t else None)


def dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), sort_keys=True)


__all__ = ["UNITS", "CampaignSpec", "Template", "parse_campaign"]
