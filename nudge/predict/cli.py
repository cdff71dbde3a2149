"""CLI of predictive segments: ``nudge predict goals|create-goal|train|rfm`` (installed into
the main app by ``nudge/cli.py``). Like ``nudge import``, these open the account store
directly, so run them while the server is stopped (or use the HTTP API)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

DataDir = Annotated[Path | None, typer.Option(help="Data directory [env NUDGE_DATA_DIR].")]
Account = Annotated[str | None, typer.Option(help="Account id (needed if there are several).")]
predict_app = typer.Typer(help="Predictive segments: RFM, goals, training.",
                          no_args_is_help=True)


def install(app: typer.Typer) -> None:
    app.add_typer(predict_app, name="predict")


def _open(data_dir: Path | None, account: str | None):  # type: ignore[no-untyped-def]
    from nudge.cli import _account_store, settings_for
    from nudge.store import control

    settings = settings_for(data_dir)
    registry, store = _account_store(settings, account)
    return registry, store, control.connect(settings.control_database_url)


@predict_app.command("goals")
def goals(data_dir: DataDir = None, account: Account = None) -> None:
    """List the account's goals with their latest model's AUC and lift."""
    from .goals import GoalDirectory
    from .runs import TrainingRuns

    registry, store, engine = _open(data_dir, account)
    try:
        runs = TrainingRuns(engine, store.account_id)
        for g in GoalDirectory(engine, store.account_id).list():
            m = runs.latest_model(g.id)
            quality = (f"AUC {m['metrics']['auc']:.3f}, lift {m['metrics']['top_decile_lift']:.2f}"
                       if m else "not trained")
            typer.echo(f"{g.id:4}  {g.name}  ({quality})")
    finally:
        registry.close()


@predict_app.command("create-goal")
def create_goal(definition: Annotated[str, typer.Argument(help="The goal as JSON.")],
                data_dir: DataDir = None, account: Account = None) -> None:
    """Create a goal, e.g. '{"name": "Buyers", "event": "Charged", "horizon_days": 14}'."""
    from nudge.errors import NudgeError

    from .goals import GoalDirectory

    registry, store, engine = _open(data_dir, account)
    try:
        goal = GoalDirectory(engine, store.account_id).create(json.loads(definition))
    except NudgeError as e:
        typer.echo(f"error: {e.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        registry.close()
    typer.echo(json.dumps(goal.to_dict()))


@predict_app.command("train")
def train(goal: Annotated[int, typer.Option(help="Goal id.")], data_dir: DataDir = None,
          account: Account = None,
          as_of: Annotated[str | None, typer.Option(
              help="Train and score as if it were this moment (ISO 8601), for backtests."
          )] = None) -> None:
    """Train a goal's model with a progress bar, then print its validation metrics."""
    from rich.progress import BarColumn, Progress, TextColumn

    from nudge.errors import NudgeError

    from .goals import GoalDirectory, _time
    from .runs import TrainingRuns

    registry, store, engine = _open(data_dir, account)
    try:
        g = GoalDirectory(engine, store.account_id).get(goal)
        when = _time(as_of, "as_of") if as_of else None
        with Progress(TextColumn("{task.description:32}"), BarColumn(),
                      TextColumn("{task.percentage:>3.0f}%")) as bar:
            task = bar.add_task("starting", total=1.0)
            run = TrainingRuns(engine, store.account_id).run(
                store, g, "cli", when,
                lambda stage, f: bar.update(task, description=stage, completed=f))
            bar.update(task, description=run["stage"], completed=1.0)
        if run["status"] != "done":
            typer.echo(f"training failed: {run['error']}", err=True)
            raise typer.Exit(1)
        model = TrainingRuns(engine, store.account_id).latest_model(goal)
        assert model is not None
        m = model["metrics"]
        typer.echo(json.dumps({k: m[k] for k in (
            "auc", "top_decile_lift", "base_rate", "brier", "validation_rows",
            "training_rows", "scored")}))
    except NudgeError as e:
        typer.echo(f"error: {e.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        registry.close()


@predict_app.command("rfm")
def rfm_report(data_dir: DataDir = None, account: Account = None) -> None:
    """The live RFM report (users and revenue per segment) as JSON."""
    from nudge.clock import clock

    from . import rfm

    registry, store, _ = _open(data_dir, account)
    try:
        typer.echo(json.dumps(rfm.report(store, rfm.load_settings(store), clock.now())))
    finally:
        registry.close()
