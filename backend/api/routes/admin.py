"""Administration: API tokens and the audit log (administrator tokens only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from ... import audit
from ...sessions import end_token_sessions
from ...auth import create_token, hash_token
from ...db.models import ApiToken, AuditEvent, Organisation, utcnow
from ...db.models import as_utc
from ..deps import AdminPrincipal, SessionDep
from ..errors import ERROR_RESPONSES, ApiError, ErrorResponse
from ..pagination import Offset, page
from ...fields import Id, Text

router = APIRouter(prefix="/admin", tags=["admin"])



_403 = {"model": ErrorResponse, "description": "Not an administrator token, or another organisation"}


class TokenCreate(BaseModel):
    """A new API token."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "ci-pipeline", "org": "acme", "is_admin": False}]}
    )

    name: Text = Field(min_length=1, max_length=200, description="Who or what uses it (shown in the audit log).")
    org: Text | None = Field(
        None, description="Organisation name; must be your own (default). New organisations are made with "
        "`brainmia admin create-token --org` on the server."
    )
    is_admin: bool = False


class TokenCreated(BaseModel):
    """A token, shown in clear this once only."""

    id: str
    name: str
    org: str
    is_admin: bool
    prefix: str
    token: str = Field(description="The token itself: store it now, it is not shown again.", examples=["bmia_3q2...x9"])
    created_at: datetime | None


class AuditEventOut(BaseModel):
    """One audit event."""

    id: int
    at: datetime | None
    actor: str
    token_id: str | None
    action: str
    object_type: str
    object_id: str | None
    detail: dict[str, Any]


class AuditPage(BaseModel):
    """A page of audit events, newest first."""

    items: list[AuditEventOut]
    total: int
    limit: int
    offset: int


@router.post(
    "/tokens",
    status_code=201,
    response_model=TokenCreated,
    responses={401: ERROR_RESPONSES[401], 403: _403, 422: ERROR_RESPONSES[422]},
    summary="Create an API token",
)
def create_api_token(body: TokenCreate, session: SessionDep, principal: AdminPrincipal) -> TokenCreated:
    """Create a token for your organisation; the response is the only time it is shown."""
    own = session.get(Organisation, principal.org_id)
    assert own is not None
    if body.org is not None and body.org != own.name:
        raise ApiError(
            403, "forbidden", f"administrators create tokens for their own organisation ('{own.name}'); "
            "use `brainmia admin create-token --org` on the server for another one",
        )
    token = create_token(session, body.name, own.name, admin=body.is_admin)
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    assert row is not None
    audit.record(session, principal, "create-token", "token", row.id, name=body.name, is_admin=body.is_admin)
    return TokenCreated(
        id=row.id, name=row.name, org=own.name, is_admin=row.is_admin, prefix=row.prefix, token=token,
        created_at=as_utc(row.created_at),
    )


@router.delete(
    "/tokens/{token_id}",
    status_code=204,
    responses={401: ERROR_RESPONSES[401], 403: _403, 404: ERROR_RESPONSES[404]},
    summary="Revoke an API token",
)
def revoke_api_token(
    token_id: Id, session: SessionDep, principal: AdminPrincipal
) -> None:
    """Revoke a token of your organisation: it stops working at once, and so do the browser
    sessions signed in with it."""
    row = session.get(ApiToken, token_id)
    if row is None or row.org_id != principal.org_id:
        raise ApiError(404, "not_found", f"token '{token_id}' not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    ended = end_token_sessions(session, row.id)
    audit.record(session, principal, "revoke-token", "token", row.id, name=row.name, sessions_ended=ended)


@router.get(
    "/audit",
    response_model=AuditPage,
    responses={401: ERROR_RESPONSES[401], 403: _403, 422: ERROR_RESPONSES[422]},
    summary="Read the audit log",
)
def audit_log(
    session: SessionDep,
    principal: AdminPrincipal,
    action: Annotated[Text | None, Query(max_length=32, description=f"One of: {', '.join(audit.ACTIONS)}")] = None,
    object_type: Annotated[Text | None, Query(max_length=32)] = None,
    object_id: Annotated[Text | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> AuditPage:
    """Your organisation's audit events (who uploaded, ran, viewed, exported, cancelled,
    deleted what), newest first."""
    where = audit.conditions(principal.org_id, action, object_type, object_id)
    rows, total = page(session, AuditEvent, where, [AuditEvent.id.desc()], limit, offset)
    items = [
        AuditEventOut(
            id=r.id, at=as_utc(r.at), actor=r.actor, token_id=r.token_id, action=r.action,
            object_type=r.object_type, object_id=r.object_id, detail=r.detail or {},
        )
        for r in rows
    ]
    return AuditPage(items=items, total=total, limit=limit, offset=offset)
