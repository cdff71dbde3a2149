"""Sign-in pages: password, then the TOTP challenge or MFA enrollment (QR code as SVG).

The forms post JSON to the same ``/auth/*`` endpoints an API client uses (nudge.js); the only
server-side step here is enrollment, which renders the authenticator's QR code.
"""

from __future__ import annotations

import io
from urllib.parse import quote

import segno
from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from nudge.api.authz import auth_of, current_session
from nudge.errors import Forbidden
from nudge.tenancy.sessions import CSRF_COOKIE

from .pages import page, render

router = APIRouter(include_in_schema=False)


def _next(request: Request) -> str:
    """Where to go after signing in: only a path of our own dashboard."""
    nxt = request.query_params.get("next", "/ui")
    return nxt if nxt.startswith("/ui") and not nxt.startswith("//") else "/ui"


@router.get("/ui/login")
async def login_page(request: Request) -> Response:
    return render(request, "login.html", next=_next(request))


@router.get("/ui/login/mfa")
async def mfa_page(request: Request) -> Response:
    return render(request, "login_mfa.html", next=_next(request))


@router.get("/ui/mfa/enroll")
@page
async def enroll_page(request: Request) -> Response:
    current_session(request, auth_of(request), ("enroll", "full"))
    return render(request, "mfa_enroll.html", next=_next(request),
                  request_csrf=request.cookies.get(CSRF_COOKIE, ""))


@router.post("/ui/mfa/enroll")
@page
async def enroll_start(request: Request) -> Response:
    """Start enrollment (CSRF-checked) and answer with the QR code of the otpauth URI."""
    auth = auth_of(request)
    session = current_session(request, auth, ("enroll", "full"))
    out = auth.mfa.start(session.user_id)
    svg = io.BytesIO()
    segno.make(out["otpauth_uri"], error="m").save(svg, kind="svg", scale=5, xmldecl=False,
                                                     svgns=True, title="MFA QR code")
    return render(request, "mfa_qr.html", svg=svg.getvalue().decode(), secret=out["secret"])


@router.get("/ui")
@page
async def dashboard_root(request: Request) -> Response:
    """The first account of the signed-in user."""
    auth = auth_of(request)
    session = current_session(request, auth)
    accounts = auth.users.memberships(session.user_id)
    if not accounts:
        raise Forbidden("you belong to no account yet: ask an owner to add you")
    return RedirectResponse(f"/ui/{quote(sorted(accounts)[0])}", 303)


@router.get("/ui/switch")
@page
async def switch_account(request: Request) -> Response:
    """The account switcher's form: go to the chosen account's home page."""
    auth = auth_of(request)
    session = current_session(request, auth)
    account = request.query_params.get("account", "")
    if account not in auth.users.memberships(session.user_id):
        raise Forbidden("no access to this account")
    return RedirectResponse(f"/ui/{quote(account)}", 303)
