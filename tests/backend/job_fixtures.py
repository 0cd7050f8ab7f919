"""Fixtures for job tests: a tiny cohort and model, registered directly in the database.

The rows are inserted here (not through the upload routes) so that these tests depend only
on the job machinery.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from backend.app import create_app
from backend.auth import create_token, get_or_create_org
from backend.db.models import ModelRecord, ScanSet, new_id
from backend.db.session import session_scope
from backend.settings import Settings
from tests.conftest import TINY_CHANNELS, TINY_SHAPE, TINY_VOXEL, save_tiny_model

#: fast options: two classifiers, two repeats
FAST_OPTIONS: dict[str, Any] = {"repeats": 2, "classifiers": ["threshold", "logistic"], "device": "cpu"}


@pytest.fixture(scope="session")
def job_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16-subject synthetic cohort on the 8 mm grid; returns its manifest."""
    from worker.engine.synth import CohortSpec, generate_cohort

    out = tmp_path_factory.mktemp("job_cohort")
    return generate_cohort(out, CohortSpec(n_subjects=16, shape=TINY_SHAPE, voxel_size=TINY_VOXEL, seed=5))


@pytest.fixture(scope="session")
def job_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny (untrained) TorchScript 3D-CNN with its sidecar."""
    from worker.engine.models import BrainAge3D

    torch.manual_seed(0)
    model = BrainAge3D(channels=TINY_CHANNELS, mean_age=62.0, age_scale=10.0)
    return save_tiny_model(model, tmp_path_factory.mktemp("job_model") / "model.pt")


def add_model(app: Any, org: str, model_file: Path) -> str:
    """Store ``model_file`` (and its sidecar) as a model of ``org``; returns the model id."""
    from worker.engine.models import file_sha256, sidecar_path

    model_id = new_id()
    folder = app.state.storage.model_dir(model_id)
    folder.mkdir(parents=True)
    dest = folder / "model.pt"
    shutil.copy(model_file, dest)
    metadata = json.loads(sidecar_path(model_file).read_text())
    with session_scope(app.state.sessionmaker) as session:
        session.add(
            ModelRecord(
                id=model_id,
                org_id=get_or_create_org(session, org).id,
                name="tiny.pt",
                path=str(dest),
                sha256=file_sha256(dest),
                format="torchscript",
                size_bytes=dest.stat().st_size,
                model_metadata=metadata,
            )
        )
    return model_id


def add_scan_set(app: Any, org: str, manifest: Path) -> str:
    """Register a server-side manifest as a scan set of ``org``; returns the scan set id."""
    from worker.engine.manifest import load_manifest

    loaded = load_manifest(manifest)
    scan_set_id = new_id()
    with session_scope(app.state.sessionmaker) as session:
        session.add(
            ScanSet(
                id=scan_set_id,
                org_id=get_or_create_org(session, org).id,
                name="tiny cohort",
                source="server",
                root=str(manifest.parent),
                manifest_path=str(manifest),
                manifest_sha256=loaded.sha256,
                n_scans=len(loaded.records),
                n_members=loaded.n_members,
                n_nonmembers=loaded.n_nonmembers,
                attribute_names=list(loaded.attribute_names),
            )
        )
    return scan_set_id


@pytest.fixture()
def job_inputs(app, tokens, job_cohort: Path, job_model_file: Path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A model and a scan set of org acme (alice's), and a model and scan set of globex."""
    return {
        "model_id": add_model(app, "acme", job_model_file),
        "scan_set_id": add_scan_set(app, "acme", job_cohort),
        "other_model_id": add_model(app, "globex", job_model_file),
        "other_scan_set_id": add_scan_set(app, "globex", job_cohort),
    }


def submit(client: TestClient, inputs: dict[str, str], **options: Any) -> dict[str, Any]:
    """POST an assessment with the fast options (overridden by ``options``); returns the body."""
    response = client.post(
        "/api/v1/assessments",
        json={"model_id": inputs["model_id"], "scan_set_id": inputs["scan_set_id"], "options": FAST_OPTIONS | options},
    )
    assert response.status_code == 201, response.text
    return response.json()


def wait_for(
    client: TestClient, assessment_id: str, states: tuple[str, ...], timeout: float = 30.0, seen: list | None = None
) -> dict[str, Any]:
    """Poll the assessment until its state is one of ``states``; records each body in ``seen``."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/api/v1/assessments/{assessment_id}").json()
        if seen is not None:
            seen.append(body)
        if body["state"] in states:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"assessment still {body['state']} after {timeout} s: {body}")
        time.sleep(0.05)


@dataclass
class SharedJob:
    """One app (module-wide) with one succeeded assessment, for tests that only read.

    Attributes:
        app: the app.
        client / other / anonymous / admin: alice (acme), mallory (globex), no token, acme's admin.
        inputs: the ids of :func:`job_inputs`.
        job: the assessment body once succeeded.
        seen: every body polled while it ran.
    """

    app: Any
    client: TestClient
    other: TestClient
    anonymous: TestClient
    admin: TestClient
    inputs: dict[str, str]
    job: dict[str, Any]
    seen: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def shared_job(tmp_path_factory: pytest.TempPathFactory, job_cohort: Path, job_model_file: Path) -> Iterator[SharedJob]:
    """An embedded app of its own with one assessment run to success (default feature sets)."""
    root = tmp_path_factory.mktemp("shared_job")
    settings = Settings(data_dir=root / "data", cache_dir=root / "cache", session_secret="test-secret")
    application = create_app(settings)
    with TestClient(application):
        with session_scope(application.state.sessionmaker) as session:
            tokens = {
                "admin": create_token(session, "admin", "acme", admin=True),
                "alice": create_token(session, "alice", "acme"),
                "mallory": create_token(session, "mallory", "globex"),
            }
        clients = {k: TestClient(application, headers={"Authorization": f"Bearer {v}"}) for k, v in tokens.items()}
        inputs = {
            "model_id": add_model(application, "acme", job_model_file),
            "scan_set_id": add_scan_set(application, "acme", job_cohort),
            "other_model_id": add_model(application, "globex", job_model_file),
            "other_scan_set_id": add_scan_set(application, "globex", job_cohort),
        }
        created = submit(clients["alice"], inputs)
        seen = [created]
        done = wait_for(clients["alice"], created["id"], ("succeeded", "failed", "cancelled"), timeout=60, seen=seen)
        yield SharedJob(
            app=application,
            client=clients["alice"],
            other=clients["mallory"],
            anonymous=TestClient(application),
            admin=clients["admin"],
            inputs=inputs,
            job=done,
            seen=seen,
        )


def add_assessment(app: Any, org: str, inputs: dict[str, str], **values: Any) -> str:
    """Insert an assessment row directly (no message is sent); returns its id."""
    from backend.db.models import Assessment

    with session_scope(app.state.sessionmaker) as session:
        row = Assessment(
            org_id=get_or_create_org(session, org).id,
            model_id=inputs["model_id"],
            scan_set_id=inputs["scan_set_id"],
            options=FAST_OPTIONS,
            **({"state": "queued"} | values),
        )
        session.add(row)
        session.flush()
        return row.id


def get_row(app: Any, assessment_id: str) -> Any:
    """The assessment row as it is in the database now (detached)."""
    from backend.db.models import Assessment

    with app.state.sessionmaker() as session:
        return session.get(Assessment, assessment_id)
