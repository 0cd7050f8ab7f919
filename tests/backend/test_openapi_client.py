"""A client generated from the running app's OpenAPI document with openapi-python-client (as an
MLOps pipeline would make one) imports completely, was generated without a warning, and carries
a small assessment through a live server: upload a model and a scan archive, start the
assessment, poll it, fetch report.json, report.pdf and features.csv.

The server is an embedded BrainMIA (SQLite, worker thread) served by uvicorn on a free port.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.cli.live_server import serving
from tests.conftest import REPO, require

from .upload_fixtures import make_cohort, make_torchscript, tar_dir, tiny_metadata

pytestmark = pytest.mark.slow  # a live server, a generated client and a small assessment (about 25 s)

PACKAGE = "brainmia_api_client"
CONFIG = REPO / "docs" / "openapi-python-client.yaml"
OPTIONS = {"repeats": 2, "classifiers": ["threshold", "logistic"], "device": "cpu", "quantile": False}


@pytest.fixture(scope="module")
def live_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, str]]:
    """``(app, url, token)`` of an embedded BrainMIA served on a free port."""
    from backend.app import create_app
    from backend.auth import create_token
    from backend.db.session import session_scope
    from backend.settings import Settings

    root = tmp_path_factory.mktemp("client_server")
    app = create_app(Settings(data_dir=root / "data", cache_dir=root / "cache", session_secret="test", device="cpu"))
    with serving(app) as url:
        with session_scope(app.state.sessionmaker) as session:
            token = create_token(session, "pipeline", "acme")
        yield app, url, token


@pytest.fixture(scope="module")
def generated(live_app: tuple[Any, str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The generated package, importable; the generator's output is checked for warnings."""
    _, url, _ = live_app
    bin_dir = str(Path(sys.executable).parent)
    search = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    generator = shutil.which("openapi-python-client", path=search)
    require(generator is not None, "openapi-python-client is not installed (pip install -e '.[test]')")
    work = tmp_path_factory.mktemp("generated")
    spec = work / "openapi.json"
    spec.write_text(json.dumps(httpx.get(f"{url}/openapi.json", timeout=30).raise_for_status().json()))
    done = subprocess.run(
        [str(generator), "generate", "--path", str(spec), "--output-path", str(work / PACKAGE), "--meta", "none",
         "--config", str(CONFIG), "--fail-on-warning"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PATH": search}, cwd=work,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "warning" not in output.lower(), output
    sys.path.insert(0, str(work))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(work))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def test_every_generated_module_imports(generated: ModuleType) -> None:
    names = [m.name for m in pkgutil.walk_packages(generated.__path__, f"{PACKAGE}.")]
    failures = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - every module is tried, then all failures reported
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures)
    for operation in ("models.models_upload", "scan_sets.scan_sets_upload", "scan_sets.scan_sets_create_from_path",
                      "assessments.assessments_create", "assessments.assessments_get",
                      "assessments.assessments_report_json", "assessments.assessments_report_pdf",
                      "assessments.assessments_features_csv"):
        assert f"{PACKAGE}.api.{operation}" in names, operation
    assert len(names) > 60


def _api(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.api.{name}")


def test_a_small_assessment_through_the_generated_client(
    generated: ModuleType, live_app: tuple[Any, str, str], tmp_path: Path
) -> None:
    app, url, token = live_app
    chromium = app.state.settings.chromium_path
    require(chromium is not None, "no chromium (Debian: apt-get install chromium; scripts/setup.sh installs it)")
    models = importlib.import_module(f"{PACKAGE}.models")
    types = importlib.import_module(f"{PACKAGE}.types")
    client = generated.AuthenticatedClient(base_url=url, token=token, raise_on_unexpected_status=True,
                                           timeout=httpx.Timeout(120.0))
    model_file = make_torchscript(tmp_path / "tiny.pt")
    archive = tar_dir(make_cohort(tmp_path / "cohort", n_subjects=16), tmp_path / "cohort.tar.gz")

    with client as c:
        with open(model_file, "rb") as fh:
            model = _api("models.models_upload").sync(client=c, body=models.ModelsUploadBody(
                file=types.File(payload=fh, file_name="tiny.pt"), metadata=json.dumps(tiny_metadata()), name="tiny"))
        assert isinstance(model, models.ModelOut), model
        with open(archive, "rb") as fh:
            scans = _api("scan_sets.scan_sets_upload").sync(client=c, body=models.ScanSetsUploadBody(
                archive=types.File(payload=fh, file_name="cohort.tar.gz", mime_type="application/gzip")))
        assert isinstance(scans, models.ScanSetOut), scans
        assert scans.n_scans == 16 and scans.source == "archive"

        body = models.AssessmentCreate(model_id=model.id, scan_set_id=scans.id,
                                       options=models.AssessmentOptionsIn.from_dict(OPTIONS))
        job = _api("assessments.assessments_create").sync(client=c, body=body)
        assert isinstance(job, models.AssessmentDetail), job
        deadline = time.monotonic() + 240
        while job.state.value not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, f"still {job.state.value}"
            time.sleep(0.3)
            job = _api("assessments.assessments_get").sync(client=c, assessment_id=job.id)
        assert job.state.value == "succeeded", job.to_dict()

        report = _api("assessments.assessments_report_json").sync(client=c, assessment_id=job.id)
        assert isinstance(report, models.Report), report
        assert report.schema_version and report.verdict.level in ("low", "inconclusive", "medium", "high")
        assert report.provenance.to_dict()["manifest"]["n_scans"] == 16
        pdf = _api("assessments.assessments_report_pdf").sync(client=c, assessment_id=job.id)
        assert isinstance(pdf, types.File) and pdf.payload.read(5) == b"%PDF-"
        features = _api("assessments.assessments_features_csv").sync(client=c, assessment_id=job.id)
        assert isinstance(features, str)
        rows = [line for line in features.splitlines() if line and not line.startswith("#")]
        assert rows[0].split(",")[0] == "scan_id" and len(rows) == 1 + 16

        missing = _api("assessments.assessments_get").sync(client=c, assessment_id="0" * 32)
        assert isinstance(missing, models.ErrorResponse) and missing.error.code == "not_found"


def test_the_submit_client_registers_manifests_through_from_path(live_app: tuple[Any, str, str],
                                                                 tmp_path: Path) -> None:
    """``backend.client`` (``brainmia submit``) calls the new operation, not the deprecated JSON form."""
    from backend.client import BrainMIAClient

    app, url, token = live_app
    folder = make_cohort(tmp_path / "roots" / "ukb")
    settings = app.state.settings
    saved, settings.org_manifest_roots = settings.org_manifest_roots, {"acme": [tmp_path / "roots"]}
    seen: list[httpx.Response] = []
    try:
        with BrainMIAClient(url, token) as client:
            client._http.event_hooks["response"].append(seen.append)
            scans = client.register_manifest(str(folder / "manifest.csv"), name="on the server")
    finally:
        settings.org_manifest_roots = saved
    assert scans["source"] == "server" and scans["name"] == "on the server"
    assert [r.request.url.path for r in seen] == ["/api/v1/scan-sets/from-path"]
    assert "Deprecation" not in seen[0].headers
