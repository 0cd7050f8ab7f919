"""Browser sign-in: exchange an API token for a session cookie."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ... import audit, sessions
from ...auth import Principal, authenticate
from ...csrf import CSRF_HEADER, check_csrf, check_origin, csrf_token, refused
from ..deps import CurrentPrincipal, SessionDep
from ..errors import ERROR_RESPONSES, ApiError, ErrorResponse
from ..schemas import Me, SignIn

router = APIRouter(prefix="/auth", tags=["auth"])

_403 = {"model": ErrorResponse, "description": "Cross-site request, or missing / wrong CSRF token"}


def _me(request: Request, principal: Principal, with_csrf: bool) -> Me:
    return Me(name=principal.name, org_id=principal.org_id, is_admin=principal.is_admin,
              csrf_token=csrf_token(request) if with_csrf else None)


def same_site_json(request: Request) -> None:
    """A sign-in must be JSON from this server's origin: another site's form can send neither
    (login CSRF); checked before the body is read."""
    check_origin(request)
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise refused("sign-in takes an application/json body")


@router.post("/sign-in", response_model=Me, responses={401: ERROR_RESPONSES[401], 403: _403, 422: ERROR_RESPONSES[422]},
             dependencies=[Depends(same_site_json)], summary="Sign in with a token")
def sign_in(body: SignIn, request: Request, session: SessionDep) -> Me:
    """Check the token and set a signed session cookie for the browser (JSON, same origin only)."""
    principal = authenticate(session, body.token)
    if principal is None:
        raise ApiError(401, "unauthorized", "unknown or revoked token")
    sessions.sign_in(request, session, principal)
    audit.record(session, principal, "sign-in", "session")
    return _me(request, principal, True)


@router.post("/sign-out", status_code=204, responses={403: _403}, summary="Sign out")
def sign_out(request: Request, session: SessionDep) -> None:
    """End the browser's session (server-side: a copy of the cookie stops working too)."""
    if sessions.cookie_principal(request, session) is not None:
        check_csrf(request, request.headers.get(CSRF_HEADER))
    sessions.sign_out(request, session)


@router.get("/me", response_model=Me, responses={401: ERROR_RESPONSES[401]}, summary="Who am I")
def me(request: Request, principal: CurrentPrincipal) -> Me:
    """The identity behind the token or session (with the session's CSRF token)."""
    return _me(request, principal, not request.headers.get("authorization", "").lower().startswith("bearer "))
