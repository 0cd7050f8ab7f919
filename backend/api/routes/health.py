"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from ..schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Liveness: the process answers")
def health() -> Health:
    """Always ``{"status": "ok"}`` while the process serves requests."""
    return Health()


@router.get(
    "/ready",
    response_model=Readiness,
    summary="Readiness: database and broker reachable",
    responses={503: {"model": Readiness, "description": "A dependency is unreachable"}},
)
def ready(request: Request) -> JSONResponse:
    """``200`` when the database and the broker answer, ``503`` otherwise."""
    state = request.app.state
    try:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        database = True
    except Exception:  # noqa: BLE001 - any failure means not ready
        database = False
    broker = bool(state.jobs.ping())
    body = Readiness(
        status="ready" if database and broker else "unavailable",
        database=database,
        broker=broker,
        mode="embedded" if state.settings.embedded else "distributed",
    )
    return JSONResponse(body.model_dump(), status_code=200 if database and broker else 503)
