"""API test fixtures: an embedded app on a fresh SQLite database and storage per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from backend.app import create_app
from backend.auth import create_token
from backend.db.session import session_scope
from backend.settings import Settings


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    """Embedded-mode settings under a temporary data folder."""
    return Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", session_secret="test-secret")


@pytest.fixture()
def app(settings: Settings):  # type: ignore[no-untyped-def]
    """The app, with its embedded job machinery started."""
    application = create_app(settings)
    with TestClient(application):  # runs the lifespan (worker thread, recovery)
        yield application


def _client(app, token: str) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture()
def tokens(app) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Tokens: an admin and a user of org 'acme', a user of org 'globex'."""
    with session_scope(app.state.sessionmaker) as session:
        return {
            "admin": create_token(session, "admin", "acme", admin=True),
            "alice": create_token(session, "alice", "acme"),
            "mallory": create_token(session, "mallory", "globex"),
        }


@pytest.fixture()
def client(app, tokens) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """A client authenticated as alice (org acme)."""
    yield _client(app, tokens["alice"])


@pytest.fixture()
def admin_client(app, tokens) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """A client authenticated as the acme administrator."""
    yield _client(app, tokens["admin"])


@pytest.fixture()
def other_org_client(app, tokens) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """A client of another organisation (globex): must see none of acme's objects."""
    yield _client(app, tokens["mallory"])


@pytest.fixture()
def anonymous_client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """A client without a token."""
    yield TestClient(app)
