"""Administration: API tokens and the audit log, over the API and from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from backend.settings import Settings, get_settings

TOKENS = "/api/v1/admin/tokens"
AUDIT = "/api/v1/admin/audit"


def test_admin_creates_a_token_shown_once(app, admin_client, client, anonymous_client) -> None:  # type: ignore[no-untyped-def]
    response = admin_client.post(TOKENS, json={"name": "ci-pipeline"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["token"].startswith("bmia_") and body["org"] == "acme" and body["is_admin"] is False
    assert body["prefix"] == body["token"][:12]
    new = TestClient(app, headers={"Authorization": f"Bearer {body['token']}"})
    me = new.get("/api/v1/auth/me").json()
    assert (me["name"], me["is_admin"]) == ("ci-pipeline", False)
    assert new.get(AUDIT).status_code == 403

    second = admin_client.post(TOKENS, json={"name": "second admin", "org": "acme", "is_admin": True}).json()
    assert TestClient(app, headers={"Authorization": f"Bearer {second['token']}"}).get(AUDIT).status_code == 200

    assert admin_client.post(TOKENS, json={"name": "x", "org": "globex"}).status_code == 403
    assert admin_client.post(TOKENS, json={"name": ""}).status_code == 422
    assert client.post(TOKENS, json={"name": "x"}).status_code == 403
    assert client.post(TOKENS, json={"name": "x"}).json()["error"]["code"] == "forbidden"
    assert anonymous_client.post(TOKENS, json={"name": "x"}).status_code == 401

    events = admin_client.get(AUDIT, params={"action": "create-token"}).json()
    assert events["total"] == 2
    assert {e["detail"]["name"] for e in events["items"]} == {"ci-pipeline", "second admin"}
    assert all(body["token"] not in str(e) for e in events["items"])


def test_audit_log_is_per_organisation_paginated_and_filtered(  # type: ignore[no-untyped-def]
    app, admin_client, client, other_org_client, anonymous_client, tokens
) -> None:
    for token in (tokens["alice"], tokens["mallory"]):
        TestClient(app).post("/api/v1/auth/sign-in", json={"token": token})
    page = admin_client.get(AUDIT).json()
    assert page["total"] == 1 and page["items"][0]["actor"] == "alice"  # not mallory's (globex)
    assert page["items"][0]["action"] == "sign-in" and page["items"][0]["at"]
    admin_client.post(TOKENS, json={"name": "a"})
    admin_client.post(TOKENS, json={"name": "b"})
    newest = admin_client.get(AUDIT, params={"limit": 1}).json()
    assert newest["total"] == 3 and newest["items"][0]["detail"]["name"] == "b"
    assert admin_client.get(AUDIT, params={"limit": 1, "offset": 2}).json()["items"][0]["action"] == "sign-in"
    assert admin_client.get(AUDIT, params={"action": "sign-in"}).json()["total"] == 1
    assert admin_client.get(AUDIT, params={"object_type": "token"}).json()["total"] == 2
    assert admin_client.get(AUDIT, params={"limit": 0}).status_code == 422
    assert client.get(AUDIT).status_code == 403
    assert other_org_client.get(AUDIT).status_code == 403
    assert anonymous_client.get(AUDIT).status_code == 401


@pytest.fixture()
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Embedded-mode environment for the command line, under a temporary data folder."""
    for name in ("BRAINMIA_DATABASE_URL", "BRAINMIA_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BRAINMIA_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def test_cli_migrate_and_create_token(cli_env: Path) -> None:
    from backend.auth import authenticate
    from backend.cli import app as cli
    from backend.db.session import make_engine, make_sessionmaker

    runner = CliRunner()
    migrated = runner.invoke(cli, ["admin", "migrate"])
    assert migrated.exit_code == 0 and "database up to date" in migrated.output
    result = runner.invoke(cli, ["admin", "create-token", "--name", "ops", "--org", "acme", "--admin"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("bmia_")
    engine = make_engine(Settings(data_dir=cli_env).sqlalchemy_url)
    try:
        with make_sessionmaker(engine)() as session:
            principal = authenticate(session, token)
            assert principal is not None and principal.is_admin and principal.name == "ops"
    finally:
        engine.dispose()
    assert runner.invoke(cli, ["admin", "create-token"]).exit_code == 2  # --name is required


def test_first_start_creates_one_admin_token(settings: Settings) -> None:
    from backend.app import create_app
    from backend.cli import ensure_admin_token

    app = create_app(settings, start_jobs=False)
    token = ensure_admin_token(app.state.sessionmaker)
    assert token and token.startswith("bmia_")
    assert ensure_admin_token(app.state.sessionmaker) is None  # only on the first start
    with TestClient(app) as client:
        me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).json()
        assert me["is_admin"] is True and me["name"] == "admin"
