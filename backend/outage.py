"""503 while the database is unreachable, on every endpoint (API and pages), like the broker's.

A request whose database work fails with a transient error (:func:`backend.db.retry.is_transient`:
the server restarting, a dropped connection, a pool timeout) answers 503 with the error code
``database_unavailable`` and ``Retry-After``, instead of a 500 ``internal_error``. Nothing of a
refused request is kept: its transaction is rolled back.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import exc as sa_exc

from .db.retry import DatabaseUnavailable, is_transient

logger = logging.getLogger(__name__)

CODE = "database_unavailable"
MESSAGE = "the database is unreachable; nothing was changed, try again shortly"
RETRY_AFTER_S = 5
HANDLED = (sa_exc.DBAPIError, sa_exc.DisconnectionError, sa_exc.TimeoutError, DatabaseUnavailable)


def _wants_page(request: Request) -> bool:
    path = request.url.path
    return not (path.startswith("/api/") or path in ("/ready", "/health", "/openapi.json")) and \
        "text/html" in request.headers.get("accept", "")


def install_outage_handlers(app: FastAPI) -> None:
    """Answer transient database errors with 503 ``database_unavailable`` (an HTML page for browsers)."""

    async def _database_error(request: Request, exc: Exception) -> Response:
        if not (isinstance(exc, DatabaseUnavailable) or is_transient(exc)):  # a real bug: the 500 it was
            logger.exception("database error", exc_info=exc)
            return JSONResponse({"error": {"code": "internal_error", "message": f"internal error: {type(exc).__name__}",
                                           "details": []}}, status_code=500)
        logger.warning("%s %s: database unreachable: %s", request.method, request.url.path,
                       str(exc).splitlines()[0][:200])
        headers = {"Retry-After": str(RETRY_AFTER_S)}
        if _wants_page(request):
            from .web.render import render

            page = render(request, "error.html.j2", None, status_code=503, title="Service unavailable", message=MESSAGE)
            page.headers.update(headers)
            return page
        return JSONResponse({"error": {"code": CODE, "message": MESSAGE, "details": []}}, status_code=503,
                            headers=headers)

    for kind in HANDLED:
        app.add_exception_handler(kind, _database_error)
