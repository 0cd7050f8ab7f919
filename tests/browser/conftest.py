"""Browser test fixtures: the real app served by uvicorn, Debian's Chromium driven by Playwright.

    def test_x(signed_in_page, live_server):
        signed_in_page.goto(f"{live_server.url}/")
        assert not signed_in_page.console_errors

Every page's console errors and uncaught exceptions are collected in ``page.console_errors``;
after each test a full-page screenshot goes to ``test-artifacts/screenshots/<test name>.png``.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backend.settings import Settings
from tests.conftest import REPO, require

SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
VIEWPORT = {"width": 1280, "height": 900}
HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/browser carries the ``browser`` marker (``-m "not browser"``)."""
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@dataclass
class LiveServer:
    """The app served on a free local port.

    Attributes:
        url: its base URL, e.g. ``http://127.0.0.1:38211`` (no trailing slash).
        token: an administrator API token (organisation ``default``, name ``admin``).
        settings: its settings (embedded mode, temporary data folder).
        app: the FastAPI app, for direct database access in assertions.
    """

    url: str
    token: str
    settings: Settings
    app: Any


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``brainmia serve`` in-process: embedded mode (SQLite, worker thread), uvicorn in a thread."""
    import uvicorn

    from backend.app import create_app
    from backend.cli import ensure_admin_token

    root = tmp_path_factory.mktemp("live_server")
    settings = Settings(
        data_dir=root / "data", cache_dir=root / "cache", database_url=None, broker_url=None,
        session_secret="browser-tests", device="cpu",
    )
    app = create_app(settings)
    token = ensure_admin_token(app.state.sessionmaker)
    assert token, "a fresh data folder must get its first admin token"
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the live server did not start (see the log above)")
        time.sleep(0.05)
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", token=token, settings=settings, app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


def _artifact_name(request: pytest.FixtureRequest, suffix: str = "") -> str:
    return re.sub(r"[^\w.-]+", "_", request.node.name).strip("_")[:150] + suffix


@contextmanager
def _open_page(browser: Any, screenshot: Path) -> Iterator[Any]:
    """A page in a fresh context (downloads accepted), its console errors in ``.console_errors``;
    a full-page screenshot on the way out."""
    context = browser.new_context(accept_downloads=True, viewport=VIEWPORT)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: errors.append(f"console: {message.text}") if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.console_errors = errors
    try:
        yield page
    finally:
        try:
            if not page.is_closed():
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            context.close()


@pytest.fixture()
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A new page, not signed in."""
    with _open_page(browser, SCREENSHOTS / f"{_artifact_name(request)}.png") as new_page:
        yield new_page


@pytest.fixture()
def signed_in_page(browser: Any, live_server: LiveServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A new page whose context holds the admin's session cookie (``POST /api/v1/auth/sign-in``)."""
    suffix = "" if "page" not in request.fixturenames else "-signed-in"
    with _open_page(browser, SCREENSHOTS / f"{_artifact_name(request, suffix)}.png") as new_page:
        response = new_page.context.request.post(f"{live_server.url}/api/v1/auth/sign-in", data={"token": live_server.token})
        assert response.ok, f"sign-in failed: {response.status} {response.text()}"
        assert any(c["name"] == "session" for c in new_page.context.cookies()), "no session cookie after sign-in"
        yield new_page
