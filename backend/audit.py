"""The audit log: who uploaded, ran, viewed, exported and deleted what."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from .db.paging import equal_to
from .auth import Principal
from .db.models import AuditEvent

ACTIONS = ("upload", "run", "view", "export", "delete", "cancel", "sign-in", "create-token", "revoke-token")


def record(
    session: Session,
    principal: Principal | None,
    action: str,
    object_type: str,
    object_id: str | None = None,
    **detail: Any,
) -> None:
    """Add an audit event to ``session`` (committed with the caller's transaction)."""
    session.add(
        AuditEvent(
            org_id=principal.org_id if principal else None,
            token_id=principal.token_id if principal else None,
            actor=principal.name if principal else "system",
            action=action,
            object_type=object_type,
            object_id=object_id,
            detail=detail,
        )
    )


def conditions(
    org_id: str, action: str | None = None, object_type: str | None = None, object_id: str | None = None
) -> list[Any]:
    """WHERE clauses selecting an organisation's events, optionally of one action / object."""
    return [AuditEvent.org_id == org_id,
            *equal_to(AuditEvent, action=action, object_type=object_type, object_id=object_id)]
