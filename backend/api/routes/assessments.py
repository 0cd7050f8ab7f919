"""Assessments: submit a job, follow it, cancel or delete it, and read its results."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from ...db.models import Assessment
from ...fields import Id
from ...services import assessments as service
from ...services import results
from ..deps import CurrentPrincipal, JobsDep, SessionDep, SettingsDep
from ..errors import ERROR_RESPONSES, ErrorResponse
from ..openapi import binary_response, text_response
from ..pagination import Limit, Offset, equal_to, page
from ..schemas import (
    AssessmentCreate,
    AssessmentDetail,
    AssessmentDryRun,
    AssessmentPage,
    FigureListing,
    JobStateName,
    Report,
    assessment_detail,
    assessment_summary,
    assessment_url,
)

router = APIRouter(tags=["assessments"])

_409 = {"model": ErrorResponse, "description": "The assessment is not in a state that allows this"}
_503 = {"model": ErrorResponse, "description": "The job queue is unreachable"}
_503_PDF = {"model": ErrorResponse, "description": "No headless Chromium on the server to print the PDF"}
_READ = {**ERROR_RESPONSES}
_DOWNLOAD = {**ERROR_RESPONSES, 409: _409}
_REPORT_CSP = {"Content-Security-Policy": "sandbox allow-scripts allow-popups", "X-Content-Type-Options": "nosniff"}


@router.post(
    "/assessments",
    status_code=201,
    response_model=AssessmentDetail | AssessmentDryRun,
    responses={**ERROR_RESPONSES, 200: {"model": AssessmentDryRun, "description": "Dry run: the power statement"},
               503: _503},
    summary="Start an assessment",
)
def create_assessment(
    body: AssessmentCreate, response: Response, session: SessionDep, principal: CurrentPrincipal, jobs: JobsDep,
    dry_run: Annotated[bool, Query(description="Check the request and state what the scan set can detect "
                                               "(80% power) without starting a job")] = False,
) -> AssessmentDetail | AssessmentDryRun:
    """Queue an assessment of one of your models on one of your scan sets.

    Poll ``GET /assessments/{id}`` for its state and progress. With ``dry_run=true`` nothing is
    queued: the answer (200) is the smallest AUC and TPR at 1% FPR the scan set detects at 80% power.
    """
    if dry_run:
        response.status_code = 200
        return AssessmentDryRun(**service.dry_run_assessment(
            session, principal, model_id=body.model_id, scan_set_id=body.scan_set_id, options=body.options))
    row = service.create_assessment(
        session, principal, jobs, model_id=body.model_id, scan_set_id=body.scan_set_id, options=body.options
    )
    response.headers["Location"] = assessment_url(row.id)
    return assessment_detail(row)


@router.get(
    "/assessments",
    response_model=AssessmentPage,
    responses={401: ERROR_RESPONSES[401], 422: ERROR_RESPONSES[422]},
    summary="List assessments",
)
def list_assessments(
    session: SessionDep,
    principal: CurrentPrincipal,
    state: JobStateName | None = None,
    model_id: Annotated[Id | None, Query()] = None,
    scan_set_id: Annotated[Id | None, Query()] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> AssessmentPage:
    """Your organisation's assessments, newest first, optionally filtered."""
    conditions = [Assessment.org_id == principal.org_id,
                  *equal_to(Assessment, state=state, model_id=model_id, scan_set_id=scan_set_id)]
    rows, total = page(
        session, Assessment, conditions, [Assessment.created_at.desc(), Assessment.id.desc()], limit, offset
    )
    return AssessmentPage(items=[assessment_summary(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get(
    "/assessments/{assessment_id}",
    response_model=AssessmentDetail,
    responses=_READ,
    summary="State and progress of an assessment",
)
def get_assessment(assessment_id: str, session: SessionDep, principal: CurrentPrincipal) -> AssessmentDetail:
    """State, progress (0-1), stage, message, timestamps, error, attempts, worker, verdict and log."""
    return assessment_detail(service.owned_assessment(session, principal, assessment_id))


@router.post(
    "/assessments/{assessment_id}/cancel",
    status_code=202,
    response_model=AssessmentDetail,
    responses={**_READ, 409: _409},
    summary="Cancel an assessment",
)
def cancel_assessment(
    assessment_id: str, session: SessionDep, principal: CurrentPrincipal, jobs: JobsDep
) -> AssessmentDetail:
    """A queued assessment is cancelled at once; a running one stops at its next batch or attack
    (``cancel_requested`` is true until its state becomes ``cancelled``)."""
    return assessment_detail(service.cancel_assessment(session, principal, jobs, assessment_id))


@router.delete(
    "/assessments/{assessment_id}",
    status_code=204,
    responses=_READ,
    summary="Delete an assessment and its results",
)
def delete_assessment(
    assessment_id: str, session: SessionDep, principal: CurrentPrincipal, jobs: JobsDep
) -> Response:
    """Delete the job and its result files. A running job is cancelled first: its worker stops at
    its next batch or attack and leaves nothing behind."""
    service.delete_assessment(session, principal, jobs, assessment_id)
    return Response(status_code=204)


@router.get(
    "/assessments/{assessment_id}/report.json",
    response_class=FileResponse,
    responses={200: {"model": Report, "description": "report.json (`schema_version` names its version)"},
               **_DOWNLOAD},
    summary="The report (JSON)",
)
def report_json(assessment_id: str, session: SessionDep, principal: CurrentPrincipal) -> FileResponse:
    """report.json of a succeeded assessment (409 while it is not)."""
    path = results.served_file(session, principal, assessment_id, "report.json")
    return FileResponse(path, media_type="application/json", filename=f"brainmia-{assessment_id}-report.json")


@router.get(
    "/assessments/{assessment_id}/report.html",
    response_class=FileResponse,
    responses={200: text_response("text/html", "The self-contained HTML report"), **_DOWNLOAD},
    summary="The report (self-contained HTML)",
)
def report_html(
    assessment_id: str,
    session: SessionDep,
    principal: CurrentPrincipal,
    download: Annotated[bool, Query(description="As an attachment (recorded as an export).")] = False,
) -> FileResponse:
    """The self-contained HTML report, shown inline (a view) or as a download (an export).

    It is served sandboxed (``Content-Security-Policy: sandbox allow-scripts``): its figures
    work, but its scripts cannot reach the API with the viewer's session.
    """
    path = results.served_file(session, principal, assessment_id, "report.html", "export" if download else "view")
    return FileResponse(
        path,
        media_type="text/html",
        filename=f"brainmia-{assessment_id}-report.html",
        content_disposition_type="attachment" if download else "inline",
        # the report's scripts (Plotly) run in an opaque origin: no access to the API or its cookies
        headers=dict(_REPORT_CSP),
    )


@router.get(
    "/assessments/{assessment_id}/features.csv",
    response_class=StreamingResponse,
    responses={200: text_response("text/csv", "One row per scan (UTF-8), after `#` provenance lines"),
               **_DOWNLOAD},
    summary="The per-scan feature table (CSV)",
)
def features_csv(assessment_id: str, session: SessionDep, principal: CurrentPrincipal) -> StreamingResponse:
    """features.csv of a succeeded assessment (409 while it is not), headed by provenance
    comment lines (``# model_sha256: ...``): read it with ``pandas.read_csv(path, comment="#")``."""
    chunks, size = results.features_download(session, principal, assessment_id)
    headers = {
        "Content-Disposition": f'attachment; filename="brainmia-{assessment_id}-features.csv"',
        "Content-Length": str(size),
    }
    return StreamingResponse(chunks, media_type="text/csv; charset=utf-8", headers=headers)


@router.get(
    "/assessments/{assessment_id}/report.pdf",
    response_class=FileResponse,
    responses={200: binary_response("application/pdf", "The report, A4"), **_DOWNLOAD, 503: _503_PDF},
    summary="The report (PDF)",
)
def report_pdf(
    assessment_id: str, session: SessionDep, principal: CurrentPrincipal, settings: SettingsDep
) -> FileResponse:
    """The report printed to PDF (A4) by headless Chromium, verdict on the first page.

    Printed from the stored report.html on the first request and kept beside it; 409 while the
    assessment has not succeeded, 503 when the server has no Chromium (``BRAINMIA_CHROMIUM``).
    """
    path = results.report_pdf(session, principal, assessment_id, settings.chromium_path)
    return FileResponse(path, media_type="application/pdf", filename=f"brainmia-{assessment_id}-report.pdf")


@router.get(
    "/assessments/{assessment_id}/figures",
    response_model=list[FigureListing],
    responses=_READ,
    summary="The figures that can be drawn",
)
def list_figures(assessment_id: str, session: SessionDep, principal: CurrentPrincipal) -> list[FigureListing]:
    """Every registered figure: name, title, caption and options (query parameters)."""
    return [FigureListing(**item) for item in results.figure_listing(session, principal, assessment_id)]


@router.get(
    "/assessments/{assessment_id}/figures/{name}",
    responses={
        200: {"content": {"application/json": {}}, "description": "A Plotly figure (JSON)"},
        **_DOWNLOAD,
    },
    summary="One figure (Plotly JSON)",
)
def figure(
    assessment_id: str, name: str, request: Request, session: SessionDep, principal: CurrentPrincipal
) -> Response:
    """A Plotly figure of a succeeded assessment; query parameters are the figure's options
    (e.g. ``?layer=head.output``). When the data for it is missing (e.g. a black-box
    assessment) the figure shows the reason and the ``X-Figure-Unavailable`` header gives it."""
    body, unavailable = results.figure_json(session, principal, assessment_id, name, request.query_params)
    headers = {"X-Figure-Unavailable": unavailable} if unavailable is not None else {}
    return Response(body, media_type="application/json", headers=headers)
