"""/api/v1/reference-sets: user-supplied reference models with keep.csv (upload checked against the
scan set and in the model host, list, get, delete, 409 while used, isolation), and assessments
that name one in ``options.reference.reference_set_id``."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from backend.db.models import Assessment, AuditEvent, ReferenceSet
from backend.db.session import session_scope
from backend.services.options import AssessmentOptionsIn, read_stored, reference_options, stored_options
from backend.settings import Settings
from tests.backend.job_fixtures import FAST_OPTIONS, job_cohort, job_inputs, job_model_file  # noqa: F401
from tests.conftest import TINY_CHANNELS, save_tiny_model

from .upload_fixtures import make_code_pickle, tar_dir, zip_dir

API = "/api/v1/reference-sets"


@pytest.fixture()
def app(settings: Settings):  # type: ignore[no-untyped-def]
    """The app without the job machinery: assessments are recorded and queued, never run."""
    from backend.app import create_app

    application = create_app(settings, start_jobs=False)
    with TestClient(application):
        yield application


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny TorchScript reference models with their sidecars."""
    from worker.engine.models import BrainAge3D

    d = tmp_path_factory.mktemp("reference_models")
    for k, stem in enumerate(("ref_a", "ref_b")):
        torch.manual_seed(k + 1)
        save_tiny_model(BrainAge3D(channels=TINY_CHANNELS, mean_age=62.0, age_scale=10.0), d / f"{stem}.pt")
    return d


def scan_ids(manifest: Path) -> list[str]:
    with manifest.open(newline="") as fh:
        return [row["scan_id"] for row in csv.DictReader(fh)]


def write_keep(path: Path, ids: list[str], stems: tuple[str, ...] = ("ref_a", "ref_b"),
               cell: Any = None) -> Path:
    """keep.csv: each scan IN the first model when its index is even, IN the second otherwise."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["scan_id", *stems])
        for i, sid in enumerate(ids):
            writer.writerow([sid, *((cell(i, k) if cell else int((i + k) % 2 == 0)) for k in range(len(stems)))])
    return path


def reference_archive(tmp_path: Path, models_dir: Path, manifest: Path, *, fmt: str = "zip",
                      keep: Path | None = None, extra: dict[str, Path] | None = None) -> Path:
    """An archive of the reference models, their sidecars and keep.csv (plus ``extra`` files)."""
    folder = tmp_path / "refs"
    shutil.copytree(models_dir, folder)
    if keep is not None:
        shutil.copy(keep, folder / "keep.csv")
    else:
        write_keep(folder / "keep.csv", scan_ids(manifest))
    (folder / "README.md").write_text("ignored\n")
    for name, path in (extra or {}).items():
        shutil.copy(path, folder / name)
    if fmt == "zip":
        return zip_dir(folder, tmp_path / "refs.zip")
    return tar_dir(folder, tmp_path / "refs.tar.gz", prefix="references/")


def upload(client: TestClient, archive: Path, scan_set_id: str | None, **fields: str):  # type: ignore[no-untyped-def]
    data = dict(fields)
    if scan_set_id is not None:
        data["scan_set_id"] = scan_set_id
    with open(archive, "rb") as fh:
        return client.post(API, files={"archive": (archive.name, fh, "application/octet-stream")}, data=data)


def assert_error(response, status: int, code: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return body["error"]


def stored_nothing(app) -> bool:  # type: ignore[no-untyped-def]
    root = app.state.storage.root
    with session_scope(app.state.sessionmaker) as session:
        rows = session.scalar(select(func.count()).select_from(ReferenceSet))
    folder = root / "reference_sets"
    return rows == 0 and (not folder.exists() or not any(folder.iterdir())) and not any((root / "tmp").iterdir())


def create_assessment(client: TestClient, inputs: dict[str, str], reference: dict[str, Any], **extra: Any):  # type: ignore[no-untyped-def]
    body = {"model_id": inputs["model_id"], "scan_set_id": inputs["scan_set_id"],
            "options": FAST_OPTIONS | {"reference": reference} | extra}
    return client.post("/api/v1/assessments", json=body)


@pytest.fixture()
def uploaded(client: TestClient, job_inputs: dict[str, str], models_dir: Path, job_cohort: Path,  # noqa: F811
             tmp_path: Path) -> dict[str, Any]:
    r = upload(client, reference_archive(tmp_path, models_dir, job_cohort), job_inputs["scan_set_id"], name="K=2")
    assert r.status_code == 201, r.text
    return r.json()


def test_upload_stores_checked_models_and_keep(app, client, job_inputs, uploaded, job_cohort) -> None:  # noqa: F811
    body = uploaded
    assert body["name"] == "K=2" and body["scan_set_id"] == job_inputs["scan_set_id"] and body["n_models"] == 2
    assert body["model_files"] == ["ref_a.pt", "ref_b.pt"] and body["formats"] == ["torchscript", "torchscript"]
    assert body["metadata"]["input_shape"] == [23, 27, 23]
    assert client.get(f"{API}/{body['id']}").json() == body

    # the runner's hook: the stored files, loadable as stored, and keep.csv as the engine reads it
    from worker.engine.models import load_model
    from worker.engine.reference.keep import keep_hash, read_keep_csv
    from backend.services.reference_sets import supplied_reference_files

    with session_scope(app.state.sessionmaker) as session:
        models, keep = supplied_reference_files(session, body["id"], app.state.storage)
        actions = session.scalars(select(AuditEvent.action).where(AuditEvent.object_id == body["id"])).all()
    assert [p.name for p in models] == ["ref_a.pt", "ref_b.pt"] and keep.name == "keep.csv"
    assert sorted(p.name for p in models[0].parent.iterdir()) == ["keep.csv", "ref_a.pt", "ref_a.pt.json",
                                                                  "ref_b.pt", "ref_b.pt.json"]  # README dropped
    assert load_model(models[1]).metadata.input_shape == (23, 27, 23)
    assert keep_hash(read_keep_csv(keep, scan_ids(job_cohort), ["ref_a", "ref_b"])) == body["keep_hash"]
    assert sorted(actions) == ["upload", "view"]
    assert not any((app.state.storage.root / "tmp").iterdir())


def test_a_tar_gz_in_one_top_folder_is_accepted(client, job_inputs, models_dir, job_cohort, tmp_path) -> None:  # noqa: F811
    r = upload(client, reference_archive(tmp_path, models_dir, job_cohort, fmt="tar.gz"), job_inputs["scan_set_id"])
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "refs" and r.json()["n_models"] == 2


def test_keep_with_an_unknown_scan_or_a_yes_cell_is_refused_naming_the_line(  # noqa: F811
        app, client, job_inputs, models_dir, job_cohort, tmp_path) -> None:
    ids = scan_ids(job_cohort)
    keep = write_keep(tmp_path / "keep.csv", [*ids[:3], "sub-nobody", *ids[3:]],
                      cell=lambda i, k: "yes" if (i, k) == (1, 1) else (i + k) % 2)
    err = assert_error(upload(client, reference_archive(tmp_path, models_dir, job_cohort, keep=keep),
                              job_inputs["scan_set_id"]), 422, "invalid_keep")
    details = {(d["line"], d["field"]): d["reason"] for d in err["details"]}
    assert "not an audit scan" in details[(5, "scan_id")] and "sub-nobody" in details[(5, "scan_id")]
    assert "'yes' is not 0 or 1" in details[(3, "ref_b")]
    assert "keep.csv" in err["message"]
    assert stored_nothing(app)


def test_a_column_naming_no_model_is_refused(app, client, job_inputs, models_dir, job_cohort, tmp_path) -> None:  # noqa: F811
    keep = write_keep(tmp_path / "keep.csv", scan_ids(job_cohort), stems=("ref_a", "ref_c"))
    err = assert_error(upload(client, reference_archive(tmp_path, models_dir, job_cohort, keep=keep),
                              job_inputs["scan_set_id"]), 422, "invalid_keep")
    assert err["details"][0]["line"] == 1 and err["details"][0]["field"] == "ref_c"
    assert stored_nothing(app)


def test_a_model_that_fails_the_sandbox_check_is_refused(  # noqa: F811
        app, client, job_inputs, models_dir, job_cohort, tmp_path) -> None:
    marker = tmp_path / "pwned"
    evil = make_code_pickle(tmp_path / "evil.pt", marker)
    keep = write_keep(tmp_path / "keep.csv", scan_ids(job_cohort), stems=("ref_a", "ref_b", "ref_c"))
    archive = reference_archive(tmp_path, models_dir, job_cohort, keep=keep, extra={"ref_c.pt": evil, "ref_c.pt.json": models_dir / "ref_a.pt.json"})
    err = assert_error(upload(client, archive, job_inputs["scan_set_id"]), 422, "invalid_model")
    assert err["message"].startswith("ref_c.pt: ") and "refused" in err["message"]
    assert str(app.state.storage.root) not in err["message"]
    assert not marker.exists()
    assert stored_nothing(app)


def test_upload_needs_one_of_the_callers_scan_sets(  # noqa: F811
        app, client, other_org_client, job_inputs, models_dir, job_cohort, tmp_path) -> None:
    archive = reference_archive(tmp_path, models_dir, job_cohort)
    err = assert_error(upload(client, archive, None), 422, "validation_error")
    assert err["details"][0]["field"] == "scan_set_id"
    assert_error(upload(other_org_client, archive, job_inputs["scan_set_id"]), 404, "not_found")
    assert_error(upload(client, archive, job_inputs["other_scan_set_id"]), 404, "not_found")
    assert stored_nothing(app)


def test_list_get_delete_and_another_organisation_gets_404(  # noqa: F811
        app, client, other_org_client, job_inputs, uploaded) -> None:
    rid = uploaded["id"]
    listed = client.get(API).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == rid
    assert client.get(API, params={"scan_set_id": job_inputs["scan_set_id"]}).json()["total"] == 1
    assert client.get(API, params={"scan_set_id": "nope"}).json()["total"] == 0
    assert other_org_client.get(API).json()["total"] == 0
    assert_error(other_org_client.get(f"{API}/{rid}"), 404, "not_found")
    assert_error(other_org_client.delete(f"{API}/{rid}"), 404, "not_found")
    assert_error(create_assessment(other_org_client, {"model_id": job_inputs["other_model_id"],
                                                      "scan_set_id": job_inputs["other_scan_set_id"]},
                                   {"reference_set_id": rid}), 404, "not_found")

    # a scan set with reference sets is not deleted (as while assessments use it)
    assert_error(client.delete(f"/api/v1/scan-sets/{job_inputs['scan_set_id']}"), 409, "in_use")

    assert client.delete(f"{API}/{rid}").status_code == 204
    assert_error(client.get(f"{API}/{rid}"), 404, "not_found")
    assert not (app.state.storage.root / "reference_sets" / rid).exists()
    with session_scope(app.state.sessionmaker) as session:
        deleted = session.scalars(select(AuditEvent).where(AuditEvent.object_id == rid,
                                                           AuditEvent.action == "delete")).all()
    assert len(deleted) == 1 and deleted[0].object_type == "reference_set"


def test_an_assessment_with_reference_set_id_stores_it_and_blocks_deletion(  # noqa: F811
        app, client, job_inputs, uploaded) -> None:
    rid = uploaded["id"]
    r = create_assessment(client, job_inputs, {"reference_set_id": rid, "attacks": ["lira-offline"]})
    assert r.status_code == 201, r.text
    with session_scope(app.state.sessionmaker) as session:
        stored = session.get(Assessment, r.json()["id"]).options
    assert stored["reference"] == {"reference_set_id": rid, "attacks": ["lira-offline"]}
    assert read_stored(stored).reference.reference_set_id == rid  # the runner reads it back

    err = assert_error(client.delete(f"{API}/{rid}"), 409, "in_use")
    assert "1 assessment" in err["message"]
    assert client.delete(f"/api/v1/assessments/{r.json()['id']}").status_code == 204
    assert client.delete(f"{API}/{rid}").status_code == 204


def test_reference_set_id_is_checked_when_an_assessment_is_created(  # noqa: F811
        app, client, job_inputs, uploaded, job_cohort) -> None:
    from tests.backend.job_fixtures import add_scan_set

    rid = uploaded["id"]
    assert_error(create_assessment(client, job_inputs, {"reference_set_id": "nope"}), 404, "not_found")
    for given in ({"reference_set_id": rid, "models": 4}, {"reference_set_id": rid, "recipe": {"arch": "x"}}):
        err = assert_error(create_assessment(client, job_inputs, given), 422, "validation_error")
        assert "reference_set_id" in err["details"][0]["reason"]
    other_set = add_scan_set(app, "acme", job_cohort)
    err = assert_error(create_assessment(client, {**job_inputs, "scan_set_id": other_set},
                                         {"reference_set_id": rid}), 422, "validation_error")
    assert err["details"][0]["field"] == "options.reference.reference_set_id"
    assert "another scan set" in err["details"][0]["reason"]
    with session_scope(app.state.sessionmaker) as session:
        assert session.scalar(select(func.count()).select_from(Assessment)) == 0


def test_the_options_mapping_of_supplied_references(tmp_path: Path) -> None:
    options = AssessmentOptionsIn.model_validate({"reference": {"reference_set_id": "r1"}, "seed": 3})
    assert stored_options(options)["reference"] == {"reference_set_id": "r1"}
    models, keep = [tmp_path / "ref_a.pt", tmp_path / "ref_b.pt"], tmp_path / "keep.csv"
    engine = reference_options(options, None, (models, keep))
    assert list(engine.models) == models and engine.keep_csv == keep and engine.seed == 3
    assert engine.settings()["source"] == "supplied"
    from worker.engine.errors import InputError

    with pytest.raises(InputError, match="reference_set_id"):
        reference_options(options, None)  # the runner must resolve the files
    trained = AssessmentOptionsIn.model_validate({"reference": {"models": 4}})
    assert reference_options(trained, None).n_models == 4 and stored_options(trained)["reference"]["models"] == 4
