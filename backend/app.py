"""The FastAPI application factory (one factory for both run modes)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI

from .api.errors import install_error_handlers
from .api.openapi import INTERNAL_ERROR, operation_id
from .api.routes import auth, health
from .db.migrate import upgrade_database
from .db.session import make_engine, make_sessionmaker
from .http_security import install_http_security
from .jobs import JobDispatcher
from .outage import install_outage_handlers
from .settings import Settings, get_settings
from .storage import Storage, clean_at_start

API_PREFIX = "/api/v1"


def _session_secret(settings: Settings) -> str:
    if settings.session_secret:
        return settings.session_secret
    path = Path(settings.data_dir) / "session_secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def api_router() -> APIRouter:
    """Every /api/v1 route."""
    from .api.routes import admin, assessments, models, reference_sets, scan_sets

    router = APIRouter(prefix=API_PREFIX)
    for module in (auth, models, scan_sets, reference_sets, assessments, admin):
        router.include_router(module.router, responses=INTERNAL_ERROR)
    return router


def create_app(settings: Settings | None = None, *, start_jobs: bool = True) -> FastAPI:
    """Build the app: database, storage, job dispatch and routes from ``settings``.

    Args:
        settings: configuration (default: from the environment).
        start_jobs: start the job machinery (in embedded mode: the worker thread and the
            recovery of jobs left queued or running).
    """
    from worker.engine.volume_bounds import set_volume_limits

    settings = settings or get_settings()
    set_volume_limits(settings.volume_limits)
    engine = make_engine(settings.sqlalchemy_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if start_jobs:
            app.state.jobs.start()
        try:
            yield
        finally:
            app.state.jobs.stop()
            engine.dispose()

    app = FastAPI(
        title="BrainMIA",
        version=_version(),
        summary="Membership-inference risk assessment of brain-age models",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    if settings.embedded:
        upgrade_database(settings.sqlalchemy_url)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.storage = Storage(settings.storage_dir)
    clean_at_start(app.state.storage, settings)

    app.state.jobs = JobDispatcher(settings, app.state.sessionmaker, app.state.storage,
                                   embedded_worker=_embedded_worker if settings.embedded else None)
    app.state.session_secret = _session_secret(settings)
    install_http_security(app, settings, app.state.session_secret)
    install_error_handlers(app)
    install_outage_handlers(app)
    app.include_router(health.router, responses=INTERNAL_ERROR)
    app.include_router(api_router())
    from .web import install_web

    install_web(app)
    return app


def _embedded_worker(celery: Any, concurrency: int) -> Any:
    """The embedded mode's worker thread (this factory is the composition root that picks it)."""
    from worker.embedded import EmbeddedWorker

    return EmbeddedWorker(celery, concurrency)


def _version() -> str:
    from worker.engine.version import package_version

    return package_version()
