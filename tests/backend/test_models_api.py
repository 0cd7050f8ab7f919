"""/api/v1/models: streamed upload checked by the safe loader, list, get, delete, isolation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from backend.db.models import AuditEvent, ModelRecord, ScanSet
from backend.services.job_states import new_job
from backend.db.session import session_scope
from backend.settings import Settings

from .upload_fixtures import make_code_pickle, make_safetensors, make_torchscript, make_wrong_output, tiny_metadata

API = "/api/v1/models"


@pytest.fixture()
def app(settings: Settings):  # type: ignore[no-untyped-def]
    """The app without the job machinery (these routes queue nothing): faster set-up and tear-down."""
    from backend.app import create_app

    application = create_app(settings, start_jobs=False)
    with TestClient(application):
        yield application


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The model files, made once."""
    d = tmp_path_factory.mktemp("model_files")
    return {
        "torchscript": make_torchscript(d / "tiny.pt"),
        "safetensors": make_safetensors(d / "tiny.safetensors"),
        "wrong": make_wrong_output(d / "wrong.pt"),
    }


def upload(client: TestClient, path: Path, metadata: dict[str, Any] | str | None = None, **fields: str):
    data = dict(fields)
    if metadata is not None:
        data["metadata"] = metadata if isinstance(metadata, str) else json.dumps(metadata)
    with open(path, "rb") as fh:
        return client.post(API, files={"file": (path.name, fh, "application/octet-stream")}, data=data)


def stored_nothing(app) -> bool:  # type: ignore[no-untyped-def]
    storage = app.state.storage
    with session_scope(app.state.sessionmaker) as session:
        rows = session.scalar(select(func.count()).select_from(ModelRecord))
    return rows == 0 and not any((storage.root / "models").iterdir()) and not any((storage.root / "tmp").iterdir())


def assert_error(response, status: int, code: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and isinstance(body["error"]["details"], list)
    return body["error"]


def test_upload_torchscript_and_get_it_back(app, client: TestClient, files: dict[str, Path]) -> None:
    r = upload(client, files["torchscript"], tiny_metadata())
    assert r.status_code == 201, r.text
    model = r.json()
    assert model["format"] == "torchscript" and model["name"] == "tiny.pt"
    assert model["size_bytes"] == files["torchscript"].stat().st_size
    import hashlib

    assert model["sha256"] == hashlib.sha256(files["torchscript"].read_bytes()).hexdigest()
    assert model["metadata"]["input_shape"] == [23, 27, 23] and model["metadata"]["voxel_size"] == [8.0, 8.0, 8.0]
    assert set(model) == {"id", "name", "kind", "n_rounds", "sha256", "format", "size_bytes", "metadata", "created_at"}

    got = client.get(f"{API}/{model['id']}")
    assert got.status_code == 200 and got.json() == model

    # stored where a worker finds it: the file and its sidecar, loadable as stored
    from worker.engine.models import load_model

    with session_scope(app.state.sessionmaker) as session:
        row = session.get(ModelRecord, model["id"])
        assert row is not None and row.created_by is not None
        path = app.state.storage.root / row.path
        actions = session.scalars(select(AuditEvent.action).where(AuditEvent.object_id == model["id"])).all()
    assert path.is_file() and path.with_name(path.name + ".json").is_file()
    assert load_model(path).metadata.input_shape == (23, 27, 23)
    assert sorted(actions) == ["upload", "view"]
    assert not any((app.state.storage.root / "tmp").iterdir())


def test_upload_safetensors_with_arch_and_a_name(client: TestClient, files: dict[str, Path]) -> None:
    r = upload(client, files["safetensors"], tiny_metadata(), name="UKB 3D-CNN v2")
    assert r.status_code == 201, r.text
    assert r.json()["format"] == "safetensors" and r.json()["name"] == "UKB 3D-CNN v2"

    no_arch = {k: v for k, v in tiny_metadata().items() if k not in ("arch", "arch_kwargs")}
    err = assert_error(upload(client, files["safetensors"], no_arch), 422, "invalid_model")
    assert "architecture" in err["message"]


@pytest.mark.parametrize("torch_zip", [True, False], ids=["torch.save", "raw-pickle"])
def test_pickle_that_runs_code_is_refused_and_nothing_kept(
    app, client: TestClient, tmp_path: Path, torch_zip: bool
) -> None:
    marker = tmp_path / "pwned"
    evil = make_code_pickle(tmp_path / "weights.pt", marker, torch_zip=torch_zip)
    err = assert_error(upload(client, evil, tiny_metadata()), 422, "invalid_model")
    assert "refused" in err["message"] and "weights.pt" in err["message"]
    assert str(app.state.storage.root) not in err["message"]  # no server path leaks
    assert not marker.exists()
    assert stored_nothing(app)


def test_wrong_output_and_garbage_are_refused(app, client: TestClient, files: dict[str, Path], tmp_path: Path) -> None:
    err = assert_error(upload(client, files["wrong"], tiny_metadata()), 422, "invalid_model")
    assert "one age per scan" in err["message"]
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model at all" * 10)
    assert_error(upload(client, junk, tiny_metadata()), 422, "invalid_model")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert_error(upload(client, empty, tiny_metadata()), 422, "invalid_model")
    # the tiny model on the default 91x109x91 grid works too, but a wrong grid for its weights fails
    bad_grid = tiny_metadata() | {"input_shape": [4, 4, 4]}
    assert_error(upload(client, files["torchscript"], bad_grid), 422, "invalid_model")
    assert stored_nothing(app)


def test_bad_metadata_and_missing_file(app, client: TestClient, files: dict[str, Path]) -> None:
    err = assert_error(upload(client, files["torchscript"], "{not json"), 422, "invalid_metadata")
    assert err["details"][0]["field"] == "metadata"
    err = assert_error(
        upload(client, files["torchscript"], {"input_shape": [1, 2], "colour": "red"}), 422, "invalid_metadata"
    )
    fields = {d["field"] for d in err["details"]}
    assert "metadata.colour" in fields and any(f.startswith("metadata.input_shape") for f in fields)
    err = assert_error(client.post(API, data={"metadata": "{}"}, files={"other": ("x", b"x")}), 422, "validation_error")
    assert err["details"][0]["field"] == "file"
    assert_error(client.post(API, json={"file": "x"}), 415, "unsupported_media_type")
    assert stored_nothing(app)


@pytest.fixture()
def small_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", session_secret="s", max_model_bytes=4096)


def test_too_large_upload_is_413_and_nothing_kept(small_settings: Settings, files: dict[str, Path]) -> None:
    from backend.app import create_app
    from backend.auth import create_token

    app = create_app(small_settings, start_jobs=False)
    with session_scope(app.state.sessionmaker) as session:
        token = create_token(session, "alice", "acme")
    client = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    assert files["torchscript"].stat().st_size > 4096
    err = assert_error(upload(client, files["torchscript"], tiny_metadata()), 413, "too_large")
    assert "4096" in err["message"]
    # also when the client sends no Content-Length (chunked): cut off while streaming
    payload = files["torchscript"].read_bytes()

    def chunks():  # type: ignore[no-untyped-def]
        boundary = b"XyZ"
        yield b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="m.pt"\r\n\r\n'
        for i in range(0, len(payload), 1000):
            yield payload[i : i + 1000]
        yield b"\r\n--" + boundary + b"--\r\n"

    r = client.post(API, content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert_error(r, 413, "too_large")
    assert stored_nothing(app)


def test_truncated_multipart_body_is_422(app, client: TestClient) -> None:
    body = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="m.pt"\r\n\r\nabcdef'
    r = client.post(API, content=body, headers={"Content-Type": "multipart/form-data; boundary=XyZ"})
    assert_error(r, 422, "invalid_upload")
    assert stored_nothing(app)


def test_list_paginates_newest_first_and_delete(app, client: TestClient, files: dict[str, Path]) -> None:
    ids = [upload(client, files["torchscript"], tiny_metadata(), name=f"m{i}").json()["id"] for i in range(3)]
    page = client.get(API, params={"limit": 2}).json()
    assert page["total"] == 3 and page["limit"] == 2 and page["offset"] == 0
    assert [m["id"] for m in page["items"]] == ids[::-1][:2]
    assert [m["id"] for m in client.get(API, params={"limit": 2, "offset": 2}).json()["items"]] == ids[:1]
    assert_error(client.get(API, params={"limit": 0}), 422, "validation_error")

    folder = app.state.storage.model_dir(ids[0])
    assert folder.is_dir()
    assert client.delete(f"{API}/{ids[0]}").status_code == 204
    assert not folder.exists()
    assert_error(client.get(f"{API}/{ids[0]}"), 404, "not_found")
    assert_error(client.delete(f"{API}/{ids[0]}"), 404, "not_found")
    assert client.get(API).json()["total"] == 2
    with session_scope(app.state.sessionmaker) as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "delete")) == 1


def test_delete_refused_while_an_assessment_uses_it(app, client: TestClient, files: dict[str, Path]) -> None:
    model_id = upload(client, files["torchscript"], tiny_metadata()).json()["id"]
    with session_scope(app.state.sessionmaker) as session:
        org_id = session.get(ModelRecord, model_id).org_id  # type: ignore[union-attr]
        scan_set = ScanSet(
            org_id=org_id,
            name="s",
            source="server",
            root="/x",
            manifest_path="/x/m.csv",
            manifest_sha256="0" * 64,
            n_scans=0,
            n_members=0,
            n_nonmembers=0,
        )
        session.add(scan_set)
        session.flush()
        session.add(new_job(org_id=org_id, model_id=model_id, scan_set_id=scan_set.id, options={}))
    assert_error(client.delete(f"{API}/{model_id}"), 409, "in_use")
    assert app.state.storage.model_dir(model_id).is_dir()
    assert client.get(f"{API}/{model_id}").status_code == 200


def test_other_organisation_sees_nothing(
    client: TestClient, other_org_client: TestClient, files: dict[str, Path]
) -> None:
    model_id = upload(client, files["torchscript"], tiny_metadata()).json()["id"]
    assert other_org_client.get(API).json() == {"items": [], "total": 0, "limit": 50, "offset": 0}
    assert_error(other_org_client.get(f"{API}/{model_id}"), 404, "not_found")
    assert_error(other_org_client.delete(f"{API}/{model_id}"), 404, "not_found")
    assert client.get(f"{API}/{model_id}").status_code == 200


def test_every_endpoint_needs_a_token(anonymous_client: TestClient, files: dict[str, Path]) -> None:
    assert_error(upload(anonymous_client, files["torchscript"], tiny_metadata()), 401, "unauthorized")
    assert_error(anonymous_client.get(API), 401, "unauthorized")
    assert_error(anonymous_client.get(f"{API}/abc"), 401, "unauthorized")
    assert_error(anonymous_client.delete(f"{API}/abc"), 401, "unauthorized")


def test_openapi_documents_the_upload(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    post = spec["paths"][API]["post"]
    assert "file" in post["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"201", "413", "422"} <= set(post["responses"])
