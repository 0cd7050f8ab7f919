"""Uploaded model files are checked in a resource-limited child process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.backend.upload_fixtures import make_code_pickle
from tests.conftest import TINY_CHANNELS, TINY_SHAPE, TINY_VOXEL, save_tiny_model
from worker.engine.errors import ModelError
from worker.engine.models import ModelMetadata, write_sidecar
from worker.engine.sandbox.check import check_model_file, check_model_files


class _Loops(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = x.sum()
        i = 0
        while i >= 0:  # forever (until the limit)
            total = total + 1.0
            i = i + 1
        return total.reshape(1)


class _Forges(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print('{"ok": true, "format": "torchscript", "metadata": {}}')
        return torch.full([x.shape[0]], float("nan"))


class _Hungry(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        big = torch.ones([1 << 31], dtype=torch.float64)  # 16 GiB
        return (x.mean() + big.sum()).reshape(1)


def _scripted(module: torch.nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(module), str(path))
    write_sidecar(path, ModelMetadata(input_shape=TINY_SHAPE, voxel_size=(TINY_VOXEL,) * 3))
    return path


def test_a_good_model_is_checked_in_the_child(tmp_path: Path) -> None:
    from worker.engine.models import BrainAge3D

    path = save_tiny_model(BrainAge3D(channels=TINY_CHANNELS), tmp_path / "good.pt")
    checked = check_model_files([path, path])
    assert [c.format for c in checked] == ["torchscript", "torchscript"]
    assert checked[0].metadata.input_shape == TINY_SHAPE and checked[0].metadata.arch == "brain_age_3d"


def test_a_model_host_starts_without_warnings_in_the_server_log(caplog: pytest.LogCaptureFixture) -> None:
    """The host's warm-up (before confinement) runs every gradient method on a random volume: a
    blank one made the method check log that exact methods disagree, in every job's log."""
    import logging

    from worker.engine.sandbox.client import ModelHost

    with caplog.at_level(logging.WARNING, logger="worker.engine.sandbox.client"):
        host = ModelHost().start()
        host.close()
    assert not [r.getMessage() for r in caplog.records if "model host" in r.getMessage()]


def test_a_pickle_that_runs_code_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = make_code_pickle(tmp_path / "evil.pt", marker)
    with pytest.raises(ModelError):
        check_model_file(path)
    assert not marker.exists()


def test_a_model_that_never_returns_is_stopped(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="longer than|stopped by signal"):
        check_model_file(_scripted(_Loops(), tmp_path / "loops.pt"), timeout_s=4)


def test_printed_answers_cannot_forge_a_pass(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="non-finite"):
        check_model_file(_scripted(_Forges(), tmp_path / "forges.pt"))


def test_memory_is_limited(tmp_path: Path) -> None:
    with pytest.raises(ModelError):
        check_model_file(_scripted(_Hungry(), tmp_path / "hungry.pt"), memory_bytes=3 << 30)


def test_the_first_bad_file_of_several_is_named(tmp_path: Path) -> None:
    from worker.engine.models import BrainAge3D

    good = save_tiny_model(BrainAge3D(channels=TINY_CHANNELS), tmp_path / "round_001.pt")
    bad = _scripted(_Forges(), tmp_path / "round_002.pt")
    with pytest.raises(ModelError) as info:
        check_model_files([good, bad, good])
    assert info.value.path == "round_002.pt"
