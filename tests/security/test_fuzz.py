"""API fuzzing with schemathesis over the app's OpenAPI spec: no input makes it answer 5xx.

Runs in-process against the real app (real control store and account stores on a temp dir)
with valid passcode credentials, so generated requests reach the handlers; a bounded number
of examples per operation keeps it under a minute.
"""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from security_helpers import make_settings
from starlette.testclient import TestClient

from nudge.api.app import create_app

EXAMPLES_PER_OPERATION = 6
SENT = ("method", "url", "headers", "params", "json", "content", "cookies")


def test_no_generated_request_gets_a_5xx(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))
    acct = app.state.nudge.accounts.create("fuzz")
    creds = {"X-Nudge-Account-Id": acct.account.id, "X-Nudge-Passcode": acct.passcode}
    server_errors: list[str] = []
    calls = 0
    with TestClient(app, raise_server_exceptions=False) as client:
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [r.ok() for r in schema.get_all_operations()]
        assert len(operations) > 60  # the whole API, not a sample
        for op in operations:
            if op.path.endswith("/stream"):
                continue  # an accepted event stream never ends

            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck), derandomize=True)
            @given(case=op.as_strategy())
            def run(case) -> None:  # type: ignore[no-untyped-def]
                nonlocal calls
                kwargs = case.as_transport_kwargs(headers=creds)
                r = client.request(**{k: v for k, v in kwargs.items()
                                      if k in SENT and (v or k != "cookies")})
                calls += 1
                if r.status_code >= 500:
                    server_errors.append(f"{case.method} {kwargs['url']} "
                                         f"params={kwargs.get('params')} -> {r.status_code} "
                                         f"{r.text[:200]}")

            run()
    assert calls > len(operations)
    assert not server_errors, "\n".join(sorted(set(server_errors)))


def test_ids_beyond_64_bits_are_bad_input_not_a_crash(tmp_path: Path) -> None:
    """Found by the fuzz run: SQLite cannot bind such an id; the answer is a 400 on every
    route with an integer id, not a 500."""
    app = create_app(make_settings(tmp_path))
    acct = app.state.nudge.accounts.create("fuzz")
    creds = {"X-Nudge-Account-Id": acct.account.id, "X-Nudge-Passcode": acct.passcode}
    huge = str(2**64 + 5)
    with TestClient(app, raise_server_exceptions=False) as client:
        for method, path in (("GET", "/1/segments/{}"), ("DELETE", "/1/segments/{}"),
                             ("GET", "/1/segments/{}/members"), ("POST", "/1/keys/{}/rotate"),
                             ("DELETE", "/1/keys/{}")):
            r = client.request(method, path.format(huge), headers=creds)
            assert r.status_code == 400, (method, path, r.status_code, r.text)
            assert r.json()["error"] == "invalid"
