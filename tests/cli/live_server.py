"""Helpers for the command-line tests against a live server (the fixtures are in conftest.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tests.conftest import REPO


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_submit(*args: str, token: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``brainmia submit ARGS`` as a pipeline runs it: a subprocess, no BRAINMIA_* settings but the token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAINMIA_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if token is not None:
        env["BRAINMIA_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "backend.cli", "submit", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
