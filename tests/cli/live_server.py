"""Helpers for the command-line tests against a live server (the fixtures are in conftest.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.conftest import REPO


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn (lifespan on) in a thread on a free port; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def run_submit(*args: str, token: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``brainmia submit ARGS`` as a pipeline runs it: a subprocess, no BRAINMIA_* settings but the token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAINMIA_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if token is not None:
        env["BRAINMIA_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "backend.cli", "submit", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
