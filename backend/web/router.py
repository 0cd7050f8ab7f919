"""Mounting the dashboard on the app: page routes, static assets and the page error handlers."""

from __future__ import annotations

from pathlib import Path

import frontend
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from . import admin_pages, assessment_pages, auth_pages, compare_pages, upload_pages
from .render import PageForbidden, PageNotFound, SignInRequired, render, sign_in_url

PLOTLY_JS = "/static/vendor/plotly.min.js"
STATIC_DIR = Path(frontend.__file__).parent / "static"  # the package alone: its modules load plotly


def _plotly_js_path() -> Path:
    from importlib.util import find_spec

    spec = find_spec("plotly")  # located, not imported: the API process does not load plotly
    assert spec is not None and spec.origin, "plotly is not installed"
    return Path(spec.origin).parent / "package_data" / "plotly.min.js"


def install_web(app: FastAPI) -> None:
    """Add the dashboard's pages, ``/static`` (with plotly.js from the plotly package) and handlers."""
    plotly_path = _plotly_js_path()

    @app.get(PLOTLY_JS, include_in_schema=False)
    def plotly_js() -> FileResponse:
        return FileResponse(plotly_path, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> RedirectResponse:
        return RedirectResponse("/static/favicon.svg", status_code=301)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for module in (auth_pages, assessment_pages, compare_pages, upload_pages, admin_pages):
        app.include_router(module.router, include_in_schema=False)

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        return RedirectResponse(sign_in_url(exc.next_url), status_code=303)

    @app.exception_handler(PageForbidden)
    async def _forbidden(request: Request, exc: PageForbidden) -> HTMLResponse:
        return render(request, "error.html.j2", None, status_code=403, title="Not allowed", message=str(exc))

    @app.exception_handler(PageNotFound)
    async def _not_found(request: Request, exc: PageNotFound) -> HTMLResponse:
        return render(request, "error.html.j2", None, status_code=404, title="Not found", message=str(exc))
