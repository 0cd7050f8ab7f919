"""Browser sign-in: exchange an API token for a session cookie."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from ... import audit
from ...auth import authenticate
from ..deps import CurrentPrincipal, SessionDep
from ..errors import ERROR_RESPONSES, ApiError

router = APIRouter(prefix="/auth", tags=["auth"])


class SignIn(BaseModel):
    """A sign-in request."""

    token: str = Field(description="An API token", examples=["bmia_3q2...x9"])


class Me(BaseModel):
    """The signed-in identity."""

    name: str
    org_id: str
    is_admin: bool


@router.post("/sign-in", response_model=Me, responses={401: ERROR_RESPONSES[401]}, summary="Sign in with a token")
def sign_in(body: SignIn, request: Request, session: SessionDep) -> Me:
    """Check the token and set a signed session cookie for the browser."""
    principal = authenticate(session, body.token)
    if principal is None:
        raise ApiError(401, "unauthorized", "unknown or revoked token")
    request.session["token_id"] = principal.token_id
    audit.record(session, principal, "sign-in", "session")
    return Me(name=principal.name, org_id=principal.org_id, is_admin=principal.is_admin)


@router.post("/sign-out", status_code=204, summary="Sign out")
def sign_out(request: Request) -> None:
    """Clear the session cookie."""
    request.session.clear()


@router.get("/me", response_model=Me, responses={401: ERROR_RESPONSES[401]}, summary="Who am I")
def me(principal: CurrentPrincipal) -> Me:
    """The identity behind the token or session."""
    return Me(name=principal.name, org_id=principal.org_id, is_admin=principal.is_admin)
