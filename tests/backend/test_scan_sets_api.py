"""/api/v1/scan-sets: archive uploads extracted safely, server manifests under allowed roots."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from backend.db.models import ModelRecord, ScanSet
from backend.services.job_states import new_job
from backend.db.session import session_scope
from backend.settings import Settings

from .upload_fixtures import (
    copy_cohort,
    make_cohort,
    tar_dir,
    tar_members,
    tiny_metadata,
    zip_bomb,
    zip_dir,
    zip_members,
)

API = "/api/v1/scan-sets"


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    """Embedded settings with a manifest root of organisation acme and a 2 MiB archive limit."""
    (tmp_path / "allowed").mkdir()
    return Settings(
        data_dir=tmp_path / "data",
        cache_dir=tmp_path / "cache",
        session_secret="test-secret",
        org_manifest_roots={"acme": [tmp_path / "allowed"]},
        max_archive_bytes=2 << 20,
    )


@pytest.fixture()
def app(settings: Settings):  # type: ignore[no-untyped-def]
    """The app without the job machinery (these routes queue nothing): faster set-up and tear-down."""
    from backend.app import create_app

    application = create_app(settings, start_jobs=False)
    with TestClient(application):
        yield application


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-subject synthetic cohort folder (manifest.csv + scans/)."""
    return make_cohort(tmp_path_factory.mktemp("cohort") / "cohort")


def post_archive(client: TestClient, archive: Path, name: str | None = None):  # type: ignore[no-untyped-def]
    with open(archive, "rb") as fh:
        return client.post(
            API, files={"archive": (archive.name, fh, "application/octet-stream")}, data={"name": name} if name else {}
        )


def assert_error(response, status: int, code: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return body["error"]


def stored_nothing(app) -> bool:  # type: ignore[no-untyped-def]
    root = app.state.storage.root
    with session_scope(app.state.sessionmaker) as session:
        rows = session.scalar(select(func.count()).select_from(ScanSet))
    return rows == 0 and not any((root / "scan_sets").iterdir()) and not any((root / "tmp").iterdir())


def edit_manifest(folder: Path, edit: dict[int, dict[str, str]]) -> None:
    """Change cells of the manifest: ``{line: {column: value}}`` (header is line 1)."""
    lines = (folder / "manifest.csv").read_text().splitlines()
    header = lines[0].split(",")
    for line, cells in edit.items():
        row = lines[line - 1].split(",")
        for column, value in cells.items():
            row[header.index(column)] = value
        lines[line - 1] = ",".join(row)
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")


def test_zip_upload_then_get(app, client: TestClient, cohort: Path, tmp_path: Path) -> None:
    r = post_archive(client, zip_dir(cohort, tmp_path / "ukb-holdout.zip"))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "ukb-holdout" and body["source"] == "archive"
    assert body["n_scans"] == 12 and body["n_members"] + body["n_nonmembers"] == 12 and body["n_members"] > 0
    assert body["attribute_names"] == ["sex", "site"]
    assert body["manifest_sha256"] == hashlib.sha256((cohort / "manifest.csv").read_bytes()).hexdigest()
    assert body["size_bytes"] == sum(p.stat().st_size for p in cohort.rglob("*") if p.is_file())
    folder = app.state.storage.scan_set_dir(body["id"])
    assert (folder / "manifest.csv").is_file() and len(list((folder / "scans").iterdir())) == 12
    assert not any((app.state.storage.root / "tmp").iterdir())
    assert client.get(f"{API}/{body['id']}").json() == body

    # the worker's reading of the row finds the manifest and its scans
    from worker.engine.manifest import load_manifest

    with session_scope(app.state.sessionmaker) as session:
        row = session.get(ScanSet, body["id"])
        assert row is not None
        storage_root = app.state.storage.root
        manifest = load_manifest(storage_root / row.manifest_path, base_dir=storage_root / row.root, confine=True)
    assert len(manifest) == 12


@pytest.mark.parametrize("kind", ["tar.gz", "tgz", "tar"])
def test_tar_upload_with_a_single_top_folder(client: TestClient, cohort: Path, tmp_path: Path, kind: str) -> None:
    archive = tar_dir(cohort, tmp_path / f"cohort.{kind}", mode="w" if kind == "tar" else "w:gz", prefix="cohort-v1/")
    r = post_archive(client, archive, name="My cohort")
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "My cohort" and r.json()["n_scans"] == 12


def test_zip_with_macos_folder_and_top_folder(client: TestClient, cohort: Path, tmp_path: Path) -> None:
    archive = zip_dir(cohort, tmp_path / "c.zip", prefix="c/")
    import zipfile

    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("__MACOSX/c/._manifest.csv", b"\x00\x05")
    assert post_archive(client, archive).status_code == 201


def test_bad_manifest_rows_give_line_numbers(app, client: TestClient, cohort: Path, tmp_path: Path) -> None:
    folder = copy_cohort(cohort, tmp_path / "bad")
    edit_manifest(folder, {3: {"age": "old"}, 5: {"member": "maybe"}, 6: {"path": "../../../etc/passwd"}})
    err = assert_error(post_archive(client, zip_dir(folder, tmp_path / "bad.zip")), 422, "invalid_manifest")
    assert [(d["line"], d["field"]) for d in err["details"]] == [(3, "age"), (5, "member"), (6, "path")]
    assert all(str(app.state.storage.root) not in d["reason"] for d in err["details"])
    assert stored_nothing(app)


def test_missing_scan_is_named(app, client: TestClient, cohort: Path, tmp_path: Path) -> None:
    folder = copy_cohort(cohort, tmp_path / "missing")
    (folder / "scans" / "sub-0004.nii.gz").unlink()
    err = assert_error(post_archive(client, tar_dir(folder, tmp_path / "m.tar.gz")), 422, "invalid_manifest")
    assert len(err["details"]) == 1 and err["details"][0]["line"] == 5
    assert "scans/sub-0004.nii.gz" in err["details"][0]["reason"] and "file not found" in err["details"][0]["reason"]
    assert str(app.state.storage.root) not in err["details"][0]["reason"]
    assert stored_nothing(app)


def test_corrupt_nifti_is_named(app, client: TestClient, cohort: Path, tmp_path: Path) -> None:
    folder = copy_cohort(cohort, tmp_path / "corrupt")
    scan = folder / "scans" / "sub-0007.nii.gz"
    scan.write_bytes(scan.read_bytes()[:200])
    (folder / "scans" / "sub-0009.nii.gz").write_bytes(b"hello")
    err = assert_error(post_archive(client, zip_dir(folder, tmp_path / "c.zip")), 422, "invalid_scan")
    assert "scans/sub-0007.nii.gz" in err["message"] and "scans/sub-0009.nii.gz" in err["message"]
    assert [(d["line"], d["field"]) for d in err["details"]] == [(8, "path"), (10, "path")]
    assert stored_nothing(app)


MANIFEST = b"scan_id,path,age,member\ns1,a.nii.gz,50,1\n"


@pytest.mark.parametrize(
    "make",
    [
        lambda d: zip_members(d / "a.zip", {"manifest.csv": MANIFEST, "../evil": b"x"}),
        lambda d: tar_members(d / "a.tar.gz", {"manifest.csv": MANIFEST, "sub/../../evil": b"x"}),
        lambda d: zip_members(d / "a.zip", {"manifest.csv": MANIFEST, str(d / "evil"): b"x"}),
        lambda d: tar_members(d / "a.tar.gz", {"manifest.csv": MANIFEST, str(d / "evil"): b"x"}),
        lambda d: zip_members(d / "a.zip", {"manifest.csv": MANIFEST}, symlinks={"a.nii.gz": "/etc/passwd"}),
        lambda d: tar_members(d / "a.tar.gz", {"manifest.csv": MANIFEST}, symlinks={"a.nii.gz": "/etc/passwd"}),
        lambda d: tar_members(d / "a.tar.gz", {"manifest.csv": MANIFEST}, hardlinks={"a.nii.gz": "/etc/passwd"}),
        lambda d: tar_members(d / "a.tar", {"manifest.csv": MANIFEST}, devices=["a.nii.gz"], mode="w"),
    ],
    ids=[
        "zip-dotdot",
        "tar-dotdot",
        "zip-absolute",
        "tar-absolute",
        "zip-symlink",
        "tar-symlink",
        "tar-hardlink",
        "tar-device",
    ],
)
def test_hostile_archives_are_refused_and_nothing_kept(app, client: TestClient, tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    archive = make(tmp_path)
    err = assert_error(post_archive(client, archive), 422, "invalid_archive")
    assert err["details"] and err["details"][0]["field"] != "archive"  # names the member
    assert not (tmp_path / "evil").exists()
    assert not any(p.is_symlink() for p in app.state.storage.root.rglob("*"))
    assert stored_nothing(app)


def test_zip_bomb_is_refused_and_nothing_kept(app, client: TestClient, tmp_path: Path) -> None:
    archive = zip_bomb(tmp_path / "bomb.zip", size=50 << 20)
    assert archive.stat().st_size < 200_000  # ratio far above 100
    err = assert_error(post_archive(client, archive), 422, "invalid_archive")
    assert "compressed size" in err["message"]
    assert stored_nothing(app)


def test_archive_without_manifest_or_garbage(app, client: TestClient, tmp_path: Path) -> None:
    err = assert_error(
        post_archive(client, zip_members(tmp_path / "a.zip", {"x/manifest.csv": MANIFEST, "y/z": b""})),
        422,
        "invalid_archive",
    )
    assert "manifest.csv" in err["message"]
    junk = tmp_path / "junk.tgz"
    junk.write_bytes(os.urandom(1000))
    assert_error(post_archive(client, junk), 422, "invalid_archive")
    assert stored_nothing(app)


def test_too_large_archive_is_413(app, client: TestClient, tmp_path: Path) -> None:
    big = tmp_path / "big.zip"
    big.write_bytes(os.urandom(3 << 20))
    assert_error(post_archive(client, big), 413, "too_large")
    assert stored_nothing(app)


def test_bad_requests(client: TestClient) -> None:
    assert_error(
        client.post(API, content=b"hello", headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type"
    )
    err = assert_error(client.post(API, json={"name": "x"}), 422, "validation_error")
    assert err["details"][0]["field"] == "manifest_path"
    err = assert_error(client.post(API, files={"other": ("x", b"x")}), 422, "validation_error")
    assert err["details"][0]["field"] == "archive"


def test_server_manifest_under_an_allowed_root(
    app, client: TestClient, settings: Settings, cohort: Path, tmp_path: Path
) -> None:
    folder = copy_cohort(cohort, settings.org_manifest_roots["acme"][0] / "ukb")
    r = client.post(API, json={"manifest_path": str(folder / "manifest.csv")})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["source"] == "server" and body["name"] == "ukb" and body["n_scans"] == 12
    assert not any((app.state.storage.root / "scan_sets").iterdir())  # nothing copied
    # delete removes only the row, never the administrator's files
    assert client.delete(f"{API}/{body['id']}").status_code == 204
    assert (folder / "manifest.csv").is_file() and len(list((folder / "scans").iterdir())) == 12
    assert_error(client.get(f"{API}/{body['id']}"), 404, "not_found")


def test_server_manifest_outside_the_roots_is_refused(
    app, client: TestClient, settings: Settings, cohort: Path, tmp_path: Path
) -> None:
    outside = copy_cohort(cohort, tmp_path / "elsewhere")
    allowed = settings.org_manifest_roots["acme"][0]
    refused = assert_error(client.post(API, json={"manifest_path": str(outside / "manifest.csv")}), 404, "not_found")
    # a link inside the root to a folder outside it, and a '..' path, both resolve outside
    (allowed / "link").symlink_to(outside, target_is_directory=True)
    for path in (allowed / "link" / "manifest.csv", f"{allowed}/../elsewhere/manifest.csv", allowed / "nope.csv"):
        assert assert_error(client.post(API, json={"manifest_path": str(path)}), 404, "not_found") == refused
    assert_error(client.post(API, json={"manifest_path": "ukb/manifest.csv"}), 422, "invalid_input")
    assert_error(client.post(API, json={"manifest_path": f"{allowed}/a\x00b.csv"}), 422, "invalid_input")
    # a manifest inside the root whose rows point out of its folder
    inner = allowed / "inner"
    inner.mkdir()
    shutil.copy(cohort / "manifest.csv", inner / "manifest.csv")
    edit_manifest(
        inner,
        {2: {"path": str(outside / "scans" / "sub-0001.nii.gz")}, 3: {"path": "../../elsewhere/scans/sub-0002.nii.gz"}},
    )
    err = assert_error(client.post(API, json={"manifest_path": str(inner / "manifest.csv")}), 422, "invalid_manifest")
    assert {(d["line"], d["field"]) for d in err["details"]} >= {(2, "path"), (3, "path")}
    # not enabled at all
    app.state.settings.org_manifest_roots = {}
    got = assert_error(client.post(API, json={"manifest_path": str(inner / "manifest.csv")}), 404, "not_found")
    assert got == refused
    assert stored_nothing(app)


def test_delete_removes_files_and_cached_volumes(
    app, client: TestClient, settings: Settings, cohort: Path, tmp_path: Path
) -> None:
    from worker.engine.cache import VolumeCache
    from worker.engine.models import ModelMetadata

    body = post_archive(client, zip_dir(cohort, tmp_path / "c.zip")).json()
    folder = app.state.storage.scan_set_dir(body["id"])
    with session_scope(app.state.sessionmaker) as session:
        org_id = session.get(ScanSet, body["id"]).org_id  # type: ignore[union-attr]
        session.add(
            ModelRecord(
                org_id=org_id,
                name="m",
                path="x",
                sha256="0" * 64,
                format="torchscript",
                size_bytes=1,
                model_metadata=tiny_metadata(),
            )
        )
    spec = ModelMetadata.model_validate(tiny_metadata()).conform_spec()
    cache = VolumeCache(settings.volume_cache_dir)
    scans = sorted((folder / "scans").iterdir())[:3]
    entries = []
    for scan in scans:
        cache.get(scan, spec)
        entries.append(cache.entry_path(scan, spec))
    assert all(e.is_file() for e in entries)

    assert client.delete(f"{API}/{body['id']}").status_code == 204
    assert not folder.exists() and not any((app.state.storage.root / "tmp").iterdir())
    assert not any(e.exists() for e in entries)
    assert_error(client.get(f"{API}/{body['id']}"), 404, "not_found")
    assert_error(client.delete(f"{API}/{body['id']}"), 404, "not_found")


def test_delete_refused_while_an_assessment_uses_it(app, client: TestClient, cohort: Path, tmp_path: Path) -> None:
    body = post_archive(client, zip_dir(cohort, tmp_path / "c.zip")).json()
    with session_scope(app.state.sessionmaker) as session:
        org_id = session.get(ScanSet, body["id"]).org_id  # type: ignore[union-attr]
        model = ModelRecord(org_id=org_id, name="m", path="x", sha256="0" * 64, format="torchscript", size_bytes=1)
        session.add(model)
        session.flush()
        session.add(new_job(org_id=org_id, model_id=model.id, scan_set_id=body["id"], options={}))
    assert_error(client.delete(f"{API}/{body['id']}"), 409, "in_use")
    assert app.state.storage.scan_set_dir(body["id"]).is_dir()


def test_list_isolation_and_auth(
    client: TestClient, other_org_client: TestClient, anonymous_client: TestClient, cohort: Path, tmp_path: Path
) -> None:
    archive = zip_dir(cohort, tmp_path / "c.zip")
    ids = [post_archive(client, archive, name=f"s{i}").json()["id"] for i in range(3)]
    page = client.get(API, params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 3 and [s["id"] for s in page["items"]] == ids[::-1][1:3]

    assert other_org_client.get(API).json()["total"] == 0
    assert_error(other_org_client.get(f"{API}/{ids[0]}"), 404, "not_found")
    assert_error(other_org_client.delete(f"{API}/{ids[0]}"), 404, "not_found")

    assert_error(post_archive(anonymous_client, archive), 401, "unauthorized")
    assert_error(anonymous_client.post(API, json={"manifest_path": "/x"}), 401, "unauthorized")
    assert_error(anonymous_client.get(API), 401, "unauthorized")
    assert_error(anonymous_client.get(f"{API}/{ids[0]}"), 401, "unauthorized")
    assert_error(anonymous_client.delete(f"{API}/{ids[0]}"), 401, "unauthorized")
    assert client.get(API).json()["total"] == 3
