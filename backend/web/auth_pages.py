"""Sign-in and sign-out pages (an API token becomes a browser session)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from .. import audit, sessions
from ..api.deps import SessionDep
from ..auth import authenticate
from ..csrf import check_csrf
from .render import render

router = APIRouter()


def safe_next(value: str | None) -> str:
    """A local path to return to after signing in (never another site)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_page(request: Request, session: SessionDep, next: str | None = None) -> Response:
    """The sign-in form; a signed-in user goes straight on."""
    if sessions.cookie_principal(request, session) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "sign_in.html.j2", None, next=safe_next(next), error=None)


@router.post("/sign-in", response_class=HTMLResponse)
def sign_in_submit(
    request: Request, session: SessionDep, token: Annotated[str, Form(max_length=400)] = "", next: Annotated[str, Form(max_length=2000)] = "/",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Check the form's CSRF token (login CSRF) and the API token; on success set the session
    cookie and go on."""
    check_csrf(request, csrf_token)
    principal = authenticate(session, token.strip()) if token.strip() else None
    if principal is None:
        error = "Enter your API token." if not token.strip() else "That token is unknown or has been revoked."
        return render(request, "sign_in.html.j2", None, status_code=401, next=safe_next(next), error=error)
    sessions.sign_in(request, session, principal)
    audit.record(session, principal, "sign-in", "session")
    return RedirectResponse(safe_next(next), status_code=303)


@router.post("/sign-out")
def sign_out_submit(
    request: Request, session: SessionDep, csrf_token: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    """End the session (server-side) and return to the sign-in page."""
    if sessions.cookie_principal(request, session) is not None:
        check_csrf(request, csrf_token)
    sessions.sign_out(request, session)
    return RedirectResponse("/sign-in", status_code=303)
