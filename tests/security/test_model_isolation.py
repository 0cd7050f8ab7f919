"""Attacks by a model author on a real ``brainmia serve`` (embedded mode), with an ordinary token.

Finding 1 of the security review: a TorchScript model called ``torch.from_file`` to read the
session secret and write a ``.pth`` file into site-packages. Findings 2 and 3: a model that
behaves during the upload check, then allocates or loops during the assessment, grew the API
process and blocked every organisation. Each test fails on the server as it was.
"""

from __future__ import annotations

import json
import site
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import torch

from backend.client import BrainMIAClient
from tests.conftest import TINY_CHANNELS, TINY_SHAPE, TINY_VOXEL, save_tiny_model
from tests.integration.conftest import proc_status_kb, small_archive, small_cohort  # noqa: F401 - fixtures
from tests.security.conftest import Server

META = {"input_shape": list(TINY_SHAPE), "voxel_size": TINY_VOXEL, "normalize": "zscore"}
OPTIONS = {"repeats": 1, "classifiers": ["threshold"]}


class _FromFile(torch.nn.Module):
    def __init__(self, target: str, size: int):
        super().__init__()
        self.target = target
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = torch.from_file(self.target, shared=True, size=self.size, dtype=torch.uint8)
        return (x.mean() + data.float().sum()).reshape(1)


class _Tiny(torch.nn.Module):
    """A real (parametrised) network underneath, so that white-box features exist."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 3)
        self.output = torch.nn.Linear(2, 1)

    def age(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.conv(x).mean(dim=[2, 3, 4])).reshape(-1) + 50.0


class _HungryLater(_Tiny):
    """The upload check (no gradients) passes; the assessment (gradients) makes it allocate ``gib`` GiB."""

    def __init__(self, gib: int):
        super().__init__()
        self.n = gib << 27  # float64 elements

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.age(x)
        if torch.is_grad_enabled():
            big = torch.ones([self.n], dtype=torch.float64)
            out = out + big.sum() * 0.0
        return out


class _EndlessLater(_Tiny):
    """Passes the upload check (no gradients), then never returns in the assessment."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.age(x)
        i = 0
        while torch.is_grad_enabled() and i >= 0:
            out = out + 0.0
            i = i + 1
        return out


def _scripted(module: torch.nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(module), str(path))
    return path


@pytest.fixture(scope="module")
def server(make_server: Callable[..., Server]) -> Server:
    """One server for the module, whose model host may use 2 GB (the hungry model wants 3)."""
    return make_server(model_memory_mb=2048)


@pytest.fixture(scope="module")
def victim(server: Server) -> dict[str, str]:
    """What an attacker wants: the session secret's bytes, and site-packages to write into."""
    secret = server.data_dir / "session_secret"
    return {"secret": secret.read_text() if secret.exists() else "", "secret_path": str(secret),
            "site": (site.getsitepackages() or [sysconfig.get_paths()["purelib"]])[0]}


def test_a_model_reading_the_session_secret_or_writing_a_pth_file_is_refused_and_touches_nothing(
        server: Server, org_tokens: dict[str, str], victim: dict[str, str], tmp_path: Path) -> None:
    assert victim["secret"], "the server keeps its session secret in its data folder"
    pth = Path(victim["site"]) / "zz_brainmia_pwned.pth"
    marker = server.data_dir / "created-by-model"
    attempts = {"secret": (victim["secret_path"], len(victim["secret"])), "pth": (str(pth), 64),
                "marker": (str(marker), 64), "missing": (str(server.data_dir / "no-such-file"), 8)}
    answers = {}
    with server.client(org_tokens["beta"]) as http:
        for name, (target, size) in attempts.items():
            model = _scripted(_FromFile(target, size), tmp_path / f"{name}.pt")
            response = http.post("/api/v1/models", files={"file": (model.name, model.read_bytes())},
                                 data={"metadata": json.dumps(META)})
            assert response.status_code == 422, response.text
            answers[name] = response.text
    for text in answers.values():
        assert "aten::from_file" in text
        assert victim["secret"] not in text and str(server.data_dir) not in text
    # the same answer whether the target exists or not: nothing about the file leaks
    assert answers["secret"].replace("secret", "x") == answers["missing"].replace("missing", "x")
    assert not pth.exists() and not marker.exists()
    assert (server.data_dir / "session_secret").read_text() == victim["secret"]


def _upload(client: BrainMIAClient, model: Path, archive: Path) -> tuple[str, str]:
    model_id = client.upload_model(model, META)["id"]
    scan_set_id = client.upload_scan_set(archive)["id"]
    return model_id, scan_set_id


def _rss_mb(pid: int) -> float:
    return proc_status_kb(pid, "VmRSS") / 1024


def test_a_model_allocating_during_the_assessment_does_not_grow_the_server(
        server: Server, small_archive: Path, tmp_path: Path) -> None:  # noqa: F811
    token = server.token("alpha")
    client = BrainMIAClient(server.url, token)
    model_id, scan_set_id = _upload(client, _scripted(_HungryLater(3), tmp_path / "hungry.pt"), small_archive)
    before = _rss_mb(server.pid)
    job = client.start_assessment(model_id, scan_set_id, OPTIONS)
    peak, state = before, {}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        peak = max(peak, _rss_mb(server.pid))
        state = client.assessment(job["id"])
        if state["state"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.1)
    assert state["state"] == "failed", state
    assert "memory" in state["error"] and "Traceback" not in state["error"], state["error"]
    assert peak - before < 400, f"the server grew from {before:.0f} to {peak:.0f} MB"
    log = httpx.get(f"{server.url}/api/v1/assessments/{job['id']}", headers={"Authorization": f"Bearer {token}"}).text
    assert str(server.data_dir) not in log


def test_an_endless_model_is_cancelled_within_seconds_while_another_organisation_s_job_runs(
        server: Server, small_archive: Path, tmp_path: Path) -> None:  # noqa: F811
    alpha = BrainMIAClient(server.url, server.token("alpha"))
    beta_token = server.token("beta")
    beta = BrainMIAClient(server.url, beta_token)
    from worker.engine.models import BrainAge3D

    endless = _upload(alpha, _scripted(_EndlessLater(), tmp_path / "endless.pt"), small_archive)
    good = _upload(beta, save_tiny_model(BrainAge3D(channels=TINY_CHANNELS), tmp_path / "good.pt"),
                   small_archive)
    stuck = alpha.start_assessment(*endless, OPTIONS)["id"]
    deadline = time.monotonic() + 120
    while alpha.assessment(stuck)["stage"] != "features" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alpha.assessment(stuck)["state"] == "running"
    other = beta.start_assessment(*good, OPTIONS)["id"]
    done = beta.wait(other, poll_interval=0.3, timeout=240)  # while the endless one still runs
    assert done["state"] == "succeeded"
    assert alpha.assessment(stuck)["state"] == "running"
    with server.client(beta_token) as http:  # what users are shown holds no server path
        for what in ("report.json", "features.csv", ""):
            text = http.get(f"/api/v1/assessments/{other}/{what}".rstrip("/")).text
            assert str(server.root) not in text and "Traceback" not in text, what
    asked = time.monotonic()
    alpha.cancel(stuck)
    while alpha.assessment(stuck)["state"] == "running" and time.monotonic() - asked < 30:
        time.sleep(0.2)
    assert alpha.assessment(stuck)["state"] == "cancelled"
    assert time.monotonic() - asked < 10


def test_the_command_line_refuses_a_file_reading_model_and_creates_nothing(
        small_cohort: Path, tmp_path: Path) -> None:  # noqa: F811
    import subprocess

    from tests.integration.conftest import base_env, cli_argv
    from worker.engine.models import ModelMetadata, write_sidecar

    marker = tmp_path / "created-by-model"
    model = _scripted(_FromFile(str(marker), 64), tmp_path / "evil.pt")
    write_sidecar(model, ModelMetadata.model_validate(META))
    for command in (["features", "--out", str(tmp_path / "f.csv")], ["assess", "--out", str(tmp_path / "out")]):
        done = subprocess.run(cli_argv(*command, "--model", str(model), "--manifest", str(small_cohort), "-q"),
                              env=base_env() | {"BRAINMIA_DATA_DIR": str(tmp_path / "data")}, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "aten::from_file" in done.stderr
    assert not marker.exists()
