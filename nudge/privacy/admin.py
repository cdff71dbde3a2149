"""Operations the CLI runs inside a live server: backups and GDPR requests.

A running server holds the lock on every account database, so ``nudge backup`` and
``nudge gdpr`` cannot open the files themselves. The server listens on a Unix socket in the
data directory (``admin.sock``, mode 0600: whoever may read the data directory may ask);
the CLI sends one JSON request per connection and reads one JSON answer. With no server
running, the CLI does the same work in its own process (:class:`LocalInstance`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nudge.config import Settings
from nudge.errors import NudgeError
from nudge.privacy import shred
from nudge.privacy.backup import backup
from nudge.privacy.gdpr import GdprRequests, parse_subjects
from nudge.privacy.keys import Keyring, keyring_for
from nudge.store.registry import StoreRegistry
from nudge.tenancy.accounts import AccountDirectory

log = logging.getLogger("nudge.privacy")
SOCKET_NAME = "admin.sock"
_MAX_REQUEST = 16 * 1024 * 1024


class Instance:
    """What an operation needs: settings, accounts, stores, keys (server or local)."""

    def __init__(self, settings: Settings, accounts: AccountDirectory, stores: StoreRegistry,
                 keyring: Keyring) -> None:
        self.settings, self.accounts, self.stores, self.keyring = (settings, accounts, stores,
                                                                   keyring)

    def run(self, request: dict[str, Any],
            progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
        op = request.get("op")
        if op == "backup":
            with shred.rewrites_paused():  # the copied keys and files must agree
                manifest = self._backup(request, progress)
            return {"accounts": len(manifest["accounts"]), "seconds": manifest["seconds"],
                    "dest": request["dest"]}
        if op == "gdpr":
            account = self.accounts.get(str(request["account"]))
            service = GdprRequests(self.accounts.engine, self.keyring,
                                   self.stores.get(account.id), account.timezone)
            subjects = parse_subjects({"subjects": request["subjects"]})
            action = request["action"]
            if action == "access":
                return service.access(subjects, "cli")
            if action == "erase":
                return service.erase(subjects, "cli")
            if action in ("suppress", "unsuppress"):
                return service.suppress(subjects, "cli", lift=action == "unsuppress")
        raise NudgeError(f"unknown admin operation {op!r}")

    def _backup(self, request: dict[str, Any],
                progress: Callable[[str], None]) -> dict[str, Any]:
        return backup(self.settings, self.keyring, self.stores.get,
                      lambda: [a.id for a in self.accounts.list()], Path(request["dest"]),
                      skip_control=bool(request.get("skip_control")), progress=progress)


class LocalInstance(Instance):
    """The data directory opened by this process (no server running)."""

    def __init__(self, settings: Settings) -> None:
        keyring = keyring_for(settings)
        super().__init__(settings, AccountDirectory(keyring.engine),
                         StoreRegistry(settings, keyring), keyring)

    def close(self) -> None:
        # A CLI erasure without a server: its rewrite is done now, not left owed until the
        # next server start (nudge/privacy/shred.py).
        shred.run_owed(self.stores.get, self.keyring, self.keyring.engine)
        self.stores.close()
        self.keyring.engine.dispose()


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        instance: Instance = self.server.instance  # type: ignore[attr-defined]
        try:
            line = self.rfile.readline(_MAX_REQUEST)
            answer = {"ok": True, "result": instance.run(json.loads(line), self._progress)}
        except NudgeError as e:
            answer = {"ok": False, "error": str(e), "kind": type(e).__name__}
        except Exception as e:  # noqa: BLE001 - reported to the CLI, logged here
            log.exception("admin request failed")
            answer = {"ok": False, "error": f"{type(e).__name__}: {e}", "kind": "internal"}
        self.wfile.write(json.dumps(answer, default=str).encode() + b"\n")

    def _progress(self, step: str) -> None:
        self.wfile.write(json.dumps({"progress": step}).encode() + b"\n")
        self.wfile.flush()


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class AdminSocket:
    """The server side: started with the app, closed at shutdown."""

    def __init__(self, instance: Instance) -> None:
        self.path = instance.settings.data_dir / SOCKET_NAME
        self._server: _Server | None = None
        self._instance = instance
        delay = instance.settings.erasure_rewrite_delay_s
        # Owed rewrites after erasures (crypto-shredding) run in the server that holds the
        # account files: started and stopped with this socket.
        self._rewrites = shred.RewriteScheduler(instance.stores.get, instance.keyring,
                                                poll_s=min(5.0, delay / 10))

    def start(self) -> AdminSocket:
        self._rewrites.start()
        if len(os.fsencode(self.path)) >= 100:
            log.warning("data directory path too long for the admin socket; nudge backup "
                        "and nudge gdpr need the server stopped")
            return self
        self.path.unlink(missing_ok=True)  # stale, from a server that was killed
        old = os.umask(0o177)
        try:
            self._server = _Server(str(self.path), _Handler)
        finally:
            os.umask(old)
        self._server.instance = self._instance  # type: ignore[attr-defined]
        threading.Thread(target=self._server.serve_forever, name="admin-socket",
                         daemon=True).start()
        return self

    def close(self) -> None:
        self._rewrites.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self.path.unlink(missing_ok=True)


def call(data_dir: Path, request: dict[str, Any],
         progress: Callable[[str], None] = lambda _: None) -> dict[str, Any] | None:
    """Ask the server running on ``data_dir``; ``None`` when no server listens."""
    path = data_dir / SOCKET_NAME
    if not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        sock.sendall(json.dumps(request).encode() + b"\n")
        with sock.makefile("rb") as f:
            answer = json.loads(f.readline())
            while "progress" in answer:
                progress(answer["progress"])
                answer = json.loads(f.readline())
    finally:
        sock.close()
    if not answer["ok"]:
        raise NudgeError(answer["error"])
    return answer["result"]  # type: ignore[no-any-return]


def run(settings: Settings, request: dict[str, Any],
        progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Run an operation in the live server if there is one, else in this process."""
    result = call(settings.data_dir, request, progress)
    if result is not None:
        return result
    local = LocalInstance(settings)
    try:
        return local.run(request, progress)
    finally:
        local.close()
