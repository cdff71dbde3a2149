"""CLI commands of the privacy area: ``nudge keys``, ``nudge gdpr``, ``nudge backup``,
``nudge restore`` (installed into the main app by ``nudge/cli.py``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from nudge.config import Settings, load_settings
from nudge.errors import NudgeError

DataDir = Annotated[Path | None, typer.Option(help="Data directory [env NUDGE_DATA_DIR].")]
keys_app = typer.Typer(help="Encryption keys.", no_args_is_help=True)
gdpr_app = typer.Typer(help="GDPR requests: access, erase, suppress, unsuppress.",
                       no_args_is_help=True)


def _settings(data_dir: Path | None) -> Settings:
    return load_settings(data_dir=data_dir)


def _fail(e: Exception) -> typer.Exit:
    typer.echo(f"error: {e}", err=True)
    return typer.Exit(1)


def _progress(step: str) -> None:
    typer.echo(f"  {step}", err=True)


@keys_app.command("rotate-master")
def rotate_master(
    data_dir: DataDir = None,
    new_key_file: Annotated[Path | None, typer.Option(
        help="File holding the new master key (base64 of 32 bytes). Default: generate one "
             "and replace the key file in use.")] = None,
) -> None:
    """Re-wrap every account's data key with a new master key (no data is rewritten)."""
    from nudge.privacy.keys import (
        load_master_key,
        master_key_id,
        new_master_key_text,
        parse_master_key,
        rewrap_all,
    )
    from nudge.store import control

    settings = _settings(data_dir)
    try:
        old = load_master_key(settings.master_key, settings.master_key_path, create=False)
        key_file = settings.master_key_path
        pending: Path | None = None
        if new_key_file is not None:
            new = parse_master_key(new_key_file.read_text(), str(new_key_file))
        elif settings.master_key:
            raise NudgeError("the master key comes from NUDGE_MASTER_KEY: give --new-key-file "
                             "and set NUDGE_MASTER_KEY to its content afterwards")
        else:
            # The new key is durable before any data key is wrapped with it: a crash between
            # the two leaves <key file>.new to recover with.
            pending = key_file.with_name(key_file.name + ".new")
            fd = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(new_master_key_text() + "\n")
                f.flush()
                os.fsync(f.fileno())
            new = parse_master_key(pending.read_text(), str(pending))
        engine = control.connect(settings.control_database_url)
        try:
            n = rewrap_all(engine, old, new)
        finally:
            engine.dispose()
        if pending is not None:
            os.replace(pending, key_file)
    except NudgeError as e:
        raise _fail(e) from None
    typer.echo(f"re-wrapped {n} data keys: master key {master_key_id(old)} -> "
               f"{master_key_id(new)}")
    if new_key_file is not None:
        typer.echo("now point NUDGE_MASTER_KEY / NUDGE_MASTER_KEY_FILE at the new key and "
                   "restart the server")


def _subjects(identity: list[str], email: list[str], phone: list[str], object_id: list[str],
              user_id: list[int], file: Path | None) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    out += [{"identity": v} for v in identity] + [{"email": v} for v in email]
    out += [{"phone": v} for v in phone] + [{"objectId": v} for v in object_id]
    out += [{"user_id": v} for v in user_id]
    if file is not None:
        out += [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    if not out:
        raise typer.BadParameter("name at least one person (--email, --identity, --phone, "
                                 "--object-id, --user-id or --file)")
    return out


def _gdpr(action: str):  # type: ignore[no-untyped-def]
    def command(
        account: Annotated[str, typer.Option(help="Account id.")],
        data_dir: DataDir = None,
        identity: Annotated[list[str], typer.Option()] = [],  # noqa: B006 - typer lists
        email: Annotated[list[str], typer.Option()] = [],  # noqa: B006
        phone: Annotated[list[str], typer.Option()] = [],  # noqa: B006
        object_id: Annotated[list[str], typer.Option("--object-id")] = [],  # noqa: B006
        user_id: Annotated[list[int], typer.Option("--user-id")] = [],  # noqa: B006
        file: Annotated[Path | None, typer.Option(
            help='JSON lines, one person each: {"email": "a@example.com"}')] = None,
    ) -> None:
        from nudge.privacy import admin

        request = {"op": "gdpr", "account": account, "action": action,
                   "subjects": _subjects(identity, email, phone, object_id, user_id, file)}
        try:
            result = admin.run(_settings(data_dir), request)
        except NudgeError as e:
            raise _fail(e) from None
        typer.echo(json.dumps(result, indent=1, default=str))

    command.__doc__ = {
        "access": "Export everything stored about the people (JSON on stdout).",
        "erase": "Erase the people completely, now; prints the receipt.",
        "suppress": "Keep the people but drop their events and refuse every channel.",
        "unsuppress": "Lift suppression.",
    }[action]
    return command


for _action in ("access", "erase", "suppress", "unsuppress"):
    gdpr_app.command(_action)(_gdpr(_action))


def backup(
    dest: Annotated[Path, typer.Argument(help="A new or empty directory, outside the data "
                                              "directory.")],
    data_dir: DataDir = None,
    skip_control: Annotated[bool, typer.Option(
        help="Do not copy the control store (account files only).")] = False,
) -> None:
    """Write a consistent, encrypted snapshot of the control store and every account store
    (while the server runs, the server itself writes it)."""
    from nudge.privacy import admin

    try:
        result = admin.run(_settings(data_dir), {"op": "backup", "dest": str(dest.resolve()),
                                                 "skip_control": skip_control},
                           progress=_progress)
    except NudgeError as e:
        raise _fail(e) from None
    typer.echo(f"backup of {result['accounts']} accounts written to {dest} "
               f"in {result['seconds']}s")


def restore(
    src: Annotated[Path, typer.Argument(help="A directory written by nudge backup.")],
    data_dir: DataDir = None,
) -> None:
    """Restore a backup into an empty data directory (server stopped) and verify it."""
    from nudge.privacy.backup import restore as run_restore
    from nudge.privacy.keys import load_master_key

    settings = _settings(data_dir)
    try:
        master = load_master_key(settings.master_key, settings.master_key_path, create=False)
        result = run_restore(settings, master, src, progress=_progress)
    except NudgeError as e:
        raise _fail(e) from None
    rows = sum(result["accounts"].values())
    typer.echo(f"restored {len(result['accounts'])} accounts ({rows} rows, verified) "
               f"into {settings.data_dir}")


def install(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    app.add_typer(gdpr_app, name="gdpr")
    app.command()(backup)
    app.command()(restore)
