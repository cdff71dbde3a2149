"""Dashboard sessions: CSRF, idle and absolute timeouts, logout, logout everywhere."""

from __future__ import annotations

from security_helpers import App, Browser, inproc_fixture  # noqa: F401 - the inproc fixture

from nudge.clock import clock


def _marketer(inproc: App, client=None) -> Browser:  # type: ignore[no-untyped-def]
    if inproc.auth.users.by_email("mk@example.com") is None:
        inproc.user("mk@example.com", "marketer")
    return Browser(client or inproc.client, inproc.a.account.id).sign_in("mk@example.com")


SEGMENT = {"name": "buyers", "definition": {"did": {"event": "Charged"}}}


def test_unsafe_requests_need_the_csrf_token(inproc: App) -> None:
    b = _marketer(inproc)
    token = b.csrf
    b.csrf = None
    r = b.post("/1/segments", SEGMENT)
    assert r.status_code == 403 and "CSRF" in r.json()["message"]
    b.csrf = "not-the-token"
    assert b.post("/1/segments", SEGMENT).status_code == 403
    assert inproc.client.get("/1/segments", headers={
        "X-Nudge-Account-Id": inproc.a.account.id}).json()["segments"] == []
    b.csrf = token
    r = b.post("/1/segments", SEGMENT)
    assert r.status_code == 201, r.text
    # Safe methods need no token.
    b.csrf = None
    assert b.get("/1/segments").status_code == 200
    # A cookie alone cannot log the user out everywhere either.
    assert b.post("/auth/logout-all").status_code == 403


def test_idle_timeout(inproc: App) -> None:
    b = _marketer(inproc)
    idle = inproc.auth.settings.session_idle_s
    clock.offset += idle - 60
    assert b.get("/1/segments").status_code == 200  # activity keeps it alive
    clock.offset += idle - 60
    assert b.get("/1/segments").status_code == 200
    clock.offset += idle + 1
    r = b.get("/1/segments")
    assert r.status_code == 401 and "expired" in r.json()["message"]


def test_absolute_timeout_however_active(inproc: App) -> None:
    b = _marketer(inproc)
    s = inproc.auth.settings
    step = s.session_idle_s // 2
    elapsed = 0
    while elapsed + step < s.session_absolute_s:
        clock.offset += step
        elapsed += step
        assert b.get("/1/segments").status_code == 200, elapsed
    clock.offset += step
    assert b.get("/1/segments").status_code == 401


def test_logout_ends_only_this_session(inproc: App) -> None:
    one = _marketer(inproc)
    two = _marketer(inproc, inproc.new_client())
    r = one.post("/auth/logout")
    assert r.status_code == 200
    assert one.get("/1/segments").status_code == 401
    assert two.get("/1/segments").status_code == 200


def test_logout_everywhere(inproc: App) -> None:
    browsers = [_marketer(inproc, inproc.new_client()) for _ in range(3)]
    r = browsers[0].post("/auth/logout-all")
    assert r.status_code == 200 and r.json()["sessions_ended"] == 3
    assert [b.get("/1/segments").status_code for b in browsers] == [401, 401, 401]
    # a stolen copy of an old cookie is dead too
    assert all(b.get("/auth/me").status_code == 401 for b in browsers)


def test_password_change_ends_other_sessions(inproc: App) -> None:
    one = _marketer(inproc)
    two = _marketer(inproc, inproc.new_client())
    r = one.post("/auth/password", {"current_password": "wrong wrong wrong",
                                    "new_password": "another long passphrase 9"})
    assert r.status_code == 401
    r = one.post("/auth/password", {"current_password": "correct horse battery staple 42",
                                    "new_password": "another long passphrase 9"})
    assert r.status_code == 200
    assert one.get("/1/segments").status_code == 200  # this browser got a new session
    assert two.get("/1/segments").status_code == 401


def test_session_token_changes_when_sign_in_completes(inproc: App) -> None:
    inproc.user("owner@example.com", "owner")
    b = Browser(inproc.client, inproc.a.account.id)
    b.login("owner@example.com")
    partial = inproc.client.cookies.get("nudge_session")
    b.enroll()
    full = inproc.client.cookies.get("nudge_session")
    assert partial and full and partial != full
    # the pre-MFA token is no longer a session (no fixation)
    stale = inproc.new_client()
    stale.cookies.set("nudge_session", partial)
    assert stale.get("/auth/me").status_code == 401


def test_user_with_several_accounts_names_one(inproc: App) -> None:
    uid = inproc.user("mk@example.com", "marketer")
    inproc.auth.users.set_membership(uid, inproc.b.account.id, "viewer")
    b = Browser(inproc.client).sign_in("mk@example.com")
    r = b.get("/1/segments")
    assert r.status_code == 400 and r.json()["field"] == "X-Nudge-Account-Id"
    b.account_id = inproc.b.account.id
    assert b.get("/1/segments").status_code == 200
    assert b.post("/1/segments", SEGMENT).status_code == 403  # viewer in B
    b.account_id = inproc.a.account.id
    assert b.post("/1/segments", SEGMENT).status_code == 201  # marketer in A
