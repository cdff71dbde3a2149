"""Password policy, Argon2id hashing, and legacy PBKDF2-HMAC-SHA1 import and upgrade."""

from __future__ import annotations

import base64
import hashlib

import pytest
import sqlalchemy as sa
from security_helpers import PASSWORD, App, inproc_fixture  # noqa: F401 - the inproc fixture

from nudge.errors import ValidationError
from nudge.store.control import users
from nudge.tenancy.users import (
    check_imported_hash,
    check_password_policy,
    common_passwords,
    hash_password,
    verify_password,
)


def django_pbkdf2_sha1(password: str, salt: str = "s4ltS4lt", iterations: int = 20000) -> str:
    """A hash exactly as Django's PBKDF2SHA1PasswordHasher writes it."""
    dk = hashlib.pbkdf2_hmac("sha1", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha1${iterations}${salt}${base64.b64encode(dk).decode()}"


def passlib_pbkdf2_sha1(password: str, salt: bytes = b"0123456789abcdef",
                        iterations: int = 29000) -> str:
    """passlib's pbkdf2_sha1 format: $pbkdf2$<rounds>$<ab64 salt>$<ab64 checksum>."""
    dk = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iterations)

    def ab64(b: bytes) -> str:
        return base64.b64encode(b).decode().rstrip("=").replace("+", ".")

    return f"$pbkdf2${iterations}${ab64(salt)}${ab64(dk)}"


def test_common_password_list_ships_with_the_package() -> None:
    common = common_passwords()
    assert len(common) > 29_000  # zxcvbn's 30,000, lower-cased and deduplicated
    assert {"password", "123456", "qwerty", "iloveyou"} <= common


@pytest.mark.parametrize("password, why", [
    ("short pw 1", "at least 12"),
    ("passwordpassword", "too common"),  # in the list
    ("password12345678", "too common"),  # common + digits
    ("qwertyuiop!!!!", "too common"),
    ("aaaaaaaaaaaaaaa", "too common"),  # four distinct characters at least
    ("ann.smith-2026-secure", "email"),
])
def test_policy_refuses(password: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why) as exc:
        check_password_policy(password, "ann.smith@example.com")
    assert exc.value.field == "password"


def test_policy_accepts_a_long_uncommon_password() -> None:
    check_password_policy(PASSWORD, "ann@example.com")


def test_argon2id_hash_and_verify() -> None:
    h = hash_password(PASSWORD)
    assert h.startswith("$argon2id$")
    assert verify_password(h, PASSWORD) == (True, None)
    assert verify_password(h, PASSWORD + "x") == (False, None)


@pytest.mark.parametrize("make", [django_pbkdf2_sha1, passlib_pbkdf2_sha1])
def test_legacy_hash_verifies_and_offers_an_argon2id_upgrade(make) -> None:  # type: ignore[no-untyped-def]
    legacy = make(PASSWORD)
    assert check_imported_hash(legacy) == legacy
    ok, upgraded = verify_password(legacy, PASSWORD)
    assert ok and upgraded and upgraded.startswith("$argon2id$")
    assert verify_password(upgraded, PASSWORD)[0]
    assert verify_password(legacy, "wrong password here") == (False, None)


@pytest.mark.parametrize("bad", ["md5$abc$def", "pbkdf2_sha1$10$salt$" + "A" * 28,
                                 "pbkdf2_sha1$x$salt$abc", "$argon2id$garbage", ""])
def test_import_refuses_unknown_or_weak_hashes(bad: str) -> None:
    with pytest.raises(ValidationError) as exc:
        check_imported_hash(bad)
    assert exc.value.field == "password_hash"


def test_legacy_hash_logs_in_and_is_upgraded(inproc: App) -> None:
    legacy = django_pbkdf2_sha1(PASSWORD)
    uid = inproc.auth.users.create("legacy@example.com", inproc.a.account.id, "analyst",
                                   password_hash=legacy).id
    r = inproc.client.post("/auth/login", json={"email": "legacy@example.com",
                                                "password": "not the password!"})
    assert r.status_code == 401
    with inproc.auth.users.engine.connect() as conn:
        stored = conn.execute(sa.select(users.c.password_hash).where(users.c.id == uid)).scalar()
    assert stored == legacy  # a failed login changes nothing

    r = inproc.client.post("/auth/login", json={"email": "legacy@example.com",
                                                "password": PASSWORD})
    assert r.status_code == 200 and r.json()["stage"] == "full"
    with inproc.auth.users.engine.connect() as conn:
        stored = conn.execute(sa.select(users.c.password_hash).where(users.c.id == uid)).scalar()
    assert stored.startswith("$argon2id$") and "pbkdf2" not in stored
    again = inproc.new_client().post("/auth/login", json={"email": "legacy@example.com",
                                                          "password": PASSWORD})
    assert again.status_code == 200


def test_api_refuses_weak_passwords_naming_the_field(inproc: App) -> None:
    r = inproc.client.post("/1/users", headers=inproc.key_headers(),
                           json={"email": "x@example.com", "role": "viewer",
                                 "password": "password123456"})
    # the passcode may not manage users at all (people administration is for owners/admins)
    assert r.status_code == 403
    from security_helpers import Browser

    owner = Browser(inproc.client)
    inproc.user("owner@example.com", "owner")
    owner.sign_in("owner@example.com")
    r = owner.post("/1/users", {"email": "x@example.com", "role": "viewer",
                                "password": "password123456"})
    assert r.status_code == 400 and r.json()["field"] == "password", r.text
    assert inproc.auth.users.by_email("x@example.com") is None
