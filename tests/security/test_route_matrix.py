"""Every route of the app declares its permission, docs/security.md shows the same matrix,
and every role and key scope gets exactly what the matrix grants on every route."""

from __future__ import annotations

from pathlib import Path

import pytest
from security_helpers import App, Browser, inproc_fixture, make_settings  # noqa: F401 - the inproc fixture

from nudge.api.app import create_app
from nudge.api.authz import app_routes
from nudge.tenancy.roles import (
    KEY_KINDS,
    KEY_SCOPES,
    PERMISSIONS,
    PUBLIC_ROUTES,
    ROLE_PERMISSIONS,
    ROLES,
    ROUTE_PERMISSIONS,
    SESSION_ROUTES,
    matrix_markdown,
)

DOC = Path(__file__).parents[2] / "docs" / "security.md"
# Routes that take the write key only (as HTTP basic auth, like Segment's libraries send it):
# the Segment-spec endpoints and web push.
WRITE_KEY_ONLY = ("/v1/", "/sdk/webpush-key")


def test_every_route_declares_a_permission(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))
    undeclared = sorted({(m, p) for m, p, _ in app_routes(app)
                         if (m, p) not in ROUTE_PERMISSIONS and (m, p) not in PUBLIC_ROUTES
                         and (m, p) not in SESSION_ROUTES})
    lines = "\n".join(f'    ("{m}", "{p}"): "<permission>",' for m, p in undeclared)
    assert not undeclared, (
        "These routes declare no permission. Add each to ROUTE_PERMISSIONS in "
        "nudge/tenancy/roles.py with one of\n  " + ", ".join(PERMISSIONS) +
        "\n(or to PUBLIC_ROUTES if anyone may call it), e.g.\n" + lines +
        "\nthen refresh the matrix in docs/security.md: "
        ".venv/bin/python -m nudge.tenancy.roles")
    assert set(ROUTE_PERMISSIONS.values()) <= set(PERMISSIONS)


def test_declared_routes_exist_or_are_known(tmp_path: Path) -> None:
    """A declaration for a route that no longer exists is a stale grant: remove it."""
    app = create_app(make_settings(tmp_path))
    routes = {(m, p) for m, p, _ in app_routes(app)}
    optional = {("GET", "/docs/oauth2-redirect")}
    stale = sorted(set(ROUTE_PERMISSIONS) - routes - optional)
    assert not stale, f"ROUTE_PERMISSIONS names routes the app does not have: {stale}"


def test_docs_show_the_matrix_the_code_enforces() -> None:
    assert matrix_markdown() in DOC.read_text(), (
        "docs/security.md's permission matrix is out of date: paste the output of "
        ".venv/bin/python -m nudge.tenancy.roles")


def _principals(inproc: App) -> dict[str, tuple[frozenset[str], object]]:
    """name -> (permissions, how to call): a session Browser or key headers."""
    out: dict[str, tuple[frozenset[str], object]] = {}
    for role in ROLES:
        email = f"{role}@example.com"
        inproc.user(email, role)
        out[role] = (ROLE_PERMISSIONS[role],
                     Browser(inproc.new_client(), inproc.a.account.id).sign_in(email))
    for kind in KEY_KINDS:
        _, secret = inproc.auth.keys.create(inproc.a.account.id, kind)
        out[f"{kind} key"] = (KEY_SCOPES[kind], secret)
    return out


def _call(inproc: App, who: object, method: str, path: str):  # type: ignore[no-untyped-def]
    # Dashboard pages carry the account in the path: the caller's own account.
    url = path.replace("{channel}", "email").replace("/ui/{account_id}",
                                                     "/ui/" + inproc.a.account.id)
    while "{" in url:  # ids of nothing: "999999" parses as an integer id and as a string
        start, end = url.index("{"), url.index("}")
        url = url[:start] + "999999" + url[end + 1:]
    extra = {"X-Nudge-Identity": "nobody"}
    body = {} if method in ("POST", "PUT", "PATCH") else None
    if isinstance(who, Browser):
        return who.request(method, url, json=body, headers=extra)
    if path.startswith(("/v1/", "/sdk/")):
        return inproc.client.request(method, url, json=body, headers=extra,
                                     auth=(str(who), ""))
    return inproc.client.request(method, url, json=body,
                                 headers={**extra, **inproc.key_headers(key=str(who))})


def test_every_role_and_scope_gets_exactly_its_permissions(inproc: App) -> None:
    principals = _principals(inproc)
    mismatches = []
    for method, path, _ in app_routes(inproc.app):
        permission = ROUTE_PERMISSIONS.get((method, path))
        if permission is None:
            continue
        for name, (granted, who) in principals.items():
            allowed = permission in granted
            if path.startswith(WRITE_KEY_ONLY):
                allowed = name == "write key"
            elif name == "write key":
                allowed = False  # not in the account-id + key headers (docs/security.md)
            if path.endswith("/stream"):
                continue  # an event stream that is let through never ends
            r = _call(inproc, who, method, path)
            refused = r.status_code in (401, 403)
            if refused == allowed:
                mismatches.append(f"{name:12} {method} {path}: {r.status_code} "
                                  f"(expected {'access' if allowed else 'refusal'}) {r.text[:80]}")
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.parametrize("role", ["admin", "marketer", "analyst", "viewer"])
def test_only_owners_read_the_audit_log(inproc: App, role: str) -> None:
    inproc.user(f"{role}@example.com", role)
    b = Browser(inproc.client, inproc.a.account.id).sign_in(f"{role}@example.com")
    assert b.get("/1/audit").status_code == 403
    assert inproc.client.get("/1/audit", headers=inproc.key_headers()).status_code == 403
