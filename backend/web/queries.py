"""Database reads shared by several pages (organisation-scoped)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from ..auth import Principal
from ..db.models import ApiToken, Assessment, ModelRecord, ScanSet, as_utc
from ..services.job_states import JobState, is_final

LEVELS = ("high", "medium", "inconclusive", "low")
"""Verdict levels, highest risk first (DESIGN.md, Verdict levels)."""

STATES = tuple(JobState)
"""Job states, for the overview's filter."""

#: Sort keys of the overview: label and ORDER BY clauses.
SORTS: dict[str, tuple[str, list[Any]]] = {
    "newest": ("Newest first", [Assessment.created_at.desc(), Assessment.id.desc()]),
    "oldest": ("Oldest first", [Assessment.created_at.asc(), Assessment.id.asc()]),
    "risk": (
        "Highest risk first",
        [case({level: i for i, level in enumerate(LEVELS)}, value=Assessment.verdict_level, else_=len(LEVELS)),
         Assessment.created_at.desc()],
    ),
    "state": ("By state", [Assessment.state.asc(), Assessment.created_at.desc()]),
    "model": ("By model name", [ModelRecord.name.asc(), Assessment.created_at.desc()]),
}


@dataclass(frozen=True)
class AssessmentRow:
    """An assessment as the pages list it."""

    id: str
    state: str
    progress: float
    stage: str
    message: str
    verdict_level: str | None
    passed: bool | None
    model_id: str
    model_name: str
    scan_set_id: str
    scan_set_name: str
    created_at: datetime | None
    finished_at: datetime | None
    created_by: str
    error: str | None
    options: dict[str, Any]
    result_dir: str | None

    @property
    def active(self) -> bool:
        """Still queued or running."""
        return not is_final(self.state)


def _row(a: Assessment, model_name: str, scan_set_name: str, created_by: str | None) -> AssessmentRow:
    return AssessmentRow(
        id=a.id, state=a.state, progress=float(a.progress or 0.0), stage=a.stage, message=a.message,
        verdict_level=a.verdict_level, passed=a.passed, model_id=a.model_id, model_name=model_name,
        scan_set_id=a.scan_set_id, scan_set_name=scan_set_name, created_at=as_utc(a.created_at),
        finished_at=as_utc(a.finished_at), created_by=created_by or "system", error=a.error,
        options=dict(a.options or {}), result_dir=a.result_dir,
    )


def _base(principal: Principal) -> Any:
    return (
        select(Assessment, ModelRecord.name, ScanSet.name, ApiToken.name)
        .join(ModelRecord, ModelRecord.id == Assessment.model_id)
        .join(ScanSet, ScanSet.id == Assessment.scan_set_id)
        .outerjoin(ApiToken, ApiToken.id == Assessment.created_by)
        .where(Assessment.org_id == principal.org_id)
    )


def list_assessments(
    session: Session,
    principal: Principal,
    *,
    state: str | None = None,
    level: str | None = None,
    text: str | None = None,
    sort: str = "newest",
    limit: int = 25,
    offset: int = 0,
) -> tuple[list[AssessmentRow], int]:
    """One page of the organisation's assessments, filtered and sorted, and the total."""
    query = _base(principal)
    if state in STATES:
        query = query.where(Assessment.state == state)
    if level in LEVELS:
        query = query.where(Assessment.verdict_level == level)
    if text:
        pattern = f"%{text.lower()}%"
        query = query.where(
            or_(func.lower(ModelRecord.name).like(pattern), func.lower(ScanSet.name).like(pattern),
                Assessment.id.like(pattern))
        )
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    order = SORTS.get(sort, SORTS["newest"])[1]
    rows = session.execute(query.order_by(*order).limit(limit).offset(offset)).all()
    return [_row(*r) for r in rows], int(total)


def get_assessment(session: Session, principal: Principal, assessment_id: str) -> AssessmentRow | None:
    """One assessment of the organisation, or None."""
    if len(assessment_id) > 64 or "\x00" in assessment_id:
        return None
    found = session.execute(_base(principal).where(Assessment.id == assessment_id)).first()
    return _row(*found) if found else None


def org_models(session: Session, principal: Principal) -> list[ModelRecord]:
    """The organisation's models, newest first."""
    return list(session.scalars(
        select(ModelRecord).where(ModelRecord.org_id == principal.org_id).order_by(ModelRecord.created_at.desc())
    ))


def has_any(session: Session, principal: Principal, table: type[ModelRecord] | type[ScanSet]) -> bool:
    """Whether the organisation has at least one row of ``table`` (models or scan sets)."""
    return session.scalar(select(table.id).where(table.org_id == principal.org_id).limit(1)) is not None


def org_scan_sets(session: Session, principal: Principal) -> list[ScanSet]:
    """The organisation's scan sets, newest first."""
    return list(session.scalars(
        select(ScanSet).where(ScanSet.org_id == principal.org_id).order_by(ScanSet.created_at.desc())
    ))


def succeeded_assessments(session: Session, principal: Principal, limit: int = 200) -> list[AssessmentRow]:
    """The organisation's finished reports (for the compare pickers), newest first."""
    rows = session.execute(
        _base(principal).where(Assessment.state == JobState.SUCCEEDED).order_by(Assessment.created_at.desc()).limit(limit)
    ).all()
    return [_row(*r) for r in rows]
