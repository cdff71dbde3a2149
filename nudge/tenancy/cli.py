"""CLI commands of the auth area: ``nudge users ...`` and ``nudge api-keys ...`` (installed
into the main app by ``nudge/cli.py``). Every change is written to the audit log as actor
``cli``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.engine import Engine

from nudge.config import load_settings
from nudge.errors import NudgeError
from nudge.tenancy import audit

DataDir = Annotated[Path | None, typer.Option(help="Data directory [env NUDGE_DATA_DIR].")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
users_app = typer.Typer(help="Dashboard users: create, list, reset-mfa, reset-password.",
                        no_args_is_help=True)
keys_app = typer.Typer(help="Scoped API keys (passcode, write, read): create, list, rotate, "
                            "revoke.", no_args_is_help=True)


def install(app: typer.Typer) -> None:
    app.add_typer(users_app, name="users")
    app.add_typer(keys_app, name="api-keys")


def _engine(data_dir: Path | None) -> Engine:
    from nudge.store import control

    settings = load_settings(data_dir=data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return control.connect(settings.control_database_url)


def _fail(e: Exception) -> typer.Exit:
    typer.echo(f"error: {e}", err=True)
    return typer.Exit(1)


def _audit(engine: Engine, account_id: str, action: str, target: str, **detail: object) -> None:
    audit.record(engine, account_id=account_id, actor="cli", action=action, target=target,
                 detail=detail, source_ip="local")


@users_app.command("create")
def users_create(
    email: str,
    account: Annotated[str, typer.Option(help="Account id the user joins.")],
    role: Annotated[str, typer.Option(help="owner, admin, marketer, analyst or viewer.")],
    data_dir: DataDir = None,
    password_stdin: Annotated[bool, typer.Option(
        help="Read the password from standard input (first line).")] = False,
    password_hash: Annotated[str | None, typer.Option(
        help="Import an existing hash: Argon2id, or legacy PBKDF2-HMAC-SHA1 "
             "(pbkdf2_sha1$<iterations>$<salt>$<base64>), upgraded at first sign-in.")] = None,
    as_json: AsJson = False,
) -> None:
    """Create a dashboard user. Without a password, prints a one-time reset token."""
    import secrets

    from nudge.tenancy.users import UserDirectory, issue_password_reset

    engine = _engine(data_dir)
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    try:
        user = UserDirectory(engine).create(
            email, account, role, password_hash=password_hash,
            password=None if password_hash else (password or secrets.token_urlsafe(32)))
    except NudgeError as e:
        raise _fail(e) from None
    out: dict[str, object] = {"id": user.id, "email": user.email, "account": account,
                              "role": role}
    if password is None and password_hash is None:
        out["reset_token"] = issue_password_reset(engine, user.id)
    _audit(engine, account, "user.added", f"user:{user.id}", email=user.email, role=role)
    typer.echo(json.dumps(out) if as_json else "\n".join(f"{k:12} {v}" for k, v in out.items()))


@users_app.command("list")
def users_list(data_dir: DataDir = None,
               account: Annotated[str | None, typer.Option(help="Only this account.")] = None,
               as_json: AsJson = False) -> None:
    """List users with their accounts and roles (and whether MFA is on)."""
    from nudge.tenancy.users import UserDirectory

    directory = UserDirectory(_engine(data_dir))
    rows = []
    for user, _ in directory.list(None):
        roles = directory.memberships(user.id)
        if account is None or account in roles:
            rows.append({**user.public(), "accounts": roles})
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for r in rows:
        accts = ", ".join(f"{a}:{role}" for a, role in r["accounts"].items())  # type: ignore[attr-defined]
        typer.echo(f"{r['id']:>5}  {r['email']:40} mfa={'on ' if r['mfa_enabled'] else 'off'}"
                   f"  {accts}")


def _user_id(engine: Engine, email: str) -> int:
    from nudge.tenancy.users import UserDirectory

    user = UserDirectory(engine).by_email(email)
    if user is None:
        raise _fail(ValueError(f"no user {email!r}"))
    return user.id


@users_app.command("reset-mfa")
def users_reset_mfa(email: str, data_dir: DataDir = None) -> None:
    """Switch off a user's MFA (lost device) and end their sessions; they enroll again at
    next sign-in if their role requires MFA."""
    from nudge.store.control import recovery_codes, users
    from nudge.tenancy.sessions import SessionStore
    from nudge.tenancy.users import UserDirectory

    engine = _engine(data_dir)
    uid = _user_id(engine, email)
    with engine.begin() as conn:  # the same statements as Mfa.reset, without a keyring
        conn.execute(users.update().where(users.c.id == uid).values(
            totp_secret=None, totp_pending=None, totp_last_step=None, mfa_enabled_at=None))
        conn.execute(recovery_codes.delete().where(recovery_codes.c.user_id == uid))
    SessionStore(engine, 1, 1).revoke_all(uid)
    for account_id in UserDirectory(engine).memberships(uid):
        _audit(engine, account_id, "user.mfa_reset", f"user:{uid}", email=email)
    typer.echo(f"MFA reset for {email}; their sessions ended")


@users_app.command("reset-password")
def users_reset_password(email: str, data_dir: DataDir = None) -> None:
    """Print a one-time password-reset token (valid one hour). MFA stays on."""
    from nudge.tenancy.users import UserDirectory, issue_password_reset

    engine = _engine(data_dir)
    uid = _user_id(engine, email)
    token = issue_password_reset(engine, uid)
    for account_id in UserDirectory(engine).memberships(uid):
        _audit(engine, account_id, "user.password_reset_issued", f"user:{uid}", email=email)
    typer.echo(token)


@keys_app.command("create")
def keys_create(account: str, kind: Annotated[str, typer.Option(
                    help="passcode (server), write (ingest only) or read (read-only).")],
                data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Create a key; prints it (shown only once)."""
    from nudge.tenancy.accounts import AccountDirectory
    from nudge.tenancy.apikeys import ApiKeys

    engine = _engine(data_dir)
    try:
        AccountDirectory(engine).get(account)
        key, secret = ApiKeys(engine).create(account, kind)
    except NudgeError as e:
        raise _fail(e) from None
    _audit(engine, account, "key.created", f"key:{key.id}", kind=kind, prefix=key.prefix)
    typer.echo(json.dumps({**key.public(), "secret": secret}) if as_json else secret)


@keys_app.command("list")
def keys_list(account: str, data_dir: DataDir = None, as_json: AsJson = False,
              revoked: Annotated[bool, typer.Option(help="Include revoked keys.")] = False,
              ) -> None:
    """List an account's keys (prefixes only)."""
    from nudge.tenancy.apikeys import ApiKeys

    keys = ApiKeys(_engine(data_dir)).list(account, include_revoked=revoked)
    if as_json:
        typer.echo(json.dumps([k.public() for k in keys]))
        return
    for k in keys:
        typer.echo(f"{k.id:>5}  {k.kind:9} {k.prefix}…  "
                   f"{'revoked' if k.revoked_at else 'live'}")


@keys_app.command("rotate")
def keys_rotate(account: str, key_id: int, data_dir: DataDir = None,
                as_json: AsJson = False) -> None:
    """Revoke a key and print its replacement (same kind)."""
    from nudge.tenancy.apikeys import ApiKeys

    engine = _engine(data_dir)
    try:
        key, secret = ApiKeys(engine).rotate(account, key_id)
    except NudgeError as e:
        raise _fail(e) from None
    _audit(engine, account, "key.rotated", f"key:{key_id}", new_key=key.id, prefix=key.prefix)
    typer.echo(json.dumps({**key.public(), "secret": secret}) if as_json else secret)


@keys_app.command("revoke")
def keys_revoke(account: str, key_id: int, data_dir: DataDir = None) -> None:
    """Revoke a key now (running servers notice within 5 s)."""
    from nudge.tenancy.apikeys import ApiKeys

    engine = _engine(data_dir)
    try:
        key = ApiKeys(engine).revoke(account, key_id)
    except NudgeError as e:
        raise _fail(e) from None
    _audit(engine, account, "key.revoked", f"key:{key_id}", kind=key.kind, prefix=key.prefix)
    typer.echo(f"revoked key {key_id} ({key.kind}, {key.prefix}…)")
