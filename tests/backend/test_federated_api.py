"""Federated assessments through the API: round archives as models, federated jobs, figures, migration."""

from __future__ import annotations

import json
import shutil
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select

from backend.db.models import ModelRecord
from backend.db.session import session_scope
from tests.conftest import TINY_SHAPE, TINY_VOXEL

from .job_fixtures import add_scan_set, job_cohort, wait_for  # noqa: F401 (fixture)
from .upload_fixtures import make_code_pickle, make_torchscript, tiny_metadata

API = "/api/v1/models"
OPTIONS: dict[str, Any] = {"repeats": 2, "classifiers": ["logistic"], "device": "cpu"}


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """3 non-IID learners x 6 scans, 12 short FedAvg rounds of a narrow model on the 8 mm grid."""
    from worker.engine.federated import FederatedDemoOptions, prepare_federated_demo

    options = FederatedDemoOptions(scans_per_learner=6, shape=TINY_SHAPE, voxel_size=TINY_VOXEL,
                                   channels=(4, 8, 8), seed=2)
    return prepare_federated_demo(tmp_path_factory.mktemp("fed_api"), learners=3, rounds=12, options=options)


def zip_rounds(folder: Path, archive: Path, prefix: str = "", skip_sidecars: bool = False) -> Path:
    """Zip a folder of round models (with their sidecars unless skipped)."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.iterdir()):
            if not (skip_sidecars and path.suffix == ".json"):
                zf.write(path, prefix + path.name)
    return archive


def upload_rounds(client: TestClient, archive: Path, metadata: dict | None = None, kind: str | None = "federated_rounds"):
    data = {} if kind is None else {"kind": kind}
    if metadata is not None:
        data["metadata"] = json.dumps(metadata)
    with open(archive, "rb") as fh:
        return client.post(API, files={"file": (archive.name, fh, "application/zip")}, data=data)


def stored_nothing(app) -> bool:  # type: ignore[no-untyped-def]
    storage = app.state.storage
    with session_scope(app.state.sessionmaker) as session:
        rows = session.scalar(select(func.count()).select_from(ModelRecord))
    return rows == 0 and not any((storage.root / "models").iterdir()) and not any((storage.root / "tmp").iterdir())


def error(response, status: int, code: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code, body
    return body


# ------------------------------------------------------------------ a federated assessment, end to end


def test_federated_assessment_through_the_api(app, client: TestClient, federation, tmp_path: Path) -> None:
    folder = federation.model_paths[0].parent
    response = upload_rounds(client, zip_rounds(folder, tmp_path / "rounds.zip", prefix="federation/"))
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["kind"] == "federated_rounds" and model["n_rounds"] == 12 and model["format"] == "torchscript"
    assert model["metadata"]["input_shape"] == list(TINY_SHAPE)
    stored = sorted(p.name for p in app.state.storage.model_dir(model["id"]).iterdir())
    assert stored == sorted([f"round_{r:03d}.pt" for r in range(1, 13)] + [f"round_{r:03d}.pt.json" for r in range(1, 13)])
    assert client.get(f"{API}/{model['id']}").json()["n_rounds"] == 12

    scan_set = add_scan_set(app, "acme", federation.manifest.path)
    federated = {"max_rounds": 6, "trajectory_sets": ["loss-trajectory"]}
    bad = client.post("/api/v1/assessments", json={"model_id": model["id"], "scan_set_id": scan_set, "options": {
        **OPTIONS, "federated": {"trajectory_sets": ["no-such-set"]}}})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "options.federated.trajectory_sets"
    body = client.post("/api/v1/assessments", json={"model_id": model["id"], "scan_set_id": scan_set,
                                                    "options": {**OPTIONS, "federated": federated}}).json()
    job = wait_for(client, body["id"], ("succeeded", "failed"), timeout=300)
    assert job["state"] == "succeeded", job
    report = client.get(f"/api/v1/assessments/{job['id']}/report.json").json()
    section = report["federated"]
    acc = np.array(section["matrix"]["accuracy"], dtype=float)
    assert acc.shape == (3, 3) and np.isnan(np.diag(acc)).all() and not np.isnan(acc[~np.eye(3, dtype=bool)]).any()
    assert section["rounds"] == 12 and section["learners"] == ["learner-1", "learner-2", "learner-3"]
    assert section["settings"]["repeats"] == 2 and section["settings"]["classifiers"] == ["logistic"]
    assert section["settings"]["max_rounds"] == 6 and section["settings"]["trajectory_sets"] == ["loss-trajectory"]
    assert {a["feature_set"] for a in report["attacks"] if a["scope"] == "trajectory"} == {"loss-trajectory"}
    assert [r["round"] for r in report["provenance"]["model"]["rounds"]] == list(range(1, 13))
    assert {a["scope"] for a in report["attacks"]} == {"final", "trajectory"}

    base = f"/api/v1/assessments/{job['id']}/figures"
    for name, query in (("federated_matrix", ""), ("federated_matrix", "?metric=auc"), ("federated_rounds", ""),
                        ("federated_learners", "")):
        response = client.get(f"{base}/{name}{query}")
        assert response.status_code == 200, response.text
        assert "x-figure-unavailable" not in response.headers, (name, response.headers)
        assert response.json()["data"], name
    heat = client.get(f"{base}/federated_matrix").json()["data"][0]
    assert heat["type"] == "heatmap" and all(heat["z"][i][i] is None for i in range(3))
    assert client.get(f"{base}/federated_matrix?metric=bogus").status_code == 422
    names = {f["name"] for f in client.get(base).json()}
    assert {"federated_matrix", "federated_rounds", "federated_learners"} <= names
    assert client.get(f"/api/v1/assessments/{job['id']}/report.html").status_code == 200


def test_rounds_on_a_plain_scan_set_assess_the_final_round(app, client: TestClient, federation, tmp_path: Path,
                                                           job_cohort: Path) -> None:
    folder = federation.model_paths[0].parent
    model = upload_rounds(client, zip_rounds(folder, tmp_path / "rounds.zip")).json()
    scan_set = add_scan_set(app, "acme", job_cohort)  # members and non-members, no learner column
    federated = {"max_rounds": 6, "trajectory_sets": ["loss-trajectory"]}
    bad = client.post("/api/v1/assessments", json={"model_id": model["id"], "scan_set_id": scan_set, "options": {
        **OPTIONS, "federated": {"trajectory_sets": ["no-such-set"]}}})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "options.federated.trajectory_sets"
    body = client.post("/api/v1/assessments", json={"model_id": model["id"], "scan_set_id": scan_set,
                                                    "options": {**OPTIONS, "federated": federated}}).json()
    job = wait_for(client, body["id"], ("succeeded", "failed"), timeout=300)
    assert job["state"] == "succeeded", job
    assert "assessing the final round (12)" in job["log"]
    report = client.get(f"/api/v1/assessments/{job['id']}/report.json").json()
    assert "federated" not in report and report["provenance"]["model"]["path"].endswith("round_012.pt")
    response = client.get(f"/api/v1/assessments/{job['id']}/figures/federated_matrix")
    assert response.status_code == 200 and "not a federated assessment" in response.headers["x-figure-unavailable"]


def test_train_size_fails_a_federated_job_with_the_reason(app, client: TestClient, federation, tmp_path: Path) -> None:
    folder = federation.model_paths[0].parent
    model = upload_rounds(client, zip_rounds(folder, tmp_path / "rounds.zip")).json()
    scan_set = add_scan_set(app, "acme", federation.manifest.path)
    body = client.post("/api/v1/assessments", json={"model_id": model["id"], "scan_set_id": scan_set,
                                                    "options": {**OPTIONS, "train_size": 4}}).json()
    job = wait_for(client, body["id"], ("succeeded", "failed"), timeout=120)
    assert job["state"] == "failed" and "train_size does not apply" in job["error"]


# ------------------------------------------------------------------ refused uploads keep nothing


@pytest.fixture()
def upload_app(settings):  # type: ignore[no-untyped-def]
    """The app without the job machinery (uploads queue nothing)."""
    from backend.app import create_app

    application = create_app(settings, start_jobs=False)
    with TestClient(application):
        yield application


@pytest.fixture()
def uploader(upload_app) -> TestClient:  # type: ignore[no-untyped-def]
    """A client of org acme on :func:`upload_app`."""
    from backend.auth import create_token

    with session_scope(upload_app.state.sessionmaker) as session:
        token = create_token(session, "alice", "acme")
    return TestClient(upload_app, headers={"Authorization": f"Bearer {token}"})


def test_hostile_or_broken_round_archives_are_refused(upload_app, uploader: TestClient, federation,
                                                      tmp_path: Path) -> None:
    folder = federation.model_paths[0].parent
    one = federation.model_paths[0]
    # a member that leaves the archive
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.write(one, "round_001.pt")
        zf.writestr("../round_002.pt", b"x")
    body = error(upload_rounds(uploader, evil), 422, "invalid_archive")
    assert "'..'" in body["message"] and str(tmp_path) not in body["message"]
    # a symbolic link
    linked = tmp_path / "linked.tar.gz"
    with tarfile.open(linked, "w:gz") as tf:
        tf.add(one, "round_001.pt")
        info = tarfile.TarInfo("round_002.pt")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    assert "round_002.pt" in error(upload_rounds(uploader, linked), 422, "invalid_archive")["message"]
    # a round whose unpickling would run code
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    (bad / "round_007.pt").unlink()
    make_code_pickle(bad / "round_007.pt", marker)
    body = error(upload_rounds(uploader, zip_rounds(bad, tmp_path / "bad.zip")), 422, "invalid_model")
    assert body["message"].startswith("round_007.pt:") and not marker.exists()
    # rounds that are not the same model (another grid in one sidecar)
    mixed = tmp_path / "mixed"
    shutil.copytree(folder, mixed)
    side = mixed / "round_004.pt.json"
    side.write_text(json.dumps({**json.loads(side.read_text()), "voxel_size": [4.0, 4.0, 4.0]}))
    body = error(upload_rounds(uploader, zip_rounds(mixed, tmp_path / "mixed.zip")), 422, "invalid_metadata")
    assert "round_004.pt" in body["message"] and "voxel_size" in body["message"]
    # no round models, a model file sent as rounds, an unknown kind
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("notes.txt", "nothing here")
    assert "no round models" in error(upload_rounds(uploader, empty), 422, "invalid_archive")["message"]
    single = make_torchscript(tmp_path / "single.pt")
    error(upload_rounds(uploader, single, tiny_metadata()), 422, "invalid_archive")
    body = error(upload_rounds(uploader, single, kind="bogus"), 422, "validation_error")
    assert body["details"][0]["field"] == "kind"
    # without kind, an archive of rounds is not a model: the loader says what to send
    body = error(upload_rounds(uploader, zip_rounds(folder, tmp_path / "plain.zip"), kind=None), 422, "invalid_model")
    assert "kind=federated_rounds" in body["message"]
    assert stored_nothing(upload_app)


def test_form_metadata_overrides_every_round(upload_app, uploader: TestClient, federation, tmp_path: Path) -> None:
    folder = federation.model_paths[0].parent
    archive = zip_rounds(folder, tmp_path / "bare.zip", skip_sidecars=True)
    bare = upload_rounds(uploader, archive)  # no sidecars, no metadata: the default 2 mm grid
    assert bare.status_code == 201, bare.text
    assert bare.json()["metadata"]["input_shape"] == [91, 109, 91]
    metadata = json.loads(federation.model_paths[0].with_name("round_001.pt.json").read_text())
    response = upload_rounds(uploader, archive, metadata)
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["n_rounds"] == 12 and model["metadata"]["voxel_size"] == [TINY_VOXEL] * 3
    for r in (1, 12):
        side = upload_app.state.storage.model_dir(model["id"]) / f"round_{r:03d}.pt.json"
        assert json.loads(side.read_text())["input_shape"] == list(TINY_SHAPE)


# ------------------------------------------------------------------ the migration


def _migrated_columns(url: str) -> tuple[list[tuple], list[str]]:
    from alembic import command
    from sqlalchemy import inspect

    from backend.db.migrate import alembic_config

    command.upgrade(alembic_config(url), "0001")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO organisations (id, name, created_at) VALUES ('o', 'o', '2026-01-01')")
            conn.exec_driver_sql(
                "INSERT INTO models (id, org_id, name, path, sha256, format, size_bytes, model_metadata, created_at) "
                "VALUES ('m', 'o', 'n', 'p', 's', 'torchscript', 1, '{}', '2026-01-01')")
        command.upgrade(alembic_config(url), "head")
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT kind, rounds FROM models").fetchall()
        columns = [c["name"] for c in inspect(engine).get_columns("models")]
        command.downgrade(alembic_config(url), "0001")
        after = [c["name"] for c in inspect(engine).get_columns("models")]
        assert "kind" not in after and "rounds" not in after
        command.upgrade(alembic_config(url), "head")
    finally:
        engine.dispose()
    return rows, columns


def test_migration_0002_on_sqlite(tmp_path: Path) -> None:
    rows, columns = _migrated_columns(f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert rows == [("model", None)] and {"kind", "rounds"} <= set(columns)


def test_migration_0002_on_postgresql() -> None:
    from tests.conftest import require
    from tests.integration.conftest import PostgresServer, _pg_bindir

    bindir = _pg_bindir()
    require(bindir is not None, "PostgreSQL server binaries (initdb, postgres) not found")
    server = PostgresServer(bindir)  # type: ignore[arg-type]
    try:
        server.start()
        rows, columns = _migrated_columns(server.create_database("migration_0002"))
    finally:
        server.stop()
    assert rows == [("model", None)] and {"kind", "rounds"} <= set(columns)
