"""The dashboard: server-rendered pages (Jinja2 + htmx, ECharts for charts) over the same
query and service functions the HTTP API calls. See nudge/web/README.md."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Mount the dashboard's pages under ``/ui`` and its static files under ``/ui/static``."""
    from . import (
        analytics,
        boards,
        campaign_wizard,
        campaigns,
        events,
        home,
        journeys,
        people,
        segments,
        settings,
        signin,
    )

    for module in (signin, home, events, people, settings, segments, analytics, boards,
                   campaign_wizard, campaigns, journeys):  # the wizard's /campaigns/new first
        app.include_router(module.router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
