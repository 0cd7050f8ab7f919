"""API tokens of an organisation: created and revoked by its administrators (with audit events)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import audit
from ..auth import Principal, create_token, hash_token
from ..db.models import ApiToken, Organisation, utcnow
from ..sessions import end_token_sessions
from .errors import ApiError


def create_org_token(session: Session, principal: Principal, name: str, *, org: str | None,
                     is_admin: bool) -> tuple[ApiToken, str, str]:
    """A new token for the administrator's own organisation.

    Returns:
        the token's row, the token itself (shown once) and the organisation's name.

    Raises:
        ApiError: 403 when ``org`` names another organisation.
    """
    own = session.get(Organisation, principal.org_id)
    assert own is not None
    if org is not None and org != own.name:
        raise ApiError(
            403, "forbidden", f"administrators create tokens for their own organisation ('{own.name}'); "
            "use `brainmia admin create-token --org` on the server for another one",
        )
    token = create_token(session, name, own.name, admin=is_admin)
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    assert row is not None
    audit.record(session, principal, "create-token", "token", row.id, name=name, is_admin=is_admin)
    return row, token, own.name


def revoke_org_token(session: Session, principal: Principal, token_id: str) -> None:
    """Revoke a token of the administrator's organisation and end the browser sessions signed in with it.

    Raises:
        ApiError: 404 when there is no such token in the organisation.
    """
    row = session.get(ApiToken, token_id)
    if row is None or row.org_id != principal.org_id:
        raise ApiError(404, "not_found", f"token '{token_id}' not found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    ended = end_token_sessions(session, row.id)
    audit.record(session, principal, "revoke-token", "token", row.id, name=row.name, sessions_ended=ended)
