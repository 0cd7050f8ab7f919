"""Server-side manifests are per organisation; every refused path gets the same answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backend.auth import create_token
from backend.db.session import session_scope
from backend.settings import Settings

from .upload_fixtures import copy_cohort, make_cohort

API = "/api/v1/scan-sets"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cohort(tmp_path_factory.mktemp("cohort") / "cohort")


@pytest.fixture()
def roots(tmp_path: Path, cohort: Path) -> dict[str, Path]:
    """A manifest folder per organisation (acme, globex) and one of the flat (default) list."""
    out = {name: tmp_path / "cohorts" / name for name in ("acme", "globex", "flat")}
    for name, folder in out.items():
        copy_cohort(cohort, folder / "study")
    return out


@pytest.fixture()
def clients(tmp_path: Path, roots: dict[str, Path]):  # type: ignore[no-untyped-def]
    from backend.app import create_app

    settings = Settings(
        data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", session_secret="s",
        org_manifest_roots={"acme": [roots["acme"]], "globex": [roots["globex"]]},
        manifest_roots=[roots["flat"]],
    )
    app = create_app(settings, start_jobs=False)
    with TestClient(app):
        with session_scope(app.state.sessionmaker) as session:
            tokens = {
                "acme": create_token(session, "alice", "acme"),
                "acme-admin": create_token(session, "root", "acme", admin=True),
                "globex": create_token(session, "mallory", "globex"),
                "default": create_token(session, "dora", "default"),
            }
        yield {k: TestClient(app, headers={"Authorization": f"Bearer {t}"}) for k, t in tokens.items()}


def register(client: TestClient, path: Path | str):  # type: ignore[no-untyped-def]
    return client.post(API, json={"manifest_path": str(path)})


def test_another_organisation_cannot_register_its_manifest(clients, roots: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    acme_manifest = roots["acme"] / "study" / "manifest.csv"
    for attacker in ("globex", "default"):
        r = register(clients[attacker], acme_manifest)
        assert r.status_code == 404, r.text
        assert "ages" not in r.text and "sub-0001" not in r.text
    assert register(clients["acme"], acme_manifest).status_code == 201
    assert clients["globex"].get(API).json()["total"] == 0


def test_an_admin_of_one_organisation_is_confined_too(clients, roots: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    assert register(clients["acme-admin"], roots["globex"] / "study" / "manifest.csv").status_code == 404
    assert register(clients["acme-admin"], roots["flat"] / "study" / "manifest.csv").status_code == 404


def test_the_flat_list_belongs_to_the_default_organisation(clients, roots: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    flat = roots["flat"] / "study" / "manifest.csv"
    assert register(clients["acme"], flat).status_code == 404
    assert register(clients["default"], flat).status_code == 201


def test_forbidden_existing_and_missing_paths_get_the_same_answer(clients, roots: dict[str, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    attacker = clients["globex"]
    own = roots["globex"]
    (own / "link").symlink_to(roots["acme"] / "study", target_is_directory=True)
    probes = [
        roots["acme"] / "study" / "manifest.csv",  # exists, another organisation's
        roots["acme"] / "study" / "nothing.csv",  # missing, another organisation's folder
        roots["acme"] / "study",  # a folder
        own / "study" / "nothing.csv",  # missing, own folder
        own / "study",  # own folder, not a file
        own / "link" / "manifest.csv",  # own folder, links to another organisation's
        f"{own}/../acme/study/manifest.csv",
        "/etc/passwd",
        "/nonexistent/manifest.csv",
        tmp_path / "data" / "session_secret",
    ]
    answers = [register(attacker, p) for p in probes]
    assert {r.status_code for r in answers} == {404}
    assert len({r.content for r in answers}) == 1, [r.text for r in answers]
