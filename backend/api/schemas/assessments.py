"""Assessment request and response bodies, and the views of a job row."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ...db.models import Assessment, as_utc
from ...fields import Id
from ...services.job_states import JobState
from ...services.options import AssessmentOptionsIn

JobStateName = Literal[tuple(state.value for state in JobState)]  # type: ignore[valid-type]
"""A job state as the API spells it (the values of :class:`JobState`)."""

RESULT_FILES = ("report.json", "report.html", "features.csv")
"""Result files of a succeeded assessment linked from its detail."""


class AssessmentCreate(BaseModel):
    """A new assessment of a model on a scan set."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_id": "6f1c0e0d2b4a4a5f9d7c3e1b2a4f6d8e",
                    "scan_set_id": "0a9b8c7d6e5f40312233445566778899",
                    "options": {"repeats": 5, "classifiers": ["threshold", "logistic"], "policy": {"fail_at": "high"}},
                }
            ]
        }
    )

    model_id: Id
    scan_set_id: Id
    options: AssessmentOptionsIn = Field(default_factory=AssessmentOptionsIn)


class AssessmentSummary(BaseModel):
    """An assessment job as listed."""

    id: str
    state: JobStateName
    progress: float = Field(description="0 to 1")
    stage: str
    message: str
    model_id: str
    scan_set_id: str
    verdict_level: str | None
    passed: bool | None
    error: str | None
    attempts: int
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


class AssessmentDetail(AssessmentSummary):
    """An assessment job with its options, worker and log."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "3f2a9c4e5b6d47e8a9b0c1d2e3f40516",
                    "state": JobState.RUNNING.value,
                    "progress": 0.42,
                    "stage": "features",
                    "message": "features 56/128 scans",
                    "model_id": "6f1c0e0d2b4a4a5f9d7c3e1b2a4f6d8e",
                    "scan_set_id": "0a9b8c7d6e5f40312233445566778899",
                    "verdict_level": None,
                    "passed": None,
                    "error": None,
                    "attempts": 1,
                    "worker": "gpu-node-1:4242",
                    "cancel_requested": False,
                    "options": {"repeats": 5},
                    "log": "2026-01-05 10:00:01Z attempt 1 started on worker gpu-node-1:4242\n",
                    "created_at": "2026-01-05T10:00:00Z",
                    "started_at": "2026-01-05T10:00:01Z",
                    "finished_at": None,
                    "heartbeat_at": "2026-01-05T10:03:12Z",
                    "results": {},
                }
            ]
        }
    )

    worker: str | None
    cancel_requested: bool
    options: dict[str, Any]
    log: str
    heartbeat_at: datetime | None
    results: dict[str, str] = Field(description="Result name -> URL (once succeeded).")


class AssessmentPage(BaseModel):
    """A page of assessments, newest first."""

    items: list[AssessmentSummary]
    total: int
    limit: int
    offset: int


class FigureListing(BaseModel):
    """A figure that ``/figures/{name}`` can draw."""

    name: str
    title: str
    caption: str
    needs_features: bool
    options: dict[str, Any]


def assessment_url(assessment_id: str) -> str:
    """The API path of one assessment."""
    return f"/api/v1/assessments/{assessment_id}"


def result_links(row: Assessment) -> dict[str, str]:
    """Result name -> API path, for a succeeded assessment (empty otherwise)."""
    if row.state != JobState.SUCCEEDED:
        return {}
    base = assessment_url(row.id)
    return {name: f"{base}/{name}" for name in RESULT_FILES} | {"figures": f"{base}/figures"}


def _summary_fields(row: Assessment) -> dict[str, Any]:
    return dict(
        id=row.id,
        state=row.state,
        progress=row.progress,
        stage=row.stage,
        message=row.message,
        model_id=row.model_id,
        scan_set_id=row.scan_set_id,
        verdict_level=row.verdict_level,
        passed=row.passed,
        error=row.error,
        attempts=row.attempts,
        created_at=as_utc(row.created_at),
        started_at=as_utc(row.started_at),
        finished_at=as_utc(row.finished_at),
    )


def assessment_summary(row: Assessment) -> AssessmentSummary:
    """The API view of a job row in a list."""
    return AssessmentSummary(**_summary_fields(row))


def assessment_detail(row: Assessment) -> AssessmentDetail:
    """The API view of one job row, with its options, worker, log and result links."""
    return AssessmentDetail(
        **_summary_fields(row),
        worker=row.worker,
        cancel_requested=row.cancel_requested,
        options=row.options or {},
        log=row.log or "",
        heartbeat_at=as_utc(row.heartbeat_at),
        results=result_links(row),
    )
