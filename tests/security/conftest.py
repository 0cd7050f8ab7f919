"""Fixtures of the security tests: a real ``brainmia serve`` (embedded mode) as a process.

The server runs as users run it (``brainmia serve`` in its default embedded mode: SQLite and
uploads under its data folder, the worker in the same process), on a free port, with its own data
folder. Tests attack it over HTTP with tokens of two organisations, as an ordinary user of one
organisation would attack the other's data or the server itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import (
    START_TIMEOUT_S,
    Service,
    base_env,
    cli_argv,
    free_port,
    wait_for,
    wait_for_ready,
)


class Server:
    """One embedded ``brainmia serve`` process.

    Attributes:
        root: its folder (data folder, log, working folder).
        env: its environment (``BRAINMIA_*`` included).
        url: its base URL.
        admin_token: the administrator token it printed at its first start (organisation ``default``).
    """

    def __init__(self, root: Path, env: dict[str, str]):
        self.root = root
        self.env = env
        self.url = ""
        self.admin_token = ""
        self.service: Service | None = None

    @property
    def data_dir(self) -> Path:
        return Path(self.env["BRAINMIA_DATA_DIR"])

    @property
    def pid(self) -> int:
        assert self.service is not None
        return self.service.pid

    def start(self) -> None:
        port = free_port()
        self.service = Service("serve", cli_argv("serve", "--host", "127.0.0.1", "--port", str(port)),
                               env=self.env, log=self.root / "serve.log", cwd=self.root)
        self.url = f"http://127.0.0.1:{port}"
        wait_for_ready(self.url, START_TIMEOUT_S, self.service)
        if not self.admin_token:
            found = wait_for(lambda: re.search(r"bmia_[A-Za-z0-9_\-]+", self.log()), 10,
                             "the admin token in the server's output")
            self.admin_token = found.group(0)

    def log(self) -> str:
        """Everything the server printed so far."""
        return (self.root / "serve.log").read_text(errors="replace")

    def token(self, org: str, name: str | None = None, admin: bool = False) -> str:
        """A new token of organisation ``org`` (``brainmia admin create-token``)."""
        import subprocess

        args = ["admin", "create-token", "--name", name or f"{org}-user", "--org", org]
        done = subprocess.run(cli_argv(*args, *(["--admin"] if admin else [])), env=self.env, cwd=self.root,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        found = re.search(r"bmia_[A-Za-z0-9_\-]+", done.stdout + done.stderr)
        assert found, done.stdout + done.stderr
        return found.group(0)

    def client(self, token: str | None = None, timeout: float = 120.0) -> httpx.Client:
        """An HTTP client of the server, with ``token`` as its bearer token (None: anonymous)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()


@pytest.fixture(scope="module")
def make_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Server]]:
    """A factory of started embedded servers: ``make_server(**settings)``, stopped at the end.

    Keyword ``settings`` become ``BRAINMIA_<NAME>`` variables of the process.
    """
    servers: list[Server] = []

    def make(**settings: Any) -> Server:
        root = tmp_path_factory.mktemp("serve")
        env = base_env() | {"BRAINMIA_DATA_DIR": str(root / "data")}
        env |= {f"BRAINMIA_{key.upper()}": str(value) for key, value in settings.items()}
        server = Server(root, env)
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def server(make_server: Callable[..., Server]) -> Server:
    """A started embedded server with default settings, shared by the tests of a module."""
    return make_server()


@pytest.fixture(scope="module")
def org_tokens(server: Server) -> dict[str, str]:
    """Ordinary (non-admin) tokens of two organisations, ``alpha`` and ``beta``, on ``server``."""
    return {"alpha": server.token("alpha"), "beta": server.token("beta")}
