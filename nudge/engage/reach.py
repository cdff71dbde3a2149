"""A campaign's exact reach and its messages rendered for one person — before anything is sent.

Called by the API (``POST /1/campaigns/estimate``, ``GET /1/campaigns/{id}/estimate``,
``POST /1/campaigns/{id}/preview``) and by the dashboard's campaign wizard, so both show the
same numbers and the same rendering.

Example::

    out = estimate(engage, account_id, campaign_id=7)
    out["reachable"]["email"]   # people in the audience with an email address
"""

from __future__ import annotations

from typing import Any

from nudge.errors import ValidationError
from nudge.query.profiles import find_user

from .campaigns import parse_campaign
from .compose import address, context, load_recipients, render
from .directory import CampaignDirectory, spec_of
from .expand import audience_node, segment_engine
from .service import Engage

LOOKUPS = ("identity", "email", "phone", "objectId")
BATCH = 5000


def find_recipient(engage: Engage, account_id: str, who: Any, field: str) -> int:
    """The user id named by ``{"identity" | "email" | "phone" | "objectId": value}``;
    a 400 naming ``field`` otherwise."""
    if not isinstance(who, dict):
        raise ValidationError(f"{field} must be an object naming one of {', '.join(LOOKUPS)}",
                              field=field)
    try:
        return find_user(engage.stores.get(account_id),
                         {k: str(v) for k, v in who.items() if k in LOOKUPS})
    except ValidationError as e:
        raise ValidationError(f"{field}: {e.message}", field=field) from None


def estimate(engage: Engage, account_id: str, body: dict[str, Any] | None = None,
             campaign_id: int | None = None) -> dict[str, Any]:
    """Exact reach, evaluated on the live store, of a saved campaign (``campaign_id``) or an
    unsaved definition (``body``): ``{"audience", "reachable": {channel: n},
    "first_channel": {channel: n}, "unreachable", "control_expected"}``."""
    if campaign_id is not None:
        spec = spec_of(CampaignDirectory(engage.engine, account_id).get(campaign_id))
    else:
        spec = parse_campaign(body)
    if spec.audience is None:
        raise ValidationError("the campaign has no audience (api campaigns address "
                              "identities per call)", field="audience")
    saved, node = audience_node(engage, account_id, spec)
    ids = sorted(segment_engine(engage, account_id, saved).user_ids(node))
    store = engage.stores.get(account_id)
    reach: dict[str, int] = dict.fromkeys(spec.channels, 0)
    first: dict[str, int] = dict.fromkeys(spec.channels, 0)
    unreachable = 0
    tokens = bool({"push", "webpush"} & set(spec.channels))
    for i in range(0, len(ids), BATCH):
        recs = load_recipients(store, ids[i:i + BATCH], set(), full=False, tokens=tokens)
        for r in recs.values():
            got = [ch for ch in spec.channels if address(spec, ch, r)[0] is not None]
            for ch in got:
                reach[ch] += 1
            if got:
                first[got[0]] += 1
            else:
                unreachable += 1
    return {"audience": len(ids), "reachable": reach, "first_channel": first,
            "unreachable": unreachable,
            "control_expected": round(len(ids) * spec.control_percent / 100)}


def preview(engage: Engage, account_id: str, campaign_id: int,
            body: dict[str, Any]) -> dict[str, Any]:
    """Every variant × channel of the campaign rendered for one person, with real tracking
    links: ``body`` is ``{"user": {"identity": ...}, "event"?: {...}, "data"?: {...}}``."""
    c = CampaignDirectory(engage.engine, account_id).get(campaign_id)
    spec = spec_of(c)
    uid = find_recipient(engage, account_id, body.get("user"), "user")
    rec = load_recipients(engage.stores.get(account_id), [uid])[uid]
    event, data = body.get("event"), body.get("data")
    if event is not None and not isinstance(event, dict):
        raise ValidationError("event must be an object", field="event")
    if data is not None and not isinstance(data, dict):
        raise ValidationError("data must be an object", field="data")
    out = []
    for v in spec.variants:
        for ch in spec.channels:
            content = render(v, ch, context(c.id, spec, v, rec, event, data))
            content = engage.signer.finalize(account_id, 0, uid, ch, spec.category, content)
            out.append({"variant": v.name, "channel": ch,
                        "to": address(spec, ch, rec)[0], "content": content})
    assigned = spec.variant_for(c.id, uid)
    return {"user_id": uid, "assigned_variant": assigned.name if assigned else "control",
            "previews": out}
