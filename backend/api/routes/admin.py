"""Administration: API tokens and the audit log (administrator tokens only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ... import audit
from ...db.models import AuditEvent, as_utc
from ...fields import Id, Text
from ...services.tokens import create_org_token, revoke_org_token
from ..deps import AdminPrincipal, SessionDep
from ..errors import ERROR_RESPONSES, ErrorResponse
from ..pagination import Offset, page
from ..schemas import AuditPage, TokenCreate, TokenCreated, audit_event_out

router = APIRouter(prefix="/admin", tags=["admin"])

_403 = {"model": ErrorResponse, "description": "Not an administrator token, or another organisation"}


@router.post(
    "/tokens",
    status_code=201,
    response_model=TokenCreated,
    responses={401: ERROR_RESPONSES[401], 403: _403, 422: ERROR_RESPONSES[422]},
    summary="Create an API token",
)
def create_api_token(body: TokenCreate, session: SessionDep, principal: AdminPrincipal) -> TokenCreated:
    """Create a token for your organisation; the response is the only time it is shown."""
    row, token, org = create_org_token(session, principal, body.name, org=body.org, is_admin=body.is_admin)
    return TokenCreated(
        id=row.id, name=row.name, org=org, is_admin=row.is_admin, prefix=row.prefix, token=token,
        created_at=as_utc(row.created_at),
    )


@router.delete(
    "/tokens/{token_id}",
    status_code=204,
    responses={**ERROR_RESPONSES, 403: _403},
    summary="Revoke an API token",
)
def revoke_api_token(
    token_id: Id, session: SessionDep, principal: AdminPrincipal
) -> None:
    """Revoke a token of your organisation: it stops working at once, and so do the browser
    sessions signed in with it."""
    revoke_org_token(session, principal, token_id)


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
    return AuditPage(items=[audit_event_out(r) for r in rows], total=total, limit=limit, offset=offset)
