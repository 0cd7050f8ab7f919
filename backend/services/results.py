"""A succeeded assessment's results: its files, the report read back (cached by modification
time), the printed PDF, the features.csv download with provenance, and its figures.

Every export or view is recorded in the audit log as it is served.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from .. import audit
from ..auth import Principal
from ..db.models import Assessment
from .assessments import owned_assessment
from .errors import ApiError
from .job_states import JobState

FIGURE_RESERVED = frozenset({"name", "report", "features", "on_unavailable"})
"""Query parameters that are not figure options (the figure builder's own arguments)."""


# -- reading results ----------------------------------------------------------------------------


def _stamp(folder: Path) -> int:
    report = folder / "report.json"
    return report.stat().st_mtime_ns if report.is_file() else 0


@lru_cache(maxsize=8)
def _load(result_dir: str, mtime_ns: int) -> tuple[dict[str, Any], Any]:
    import pandas as pd

    from worker.engine.csv_safety import restore_frame

    folder = Path(result_dir)
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    features = pd.read_csv(folder / "features.csv") if (folder / "features.csv").is_file() else None
    return report, (restore_frame(features) if features is not None else None)


def load_results(result_dir: str | Path) -> tuple[dict[str, Any], Any]:
    """report.json as a dict and features.csv as a DataFrame (None when absent), its cells as
    they were before the CSV's formula guard (:func:`worker.engine.csv_safety.restore_frame`).

    Raises:
        FileNotFoundError: the folder has no report.json.
    """
    folder = Path(result_dir)
    stamp = _stamp(folder)
    if not stamp:
        raise FileNotFoundError(folder / "report.json")
    return _load(str(folder), stamp)


@lru_cache(maxsize=8)
def _context(result_dir: str, mtime_ns: int) -> dict[str, Any]:
    from frontend.report_html import build_context

    report, features = _load(result_dir, mtime_ns)
    return build_context(report, features)


def report_context(result_dir: str | Path) -> dict[str, Any]:
    """The report template's context (figures built once per result folder and reused)."""
    folder = Path(result_dir)
    stamp = _stamp(folder)
    if not stamp:
        raise FileNotFoundError(folder / "report.json")
    return _context(str(folder), stamp)


def result_file(row: Assessment, name: str) -> Path:
    """One result file of a job.

    Raises:
        ApiError: 409 ``not_ready`` while the job has not succeeded (with its error, if any);
            404 the file is missing from the storage.
    """
    if row.state != JobState.SUCCEEDED or not row.result_dir:
        message = f"assessment '{row.id}' is {row.state}; its results exist once it has succeeded"
        details = [{"field": "error", "reason": row.error}] if row.error else []
        raise ApiError(409, "not_ready", message, details)
    path = Path(row.result_dir) / name
    if not path.is_file():
        raise ApiError(404, "not_found", f"{name} of assessment '{row.id}' is missing from the storage")
    return path


def served_file(session: Session, principal: Principal, assessment_id: str, name: str, action: str = "export") -> Path:
    """A result file of the caller's assessment, its serving recorded (``export`` or ``view``)."""
    path = result_file(owned_assessment(session, principal, assessment_id), name)
    audit.record(session, principal, action, "assessment", assessment_id, file=name)
    return path


# -- the PDF ------------------------------------------------------------------------------------

_PDF_LOCKS = tuple(threading.Lock() for _ in range(8))


def printed_pdf(html: Path, chromium: str | None) -> Path:
    """``report.pdf`` beside ``html``, printed now unless an up-to-date one is there (one print
    at a time per report in this process; the file is renamed into place, so concurrent
    processes never see a partial PDF)."""
    from frontend.pdf import html_to_pdf

    pdf = html.with_name("report.pdf")
    with _PDF_LOCKS[hash(pdf) % len(_PDF_LOCKS)]:
        if not pdf.is_file() or pdf.stat().st_mtime_ns < html.stat().st_mtime_ns:
            html_to_pdf(html, pdf, chromium=chromium)
    return pdf


def report_pdf(session: Session, principal: Principal, assessment_id: str, chromium: str | None) -> Path:
    """The caller's report printed to PDF (kept beside report.html), its export recorded.

    Raises:
        ApiError: 409 / 404 as :func:`result_file`; 503 ``pdf_unavailable`` no Chromium on the
            server; 500 ``pdf_failed`` the print failed.
    """
    from frontend.pdf import ChromiumNotFound, PdfExportError

    html = result_file(owned_assessment(session, principal, assessment_id), "report.html")
    session.commit()  # end this request's write (token last use): printing takes seconds
    try:
        path = printed_pdf(html, chromium)
    except ChromiumNotFound as exc:
        raise ApiError(503, "pdf_unavailable", f"the PDF report cannot be made on this server: {exc}") from None
    except PdfExportError as exc:
        raise ApiError(500, "pdf_failed", f"the PDF report could not be made: {exc}") from None
    audit.record(session, principal, "export", "assessment", assessment_id, file="report.pdf")
    return path


# -- features.csv -------------------------------------------------------------------------------


def csv_provenance(report_path: Path, assessment_id: str) -> bytes:
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


def features_download(session: Session, principal: Principal, assessment_id: str) -> tuple[Iterator[bytes], int]:
    """The caller's features.csv headed by provenance comment lines, its export recorded.

    Returns:
        the bytes, streamed, and how many there are.

    Raises:
        ApiError: 409 / 404 as :func:`result_file`.
    """
    row = owned_assessment(session, principal, assessment_id)
    path = result_file(row, "features.csv")
    head = csv_provenance(result_file(row, "report.json"), assessment_id)
    audit.record(session, principal, "export", "assessment", assessment_id, file="features.csv")
    return _stream(head, path), len(head) + path.stat().st_size


# -- figures ------------------------------------------------------------------------------------


def figure_listing(session: Session, principal: Principal, assessment_id: str) -> list[dict[str, Any]]:
    """Every registered figure (name, title, caption, needs_features and its JSON-able options),
    for one of the caller's assessments (404 otherwise)."""
    from frontend.figures import FIGURE_INFO, figure_options

    owned_assessment(session, principal, assessment_id)
    return [
        dict(name=name, title=info.title, caption=info.caption, needs_features=info.needs_features,
             options={k: v for k, v in figure_options(name).items() if _jsonable(v)})
        for name, info in sorted(FIGURE_INFO.items())
    ]


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def figure_json(
    session: Session, principal: Principal, assessment_id: str, name: str, options: Mapping[str, str]
) -> tuple[str, str | None]:
    """One Plotly figure of the caller's succeeded assessment, its view recorded.

    Args:
        session: the request's session.
        principal: the caller.
        assessment_id: the assessment.
        name: the figure.
        options: the figure's options (the query parameters).

    Returns:
        the figure as JSON, and why its data is missing when it is a placeholder (printable
        ASCII, at most 300 characters) or None.

    Raises:
        ApiError: 404 unknown figure; 409 / 404 as :func:`result_file`; 422
            ``invalid_figure_option`` a reserved or invalid option.
    """
    from frontend.figures import FIGURES, FigureUnavailable, build_figure

    row = owned_assessment(session, principal, assessment_id)
    if name not in FIGURES:
        raise ApiError(404, "not_found", f"unknown figure '{name}'; available: {', '.join(sorted(FIGURES))}")
    report, features = load_results(result_file(row, "report.json").parent)
    options = dict(options)
    reserved = sorted(set(options) & FIGURE_RESERVED)
    if reserved:
        raise ApiError(422, "invalid_figure_option", f"not a figure option: {', '.join(reserved)}")
    unavailable = None
    try:
        try:
            fig = build_figure(name, report, features, **options)
        except FigureUnavailable as exc:
            fig = build_figure(name, report, features, on_unavailable="placeholder", **options)
            unavailable = re.sub(r"[^\x20-\x7e]", " ", str(exc))[:300]
    except (TypeError, ValueError, KeyError) as exc:
        raise ApiError(422, "invalid_figure_option", str(exc)) from None
    audit.record(session, principal, "view", "assessment", assessment_id, figure=name)
    return fig.to_json(), unavailable
