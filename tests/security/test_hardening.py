"""Hardening on a real server: security headers, HTTPS, rate limits, no secrets in logs."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyotp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import NudgeServer, free_port, make_server, nudge_cli

PASSWORD = "correct horse battery staple 42"  # noqa: S105 - test users only


def _create_user(data_dir: Path, email: str, account_id: str, role: str) -> None:
    subprocess.run([sys.executable, "-m", "nudge", "users", "create", email, "--account",
                    account_id, "--role", role, "--password-stdin", "--data-dir",
                    str(data_dir)], input=PASSWORD + "\n", text=True, check=True,
                   capture_output=True, env={**os.environ, "NUDGE_LOG_LEVEL": "warning"})


def test_security_headers_on_api_and_auth_responses(shared_server: NudgeServer) -> None:
    for r in (httpx.post(shared_server.url + "/auth/login",
                         json={"email": "x@example.com", "password": "whatever it is"}),
              httpx.get(shared_server.url + "/1/segments", headers=shared_server.headers),
              httpx.get(shared_server.url + "/healthz")):
        h = r.headers
        assert "frame-ancestors 'none'" in h["content-security-policy"]
        assert "default-src 'self'" in h["content-security-policy"]
        assert h["x-content-type-options"] == "nosniff"
        assert h["x-frame-options"] == "DENY"
        assert h["referrer-policy"] == "same-origin"
        assert "strict-transport-security" not in h  # no TLS on this server


def _self_signed(dirpath: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = dirpath / "cert.pem", dirpath / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_when_certificate_and_key_are_configured(tmp_path: Path) -> None:
    data = tmp_path / "data"
    certs = tmp_path / "certs"
    certs.mkdir()
    cert, key = _self_signed(certs)
    acct = json.loads(nudge_cli(data, "accounts", "create", "tls", "--json"))
    _create_user(data, "ann@example.com", acct["id"], "analyst")
    port = free_port()
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "nudge", "serve", "--data-dir", str(data), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "NUDGE_TLS_CERT": str(cert), "NUDGE_TLS_KEY": str(key)})
    url = f"https://127.0.0.1:{port}"
    try:
        with httpx.Client(verify=str(cert), timeout=10) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get(url + "/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.1)
            r = client.post(url + "/auth/login",
                            json={"email": "ann@example.com", "password": PASSWORD})
            assert r.status_code == 200
            assert r.headers["strict-transport-security"].startswith("max-age=")
            session = next(c for c in r.headers.get_list("set-cookie")
                           if c.startswith("nudge_session="))
            assert "Secure" in session and "HttpOnly" in session
        # Plain HTTP on the same port gets nowhere.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def test_rate_limits_per_key_and_per_account(tmp_path: Path) -> None:
    srv = make_server(tmp_path, {"NUDGE_RATE_LIMIT_KEY_PER_MINUTE": "3",
                                 "NUDGE_RATE_LIMIT_ACCOUNT_PER_MINUTE": "5"})
    try:
        got = [httpx.get(srv.url + "/1/segments", headers=srv.headers) for _ in range(4)]
        assert [r.status_code for r in got] == [200, 200, 200, 429]
        assert 1 <= int(got[3].headers["retry-after"]) <= 60
        assert got[3].json()["error"] == "rate_limited"
        # Another key of the same account has its own bucket, but the account's is shared:
        # 3 used + 2 more = 5, then the account is over its limit.
        r = httpx.post(srv.url + "/1/keys", headers=srv.headers, json={"kind": "read"})
        assert r.status_code == 429  # the first key is still over its own limit
        other = {**srv.headers, "X-Nudge-Passcode": _new_key(srv)}
        codes = [httpx.get(srv.url + "/1/segments", headers=other).status_code
                 for _ in range(3)]
        assert codes == [200, 200, 429]
    finally:
        srv.stop()


def _new_key(srv: NudgeServer) -> str:
    out = nudge_cli(srv.data_dir, "api-keys", "create", srv.account_id, "--kind", "read",
                    "--json")
    return str(json.loads(out)["secret"])


def test_the_write_key_is_rate_limited_too(tmp_path: Path) -> None:
    srv = make_server(tmp_path, {"NUDGE_RATE_LIMIT_KEY_PER_MINUTE": "2"})
    try:
        codes = [httpx.post(srv.url + "/v1/track", auth=(srv.write_key, ""),
                            json={"userId": "u1", "event": "Viewed"}).status_code
                 for _ in range(3)]
        assert codes == [200, 200, 429]
    finally:
        srv.stop()


def test_secrets_never_reach_the_logs(tmp_path: Path) -> None:
    srv = make_server(tmp_path, {"NUDGE_LOG_LEVEL": "debug"})
    secrets: list[str] = [srv.passcode, srv.write_key, PASSWORD]
    try:
        _create_user(srv.data_dir, "owner@example.com", srv.account_id, "owner")
        c = httpx.Client(base_url=srv.url, timeout=30)
        r = c.post("/auth/login", json={"email": "owner@example.com", "password": PASSWORD})
        csrf = r.json()["csrf_token"]
        secrets += [csrf, c.cookies["nudge_session"]]
        # a wrong password and a wrong key are logged as failures at most, never echoed
        wrong = "wrong-password-" + "z" * 12
        httpx.post(srv.url + "/auth/login", json={"email": "owner@example.com",
                                                  "password": wrong})
        secrets.append(wrong)
        enroll = c.post("/auth/mfa/enroll", headers={"X-CSRF-Token": csrf}).json()
        code = pyotp.TOTP(enroll["secret"]).now()
        r = c.post("/auth/mfa/confirm", json={"code": code}, headers={"X-CSRF-Token": csrf})
        csrf = r.json()["csrf_token"]
        secrets += [enroll["secret"], *r.json()["recovery_codes"], csrf,
                    c.cookies["nudge_session"]]
        c.headers["X-Nudge-Account-Id"] = srv.account_id
        r = c.post("/1/keys", json={"kind": "passcode"}, headers={"X-CSRF-Token": csrf})
        new_key = r.json()["key"]["secret"]
        secrets.append(new_key)
        uid = c.get("/auth/me").json()["user"]["id"]
        reset = c.post(f"/1/users/{uid}/password-reset",
                       headers={"X-CSRF-Token": csrf}).json()["reset_token"]
        secrets.append(reset)
        # keys in use, right and wrong, on the API and the Segment endpoints
        httpx.get(srv.url + "/1/segments", headers={**srv.headers, "X-Nudge-Passcode": new_key})
        bad_key = "np_" + "q" * 32
        httpx.get(srv.url + "/1/segments", headers={**srv.headers, "X-Nudge-Passcode": bad_key})
        secrets.append(bad_key)
        httpx.post(srv.url + "/v1/track", auth=(srv.write_key, ""),
                   json={"userId": "u1", "event": "Viewed"})
        srv.upload([{"type": "event", "identity": "u1", "evtName": "Viewed"}])
    finally:
        srv.stop()
    log = (srv.data_dir / "server.log").read_text()
    assert '"level": "debug"' in log or '"level": "info"' in log  # the log was written
    found = [s[:6] + "…" for s in secrets if s and s in log]
    assert not found, f"secrets in the server log: {found}"
