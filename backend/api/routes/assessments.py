"""Assessments: submit a job, follow it, cancel or delete it, and read its results."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from ... import audit
from ...auth import Principal
from ...db.models import Assessment, ModelRecord, ScanSet, as_utc
from ...jobs import JobDispatcher
from ...services.job_states import JobState as _JobState
from ...results import load_results
from ..deps import CurrentPrincipal, SessionDep, SettingsDep
from ..errors import ERROR_RESPONSES, ApiError, ErrorResponse, not_found
from ..pagination import Limit, Offset, equal_to, page
from ...fields import Id, Text, no_nul

router = APIRouter(tags=["assessments"])

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
assert set(JobState.__args__) == set(_JobState)  # type: ignore[attr-defined]


def get_jobs(request: Request) -> JobDispatcher:
    """The app's job dispatcher."""
    return request.app.state.jobs


JobsDep = Annotated[JobDispatcher, Depends(get_jobs)]



_409 = {"model": ErrorResponse, "description": "The assessment is not in a state that allows this"}
_503 = {"model": ErrorResponse, "description": "The job queue is unreachable"}
_503_PDF = {"model": ErrorResponse, "description": "No headless Chromium on the server to print the PDF"}


# -- schemas -----------------------------------------------------------------------------------


class PolicyOptions(BaseModel):
    """Verdict policy fields (omitted ones keep their defaults); see the README's Policy."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"auc_high": 0.65, "fail_at": "high"}]})

    name: Annotated[str, Field(max_length=200), AfterValidator(no_nul)] | None = None
    auc_medium: float | None = None
    auc_high: float | None = None
    tpr_at_1pct_fpr_medium: float | None = None
    tpr_at_1pct_fpr_high: float | None = None
    fail_at: Literal["low", "medium", "high"] | None = None
    fail_on_error: bool | None = None


class FederatedOptionsIn(BaseModel):
    """Options of a federated assessment (a model uploaded with ``kind=federated_rounds``)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"max_rounds": 40}]})

    max_rounds: int | None = Field(
        None, ge=2, le=10_000,
        description="Rounds whose features are computed, evenly spaced, the final one included (default 20).",
    )
    trajectory_sets: list[Annotated[Text, Field(max_length=100)]] | None = Field(
        None, max_length=16, description="Feature sets spanning the rounds (default: loss-trajectory, grad-norm-trajectory).",
        examples=[["loss-trajectory"]],
    )


class AssessmentOptionsIn(BaseModel):
    """What to run; omitted fields take the engine's defaults."""

    model_config = ConfigDict(extra="forbid")

    feature_sets: list[Annotated[Text, Field(max_length=500)]] | None = Field(
        None,
        max_length=64, description="Feature sets to attack with (default: every one of the paper's the model supports).",
        examples=[["error", "grad-norm", "grad:output"]],
    )
    classifiers: list[Annotated[Text, Field(max_length=64)]] | None = Field(
        None,
        max_length=16, description="Attack classifiers: threshold, logistic, mlp, gbt (default: threshold, logistic, mlp).",
        examples=[["threshold", "logistic"]],
    )
    repeats: int = Field(5, ge=1, le=50, description="Repeated attacker-training / test splits.")
    train_size: int | None = Field(None, ge=1, le=10**9, description="Members (= non-members) per attacker-training split.")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    device: str | None = Field(None, description="cpu, cuda, cuda:1... (default: the worker's; CUDA when present).")
    batch_size: int | None = Field(None, ge=1, le=1024, description="Scans per vectorised pass (default: the worker's).")
    policy: PolicyOptions | None = None
    federated: FederatedOptionsIn | None = Field(
        None, description="For a federation's rounds on a scan set with learners; ignored otherwise."
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"cpu|mps|cuda(:\d+)?", value):
            raise ValueError("must be cpu, cuda, cuda:<index> or mps")
        return value


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
    state: JobState
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
                    "state": "running",
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


# -- helpers -----------------------------------------------------------------------------------


def _results(row: Assessment) -> dict[str, str]:
    if row.state != "succeeded":
        return {}
    base = f"/api/v1/assessments/{row.id}"
    return {name: f"{base}/{name}" for name in ("report.json", "report.html", "features.csv")} | {
        "figures": f"{base}/figures"
    }


def _summary(row: Assessment) -> dict[str, Any]:
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


def _detail(row: Assessment) -> AssessmentDetail:
    return AssessmentDetail(
        **_summary(row),
        worker=row.worker,
        cancel_requested=row.cancel_requested,
        options=row.options or {},
        log=row.log or "",
        heartbeat_at=as_utc(row.heartbeat_at),
        results=_results(row),
    )


def _owned(session: SessionDep, principal: Principal, assessment_id: str) -> Assessment:
    if "\x00" in assessment_id or len(assessment_id) > 64:
        raise not_found("assessment", assessment_id.replace("\x00", "\\x00")[:64])
    row = session.get(Assessment, assessment_id)
    if row is None or row.org_id != principal.org_id:
        raise not_found("assessment", assessment_id)
    return row


def _field_error(field: str, reason: str) -> ApiError:
    return ApiError(422, "validation_error", "the request is not valid", [{"field": field, "reason": reason}])


def _check_options(options: AssessmentOptionsIn, scan_set: ScanSet) -> dict[str, Any]:
    """Engine-level checks of the options; the options as stored in the job row."""
    from worker.engine.attacks import get_attack, parse_feature_set
    from worker.engine.errors import InputError
    from worker.engine.verdict import Policy

    for name in options.classifiers or []:
        try:
            get_attack(name)
        except InputError as exc:
            raise _field_error("options.classifiers", str(exc)) from None
    for name in options.feature_sets or []:
        try:
            parse_feature_set(name)
        except InputError as exc:
            raise _field_error("options.feature_sets", str(exc)) from None
    if options.federated and options.federated.trajectory_sets:
        from worker.engine.federated import TRAJECTORY_SETS

        unknown = sorted(set(options.federated.trajectory_sets) - set(TRAJECTORY_SETS))
        if unknown:
            raise _field_error("options.federated.trajectory_sets",
                               f"unknown: {', '.join(unknown)}; available: {', '.join(sorted(TRAJECTORY_SETS))}")
    if options.train_size is not None:
        smaller = min(scan_set.n_members, scan_set.n_nonmembers)
        if options.train_size > smaller - 1:
            raise _field_error(
                "options.train_size",
                f"must be at most {smaller - 1}: the scan set's smaller group has {smaller} scans "
                "and at least one of each must remain for testing",
            )
    policy = options.policy.model_dump(exclude_none=True) if options.policy else {}
    try:
        Policy(**policy)
    except InputError as exc:
        match = re.search(r"field '([^']+)'", str(exc))
        raise _field_error(f"options.policy.{match.group(1)}" if match else "options.policy", str(exc)) from None
    stored = options.model_dump(exclude={"policy", "federated"})
    stored["policy"] = policy or None
    stored["federated"] = options.federated.model_dump(exclude_none=True) if options.federated else None
    return stored


def _result_file(row: Assessment, name: str) -> Path:
    if row.state != "succeeded" or not row.result_dir:
        message = f"assessment '{row.id}' is {row.state}; its results exist once it has succeeded"
        details = [{"field": "error", "reason": row.error}] if row.error else []
        raise ApiError(409, "not_ready", message, details)
    path = Path(row.result_dir) / name
    if not path.is_file():
        raise ApiError(404, "not_found", f"{name} of assessment '{row.id}' is missing from the storage")
    return path


# -- routes ------------------------------------------------------------------------------------


@router.post(
    "/assessments",
    status_code=201,
    response_model=AssessmentDetail,
    responses={**ERROR_RESPONSES, 503: _503},
    summary="Start an assessment",
)
def create_assessment(
    body: AssessmentCreate, response: Response, session: SessionDep, principal: CurrentPrincipal, jobs: JobsDep
) -> AssessmentDetail:
    """Queue an assessment of one of your models on one of your scan sets.

    Poll ``GET /assessments/{id}`` for its state and progress.
    """
    model = session.get(ModelRecord, body.model_id)
    if model is None or model.org_id != principal.org_id:
        raise not_found("model", body.model_id)
    scan_set = session.get(ScanSet, body.scan_set_id)
    if scan_set is None or scan_set.org_id != principal.org_id:
        raise not_found("scan set", body.scan_set_id)
    options = _check_options(body.options, scan_set)
    row = Assessment(
        org_id=principal.org_id,
        model_id=model.id,
        scan_set_id=scan_set.id,
        options=options,
        state="queued",
        stage="queued",
        message="waiting for a worker",
        created_by=principal.token_id,
    )
    session.add(row)
    session.flush()
    audit.record(session, principal, "run", "assessment", row.id, model_id=model.id, scan_set_id=scan_set.id)
    session.commit()  # the worker must see the row before the message
    try:
        jobs.enqueue(row.id)
    except Exception as exc:  # noqa: BLE001 - reported to the caller and kept in the row
        reason = f"could not reach the job queue: {type(exc).__name__}: {exc}"
        row.state, row.error, row.message = "failed", reason, reason
        session.commit()
        raise ApiError(503, "queue_unavailable", reason) from None
    response.headers["Location"] = f"/api/v1/assessments/{row.id}"
    return _detail(row)


@router.get(
    "/assessments",
    response_model=AssessmentPage,
    responses={401: ERROR_RESPONSES[401], 422: ERROR_RESPONSES[422]},
    summary="List assessments",
)
def list_assessments(
    session: SessionDep,
    principal: CurrentPrincipal,
    state: JobState | None = None,
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
    return AssessmentPage(
        items=[AssessmentSummary(**_summary(r)) for r in rows], total=total, limit=limit, offset=offset
    )


@router.get(
    "/assessments/{assessment_id}",
    response_model=AssessmentDetail,
    responses={401: ERROR_RESPONSES[401], 404: ERROR_RESPONSES[404]},
    summary="State and progress of an assessment",
)
def get_assessment(assessment_id: str, session: SessionDep, principal: CurrentPrincipal) -> AssessmentDetail:
    """State, progress (0-1), stage, message, timestamps, error, attempts, worker, verdict and log."""
    return _detail(_owned(session, principal, assessment_id))


@router.post(
    "/assessments/{assessment_id}/cancel",
    status_code=202,
    response_model=AssessmentDetail,
    responses={401: ERROR_RESPONSES[401], 404: ERROR_RESPONSES[404], 409: _409},
    summary="Cancel an assessment",
)
def cancel_assessment(
    assessment_id: str, session: SessionDep, principal: CurrentPrincipal, jobs: JobsDep
) -> AssessmentDetail:
    """A queued assessment is cancelled at once; a running one stops at its next batch or attack
    (``cancel_requested`` is true until its state becomes ``cancelled``)."""
    row = _owned(session, principal, assessment_id)
    if row.state in ("succeeded", "failed", "cancelled"):
        raise ApiError(409, "already_finished", f"assessment '{assessment_id}' is already {row.state}")
    session.commit()  # end this request's write (token last use) before the dispatcher writes
    jobs.cancel(assessment_id)
    audit.record(session, principal, "cancel", "assessment", assessment_id, state=row.state)
    session.refresh(row)
    return _detail(row)


@router.delete(
    "/assessments/{assessment_id}",
    status_code=204,
    responses={401: ERROR_RESPONSES[401], 404: ERROR_RESPONSES[404]},
    summary="Delete an assessment and its results",
)
def delete_assessment(
    assessment_id: str, session: SessionDep, principal: CurrentPrincipal, jobs: JobsDep
) -> Response:
    """Delete the job and its result files. A running job is cancelled first: its worker stops at
    its next batch or attack and leaves nothing behind."""
    row = _owned(session, principal, assessment_id)
    state = row.state
    session.expunge(row)
    session.commit()  # end this request's write (token last use) before the dispatcher writes
    jobs.delete(assessment_id)
    audit.record(session, principal, "delete", "assessment", assessment_id, state=state)
    return Response(status_code=204)


@router.get(
    "/assessments/{assessment_id}/report.json",
    response_class=FileResponse,
    responses={200: {"content": {"application/json": {}}}, **ERROR_RESPONSES, 409: _409},
    summary="The report (JSON)",
)
def report_json(assessment_id: str, session: SessionDep, principal: CurrentPrincipal) -> FileResponse:
    """report.json of a succeeded assessment (409 while it is not)."""
    row = _owned(session, principal, assessment_id)
    path = _result_file(row, "report.json")
    audit.record(session, principal, "export", "assessment", assessment_id, file="report.json")
    return FileResponse(path, media_type="application/json", filename=f"brainmia-{assessment_id}-report.json")


@router.get(
    "/assessments/{assessment_id}/report.html",
    response_class=FileResponse,
    responses={200: {"content": {"text/html": {}}}, **ERROR_RESPONSES, 409: _409},
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
    row = _owned(session, principal, assessment_id)
    path = _result_file(row, "report.html")
    audit.record(session, principal, "export" if download else "view", "assessment", assessment_id, file="report.html")
    return FileResponse(
        path,
        media_type="text/html",
        filename=f"brainmia-{assessment_id}-report.html",
        content_disposition_type="attachment" if download else "inline",
        # the report's scripts (Plotly) run in an opaque origin: no access to the API or its cookies
        headers={"Content-Security-Policy": "sandbox allow-scripts allow-popups", "X-Content-Type-Options": "nosniff"},
    )


@router.get(
    "/assessments/{assessment_id}/features.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}, **ERROR_RESPONSES, 409: _409},
    summary="The per-scan feature table (CSV)",
)
def features_csv(assessment_id: str, session: SessionDep, principal: CurrentPrincipal) -> StreamingResponse:
    """features.csv of a succeeded assessment (409 while it is not), headed by provenance
    comment lines (``# model_sha256: ...``): read it with ``pandas.read_csv(path, comment="#")``."""
    row = _owned(session, principal, assessment_id)
    path = _result_file(row, "features.csv")
    head = _csv_provenance(_result_file(row, "report.json"), assessment_id)
    audit.record(session, principal, "export", "assessment", assessment_id, file="features.csv")
    headers = {
        "Content-Disposition": f'attachment; filename="brainmia-{assessment_id}-features.csv"',
        "Content-Length": str(len(head) + path.stat().st_size),
    }
    return StreamingResponse(_stream(head, path), media_type="text/csv; charset=utf-8", headers=headers)


@router.get(
    "/assessments/{assessment_id}/report.pdf",
    response_class=FileResponse,
    responses={200: {"content": {"application/pdf": {}}}, **ERROR_RESPONSES, 409: _409, 503: _503_PDF},
    summary="The report (PDF)",
)
def report_pdf(
    assessment_id: str, session: SessionDep, principal: CurrentPrincipal, settings: SettingsDep
) -> FileResponse:
    """The report printed to PDF (A4) by headless Chromium, verdict on the first page.

    Printed from the stored report.html on the first request and kept beside it; 409 while the
    assessment has not succeeded, 503 when the server has no Chromium (``BRAINMIA_CHROMIUM``).
    """
    from frontend.pdf import ChromiumNotFound, PdfExportError

    row = _owned(session, principal, assessment_id)
    html = _result_file(row, "report.html")
    session.commit()  # end this request's write (token last use): printing takes seconds
    try:
        path = _printed_pdf(html, settings.chromium_path)
    except ChromiumNotFound as exc:
        raise ApiError(503, "pdf_unavailable", f"the PDF report cannot be made on this server: {exc}") from None
    except PdfExportError as exc:
        raise ApiError(500, "pdf_failed", f"the PDF report could not be made: {exc}") from None
    audit.record(session, principal, "export", "assessment", assessment_id, file="report.pdf")
    return FileResponse(path, media_type="application/pdf", filename=f"brainmia-{assessment_id}-report.pdf")


_PDF_LOCKS = tuple(threading.Lock() for _ in range(8))


def _printed_pdf(html: Path, chromium: str | None) -> Path:
    """``report.pdf`` beside ``html``, printed now unless an up-to-date one is there (one print
    at a time per report in this process; the file is renamed into place, so concurrent
    processes never see a partial PDF)."""
    from frontend.pdf import html_to_pdf

    pdf = html.with_name("report.pdf")
    with _PDF_LOCKS[hash(pdf) % len(_PDF_LOCKS)]:
        if not pdf.is_file() or pdf.stat().st_mtime_ns < html.stat().st_mtime_ns:
            html_to_pdf(html, pdf, chromium=chromium)
    return pdf


def _csv_provenance(report_path: Path, assessment_id: str) -> bytes:
    """The ``# key: value`` lines that head the downloaded features.csv, from report.json's
    provenance (each on one line: control characters become spaces, so no value starts a row)."""
    provenance = json.loads(report_path.read_text(encoding="utf-8")).get("provenance") or {}
    model, manifest = (provenance.get(k) if isinstance(provenance.get(k), dict) else {} for k in ("model", "manifest"))
    values = {
        "brainmia_version": provenance.get("package_version"),
        "assessment": assessment_id,
        "model_sha256": model.get("sha256"),
        "manifest_sha256": manifest.get("sha256"),
        "created_at": provenance.get("created_at"),
    }
    lines = (f"# {key}: {_one_line(value)}\n" for key, value in values.items())
    return "".join(lines).encode("utf-8")


def _one_line(value: Any) -> str:
    return re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", " ", "unknown" if value is None else str(value))


def _stream(head: bytes, path: Path, chunk: int = 1 << 20) -> Iterator[bytes]:
    yield head
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            yield block


@router.get(
    "/assessments/{assessment_id}/figures",
    response_model=list[FigureListing],
    responses={401: ERROR_RESPONSES[401], 404: ERROR_RESPONSES[404]},
    summary="The figures that can be drawn",
)
def list_figures(assessment_id: str, session: SessionDep, principal: CurrentPrincipal) -> list[FigureListing]:
    """Every registered figure: name, title, caption and options (query parameters)."""
    from frontend.figures import FIGURE_INFO, figure_options

    _owned(session, principal, assessment_id)
    return [
        FigureListing(
            name=name, title=info.title, caption=info.caption, needs_features=info.needs_features,
            options={k: v for k, v in figure_options(name).items() if _jsonable(v)},
        )
        for name, info in sorted(FIGURE_INFO.items())
    ]


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


@router.get(
    "/assessments/{assessment_id}/figures/{name}",
    responses={
        200: {"content": {"application/json": {}}, "description": "A Plotly figure (JSON)"},
        **ERROR_RESPONSES,
        409: _409,
    },
    summary="One figure (Plotly JSON)",
)
def figure(
    assessment_id: str, name: str, request: Request, session: SessionDep, principal: CurrentPrincipal
) -> Response:
    """A Plotly figure of a succeeded assessment; query parameters are the figure's options
    (e.g. ``?layer=head.output``). When the data for it is missing (e.g. a black-box
    assessment) the figure shows the reason and the ``X-Figure-Unavailable`` header gives it."""
    from frontend.figures import FIGURES, FigureUnavailable, build_figure

    row = _owned(session, principal, assessment_id)
    if name not in FIGURES:
        raise ApiError(404, "not_found", f"unknown figure '{name}'; available: {', '.join(sorted(FIGURES))}")
    report_path = _result_file(row, "report.json")
    report, features = load_results(report_path.parent)
    options = dict(request.query_params)
    reserved = sorted(set(options) & {"name", "report", "features", "on_unavailable"})
    if reserved:
        raise ApiError(422, "invalid_figure_option", f"not a figure option: {', '.join(reserved)}")
    headers = {}
    try:
        try:
            fig = build_figure(name, report, features, **options)
        except FigureUnavailable as exc:
            fig = build_figure(name, report, features, on_unavailable="placeholder", **options)
            headers["X-Figure-Unavailable"] = re.sub(r"[^\x20-\x7e]", " ", str(exc))[:300]
    except (TypeError, ValueError, KeyError) as exc:
        raise ApiError(422, "invalid_figure_option", str(exc)) from None
    audit.record(session, principal, "view", "assessment", assessment_id, figure=name)
    return Response(fig.to_json(), media_type="application/json", headers=headers)
