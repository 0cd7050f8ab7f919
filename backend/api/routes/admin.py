"""Administration: API tokens and the audit log (administrator tokens only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from ... import audit
from ...sessions import end_token_sessions
from ...auth import create_token, hash_token
from ...db.models import ApiToken, AuditEvent, Organisation, as_utc, utcnow
from ...fields import Id, Text
from ..deps import AdminPrincipal, SessionDep
from ..errors import ERROR_RESPONSES, ApiError, ErrorResponse
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
    return AuditPage(items=[audit_event_out(r) for r in rows], total=total, limit=limit, offset=offset)
