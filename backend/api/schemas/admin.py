"""Administration bodies: API tokens and audit events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ...db.models import AuditEvent, as_utc
from ...fields import Text


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


def audit_event_out(row: AuditEvent) -> AuditEventOut:
    """The API view of an audit event row."""
    return AuditEventOut(
        id=row.id, at=as_utc(row.at), actor=row.actor, token_id=row.token_id, action=row.action,
        object_type=row.object_type, object_id=row.object_id, detail=row.detail or {},
    )
