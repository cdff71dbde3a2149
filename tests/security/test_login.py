"""Sign-in: same answer for unknown users and wrong passwords; throttling and lockout."""

from __future__ import annotations

from security_helpers import PASSWORD, App, inproc_fixture  # noqa: F401 - the inproc fixture

from nudge.clock import clock
from nudge.tenancy.throttle import FREE_FAILURES, MAX_LOCK_S


def _login(inproc: App, email: str, password: str, ip_client=None):  # type: ignore[no-untyped-def]
    client = ip_client or inproc.client
    return client.post("/auth/login", json={"email": email, "password": password})


def test_unknown_user_and_wrong_password_get_the_same_answer(inproc: App) -> None:
    inproc.user("ann@example.com", "analyst")
    wrong = _login(inproc, "ann@example.com", "not the password at all")
    unknown = _login(inproc, "nobody@example.com", "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert "set-cookie" not in wrong.headers and "set-cookie" not in unknown.headers


def test_login_sets_hardened_cookies(inproc: App) -> None:
    inproc.user("ann@example.com", "analyst")
    r = _login(inproc, "ann@example.com", PASSWORD)
    assert r.status_code == 200 and r.json()["stage"] == "full"
    cookies = r.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("nudge_session="))
    csrf = next(c for c in cookies if c.startswith("nudge_csrf="))
    assert "HttpOnly" in session and "SameSite=lax" in session and "Path=/" in session
    assert "Secure" not in session  # no TLS configured here (see test_hardening for TLS)
    assert "HttpOnly" not in csrf  # the page must read it to echo it in X-CSRF-Token
    assert r.headers["cache-control"] == "no-store"


def _thousand_wrong(inproc: App, email: str) -> list[int]:
    """1,000 wrong passwords, one every 0.5 s of (simulated) time."""
    statuses = []
    for i in range(1000):
        clock.offset += 0.5
        r = _login(inproc, email, f"wrong password number {i}")
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
    return statuses


def test_a_thousand_wrong_passwords_are_throttled(inproc: App) -> None:
    inproc.user("ann@example.com", "analyst")
    statuses = _thousand_wrong(inproc, "ann@example.com")
    checked = statuses.count(401)  # attempts whose password was actually checked
    assert statuses.count(429) + checked == 1000
    # 5 free, then locks of 1, 2, 4, ... s doubling: ~500 s of attempts check ~13 passwords.
    assert FREE_FAILURES <= checked <= FREE_FAILURES + 12, checked
    assert statuses[:FREE_FAILURES] == [401] * FREE_FAILURES
    # Locked: even the right password is refused, before it is checked.
    r = _login(inproc, "ann@example.com", PASSWORD)
    assert r.status_code == 429 and "retry-after" in r.headers
    wait = int(r.headers["retry-after"])
    assert 1 <= wait <= MAX_LOCK_S
    clock.offset += wait + 1
    assert _login(inproc, "ann@example.com", PASSWORD).status_code == 200
    # and a success forgets the failures: the next wrong password is a plain 401
    assert _login(inproc, "ann@example.com", "wrong again, but once").status_code == 401


def test_lockout_does_not_reveal_whether_the_user_exists(inproc: App) -> None:
    inproc.user("ann@example.com", "analyst")
    known = [_login(inproc, "ann@example.com", f"wrong {i} password").status_code
             for i in range(FREE_FAILURES + 3)]
    unknown = [_login(inproc, "ghost@example.com", f"wrong {i} password").status_code
               for i in range(FREE_FAILURES + 3)]
    assert known == unknown, (known, unknown)
    assert known == [401] * (FREE_FAILURES + 1) + [429] * 2


def test_one_address_guessing_many_emails_is_locked_out(inproc: App) -> None:
    statuses = [_login(inproc, f"user{i}@example.com", "some wrong password").status_code
                for i in range(60)]
    assert statuses[:50] == [401] * 50 and 429 in statuses[50:]
