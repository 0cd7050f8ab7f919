"""Typed FastAPI dependencies (the full-stack template's idiom)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from ..auth import Principal, authenticate
from ..csrf import check_unsafe_cookie_request
from ..db.session import session_scope
from ..jobs import JobDispatcher
from ..sessions import cookie_principal
from ..settings import Settings
from ..storage import Storage
from .errors import ApiError

bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer bmia_...`")


def get_settings_dep(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings


def get_db(request: Request) -> Iterator[Session]:
    """A database session per request, committed when the handler succeeds (before the response)."""
    with session_scope(request.app.state.sessionmaker) as session:
        yield session


def get_storage(request: Request) -> Storage:
    """The app's storage."""
    return request.app.state.storage


def get_jobs(request: Request) -> JobDispatcher:
    """The app's job dispatcher."""
    return request.app.state.jobs


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
# scope="function": the session commits when the handler returns, before the answer is sent, so a
# client that acts on the answer (a new cookie, a revoked token) never races the commit
SessionDep = Annotated[Session, Depends(get_db, scope="function")]
StorageDep = Annotated[Storage, Depends(get_storage)]
JobsDep = Annotated[JobDispatcher, Depends(get_jobs)]


def get_current_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The caller, from a Bearer token or a browser session cookie; 401 otherwise.

    A cookie-authenticated request that changes state must also pass the CSRF check (403).
    """
    if credentials is not None and credentials.scheme.lower() == "bearer":
        principal = authenticate(session, credentials.credentials)
    else:
        principal = cookie_principal(request, session)
        if principal is not None:
            check_unsafe_cookie_request(request)
    if principal is None:
        raise ApiError(401, "unauthorized", "a valid API token is required (Authorization: Bearer ...)")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_current_principal)]


def get_admin(principal: CurrentPrincipal) -> Principal:
    """The caller, who must be an administrator; 403 otherwise."""
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "administrator token required")
    return principal


AdminPrincipal = Annotated[Principal, Depends(get_admin)]
