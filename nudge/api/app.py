"""The HTTP application: routes, error mapping, startup and graceful shutdown."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from nudge import (
    __version__,
    web,  # issue 9: dashboard
)
from nudge.config import Settings
from nudge.engage.service import start_engage
from nudge.ingest import reject_counts
from nudge.journeys.engine import start_journeys
from nudge.predict.schedule import RetrainSchedule
from nudge.privacy.admin import AdminSocket, Instance
from nudge.privacy.keys import Keyring, load_master_key
from nudge.store import control
from nudge.store.registry import StoreRegistry
from nudge.tenancy.accounts import AccountDirectory

from . import errors
from .authz import Auth
from .context import Nudge
from .cors import BrowserCORS
from .routes import (  # issue 5: campaigns, delivery, tracking
    analytics,
    analytics_paths,
    campaigns,
    channels,
    inbox,
    ingest,
    ops,
    profiles,
    sdk,
    segments,
    subscription_categories,  # issue 9: subscription categories
    tracking,
)
from .routes import auth as auth_routes
from .routes import gdpr as gdpr_routes
from .routes import journeys as journeys_routes  # issue 7: journeys
from .routes import predict as predict_routes  # issue 8: RFM, goals, training, scores
from .security import SecurityHeaders

log = logging.getLogger("nudge.api")


def create_app(settings: Settings) -> FastAPI:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = control.connect(settings.control_database_url)
    keyring = Keyring(engine, load_master_key(settings.master_key, settings.master_key_path))
    nudge = Nudge(settings, AccountDirectory(engine), StoreRegistry(settings, keyring), keyring)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for account in nudge.accounts.list():  # open stores up front: WAL replay, caches
            nudge.stores.get(account.id)
        # nudge backup / nudge gdpr from the CLI run in here (nudge/privacy/admin.py).
        admin = AdminSocket(Instance(settings, nudge.accounts, nudge.stores, keyring)).start()
        engage = await start_engage(app, nudge)  # issue 5: delivery workers, scheduler, bus
        journeys = await start_journeys(app, nudge)  # issue 7: journey engine
        retrain = RetrainSchedule(nudge).start()  # issue 8: goals' retraining timer
        nudge.ready = True
        log.info("nudge ready", extra={"accounts": len(nudge.accounts.list())})
        try:
            yield
        finally:
            nudge.ready = False
            await journeys.stop()
            await engage.stop()
            retrain.stop()
            admin.close()
            reject_counts.flush_all()  # issue 9: per-account ingest rejects (dashboard home)
            # Uvicorn has stopped taking requests and finished in-flight ones; close the
            # stores, which drains queued commits first.
            nudge.stores.close()
            engine.dispose()
            log.info("nudge stopped")

    app = FastAPI(title="Nudge", version=__version__, lifespan=lifespan)
    app.state.nudge = nudge
    app.state.auth = Auth.build(settings, engine, keyring, nudge.accounts.forget_cached_keys)
    errors.install(app)
    app.add_middleware(BrowserCORS, origins=settings.cors_origins)
    for module in (ingest, profiles, segments, analytics, analytics_paths, ops, sdk):
        app.include_router(module.router)
    for module in (channels, inbox):  # issue 5: provider configs, in-app inbox
        app.include_router(module.router)
    app.include_router(auth_routes.router)  # issue 6: sign-in, users, API keys, audit
    app.include_router(gdpr_routes.router)  # issue 6: GDPR access, erasure, suppression
    for module in (campaigns, tracking):  # issue 5: campaigns, delivery, tracking links
        app.include_router(module.router)
    app.include_router(predict_routes.router)  # issue 8: predictive segments
    app.include_router(journeys_routes.router)  # issue 7: journeys
    app.include_router(subscription_categories.router)  # issue 9: subscription categories
    web.install(app)  # issue 9: the dashboard (/ui pages, /ui/static)
    app.add_middleware(SecurityHeaders, tls=settings.tls)
    return app
