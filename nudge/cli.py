"""The ``nudge`` command line: serve, accounts, demo, import, export, compact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from nudge.config import Settings, load_settings
from nudge.predict import cli as predict_cli
from nudge.privacy import cli as privacy_cli
from nudge.tenancy import cli as auth_cli

app = typer.Typer(help="Nudge: customer lifecycle platform.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
accounts_app = typer.Typer(help="Accounts (tenants) and their keys.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
privacy_cli.install(app)  # keys rotate-master, gdpr ..., backup, restore
auth_cli.install(app)  # users create|list|reset-mfa|reset-password, api-keys ...
predict_cli.install(app)  # issue 8: predict goals|create-goal|train|rfm

DataDir = Annotated[Path | None, typer.Option(help="Data directory [env NUDGE_DATA_DIR].")]


def settings_for(data_dir: Path | None) -> Settings:
    return load_settings(data_dir=data_dir)


def directory(settings: Settings):  # type: ignore[no-untyped-def]
    from nudge.store import control
    from nudge.tenancy.accounts import AccountDirectory

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return AccountDirectory(control.connect(settings.control_database_url))


@app.command()
def serve(data_dir: DataDir = None, host: str = "127.0.0.1", port: int = 8000,
          workers: Annotated[int, typer.Option(help="Must be 1: one writer per store.")] = 1,
          ) -> None:
    """Run the HTTP server."""
    import uvicorn

    from nudge import logs
    from nudge.api.app import create_app

    settings = settings_for(data_dir)
    logs.setup(settings.log_level)
    if workers != 1:
        raise typer.BadParameter("each account store has one writer; run one worker per "
                                 "data directory", param_hint="--workers")
    tls = ({"ssl_certfile": settings.tls_cert, "ssl_keyfile": settings.tls_key}
           if settings.tls else {})  # HTTPS only when NUDGE_TLS_CERT and NUDGE_TLS_KEY are set
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None,
                log_level=settings.log_level, access_log=False,
                timeout_graceful_shutdown=30, **tls)  # type: ignore[arg-type]


@accounts_app.command("create")
def accounts_create(name: str, data_dir: DataDir = None, timezone: str = "UTC",
                    as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Create an account; prints its id, passcode and write key (shown only once)."""
    new = directory(settings_for(data_dir)).create(name, timezone)
    out = {"id": new.account.id, "name": new.account.name, "timezone": new.account.timezone,
           "passcode": new.passcode, "write_key": new.write_key}
    if as_json:
        typer.echo(json.dumps(out))
    else:
        for k, v in out.items():
            typer.echo(f"{k:10} {v}")


@accounts_app.command("list")
def accounts_list(data_dir: DataDir = None,
                  as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List accounts (keys are never shown again)."""
    accts = directory(settings_for(data_dir)).list()
    rows = [{"id": a.id, "name": a.name, "timezone": a.timezone} for a in accts]
    if as_json:
        typer.echo(json.dumps(rows))
    else:
        for r in rows:
            typer.echo(f"{r['id']}  {r['timezone']:20} {r['name']}")


@accounts_app.command("rotate-key")
def accounts_rotate(account_id: str, data_dir: DataDir = None,
                    kind: Annotated[str, typer.Option(help="passcode or write")] = "passcode",
                    as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Issue a new key and revoke the old one (other servers notice within 5 s)."""
    key = directory(settings_for(data_dir)).rotate_key(account_id, kind)
    typer.echo(json.dumps({"id": account_id, kind if kind != "write" else "write_key": key})
               if as_json else key)


def _account_store(settings: Settings, account: str | None):  # type: ignore[no-untyped-def]
    from nudge.store.registry import StoreRegistry

    accts = directory(settings).list()
    if account is None:
        if len(accts) != 1:
            raise typer.BadParameter("give --account (there is not exactly one)")
        account = accts[0].id
    elif account not in {a.id for a in accts}:
        raise typer.BadParameter(f"no account {account!r}", param_hint="--account")
    registry = StoreRegistry(settings)
    return registry, registry.get(account)


@app.command()
def demo(data_dir: DataDir = None,
         users: Annotated[int, typer.Option(help="Number of users.")] = 50_000,
         events: Annotated[int, typer.Option(help="Approximate number of events.")] = 2_000_000,
         seed: int = 7,
         if_empty: Annotated[bool, typer.Option(help="Do nothing if a demo exists.")] = False,
         ) -> None:
    """Create a demo account filled with a realistic e-commerce app's data."""
    from nudge.demo_load import load_demo

    load_demo(settings_for(data_dir), users=users, events=events, seed=seed, if_empty=if_empty)


@app.command("import")
def import_(file: Path, data_dir: DataDir = None, account: str | None = None,
            kind: Annotated[str, typer.Option(help="events or profiles (or auto)")] = "auto",
            ) -> None:
    """Import events or profiles from JSONL, CSV or Parquet."""
    from nudge.bulk import import_file

    settings = settings_for(data_dir)
    registry, store = _account_store(settings, account)
    try:
        import_file(store, file, kind, settings.limits)
    finally:
        registry.close()


@app.command()
def export(out: Path, data_dir: DataDir = None, account: str | None = None,
           what: Annotated[str, typer.Option(help="events or profiles")] = "events") -> None:
    """Export an account's events or profiles to Parquet."""
    from nudge.bulk import export_parquet

    settings = settings_for(data_dir)
    registry, store = _account_store(settings, account)
    try:
        n = export_parquet(store, what, out)
    finally:
        registry.close()
    typer.echo(f"exported {n} {what} to {out}")


@app.command()
def compact(data_dir: DataDir = None, account: str | None = None) -> None:
    """Move recent events into the (event, time)-sorted table now."""
    settings = settings_for(data_dir)
    registry, store = _account_store(settings, account)
    try:
        typer.echo(f"compacted {store.compact_now()} events")
    finally:
        registry.close()
