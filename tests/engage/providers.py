"""Local servers that speak each provider's documented protocol, for channel and delivery tests.

Every server runs in a background thread, records what it received (``server.received``: one
:class:`Received` per accepted or refused request, with the parsed payload), answers like the
real provider, and can be scripted to misbehave: ``server.fail_next(status, body, headers,
times=n)`` or ``server.hang_next(seconds)`` (the response comes after the client's timeout).

Reuse them (delivery tests: caps, fallback, kill -9)::

    from tests.engage.providers import TwilioServer, SmtpServer, tls_pair
    with TwilioServer() as sms:
        ... PUT /1/channels/sms {"provider": "twilio", **sms.channel_config()} ...
        assert [r.form["To"] for r in sms.accepted] == [...]

``channel_config()`` of each server returns the provider configuration that points a Nudge
channel at it (base URL, credentials, CA). Servers are also usable from a server subprocess:
they listen on 127.0.0.1 TCP ports.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import email
import email.policy
import ipaddress
import itertools
import json
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import http_ece
import jwt
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypercorn.asyncio import serve
from hypercorn.config import Config

from nudge.engage import signing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- TLS -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TlsPair:
    """A self-signed certificate for localhost / 127.0.0.1, as PEM text and files."""

    cert_pem: str
    key_pem: str
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def tls_pair(directory: Path) -> TlsPair:
    """Generate a self-signed certificate (valid for localhost and 127.0.0.1) in ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_text(cert_pem)
    key_file.write_text(key_pem)
    return TlsPair(cert_pem, key_pem, cert_file, key_file)


# -- scripted HTTP servers ---------------------------------------------------------------------
@dataclass
class Received:
    """One request as the provider saw it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    http_version: str
    status: int = 0  # what the server answered
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    parsed: Any = None  # provider-specific: decrypted payload, verified JWT claims, ...


@dataclass
class Scripted:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 0.0


class Reply(Exception):
    """Raised by a handler to answer with an error (the request is still recorded)."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


class HttpProvider:
    """A provider HTTP server (hypercorn, HTTP/1.1, or HTTP/2 over TLS when ``tls`` is set)."""

    def __init__(self, tls: TlsPair | None = None) -> None:
        self.tls = tls
        self.port = free_port()
        self.received: list[Received] = []
        self._script: deque[Scripted] = deque()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ids = itertools.count(1)

    # -- control from tests ---------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.received if 200 <= r.status < 300]

    def fail_next(self, status: int, body: Any = None, headers: dict[str, str] | None = None,
                  times: int = 1) -> None:
        with self._lock:
            for _ in range(times):
                self._script.append(Scripted(status, body, headers or {}))

    def hang_next(self, seconds: float = 30.0, times: int = 1) -> None:
        with self._lock:
            for _ in range(times):
                self._script.append(Scripted(200, hang_s=seconds))

    def channel_config(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> HttpProvider:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._stop = asyncio.Event()
            config = Config()
            config.bind = [f"127.0.0.1:{self.port}"]
            config.graceful_timeout = 0.2
            config.accesslog = None
            config.errorlog = None
            if self.tls:
                config.certfile, config.keyfile = str(self.tls.cert_file), str(self.tls.key_file)
            self._loop.call_soon(ready.set)
            self._loop.run_until_complete(serve(self._asgi, config,  # type: ignore[arg-type]
                                                shutdown_trigger=self._stop.wait))
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait until the port accepts connections
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"{type(self).__name__} did not start")

    def stop(self) -> None:
        if self._loop and self._stop and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread:
            self._thread.join(10)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- ASGI -----------------------------------------------------------------------------
    async def _asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        req = Received(scope["method"], scope["path"], headers, b"".join(chunks),
                       scope.get("http_version", "1.1"))
        ctype = headers.get("content-type", "")
        if "json" in ctype:
            try:
                req.json = json.loads(req.body)
            except ValueError:
                req.json = None
        elif "x-www-form-urlencoded" in ctype:
            req.form = dict(parse_qsl(req.body.decode()))
        with self._lock:
            scripted = self._script.popleft() if self._script else None
        if scripted is not None and scripted.hang_s:
            self.received.append(req)
            await asyncio.sleep(scripted.hang_s)
            scripted = None
        try:
            if scripted is not None:
                raise Reply(scripted.status, scripted.body, scripted.headers)
            status, body, extra = await self.handle(req)
        except Reply as r:
            status, body, extra = r.status, r.body, r.headers
        req.status = status
        if req not in self.received:
            self.received.append(req)
        payload = b"" if body is None else (body if isinstance(body, bytes)
                                             else json.dumps(body).encode())
        out = [(b"content-type", b"application/json"), (b"content-length",
                                                         str(len(payload)).encode())]
        out += [(k.lower().encode(), str(v).encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": payload})

    async def handle(self, req: Received) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError


def _bearer(req: Received) -> str:
    auth = req.headers.get("authorization", "")
    if not auth.lower().startswith("bearer "):
        raise Reply(401, {"error": "missing bearer token"})
    return auth[7:]


# -- FCM HTTP v1 + Google OAuth2 token endpoint -------------------------------------------------
class FcmServer(HttpProvider):
    """FCM v1 ``POST /v1/projects/{project}/messages:send`` and the OAuth2 token endpoint
    ``POST /token`` (JWT bearer grant, RS256 assertion verified with the service account's
    public key). ``unregistered`` tokens answer 404 ``UNREGISTERED``."""

    def __init__(self, project_id: str = "demo-project", token_ttl_s: int = 3600) -> None:
        super().__init__()
        self.project_id = project_id
        self.token_ttl_s = token_ttl_s
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.client_email = f"nudge@{project_id}.iam.gserviceaccount.com"
        self.issued: dict[str, float] = {}
        self.token_requests: list[dict[str, Any]] = []  # verified assertion claims
        self.unregistered: set[str] = set()

    def service_account(self) -> dict[str, Any]:
        pem = self.key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
        return {"type": "service_account", "project_id": self.project_id,
                "private_key_id": "k1", "private_key": pem, "client_email": self.client_email,
                "token_uri": f"{self.url}/token"}

    def channel_config(self) -> dict[str, Any]:
        return {"provider": "fcm", "service_account": self.service_account(),
                "base_url": self.url, "timeout_s": 2}

    def revoke_tokens(self) -> None:
        self.issued.clear()

    async def handle(self, req: Received) -> tuple[int, Any, dict[str, str]]:
        if req.path == "/token":
            return self._token(req)
        expected = f"/v1/projects/{self.project_id}/messages:send"
        if req.method != "POST" or req.path != expected:
            raise Reply(404, _fcm_error(404, "NOT_FOUND", None))
        token = _bearer(req)
        if self.issued.get(token, 0) < time.time():
            raise Reply(401, _fcm_error(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR"))
        msg = (req.json or {}).get("message")
        if not isinstance(msg, dict) or not isinstance(msg.get("token"), str):
            raise Reply(400, _fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"))
        data = msg.get("data", {})
        if not all(isinstance(v, str) for v in data.values()):
            raise Reply(400, _fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"))
        if msg["token"] in self.unregistered:
            raise Reply(404, _fcm_error(404, "NOT_FOUND", "UNREGISTERED"))
        req.parsed = msg
        return 200, {"name": f"projects/{self.project_id}/messages/{next(self._ids)}"}, {}

    def _token(self, req: Received) -> tuple[int, Any, dict[str, str]]:
        if req.form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            raise Reply(400, {"error": "unsupported_grant_type"})
        try:
            claims = jwt.decode(req.form.get("assertion", ""), self.key.public_key(),
                                algorithms=["RS256"], audience=f"{self.url}/token",
                                issuer=self.client_email)
        except jwt.PyJWTError as exc:
            raise Reply(400, {"error": "invalid_grant", "error_description": str(exc)}) from None
        if claims.get("scope") != "https://www.googleapis.com/auth/firebase.messaging":
            raise Reply(400, {"error": "invalid_scope"})
        self.token_requests.append(claims)
        token = "ya29." + secrets.token_urlsafe(24)
        self.issued[token] = time.time() + self.token_ttl_s
        req.parsed = claims
        return 200, {"access_token": token, "expires_in": self.token_ttl_s,
                     "token_type": "Bearer"}, {}


def _fcm_error(code: int, status: str, error_code: str | None) -> dict[str, Any]:
    details = ([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                 "errorCode": error_code}] if error_code else [])
    return {"error": {"code": code, "message": status.lower(), "status": status,
                      "details": details}}


# -- APNs (HTTP/2 over TLS, token auth) ---------------------------------------------------------
class ApnsServer(HttpProvider):
    """APNs ``POST /3/device/{token}`` over HTTP/2 (TLS + ALPN h2). Verifies the ES256 provider
    JWT with the key's public half, the ``kid`` and ``iss`` (team), and the apns-* headers.
    ``unregistered`` tokens answer 410 ``Unregistered``; non-hex tokens 400 ``BadDeviceToken``."""

    def __init__(self, tls: TlsPair, topic: str = "com.example.app") -> None:
        super().__init__(tls)
        self.topic = topic
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.key_id, self.team_id = "KEY1234567", "TEAM123456"
        self.unregistered: set[str] = set()
        self.jwt_iats: list[int] = []

    def channel_config(self) -> dict[str, Any]:
        pem = self.key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
        assert self.tls is not None
        return {"provider": "apns", "key_p8": pem, "key_id": self.key_id,
                "team_id": self.team_id, "topic": self.topic, "base_url": self.url,
                "ca_pem": self.tls.cert_pem, "timeout_s": 2}

    async def handle(self, req: Received) -> tuple[int, Any, dict[str, str]]:
        if req.http_version != "2":
            raise Reply(505, {"reason": "HTTP/2 required"})
        if not req.path.startswith("/3/device/") or req.method != "POST":
            raise Reply(404, {"reason": "BadPath"})
        token = req.path[len("/3/device/"):]
        auth = req.headers.get("authorization", "")
        if not auth.startswith("bearer "):
            raise Reply(403, {"reason": "MissingProviderToken"})
        try:
            header = jwt.get_unverified_header(auth[7:])
            claims = jwt.decode(auth[7:], self.key.public_key(), algorithms=["ES256"],
                                options={"require": ["iss", "iat"]})
        except jwt.PyJWTError:
            raise Reply(403, {"reason": "InvalidProviderToken"}) from None
        if header.get("kid") != self.key_id or claims.get("iss") != self.team_id:
            raise Reply(403, {"reason": "InvalidProviderToken"})
        if time.time() - claims["iat"] > 3600:
            raise Reply(403, {"reason": "ExpiredProviderToken"})
        self.jwt_iats.append(claims["iat"])
        if req.headers.get("apns-topic") != self.topic:
            raise Reply(400, {"reason": "TopicDisallowed"})
        if req.headers.get("apns-push-type") not in ("alert", "background"):
            raise Reply(400, {"reason": "InvalidPushType"})
        if req.headers.get("apns-priority") not in ("5", "10"):
            raise Reply(400, {"reason": "BadPriority"})
        if not req.headers.get("apns-expiration", "").isdigit():
            raise Reply(400, {"reason": "BadExpirationDate"})
        if len(token) != 64 or not all(c in "0123456789abcdef" for c in token.lower()):
            raise Reply(400, {"reason": "BadDeviceToken"})
        if token in self.unregistered:
            raise Reply(410, {"reason": "Unregistered", "timestamp": int(time.time() * 1000)})
        body = req.json if req.json is not None else json.loads(req.body)
        if not isinstance(body, dict) or "aps" not in body:
            raise Reply(400, {"reason": "PayloadEmpty"})
        req.parsed = body
        apns_id = req.headers.get("apns-id") or str(uuid.uuid4())
        return 200, None, {"apns-id": apns_id}


# -- Web push (RFC 8030 endpoint, RFC 8291 decryption, RFC 8292 VAPID) --------------------------
@dataclass
class Subscriber:
    """A browser's push subscription: its ECDH key and auth secret stay here (the browser),
    ``subscription`` is what the SDK registers."""

    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    endpoint: str

    @property
    def subscription(self) -> dict[str, Any]:
        pub = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()  # noqa: E731
        return {"endpoint": self.endpoint, "keys": {"p256dh": b64(pub), "auth": b64(self.auth)}}


class WebPushServer(HttpProvider):
    """A push service: ``POST /push/{id}`` decrypts the aes128gcm body with the subscriber's
    private key (http_ece) and verifies ``Authorization: vapid t=<JWT>, k=<key>`` (ES256 with
    k, ``aud`` = this origin, ``exp`` within 24 h, ``sub`` set). Gone subscriptions answer 410."""

    def __init__(self) -> None:
        super().__init__()
        self.subscribers: dict[str, Subscriber] = {}
        self.gone: set[str] = set()
        self.vapid_key = ec.generate_private_key(ec.SECP256R1())

    def subscribe(self) -> Subscriber:
        sid = secrets.token_hex(8)
        sub = Subscriber(ec.generate_private_key(ec.SECP256R1()), secrets.token_bytes(16),
                         f"{self.url}/push/{sid}")
        self.subscribers[sid] = sub
        return sub

    def channel_config(self) -> dict[str, Any]:
        raw = self.vapid_key.private_numbers().private_value.to_bytes(32, "big")
        return {"provider": "vapid",
                "vapid_private_key": base64.urlsafe_b64encode(raw).rstrip(b"=").decode(),
                "subscriber": "mailto:ops@shop.example", "allow_http": True, "timeout_s": 2}

    async def handle(self, req: Received) -> tuple[int, Any, dict[str, str]]:
        sid = req.path.rsplit("/", 1)[-1]
        if sid in self.gone:
            raise Reply(410, {"reason": "subscription expired"})
        sub = self.subscribers.get(sid)
        if sub is None or not req.path.startswith("/push/"):
            raise Reply(404, {"reason": "no such subscription"})
        vapid = self._verify_vapid(req.headers.get("authorization", ""))
        if req.headers.get("content-encoding") != "aes128gcm" or "ttl" not in req.headers:
            raise Reply(400, {"reason": "Content-Encoding aes128gcm and TTL are required"})
        try:
            plain = http_ece.decrypt(req.body, private_key=sub.private_key,
                                     auth_secret=sub.auth, version="aes128gcm")
        except Exception:  # noqa: BLE001 - any decryption failure is the sender's fault
            raise Reply(400, {"reason": "decryption failed"}) from None
        req.parsed = {"payload": json.loads(plain), "vapid": vapid}
        return 201, None, {"location": f"{self.url}/message/{next(self._ids)}"}

    def _verify_vapid(self, auth: str) -> dict[str, Any]:
        if not auth.lower().startswith("vapid "):
            raise Reply(401, {"reason": "VAPID authorization required"})
        parts = dict(p.strip().split("=", 1) for p in auth[6:].split(","))
        key_raw = base64.urlsafe_b64decode(parts["k"] + "=" * (-len(parts["k"]) % 4))
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key_raw)
        expected = self.vapid_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        if key_raw != expected:
            raise Reply(403, {"reason": "VAPID key does not match the subscription"})
        try:
            claims = jwt.decode(parts["t"], public, algorithms=["ES256"], audience=self.url)
        except jwt.PyJWTError as exc:
            raise Reply(403, {"reason": f"bad VAPID JWT: {exc}"}) from None
        if not claims.get("sub") or claims["exp"] > time.time() + 86400:
            raise Reply(403, {"reason": "bad VAPID claims"})
        return claims


# -- Twilio Messages API ------------------------------------------------------------------------
class TwilioServer(HttpProvider):
    """``POST /2010-04-01/Accounts/{sid}/Messages.json``: basic auth, form fields, Twilio's
    error JSON (``invalid`` numbers → 21211, ``stopped`` numbers → 21610)."""

    def __init__(self) -> None:
        super().__init__()
        self.account_sid = "AC" + secrets.token_hex(16)
        self.auth_token = secrets.token_hex(16)
        self.invalid: set[str] = set()
        self.stopped: set[str] = set()

    def channel_config(self) -> dict[str, Any]:
        return {"provider": "twilio", "account_sid": self.account_sid,
                "auth_token": self.auth_token, "from": "+15005550006", "base_url": self.url,
                "status_callback": "https://nudge.example/1/providers/twilio/status",
                "timeout_s": 2}

    async def handle(self, req: Received) -> tuple[int, Any, dict[str, str]]:
        if req.path != f"/2010-04-01/Accounts/{self.account_sid}/Messages.json":
            raise Reply(404, _twilio_error(20404, "The requested resource was not found", 404))
        auth = req.headers.get("authorization", "")
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if auth != f"Basic {expected}":
            raise Reply(401, _twilio_error(20003, "Authenticate", 401))
        f = req.form
        if not f.get("Body") or not (f.get("From") or f.get("MessagingServiceSid")):
            raise Reply(400, _twilio_error(21602, "Message body is required.", 400))
        to = f.get("To", "")
        if to in self.invalid or not to.startswith("+") or not to[1:].isdigit():
            raise Reply(400, _twilio_error(21211, f"The 'To' number {to} is not a valid "
                                                  "phone number.", 400))
        if to in self.stopped:
            raise Reply(400, _twilio_error(21610, "Attempt to send to unsubscribed recipient",
                                           400))
        sid = "SM" + secrets.token_hex(16)
        req.parsed = f
        return 201, {"sid": sid, "status": "queued", "to": to, "from": f.get("From"),
                     "body": f["Body"], "account_sid": self.account_sid}, {}


def _twilio_error(code: int, message: str, status: int) -> dict[str, Any]:
    return {"code": code, "message": message, "more_info":
            f"https://www.twilio.com/docs/errors/{code}", "status": status}


# -- WhatsApp Business Cloud API ----------------------------------------------------------------
class WhatsAppServer(HttpProvider):
    """``POST /{version}/{phone_number_id}/messages`` with a bearer token; checks the template /
    text message JSON shape. ``not_on_whatsapp`` numbers answer error 131026."""

    def __init__(self, version: str = "v21.0") -> None:
        super().__init__()
        self.version = version
        self.phone_number_id = "106540352242922"
        self.access_token = "EAAG" + secrets.token_hex(16)
        self.not_on_whatsapp: set[str] = set()

    def channel_config(self) -> dict[str, Any]:
        return {"provider": "cloud_api", "access_token": self.access_token,
                "phone_number_id": self.phone_number_id, "api_version": self.version,
                "base_url": self.url, "timeout_s": 2}

    async def handle(self, req: Received) -> tuple[int, Any, dict[str, str]]:
        if req.path != f"/{self.version}/{self.phone_number_id}/messages":
            raise Reply(404, _graph_error(100, "Unsupported post request"))
        if _bearer(req) != self.access_token:
            raise Reply(401, _graph_error(190, "Invalid OAuth access token"))
        b = req.json
        if (not isinstance(b, dict) or b.get("messaging_product") != "whatsapp"
                or not isinstance(b.get("to"), str) or b.get("type") not in ("template", "text")):
            raise Reply(400, _graph_error(100, "Invalid parameter"))
        if b["type"] == "template":
            t = b.get("template") or {}
            if not t.get("name") or not (t.get("language") or {}).get("code"):
                raise Reply(400, _graph_error(132000, "Number of parameters does not match"))
            for comp in t.get("components", []):
                for p in comp.get("parameters", []):
                    if p.get("type") not in ("text", "currency", "date_time", "image",
                                             "document", "video", "payload"):
                        raise Reply(400, _graph_error(132012, "Parameter format mismatch"))
        elif not (b.get("text") or {}).get("body"):
            raise Reply(400, _graph_error(100, "text.body is required"))
        if b["to"] in self.not_on_whatsapp:
            raise Reply(400, _graph_error(131026, "Message Undeliverable"))
        req.parsed = b
        return 200, {"messaging_product": "whatsapp",
                     "contacts": [{"input": b["to"], "wa_id": b["to"]}],
                     "messages": [{"id": f"wamid.{secrets.token_hex(12)}"}]}, {}


def _graph_error(code: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "OAuthException", "code": code,
                      "fbtrace_id": secrets.token_hex(6)}}


# -- Webhook receiver ---------------------------------------------------------------------------
class WebhookReceiver(HttpProvider):
    """Any URL: verifies ``X-Nudge-Signature`` over the raw body with ``secret`` and the
    replay window (401 when it does not verify)."""

    def __init__(self, secret: str, tolerance_s: float = signing.DEFAULT_TOLERANCE_S) -> None:
        super().__init__()
        self.secret = secret
        self.tolerance_s = tolerance_s

    def channel_config(self) -> dict[str, Any]:
        return {"provider": "http", "url": f"{self.url}/hook", "secret": self.secret,
                "timeout_s": 2}

    async def handle(self, req: Received) -> tuple[int, Any, dict[str, str]]:
        try:
            signing.verify(self.secret, req.headers.get("x-nudge-timestamp"),
                           req.headers.get("x-nudge-signature"), req.body,
                           tolerance_s=self.tolerance_s)
        except signing.SignatureError as exc:
            raise Reply(401, {"error": str(exc)}) from None
        req.parsed = json.loads(req.body)
        return 200, {"ok": True}, {}


# -- SMTP (aiosmtpd) ---------------------------------------------------------------------------
@dataclass
class SmtpFailure:
    stage: str  # "rcpt" | "data"
    reply: str  # e.g. "550 5.1.1 no such user"


class SmtpServer:
    """aiosmtpd with STARTTLS (or implicit TLS) and AUTH PLAIN/LOGIN; keeps every accepted
    email parsed (``server.messages``: :class:`email.message.EmailMessage`, plus the envelope
    in ``server.envelopes``). ``fail_next("rcpt", "550 ...")`` scripts a refusal; addresses in
    ``unknown`` are refused at RCPT with 550."""

    def __init__(self, tls: TlsPair, *, implicit_tls: bool = False,
                 username: str = "nudge", password: str | None = None) -> None:
        self.tls = tls
        self.implicit_tls = implicit_tls
        self.username = username
        self.password = password or secrets.token_hex(8)
        self.port = free_port()
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.auth_attempts: list[tuple[str, bool]] = []
        self.tls_sessions: list[bool] = []  # per accepted message: was the session encrypted
        self.unknown: set[str] = set()
        self._script: deque[SmtpFailure] = deque()
        self.controller: Controller | None = None

    def fail_next(self, stage: str, reply: str) -> None:
        self._script.append(SmtpFailure(stage, reply))

    def _scripted(self, stage: str) -> str | None:
        if self._script and self._script[0].stage == stage:
            return self._script.popleft().reply
        return None

    def channel_config(self) -> dict[str, Any]:
        return {"provider": "smtp", "host": "localhost", "port": self.port,
                "security": "tls" if self.implicit_tls else "starttls",
                "username": self.username, "password": self.password,
                "from": "Shop <news@shop.example>", "reply_to": "help@shop.example",
                "ca_pem": self.tls.cert_pem, "timeout_s": 2}

    def start(self) -> SmtpServer:
        server = self

        class Handler:
            async def handle_RCPT(self, srv: Any, session: Any, envelope: Any, address: str,
                                  rcpt_options: list[str]) -> str:
                scripted = server._scripted("rcpt")
                if scripted:
                    return scripted
                if address in server.unknown:
                    return f"550 5.1.1 <{address}>: Recipient address rejected"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, srv: Any, session: Any, envelope: Any) -> str:
                scripted = server._scripted("data")
                if scripted:
                    return scripted
                msg = email.message_from_bytes(envelope.original_content or envelope.content,
                                               policy=email.policy.default)
                server.messages.append(msg)  # type: ignore[arg-type]
                server.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                server.tls_sessions.append(
                    srv.transport.get_extra_info("ssl_object") is not None)
                return "250 Message accepted for delivery"

        def authenticator(srv: Any, session: Any, envelope: Any, mechanism: str,
                          auth_data: Any) -> AuthResult:
            ok = (isinstance(auth_data, LoginPassword)
                  and auth_data.login.decode() == server.username
                  and auth_data.password.decode() == server.password)
            server.auth_attempts.append((mechanism, ok))
            return AuthResult(success=ok, handled=False)

        kwargs: dict[str, Any] = dict(hostname="127.0.0.1", port=self.port,
                                      authenticator=authenticator,
                                      # aiosmtpd does not see implicit TLS as TLS here
                                      auth_require_tls=not self.implicit_tls,
                                      decode_data=False, ready_timeout=10)
        if self.implicit_tls:
            kwargs["ssl_context"] = self.tls.server_context()
        else:
            kwargs["tls_context"] = self.tls.server_context()
            kwargs["require_starttls"] = True
        self.controller = Controller(Handler(), server_hostname="localhost", **kwargs)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller:
            self.controller.stop()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def message(channel: str, to: str, content: dict[str, Any], *, key: str | None = None,
            user_id: int = 1, account_id: str = "acct1",
            meta: dict[str, Any] | None = None) -> Any:
    """A rendered :class:`~nudge.engage.channels.base.Message` for direct channel tests."""
    from nudge.engage.channels.base import Message

    mid = secrets.token_hex(8)
    return Message(id=mid, idempotency_key=key or f"c1:o1:{user_id}:A:{mid}",
                   account_id=account_id, user_id=user_id, channel=channel, to=to,
                   content=content, meta=meta if meta is not None else {"campaign_id": "7"})


class SilentServer:
    """Accepts TCP connections and never answers: a provider that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture(autouse=True)
def allow_private_networks() -> Iterator[None]:
    """The provider servers here listen on 127.0.0.1, which the SSRF guard refuses by
    default: channels built in the test process opt in, as a test server's settings do.
    Import it into a test module to apply it there."""
    from nudge.engage.channels import netguard

    netguard.configure(True)
    try:
        yield
    finally:
        netguard.configure(False)
