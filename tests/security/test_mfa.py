"""TOTP MFA: enrollment, one-time codes, recovery codes, MFA required for owner/admin,
password reset that does not bypass MFA, owner reset of a lost device."""

from __future__ import annotations

import pyotp
from security_helpers import PASSWORD, App, Browser, inproc_fixture  # noqa: F401 - the inproc fixture

from nudge.clock import clock


def test_owner_must_enroll_before_using_the_account(inproc: App) -> None:
    inproc.user("owner@example.com", "owner")
    b = Browser(inproc.client)
    r = b.login("owner@example.com")
    assert r.status_code == 200 and r.json()["stage"] == "enroll"
    # A half-signed-in session reaches nothing but enrollment.
    assert b.get("/1/segments").status_code == 401
    assert b.get("/auth/me").status_code == 401
    b.enroll()
    assert len(b.recovery_codes) == 10 and len(set(b.recovery_codes)) == 10
    assert b.get("/1/segments").status_code == 200
    assert b.get("/auth/me").json()["user"]["mfa_enabled"] is True


def test_enrollment_needs_a_valid_code(inproc: App) -> None:
    inproc.user("owner@example.com", "owner")
    b = Browser(inproc.client)
    b.login("owner@example.com")
    secret = b.post("/auth/mfa/enroll").json()["secret"]
    assert b.post("/auth/mfa/confirm", {"code": "000000"}).status_code == 400
    wrong_secret = pyotp.random_base32(32)
    r = b.post("/auth/mfa/confirm", {"code": pyotp.TOTP(wrong_secret).at(clock.now())})
    assert r.status_code == 400 and r.json()["field"] == "code"
    r = b.post("/auth/mfa/confirm", {"code": pyotp.TOTP(secret).at(clock.now())})
    assert r.status_code == 200


def _enrolled_owner(inproc: App) -> Browser:
    inproc.user("owner@example.com", "owner")
    return Browser(inproc.client, inproc.a.account.id).sign_in("owner@example.com")


def test_second_factor_is_asked_at_every_sign_in(inproc: App) -> None:
    first = _enrolled_owner(inproc)
    b = Browser(inproc.new_client())
    r = b.login("owner@example.com")
    assert r.status_code == 200 and r.json()["stage"] == "mfa" and "user" not in r.json()
    assert b.get("/1/segments").status_code == 401
    clock.offset += 30
    b.totp_secret = first.totp_secret
    assert b.post("/auth/mfa/verify", {"code": "123456" if b.code() != "123456" else "654321"}
                  ).status_code == 401
    r = b.post("/auth/mfa/verify", {"code": b.code()})
    assert r.status_code == 200 and r.json()["stage"] == "full"
    assert b.get("/1/segments", headers={"X-Nudge-Account-Id": inproc.a.account.id}
                 ).status_code == 200


def test_a_totp_code_replayed_within_its_window_is_refused(inproc: App) -> None:
    first = _enrolled_owner(inproc)
    clock.offset += 30  # a step after the one used at enrollment
    code = first.code()
    one = Browser(inproc.new_client())
    one.login("owner@example.com")
    assert one.post("/auth/mfa/verify", {"code": code}).status_code == 200
    # The same code, seconds later and still inside its 30 s step (and the ±1 step skew
    # window): refused, though it is a correct code for this moment.
    clock.offset += 5
    assert pyotp.TOTP(first.totp_secret).verify(code, for_time=clock.now(), valid_window=1)
    two = Browser(inproc.new_client())
    two.login("owner@example.com")
    r = two.post("/auth/mfa/verify", {"code": code})
    assert r.status_code == 401 and "already used" in r.json()["message"]
    # An older code (previous step, still within the skew window) is refused too.
    old = pyotp.TOTP(first.totp_secret).at(clock.now() - 30)
    assert two.post("/auth/mfa/verify", {"code": old}).status_code == 401
    # The next step's code works.
    clock.offset += 30
    two.totp_secret = first.totp_secret
    assert two.post("/auth/mfa/verify", {"code": two.code()}).status_code == 200


def test_recovery_code_works_once(inproc: App) -> None:
    first = _enrolled_owner(inproc)
    code = first.recovery_codes[0]
    b = Browser(inproc.new_client())
    b.login("owner@example.com")
    r = b.post("/auth/mfa/verify", {"code": code.upper()})
    assert r.status_code == 200 and r.json()["recovery_codes_left"] == 9
    c = Browser(inproc.new_client())
    c.login("owner@example.com")
    assert c.post("/auth/mfa/verify", {"code": code}).status_code == 401


def test_password_reset_does_not_bypass_mfa(inproc: App) -> None:
    first = _enrolled_owner(inproc)
    uid = inproc.auth.users.by_email("owner@example.com").id
    inproc.user("admin@example.com", "admin")
    admin = Browser(inproc.new_client(), inproc.a.account.id).sign_in("admin@example.com")
    # An admin may not reset an owner's password (no escalation through resets) ...
    assert admin.post(f"/1/users/{uid}/password-reset").status_code == 403
    # ... the owner can issue their own (e.g. through the CLI; here through the API).
    token = first.post(f"/1/users/{uid}/password-reset").json()["reset_token"]
    r = Browser(inproc.new_client()).post("/auth/password-reset",
                                          {"token": token, "new_password": "password1234567"})
    assert r.status_code == 400 and r.json()["field"] == "new_password"
    new_password = "a brand new passphrase 77"  # noqa: S105
    r = Browser(inproc.new_client()).post("/auth/password-reset",
                                          {"token": token, "new_password": new_password})
    assert r.status_code == 200 and r.json()["signed_in"] is False
    assert "nudge_session=" not in "".join(r.headers.get_list("set-cookie")).replace(
        'nudge_session=""', "")
    # The old session ended; the token is spent; the new password still needs the code.
    assert first.get("/1/segments").status_code == 401
    again = Browser(inproc.new_client()).post("/auth/password-reset",
                                              {"token": token, "new_password": new_password})
    assert again.status_code == 400
    b = Browser(inproc.new_client(), inproc.a.account.id)
    assert b.login("owner@example.com", PASSWORD).status_code == 401
    r = b.login("owner@example.com", new_password)
    assert r.status_code == 200 and r.json()["stage"] == "mfa"
    assert b.get("/1/segments").status_code == 401


def test_owner_resets_a_lost_device_and_the_user_enrolls_again(inproc: App) -> None:
    owner = _enrolled_owner(inproc)
    inproc.user("admin@example.com", "admin")
    admin_client = inproc.new_client()
    admin = Browser(admin_client, inproc.a.account.id).sign_in("admin@example.com")
    admin_id = inproc.auth.users.by_email("admin@example.com").id
    assert owner.post(f"/1/users/{admin_id}/reset-mfa").status_code == 200
    assert admin.get("/1/segments").status_code == 401  # sessions ended
    b = Browser(inproc.new_client(), inproc.a.account.id)
    assert b.login("admin@example.com").json()["stage"] == "enroll"


def test_totp_seed_is_not_stored_in_plaintext(inproc: App, tmp_path) -> None:  # type: ignore[no-untyped-def]
    b = _enrolled_owner(inproc)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("control.db*"))
    assert b.totp_secret and b.totp_secret.encode() not in raw
    assert not any(c.encode() in raw for c in b.recovery_codes)
