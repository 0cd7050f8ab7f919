"""Untrusted model code is confined: attacks a model author would try, and what stops them.

A TorchScript model can call ``torch.from_file`` (which opens, creates or overwrites any path),
and a TorchScript archive runs its ``__setstate__`` while it loads, before any check of its
graph. The operator allowlist refuses the first at upload; the host's Landlock rules stop both,
so these tests also check the confinement on its own, with the allowlist out of the way.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, TINY_CHANNELS, require, TINY_SHAPE, TINY_VOXEL, save_tiny_model
from worker.engine.errors import ModelError
from worker.engine.models import ModelMetadata, write_sidecar
from worker.engine.sandbox import HostLimits, ModelHost, landlock_abi
from worker.engine.sandbox.check import check_model_file
from worker.engine.sandbox.opcheck import refused_operators, torchscript_operators



@pytest.fixture(autouse=True)
def _kernel_confines() -> None:
    require(landlock_abi() >= 1, "this kernel has no Landlock: untrusted models cannot be confined")


def _scripted(module: torch.nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(module), str(path))
    write_sidecar(path, ModelMetadata(input_shape=TINY_SHAPE, voxel_size=(TINY_VOXEL,) * 3))
    return path


class _FromFile(torch.nn.Module):
    def __init__(self, target: str):
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leak = torch.from_file(self.target, shared=True, size=64, dtype=torch.uint8)
        return (x.mean() + leak.float().sum()).reshape(1)


class _ReadsOnLoad(torch.nn.Module):
    """Reads (or creates) a file in __setstate__, which torch.jit.load runs before anything else."""

    def __init__(self, target: str):
        super().__init__()
        self.target = target
        self.stolen = torch.zeros(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.mean() + self.stolen.sum()).reshape(1)

    @torch.jit.export
    def __getstate__(self) -> tuple[str, torch.Tensor, bool]:
        return (self.target, self.stolen, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, torch.Tensor, bool]) -> None:
        self.target = state[0]
        self.stolen = torch.from_file(state[0], shared=True, size=32, dtype=torch.uint8).float()
        self.training = state[2]


def test_a_model_calling_from_file_is_refused_naming_the_operator_and_creates_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "created-by-model"
    with pytest.raises(ModelError, match="aten::from_file") as info:
        check_model_file(_scripted(_FromFile(str(marker)), tmp_path / "from_file.pt"))
    assert not marker.exists()
    assert str(tmp_path) not in str(info.value.reason)


def test_setstate_cannot_create_or_read_files_while_the_model_loads(tmp_path: Path) -> None:
    secret = tmp_path / "session_secret"
    secret.write_bytes(b"S3CRET-" * 8)
    marker = tmp_path / "created-on-load"
    for target, name in ((marker, "creates.pt"), (secret, "reads.pt")):
        with pytest.raises(ModelError) as info:
            check_model_file(_scripted(_ReadsOnLoad(str(target)), tmp_path / name))
        assert "S3CRET" not in info.value.reason and str(tmp_path) not in info.value.reason
    assert not marker.exists()
    assert secret.read_bytes() == b"S3CRET-" * 8


_PROBE = textwrap.dedent("""
    import json, os, socket, subprocess, sys, threading
    import torch
    import worker.engine.features.batch
    from worker.engine.sandbox.confine import Confinement, confine
    confine(Confinement(memory_bytes=4 << 30))
    results = {}
    def attempt(name, fn):
        try:
            fn()
            results[name] = "allowed"
        except Exception as exc:
            results[name] = type(exc).__name__
    attempt("read", lambda: open(sys.argv[1]).read())
    attempt("create", lambda: open(sys.argv[2], "w").write("x"))
    attempt("from_file", lambda: torch.from_file(sys.argv[2], shared=True, size=8))
    attempt("socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    attempt("unix_socket", lambda: socket.socket(socket.AF_UNIX))
    attempt("fork", os.fork)
    attempt("exec", lambda: subprocess.run(["/bin/true"]))
    attempt("signal_parent", lambda: os.kill(os.getppid(), 0))
    box = []
    t = threading.Thread(target=lambda: box.append(torch.ones(3).sum().item())); t.start(); t.join()
    results["thread"] = "allowed" if box == [3.0] else "failed"
    results["compute"] = "allowed" if torch.nn.Conv3d(1, 2, 3)(torch.ones(1, 1, 5, 5, 5)).shape[1] == 2 else "failed"
    print(json.dumps(results))
""")


def test_the_confined_process_reaches_no_file_network_process_or_signal(tmp_path: Path) -> None:
    readable = tmp_path / "readable-outside"
    readable.write_text("outside")
    created = tmp_path / "created"
    done = subprocess.run([sys.executable, "-c", _PROBE, str(readable), str(created)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    results = json.loads(done.stdout.strip().splitlines()[-1])
    denied = {k for k, v in results.items() if v != "allowed"}
    assert denied >= {"read", "create", "from_file", "socket", "unix_socket", "fork", "exec", "signal_parent"}, results
    assert results["thread"] == results["compute"] == "allowed", results
    assert not created.exists()


def test_the_operator_allowlist_passes_real_networks_and_refuses_files_and_custom_ops() -> None:
    from worker.engine.models import BrainAge3D

    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3), torch.nn.BatchNorm3d(4), torch.nn.GELU(),
                              torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(4, 1)).eval()
    for module in (BrainAge3D(channels=TINY_CHANNELS).eval(), net):
        assert refused_operators(torchscript_operators(torch.jit.script(module))) == []
    assert refused_operators(torchscript_operators(torch.jit.script(_FromFile("/x")))) == ["aten::from_file"]
    assert refused_operators({"aten::conv3d", "mylib::exfiltrate", "aten::save"}) == ["aten::save", "mylib::exfiltrate"]


def test_features_computed_in_the_host_equal_those_computed_in_process(tmp_path: Path) -> None:
    import numpy as np

    from worker.engine.models import BrainAge3D, load_model

    torch.manual_seed(0)
    path = save_tiny_model(BrainAge3D(channels=TINY_CHANNELS, mean_age=60.0), tmp_path / "good.pt")
    x, ages = torch.randn(3, 1, *TINY_SHAPE), torch.tensor([40.0, 60.0, 80.0])
    local = load_model(path).computer("cpu")
    layers = list(local.aliases.values())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the host: the same reduction order
    try:
        expected = local.compute(x, ages, True, layers)
        by_vmap = local.compute(x, ages, True, layers, "vmap")
    finally:
        torch.set_num_threads(threads)
    with ModelHost() as host:
        hosted = host.load(path)
        assert hosted.aliases == local.aliases and hosted.paths == local.paths
        got = hosted.compute(x, ages, True, layers)
        assert hosted.gradient_method in (None, "vmap", "loop", "hooks")  # auto: decided, or still timing
        hosted_vmap = hosted.compute(x, ages, True, layers, "vmap")  # the method asked for, in the host
        assert hosted.gradient_method == "vmap"
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
        np.testing.assert_array_equal(hosted_vmap[key], by_vmap[key], err_msg=key)


def test_an_exported_program_loads_and_runs_in_the_host(tmp_path: Path) -> None:
    from worker.engine.models import BrainAge3D

    torch.manual_seed(0)
    module = BrainAge3D(channels=TINY_CHANNELS, mean_age=60.0).eval()
    path = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(module, (torch.zeros(1, 1, *TINY_SHAPE),)), str(path))
    write_sidecar(path, ModelMetadata(input_shape=TINY_SHAPE, voxel_size=(TINY_VOXEL,) * 3))
    with ModelHost() as host:
        hosted = host.load(path)
        assert hosted.format == "export"
        got = hosted.compute(torch.zeros(2, 1, *TINY_SHAPE), torch.tensor([50.0, 70.0]), False, [])
    with torch.no_grad():
        expected = module(torch.zeros(2, 1, *TINY_SHAPE)).reshape(-1).numpy()
    assert got["prediction"] == pytest.approx(expected, rel=1e-5)


def test_a_stopped_call_kills_the_host_at_once(tmp_path: Path) -> None:
    import time

    from worker.engine.sandbox import HostStopped

    class _Endless(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.output = torch.nn.Linear(1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.output(x.mean().reshape(1, 1)).reshape(-1)
            i = 0
            while torch.is_grad_enabled() and i >= 0:
                i = i + 1
            return out

    stop = {"now": False}
    host = ModelHost(should_stop=lambda: stop["now"]).start()
    hosted = host.load(_scripted(_Endless(), tmp_path / "endless.pt"))
    pid = host._proc.pid  # type: ignore[union-attr]
    import threading

    threading.Timer(1.0, lambda: stop.update(now=True)).start()
    asked = time.monotonic()
    with pytest.raises(HostStopped):
        hosted.compute(torch.ones(1, 1, *TINY_SHAPE), torch.ones(1), True, ["output"])
    assert time.monotonic() - asked < 1.0 + 2.0
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    host.close()


def test_the_host_refuses_to_start_when_the_data_folder_would_be_readable() -> None:
    import sys as _sys

    inside = str(Path(_sys.prefix) / "brainmia-data")
    with pytest.raises(ModelError, match="private folder"):
        ModelHost(HostLimits(private=(inside,))).start()
