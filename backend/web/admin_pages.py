"""The audit log page (administrators)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from .. import audit
from ..api.deps import SessionDep
from ..db.paging import page
from ..db.models import AuditEvent
from .render import PageAdmin, render

router = APIRouter()
PAGE_SIZE = 50
OBJECT_TYPES = ("assessment", "model", "scan_set", "session", "token")


@router.get("/admin/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    session: SessionDep,
    user: PageAdmin,
    action: Annotated[str | None, Query(max_length=32)] = None,
    object_type: Annotated[str | None, Query(max_length=32)] = None,
    object_id: Annotated[str | None, Query(max_length=64)] = None,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> HTMLResponse:
    """Who uploaded, ran, viewed, exported, cancelled or deleted what, newest first."""
    action = action if action in audit.ACTIONS else None
    object_type = object_type if object_type in OBJECT_TYPES else None
    object_id = (object_id or "").replace("\x00", "").strip() or None
    where = audit.conditions(user.org_id, action, object_type, object_id)
    rows, total = page(session, AuditEvent, where, [AuditEvent.id.desc()], PAGE_SIZE, offset)
    return render(
        request, "audit.html.j2", user, active="audit", events=rows, total=total, offset=offset,
        page_size=PAGE_SIZE, actions=audit.ACTIONS, object_types=OBJECT_TYPES,
        filters={"action": action or "", "object_type": object_type or "", "object_id": object_id or ""},
    )
