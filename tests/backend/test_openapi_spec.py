"""The OpenAPI document as generators read it: operation ids, one request content type per
operation, typed downloads, the one error body on every error answer; and the scan-set routes
split by content type (``POST /scan-sets`` archives, ``POST /scan-sets/from-path`` manifests;
JSON on ``/scan-sets`` still taken, deprecated)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from backend.auth import create_token
from backend.db.session import session_scope
from backend.settings import Settings

from .upload_fixtures import copy_cohort, make_cohort, tar_dir

API = "/api/v1"
ERROR_REF = "#/components/schemas/ErrorResponse"


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "allowed").mkdir()
    return Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", session_secret="test-secret",
                    org_manifest_roots={"acme": [tmp_path / "allowed"]})


@pytest.fixture()
def app(settings: Settings):  # type: ignore[no-untyped-def]
    application = create_app(settings, start_jobs=False)
    with TestClient(application):
        yield application


@pytest.fixture()
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with session_scope(app.state.sessionmaker) as session:
        token = create_token(session, "alice", "acme")
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


@pytest.fixture()
def spec(app) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return app.openapi()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cohort(tmp_path_factory.mktemp("cohort") / "cohort")


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, items in spec["paths"].items():
        for method, op in items.items():
            yield method.upper(), path, op


def test_operation_ids_are_tag_and_name_in_kebab_case(spec: dict[str, Any]) -> None:
    ids = {(method, path): op["operationId"] for method, path, op in operations(spec)}
    assert len(set(ids.values())) == len(ids), "operation ids must be unique"
    for (method, path), op_id in ids.items():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)+", op_id), (method, path, op_id)
        assert "v1" not in op_id.split("-"), (method, path, op_id)  # no URL in the name (FastAPI's default)
    for (method, path), op in {(m, p): o for m, p, o in operations(spec)}.items():
        tag = op["tags"][0].replace(" ", "-")
        assert op["operationId"].startswith(f"{tag}-"), (method, path)
    assert ids["POST", f"{API}/models"] == "models-upload"
    assert ids["GET", f"{API}/models/{{model_id}}"] == "models-get"
    assert ids["GET", f"{API}/assessments/{{assessment_id}}/report.json"] == "assessments-report-json"
    assert ids["POST", f"{API}/scan-sets"] == "scan-sets-upload"
    assert ids["POST", f"{API}/scan-sets/from-path"] == "scan-sets-create-from-path"
    assert ids["POST", f"{API}/admin/tokens"] == "admin-create-api-token"
    assert ids["GET", "/health"] == "health-health"


def test_one_request_content_type_per_operation(spec: dict[str, Any]) -> None:
    bodies = {}
    for method, path, op in operations(spec):
        if "requestBody" in op:
            content = op["requestBody"]["content"]
            assert len(content) == 1, f"{method} {path}: {sorted(content)}"
            bodies[method, path] = next(iter(content))
    assert bodies["POST", f"{API}/scan-sets"] == "multipart/form-data"
    assert bodies["POST", f"{API}/scan-sets/from-path"] == "application/json"
    assert bodies["POST", f"{API}/models"] == "multipart/form-data"


def test_every_error_answer_has_the_one_error_body(spec: dict[str, Any]) -> None:
    for method, path, op in operations(spec):
        errors = {code: r for code, r in op["responses"].items() if code[0] in "45"}
        assert "500" in errors, f"{method} {path}"
        if path.startswith(API) and op.get("security"):
            assert "401" in errors, f"{method} {path}"
        for code, response in errors.items():
            if (method, path, code) == ("GET", "/ready", "503"):
                continue  # readiness answers its own body (which dependency is down) with 503
            schemas = [media.get("schema") for media in response.get("content", {}).values()]
            assert schemas == [{"$ref": ERROR_REF}], f"{method} {path} {code}: {schemas}"
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_downloads_are_typed_by_media_type(spec: dict[str, Any]) -> None:
    base = f"{API}/assessments/{{assessment_id}}"

    def ok(name: str) -> dict[str, Any]:
        return spec["paths"][f"{base}/{name}"]["get"]["responses"]["200"]["content"]

    assert ok("report.pdf") == {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}
    assert ok("features.csv") == {"text/csv": {"schema": {"type": "string"}}}
    assert ok("report.html") == {"text/html": {"schema": {"type": "string"}}}
    assert ok("report.json") == {"application/json": {"schema": {"$ref": "#/components/schemas/Report"}}}
    assert {"schema_version", "verdict", "attacks"} <= set(spec["components"]["schemas"]["Report"]["properties"])


def test_from_path_registers_a_server_manifest(client: TestClient, settings: Settings, cohort: Path,
                                               tmp_path: Path) -> None:
    folder = copy_cohort(cohort, settings.org_manifest_roots["acme"][0] / "ukb")
    r = client.post(f"{API}/scan-sets/from-path", json={"manifest_path": str(folder / "manifest.csv"), "name": "u"})
    assert r.status_code == 201, r.text
    assert r.json()["source"] == "server" and r.json()["n_scans"] == 12 and r.json()["name"] == "u"
    assert "Deprecation" not in r.headers
    outside = copy_cohort(cohort, tmp_path / "elsewhere")
    r = client.post(f"{API}/scan-sets/from-path", json={"manifest_path": str(outside / "manifest.csv")})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.post(f"{API}/scan-sets/from-path", json={"name": "x"})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "manifest_path"
    r = client.post(f"{API}/scan-sets/from-path", json={"manifest_path": "ukb/manifest.csv"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    archive = tar_dir(cohort, tmp_path / "c.tar.gz")
    r = client.post(f"{API}/scan-sets/from-path", files={"archive": ("c.tar.gz", archive.read_bytes())})
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"


def test_json_on_the_upload_route_still_works_and_says_it_is_deprecated(
    client: TestClient, settings: Settings, cohort: Path, tmp_path: Path
) -> None:
    folder = copy_cohort(cohort, settings.org_manifest_roots["acme"][0] / "old")
    r = client.post(f"{API}/scan-sets", json={"manifest_path": str(folder / "manifest.csv")})
    assert r.status_code == 201, r.text
    assert r.json()["source"] == "server"
    assert r.headers["Deprecation"].startswith("@")
    assert r.headers["Link"] == '</api/v1/scan-sets/from-path>; rel="successor-version"'
    archive = tar_dir(cohort, tmp_path / "c.tar.gz")
    r = client.post(f"{API}/scan-sets", files={"archive": ("c.tar.gz", archive.read_bytes())})
    assert r.status_code == 201, r.text
    assert r.json()["source"] == "archive" and "Deprecation" not in r.headers
    r = client.post(f"{API}/scan-sets", content=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "/scan-sets/from-path" in r.json()["error"]["message"]

