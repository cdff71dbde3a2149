"""Roles, API key scopes and the permission every route needs: the one authorization table.

A caller is either a dashboard user (a session) with a *role* in the account, or an API key
with a *scope*. Both resolve to a set of permissions; every route declares exactly one
permission in :data:`ROUTE_PERMISSIONS` (or is listed in :data:`PUBLIC_ROUTES`), and
``nudge.api.authz.authorize`` checks it. ``tests/security/test_route_matrix.py`` fails for
any route of the app that is in neither table. docs/security.md shows the same matrix.
"""

from __future__ import annotations

from nudge.errors import ValidationError

# Permissions, named resource:verb.
PERMISSIONS = (
    "events:write",      # ingest: /1/upload, Segment-spec /v1/*
    "profiles:read",     # person-level reads (profiles, timelines, member lists, exports)
    "profiles:write",    # profile merges and edits
    "analytics:read",    # aggregate reports
    "segments:read",
    "segments:write",
    "campaigns:read",
    "campaigns:write",   # create/schedule/send campaigns, templates
    "journeys:read",
    "journeys:write",
    "channels:manage",   # provider credentials, sender identities
    "privacy:manage",    # GDPR access / erasure / suppression
    "keys:manage",       # API keys: create, list, rotate, revoke
    "users:manage",      # dashboard users and their roles in the account
    "audit:read",        # the audit log
)

ROLES = ("owner", "admin", "marketer", "analyst", "viewer")
# Roles whose users must have MFA enrolled before their session is usable.
MFA_REQUIRED_ROLES = frozenset({"owner", "admin"})

_READ = {"analytics:read", "segments:read", "campaigns:read", "journeys:read"}

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "owner": frozenset(PERMISSIONS),
    "admin": frozenset(PERMISSIONS) - {"audit:read"},
    "marketer": frozenset(_READ | {"profiles:read", "segments:write", "campaigns:write",
                                   "journeys:write"}),
    "analyst": frozenset(_READ | {"profiles:read"}),
    "viewer": frozenset(_READ),
}

# API key kinds (stored in api_keys.kind) and what they may do.
KEY_SCOPES: dict[str, frozenset[str]] = {
    # The server passcode: the full account API for back-end integrations, but not the
    # people-facing administration (dashboard users, audit log).
    "passcode": frozenset(PERMISSIONS) - {"users:manage", "audit:read"},
    # The public write key (safe to ship in a web page or app): ingest only.
    "write": frozenset({"events:write"}),
    # Read-only analytics key: reports, segments and profile reads; changes nothing.
    "read": frozenset(_READ | {"profiles:read"}),
}
KEY_KINDS = tuple(KEY_SCOPES)

# Routes anyone may call (their own checks happen inside, e.g. the login form).
PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset({
    ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"),
    ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"), ("GET", "/1/segments/schema"),
    ("GET", "/sdk/nudge.js"), ("GET", "/sdk/nudge.mjs"),
    ("POST", "/auth/login"), ("POST", "/auth/logout"), ("POST", "/auth/password-reset"),
    ("GET", "/sdk/{name}"),
    ("GET", "/ui/login"), ("GET", "/ui/login/mfa"),  # dashboard sign-in pages (nudge/web)
    # Tracking links in sent messages and provider callbacks: each URL carries its own
    # signature or unguessable token (nudge/api/routes/tracking.py).
    ("GET", "/1/t/c/{account_id}/{message_id}"), ("GET", "/1/t/o/{account_id}/{message_id}.gif"),
    ("GET", "/1/t/u/{account_id}/{token}"), ("POST", "/1/t/u/{account_id}/{token}"),
    ("POST", "/1/t/callback/{provider}/{account_id}/{sig}"),
})
# Routes for a signed-in user whatever their account role (their own session and MFA).
SESSION_ROUTES: frozenset[tuple[str, str]] = frozenset({
    ("GET", "/auth/me"), ("POST", "/auth/logout-all"), ("POST", "/auth/mfa/verify"),
    ("POST", "/auth/mfa/enroll"), ("POST", "/auth/mfa/confirm"),
    ("POST", "/auth/mfa/recovery-codes"), ("POST", "/auth/password"),
    # dashboard (nudge/web): landing, account switcher, MFA enrollment page
    ("GET", "/ui"), ("GET", "/ui/switch"), ("GET", "/ui/mfa/enroll"), ("POST", "/ui/mfa/enroll"),
})

# (method, path template) -> permission. Add your route here when you add it.
ROUTE_PERMISSIONS: dict[tuple[str, str], str] = {
    # ingest
    ("POST", "/1/upload"): "events:write",
    ("POST", "/v1/batch"): "events:write",
    ("POST", "/v1/track"): "events:write",
    ("POST", "/v1/identify"): "events:write",
    ("POST", "/v1/alias"): "events:write",
    ("POST", "/v1/page"): "events:write",
    ("POST", "/v1/screen"): "events:write",
    ("POST", "/v1/group"): "events:write",
    # profiles
    ("GET", "/1/profile"): "profiles:read",
    ("GET", "/1/profile/events"): "profiles:read",
    ("GET", "/1/events/catalog"): "analytics:read",
    ("POST", "/1/profiles/merge"): "profiles:write",
    # segments
    ("POST", "/1/segments/evaluate"): "segments:read",
    ("POST", "/1/segments"): "segments:write",
    ("GET", "/1/segments"): "segments:read",
    ("GET", "/1/segments/{segment_id}"): "segments:read",
    ("PUT", "/1/segments/{segment_id}"): "segments:write",
    ("DELETE", "/1/segments/{segment_id}"): "segments:write",
    ("GET", "/1/segments/{segment_id}/count"): "segments:read",
    ("GET", "/1/segments/{segment_id}/explain"): "segments:read",
    ("GET", "/1/segments/{segment_id}/members"): "profiles:read",
    ("GET", "/1/segments/{segment_id}/contains"): "profiles:read",
    ("GET", "/1/segments/{segment_id}/export"): "profiles:read",
    # analytics
    ("POST", "/1/analytics/trends"): "analytics:read",
    ("POST", "/1/analytics/pivot"): "analytics:read",
    ("POST", "/1/analytics/histogram"): "analytics:read",
    ("POST", "/1/analytics/dayparting"): "analytics:read",
    ("GET", "/1/analytics/live"): "analytics:read",
    ("GET", "/1/analytics/live/stream"): "analytics:read",
    ("POST", "/1/analytics/funnels"): "analytics:read",
    ("POST", "/1/analytics/funnels/users"): "profiles:read",
    ("POST", "/1/analytics/retention"): "analytics:read",
    ("POST", "/1/analytics/flows"): "analytics:read",
    # channels (provider credentials) and the in-app inbox. The inbox also takes the write
    # key with an HMAC user_hash of the identity: an end user reading their own inbox.
    # The Segment-spec endpoints and web push take the write key only (HTTP basic auth).
    ("GET", "/1/channels"): "channels:manage",
    ("GET", "/1/channels/{channel}"): "channels:manage",
    ("PUT", "/1/channels/{channel}"): "channels:manage",
    ("DELETE", "/1/channels/{channel}"): "channels:manage",
    ("GET", "/1/inbox"): "profiles:read",
    ("GET", "/1/inbox/stream"): "profiles:read",
    ("POST", "/1/inbox/{message_id}/read"): "profiles:write",
    ("POST", "/1/inbox/{message_id}/dismiss"): "profiles:write",
    # campaigns and delivery (nudge/api/routes/campaigns.py)
    ("POST", "/1/campaigns"): "campaigns:write",
    ("GET", "/1/campaigns"): "campaigns:read",
    ("POST", "/1/campaigns/estimate"): "campaigns:read",
    ("GET", "/1/campaigns/{campaign_id}"): "campaigns:read",
    ("PUT", "/1/campaigns/{campaign_id}"): "campaigns:write",
    ("DELETE", "/1/campaigns/{campaign_id}"): "campaigns:write",
    ("POST", "/1/campaigns/{campaign_id}/send"): "campaigns:write",
    ("POST", "/1/campaigns/{campaign_id}/pause"): "campaigns:write",
    ("POST", "/1/campaigns/{campaign_id}/stop"): "campaigns:write",
    ("GET", "/1/campaigns/{campaign_id}/estimate"): "campaigns:read",
    ("POST", "/1/campaigns/{campaign_id}/preview"): "campaigns:write",
    ("GET", "/1/campaigns/{campaign_id}/report"): "campaigns:read",
    ("POST", "/1/send"): "campaigns:write",
    ("GET", "/1/outbox"): "profiles:read",  # per-message rows with addresses
    ("POST", "/1/outbox/{message_id}/retry"): "campaigns:write",
    ("GET", "/1/engage/policy"): "campaigns:read",
    ("PUT", "/1/engage/policy"): "campaigns:write",
    ("GET", "/1/subscriptions"): "profiles:read",
    ("PUT", "/1/subscriptions"): "profiles:write",
    # subscription categories (nudge/api/routes/subscription_categories.py): as the policy
    ("GET", "/1/subscription-categories"): "campaigns:read",
    ("POST", "/1/subscription-categories"): "campaigns:write",
    ("GET", "/1/subscription-categories/{key}"): "campaigns:read",
    ("PUT", "/1/subscription-categories/{key}"): "campaigns:write",
    ("DELETE", "/1/subscription-categories/{key}"): "campaigns:write",
    ("POST", "/1/webhooks"): "channels:manage",
    ("GET", "/1/webhooks"): "channels:manage",
    ("DELETE", "/1/webhooks/{webhook_id}"): "channels:manage",
    ("GET", "/1/engage/callbacks"): "channels:manage",
    # journeys (nudge/api/routes/journeys.py)
    ("GET", "/1/journeys/schema"): "journeys:read",
    ("POST", "/1/journeys/validate"): "journeys:read",
    ("POST", "/1/journeys"): "journeys:write",
    ("GET", "/1/journeys"): "journeys:read",
    ("GET", "/1/journeys/{journey_id}"): "journeys:read",
    ("GET", "/1/journeys/{journey_id}/versions/{version}"): "journeys:read",
    ("PUT", "/1/journeys/{journey_id}"): "journeys:write",
    ("DELETE", "/1/journeys/{journey_id}"): "journeys:write",
    ("POST", "/1/journeys/{journey_id}/publish"): "journeys:write",
    ("POST", "/1/journeys/{journey_id}/pause"): "journeys:write",
    ("POST", "/1/journeys/{journey_id}/resume"): "journeys:write",
    ("POST", "/1/journeys/{journey_id}/stop"): "journeys:write",
    ("GET", "/1/journeys/{journey_id}/report"): "journeys:read",
    ("GET", "/1/journeys/{journey_id}/users"): "profiles:read",
    ("POST", "/1/journeys/{journey_id}/enter"): "journeys:write",
    # web push subscription (write key, like the Segment-spec endpoints)
    ("GET", "/sdk/webpush-key"): "events:write",
    ("POST", "/v1/webpush"): "events:write",
    # predictions: RFM and goal models (nudge/api/routes/predict.py)
    ("GET", "/1/predict/rfm"): "analytics:read",
    ("GET", "/1/predict/rfm/settings"): "analytics:read",
    ("PUT", "/1/predict/rfm/settings"): "segments:write",
    ("GET", "/1/predict/rfm/user"): "profiles:read",
    ("GET", "/1/predict/users"): "profiles:read",
    ("POST", "/1/predict/goals"): "segments:write",
    ("GET", "/1/predict/goals"): "analytics:read",
    ("GET", "/1/predict/goals/{goal_id}"): "analytics:read",
    ("PUT", "/1/predict/goals/{goal_id}"): "segments:write",
    ("DELETE", "/1/predict/goals/{goal_id}"): "segments:write",
    ("POST", "/1/predict/goals/{goal_id}/train"): "segments:write",
    ("GET", "/1/predict/goals/{goal_id}/train"): "analytics:read",
    ("POST", "/1/predict/goals/{goal_id}/score"): "segments:write",
    ("GET", "/1/predict/goals/{goal_id}/report"): "analytics:read",
    ("GET", "/1/predict/goals/{goal_id}/scores"): "profiles:read",
    # users, keys, audit (nudge/api/routes/auth.py)
    ("GET", "/1/users"): "users:manage",
    ("POST", "/1/users"): "users:manage",
    ("PATCH", "/1/users/{user_id}"): "users:manage",
    ("DELETE", "/1/users/{user_id}"): "users:manage",
    ("POST", "/1/users/{user_id}/password-reset"): "users:manage",
    ("POST", "/1/users/{user_id}/reset-mfa"): "users:manage",
    ("GET", "/1/keys"): "keys:manage",
    ("POST", "/1/keys"): "keys:manage",
    ("POST", "/1/keys/{key_id}/rotate"): "keys:manage",
    ("DELETE", "/1/keys/{key_id}"): "keys:manage",
    ("GET", "/1/audit"): "audit:read",
    # GDPR requests (nudge/api/routes/gdpr.py, docs/privacy.md)
    ("POST", "/1/gdpr/access"): "privacy:manage",
    ("POST", "/1/gdpr/erase"): "privacy:manage",
    ("POST", "/1/gdpr/suppress"): "privacy:manage",
    ("POST", "/1/gdpr/unsuppress"): "privacy:manage",
    ("GET", "/1/gdpr/requests/{request_id}"): "privacy:manage",
    # dashboard pages (nudge/web): each page needs what its API counterpart needs
    ("GET", "/ui/{account_id}"): "analytics:read",
    ("GET", "/ui/{account_id}/home/counters"): "analytics:read",
    ("GET", "/ui/{account_id}/home/campaigns"): "campaigns:read",
    # dashboard: segments and analytics pages (nudge/web/segments.py, analytics.py)
    ("GET", "/ui/{account_id}/segments"): "segments:read",
    ("GET", "/ui/{account_id}/segments/new"): "segments:read",
    ("GET", "/ui/{account_id}/segments/row"): "segments:read",
    ("POST", "/ui/{account_id}/segments/reach"): "segments:read",
    ("POST", "/ui/{account_id}/segments"): "segments:write",
    ("GET", "/ui/{account_id}/analytics"): "analytics:read",
    ("GET", "/ui/{account_id}/analytics/{kind}"): "analytics:read",
    ("POST", "/ui/{account_id}/analytics/{kind}"): "analytics:read",
    ("GET", "/ui/{account_id}/analytics/{kind}/export.csv"): "analytics:read",
    ("GET", "/ui/{account_id}/campaigns"): "campaigns:read",
    ("GET", "/ui/{account_id}/campaigns/{campaign_id}"): "campaigns:read",
    ("POST", "/ui/{account_id}/boards"): "analytics:read",
    ("GET", "/ui/{account_id}/boards"): "analytics:read",
    ("GET", "/ui/{account_id}/boards/{board}"): "analytics:read",
    ("GET", "/ui/{account_id}/campaigns/new"): "campaigns:write",
    ("POST", "/ui/{account_id}/campaigns/estimate"): "campaigns:read",
    ("POST", "/ui/{account_id}/campaigns"): "campaigns:write",
    ("GET", "/ui/{account_id}/campaigns/{campaign_id}/review"): "campaigns:read",
    ("POST", "/ui/{account_id}/campaigns/{campaign_id}/preview"): "campaigns:write",
    ("POST", "/ui/{account_id}/campaigns/{campaign_id}/send"): "campaigns:write",
    ("POST", "/ui/{account_id}/campaigns/{campaign_id}/pause"): "campaigns:write",
    ("POST", "/ui/{account_id}/campaigns/{campaign_id}/stop"): "campaigns:write",
    ("GET", "/ui/{account_id}/journeys"): "journeys:read",
    ("GET", "/ui/{account_id}/journeys/{journey_id}"): "journeys:read",
    ("GET", "/ui/{account_id}/journeys/new"): "journeys:write",
    ("GET", "/ui/{account_id}/settings"): "analytics:read",
    ("GET", "/ui/{account_id}/settings/keys"): "keys:manage",
    ("POST", "/ui/{account_id}/settings/keys"): "keys:manage",
    ("POST", "/ui/{account_id}/settings/keys/{key_id}/revoke"): "keys:manage",
    ("GET", "/ui/{account_id}/settings/users"): "users:manage",
    ("GET", "/ui/{account_id}/settings/audit"): "audit:read",
    # dashboard settings edit forms (nudge/web/settings.py): the API counterpart's permission
    ("POST", "/ui/{account_id}/settings/account"): "users:manage",
    ("POST", "/ui/{account_id}/settings/policy"): "campaigns:write",
    ("GET", "/ui/{account_id}/settings/categories"): "campaigns:read",
    ("POST", "/ui/{account_id}/settings/categories"): "campaigns:write",
    ("POST", "/ui/{account_id}/settings/categories/{key}"): "campaigns:write",
    ("POST", "/ui/{account_id}/settings/users"): "users:manage",
    ("POST", "/ui/{account_id}/settings/users/{user_id}/role"): "users:manage",
    ("POST", "/ui/{account_id}/settings/users/{user_id}/remove"): "users:manage",
    ("POST", "/ui/{account_id}/settings/users/{user_id}/reset-mfa"): "users:manage",
    ("GET", "/ui/{account_id}/settings/channels"): "channels:manage",
    ("POST", "/ui/{account_id}/settings/channels/{channel}"): "channels:manage",
    ("POST", "/ui/{account_id}/settings/webhooks"): "channels:manage",
    ("POST", "/ui/{account_id}/settings/webhooks/{webhook_id}/delete"): "channels:manage",
    ("GET", "/ui/{account_id}/events"): "analytics:read",
    ("GET", "/ui/{account_id}/events/stream"): "analytics:read",
    ("GET", "/ui/{account_id}/people"): "profiles:read",
    ("GET", "/ui/{account_id}/people/{user_id}"): "profiles:read",
    ("GET", "/ui/{account_id}/people/{user_id}/timeline"): "profiles:read",
    ("GET", "/ui/{account_id}/people/{user_id}/export"): "privacy:manage",
    ("POST", "/ui/{account_id}/people/{user_id}/erase"): "privacy:manage",
    ("POST", "/ui/{account_id}/people/{user_id}/suppress"): "privacy:manage",
}


def permissions_of_role(role: str) -> frozenset[str]:
    if role not in ROLE_PERMISSIONS:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}", field="role")
    return ROLE_PERMISSIONS[role]


def permissions_of_key(kind: str) -> frozenset[str]:
    return KEY_SCOPES.get(kind, frozenset())


def route_permission(method: str, path: str) -> str | None:
    """The permission declared for a route (``None``: public, session-only or undeclared)."""
    return ROUTE_PERMISSIONS.get((method.upper(), path))


def is_declared(method: str, path: str) -> bool:
    key = (method.upper(), path)
    return key in ROUTE_PERMISSIONS or key in PUBLIC_ROUTES or key in SESSION_ROUTES


def matrix_markdown() -> str:
    """The permission matrix as docs/security.md shows it (a test keeps the two equal)."""
    cols = [*ROLES, *(f"{k} key" for k in KEY_KINDS)]
    grants = [*(ROLE_PERMISSIONS[r] for r in ROLES), *(KEY_SCOPES[k] for k in KEY_KINDS)]
    lines = ["| permission | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for p in PERMISSIONS:
        lines.append(f"| `{p}` | " + " | ".join("✓" if p in g else "·" for g in grants) + " |")
    lines += ["", "| route | permission |", "|---|---|"]
    for (method, path), p in sorted(ROUTE_PERMISSIONS.items(), key=lambda kv: (kv[0][1],
                                                                               kv[0][0])):
        lines.append(f"| `{method} {path}` | `{p}` |")
    for method, path in sorted(SESSION_ROUTES, key=lambda mp: (mp[1], mp[0])):
        lines.append(f"| `{method} {path}` | signed-in user (own session) |")
    for method, path in sorted(PUBLIC_ROUTES, key=lambda mp: (mp[1], mp[0])):
        lines.append(f"| `{method} {path}` | public |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(matrix_markdown(), end="")
