"""What every dashboard page shares: the templates, the signed-in caller for the account in
the URL, permission checks through the one authorization path, and error pages.

A page route looks like::

    @router.get("/ui/{account_id}/people")
    @page
    async def people(request: Request, account_id: str) -> Response:
        ctx = await context(request, account_id)        # 401 -> sign-in, 403 -> error page
        rows = await run_in_threadpool(find_people, ctx.store, q)
        return render(request, "people.html", ctx, rows=rows)

``context`` calls ``nudge.api.authz.authorize`` with the route's permission from
``ROUTE_PERMISSIONS`` (nudge/tenancy/roles.py) exactly as the JSON API does, so a page that
is not declared there is refused (and fails tests/security/test_route_matrix.py).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from nudge.api.authz import KEY_HEADERS, ROUTE, Caller, auth_of, authorize
from nudge.errors import AuthError, Forbidden, NudgeError
from nudge.store.account import AccountStore
from nudge.tenancy.sessions import CSRF_COOKIE


def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """Compiled templates kept for every process of this OS user (Jinja's private 0700
    directory under the temp dir), so a new server renders its first page without
    compiling templates again (Home's: 35 ms of CPU, ~150 ms at load 11; 2-3 ms cached)."""
    try:
        return jinja2.FileSystemBytecodeCache()
    except (OSError, RuntimeError):  # no private temp directory: compile in each process
        return None


TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    bytecode_cache=_bytecode_cache(),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else ("" if n is None else str(n))


TEMPLATES.filters["when"] = _when
TEMPLATES.filters["num"] = _num

# Navigation: (label, path under /ui/{account_id}, permission needed to see the entry).
NAV: list[tuple[str, str, str]] = [
    ("Home", "", "analytics:read"),
    ("Events", "/events", "analytics:read"),
    ("People", "/people", "profiles:read"),
    ("Segments", "/segments", "segments:read"),
    ("Analytics", "/analytics", "analytics:read"),
    ("Campaigns", "/campaigns", "campaigns:read"),
    ("Journeys", "/journeys", "journeys:read"),
    ("Settings", "/settings", "analytics:read"),
]


@dataclass
class PageContext:
    """The signed-in user, the account of the URL, its store, and what the user may do."""

    request: Request
    caller: Caller
    account_id: str
    account_name: str
    timezone: str
    store: AccountStore
    accounts: dict[str, str]  # account id -> role, for the account switcher
    csrf: str

    @property
    def nudge(self) -> Any:
        return self.request.app.state.nudge

    def can(self, permission: str) -> bool:
        return permission in self.caller.permissions

    @property
    def base(self) -> str:
        return f"/ui/{self.account_id}"


def _with_account(request: Request, account_id: str) -> Request:
    """The same request with the account of the URL in ``X-Nudge-Account-Id``, the header
    ``authorize`` reads (the scope's state is shared, so ``request.state.caller`` is set on
    the original too)."""
    drop = {b"x-nudge-account-id", b"x-clevertap-account-id"}
    scope = dict(request.scope)
    scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k.lower() not in drop]
    scope["headers"].append((b"x-nudge-account-id", account_id.encode()))
    return Request(scope, request.receive)


def context(request: Request, account_id: str, permission: str | None = ROUTE) -> PageContext:
    """Authorize the signed-in user for ``account_id`` (the route's declared permission by
    default, or ``permission``) and build the page context."""
    caller = authorize(_with_account(request, account_id), permission)
    nudge = request.app.state.nudge
    account = nudge.accounts.get(caller.account_id)
    auth = auth_of(request)
    accounts = auth.users.memberships(caller.user_id) if caller.user_id else {
        caller.account_id: caller.role or "key"}
    return PageContext(request, caller, caller.account_id, account.name, account.timezone,
                       nudge.stores.get(caller.account_id), accounts,
                       request.cookies.get(CSRF_COOKIE, ""))


def allow(ctx: PageContext, permission: str) -> None:
    """Refuse (403) unless the caller has ``permission``: for actions inside a page."""
    if not ctx.can(permission):
        raise Forbidden(f"role {ctx.caller.role} may not do this (needs {permission})")


def render(request: Request, template: str, ctx: PageContext | None = None,
           status_code: int = 200, **values: Any) -> HTMLResponse:
    html = TEMPLATES.get_template(template).render(
        ctx=ctx, nav=_nav(ctx, request), path=request.url.path, **values)
    resp = HTMLResponse(html, status_code=status_code)
    resp.headers["cache-control"] = "no-store"
    return resp


def _nav(ctx: PageContext | None, request: Request) -> list[dict[str, Any]]:
    if ctx is None:
        return []
    out = []
    for label, suffix, permission in NAV:
        href = ctx.base + suffix
        if ctx.can(permission):
            current = request.url.path == href or (suffix and request.url.path.startswith(href))
            out.append({"label": label, "href": href, "current": bool(current)})
    return out


TITLES = {400: "Check the input", 403: "Not allowed", 404: "Not found", 409: "Conflict",
          429: "Slow down"}


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def _has_key(request: Request) -> bool:
    return any(request.headers.get(h) for h in KEY_HEADERS)


def page(fn: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """Turn our errors into what a browser should see: no session -> the sign-in page;
    403/404/400 -> an error page (or, for an htmx request, an error fragment with the same
    status, which the htmx config swaps in place)."""

    @functools.wraps(fn)
    async def wrapper(request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return await fn(request, *args, **kwargs)
        except AuthError as exc:
            if is_htmx(request):
                resp = render(request, "error_fragment.html", None, 401, message=str(exc),
                              title="Signed out")
                resp.headers["HX-Redirect"] = "/ui/login"
                return resp
            if request.method == "GET" and not _has_key(request):
                return RedirectResponse("/ui/login?next=" + quote(request.url.path), 303)
            return render(request, "error.html", None, 401, message=str(exc), title="Sign in")
        except NudgeError as exc:
            if exc.status >= 500:
                raise
            title = TITLES.get(exc.status, "Something is wrong")
            template = "error_fragment.html" if is_htmx(request) else "error.html"
            return render(request, template, None, exc.status, message=str(exc), title=title)

    return wrapper
