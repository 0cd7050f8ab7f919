"""Exports with provenance: report.pdf (printed by the real headless Chromium) and the
features.csv download headed by provenance comment lines."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from backend.db.models import AuditEvent
from backend.db.session import session_scope
from tests.backend.job_fixtures import add_assessment, get_row, job_cohort, job_model_file, shared_job
from tests.conftest import require

__all__ = ["job_cohort", "job_model_file", "shared_job"]  # fixtures used here

API = "/api/v1/assessments"


def _exports(app, file: str) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    with session_scope(app.state.sessionmaker) as session:
        events = session.query(AuditEvent).filter(AuditEvent.action == "export").all()
        return [e for e in events if (e.detail or {}).get("file") == file]


def _copy_results(shared_job, tmp_path: Path, **report_changes) -> str:  # type: ignore[no-untyped-def]
    """A succeeded assessment of acme whose result folder is a copy of the shared job's (with
    ``report_changes`` applied to its provenance); returns its id."""
    source = Path(get_row(shared_job.app, shared_job.job["id"]).result_dir)
    folder = tmp_path / "results"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("report.pdf"))
    if report_changes:
        report = json.loads((folder / "report.json").read_text())
        report["provenance"].update(report_changes)
        (folder / "report.json").write_text(json.dumps(report))
    return add_assessment(
        shared_job.app, "acme", shared_job.inputs, state="succeeded", stage="done", progress=1.0, result_dir=str(folder)
    )


def test_report_pdf_has_the_verdict_first_and_is_cached(shared_job) -> None:  # type: ignore[no-untyped-def]
    chromium = shared_job.app.state.settings.chromium_path
    require(chromium is not None, "no chromium (Debian: apt-get install chromium; scripts/setup.sh installs it)")
    from pypdf import PdfReader

    client, job_id = shared_job.client, shared_job.job["id"]
    assert shared_job.job["state"] == "succeeded", shared_job.job["error"]
    response = client.get(f"{API}/{job_id}/report.pdf")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"].startswith("attachment")
    assert f"brainmia-{job_id}-report.pdf" in response.headers["content-disposition"]
    reader = PdfReader(io.BytesIO(response.content))
    first = reader.pages[0].extract_text()
    level = {"low": "Low risk", "inconclusive": "Inconclusive", "medium": "Medium risk", "high": "High risk"}[shared_job.job["verdict_level"]]
    assert "Verdict" in first and level in first, first[:500]
    report = client.get(f"{API}/{job_id}/report.json").json()
    text = "".join(page.extract_text() for page in reader.pages)
    assert report["provenance"]["model"]["sha256"] in text.replace("\n", "")

    cached = Path(get_row(shared_job.app, job_id).result_dir) / "report.pdf"
    assert cached.read_bytes() == response.content
    mtime = cached.stat().st_mtime_ns
    again = client.get(f"{API}/{job_id}/report.pdf")
    assert again.status_code == 200 and again.content == response.content
    assert cached.stat().st_mtime_ns == mtime  # served from the cache, not printed again
    assert not [p for p in cached.parent.iterdir() if p.name.endswith(".tmp")]
    assert len(_exports(shared_job.app, "report.pdf")) >= 2


def test_report_pdf_409_until_succeeded_and_404_for_others(shared_job) -> None:  # type: ignore[no-untyped-def]
    running = add_assessment(shared_job.app, "acme", shared_job.inputs, state="running", stage="features")
    response = shared_job.client.get(f"{API}/{running}/report.pdf")
    assert response.status_code == 409 and response.json()["error"]["code"] == "not_ready"
    assert shared_job.other.get(f"{API}/{shared_job.job['id']}/report.pdf").status_code == 404
    assert shared_job.anonymous.get(f"{API}/{shared_job.job['id']}/report.pdf").status_code == 401


def test_report_pdf_503_names_the_missing_chromium(shared_job, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    job_id = _copy_results(shared_job, tmp_path)
    settings = shared_job.app.state.settings
    saved = settings.chromium_path
    settings.chromium_path = str(tmp_path / "no-such-chromium")
    try:
        response = shared_job.client.get(f"{API}/{job_id}/report.pdf")
    finally:
        settings.chromium_path = saved
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "pdf_unavailable" and "no-such-chromium" in error["message"]
    assert not (tmp_path / "results" / "report.pdf").exists()


def test_features_csv_is_headed_by_provenance(shared_job) -> None:  # type: ignore[no-untyped-def]
    client, job_id = shared_job.client, shared_job.job["id"]
    stored = Path(get_row(shared_job.app, job_id).result_dir) / "features.csv"
    stored_bytes = stored.read_bytes()
    provenance = client.get(f"{API}/{job_id}/report.json").json()["provenance"]

    response = client.get(f"{API}/{job_id}/features.csv")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == f'attachment; filename="brainmia-{job_id}-features.csv"'
    assert int(response.headers["content-length"]) == len(response.content)
    head = response.text.splitlines()[:5]
    assert head == [
        f"# brainmia_version: {provenance['package_version']}",
        f"# assessment: {job_id}",
        f"# model_sha256: {provenance['model']['sha256']}",
        f"# manifest_sha256: {provenance['manifest']['sha256']}",
        f"# created_at: {provenance['created_at']}",
    ]
    assert response.content.endswith(stored_bytes)  # the stored table follows, byte for byte
    assert stored.read_bytes() == stored_bytes and not stored_bytes.startswith(b"#")
    table = pd.read_csv(io.StringIO(response.text), comment="#")
    pd.testing.assert_frame_equal(table, pd.read_csv(stored))
    assert len(_exports(shared_job.app, "features.csv")) >= 1


@pytest.mark.parametrize("created_at", ["2026-01-01\nsub-x,1,60,60,0", "a\rb\x00c\u2028d"])
def test_features_csv_provenance_cannot_add_rows(shared_job, tmp_path: Path, created_at: str) -> None:  # type: ignore[no-untyped-def]
    job_id = _copy_results(shared_job, tmp_path, created_at=created_at, model=None)
    response = shared_job.client.get(f"{API}/{job_id}/features.csv")
    assert response.status_code == 200, response.text
    lines = response.text.splitlines()
    assert lines[2] == "# model_sha256: unknown"
    assert lines[4].startswith("# created_at: ") and lines[5].startswith("scan_id,")
    table = pd.read_csv(io.StringIO(response.text), comment="#")
    assert len(table) == 16 and "sub-x" not in set(table["scan_id"])
