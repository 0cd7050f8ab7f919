"""Model loading: every format, metadata precedence, refusal of unsafe files, output checks."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from worker.engine.errors import InputError, ModelError
from worker.engine.models import (
    BrainAge3D,
    BrainAgeSliceMean,
    ModelMetadata,
    build_architecture,
    detect_format,
    load_model,
    parse_shape,
    resolve_metadata,
    sidecar_path,
    write_sidecar,
)

SHAPE = (20, 24, 20)
KW = {"channels": [4, 8, 8]}
META = {"input_shape": SHAPE, "arch": "brain_age_3d", "arch_kwargs": KW}


@pytest.fixture()
def eager() -> nn.Module:
    torch.manual_seed(0)
    return BrainAge3D(**KW).eval()


def _save(kind: str, model: nn.Module, path: Path) -> Path:
    x = torch.randn(1, 1, *SHAPE)
    if kind == "torchscript":
        torch.jit.save(torch.jit.script(model), str(path))
    elif kind == "traced":
        torch.jit.save(torch.jit.trace(model, x), str(path))
    elif kind == "export":
        torch.export.save(torch.export.export(model, (x,)), path)
    elif kind == "safetensors":
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(path))
    elif kind == "state_dict":
        torch.save(model.state_dict(), path)
    elif kind == "wrapped_state_dict":
        torch.save({"state_dict": model.state_dict(), "epoch": 3}, path)
    return path


@pytest.mark.parametrize(
    ("kind", "fmt"),
    [
        ("torchscript", "torchscript"),
        ("traced", "torchscript"),
        ("export", "export"),
        ("safetensors", "safetensors"),
        ("state_dict", "state_dict"),
        ("wrapped_state_dict", "state_dict"),
    ],
)
def test_every_format_loads_and_predicts_the_same(kind: str, fmt: str, eager: nn.Module, tmp_path: Path) -> None:
    path = _save(kind, eager, tmp_path / f"model.{kind}")  # the suffix does not matter: content does
    loaded = load_model(path, META)
    assert loaded.format == fmt == detect_format(path)
    assert len(loaded.sha256) == 64
    x = torch.randn(3, 1, *SHAPE)
    with torch.no_grad():
        expected = eager(x)
        got = torch.cat([loaded.module(x[i : i + 1]).reshape(1) for i in range(3)])
    assert torch.allclose(got, expected, atol=1e-4)
    assert loaded.provenance()["format"] == fmt


def test_slice_mean_weights(tmp_path: Path) -> None:
    model = BrainAgeSliceMean(channels=[4, 8], width=0.5).eval()
    path = _save("state_dict", model, tmp_path / "w.pt")
    loaded = load_model(path, {"input_shape": SHAPE, "arch": "brain_age_slice_mean", "arch_kwargs": {"channels": [4, 8], "width": 0.5}})
    assert isinstance(loaded.module, BrainAgeSliceMean)


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("wrap", ["raw_pickle", "torch_save"])
def test_code_running_pickles_are_refused_unrun(wrap: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    if wrap == "raw_pickle":
        path.write_bytes(pickle.dumps(_Payload(marker)))
    else:
        torch.save({"weights": _Payload(marker)}, path)
    with pytest.raises(ModelError, match="refused"):
        load_model(path, META)
    assert not marker.exists()


def test_whole_pickled_module_is_refused_with_advice(eager: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(eager, path)
    with pytest.raises(ModelError, match="TorchScript"):
        load_model(path, META)


def test_weights_need_an_architecture(eager: nn.Module, tmp_path: Path) -> None:
    path = _save("safetensors", eager, tmp_path / "w.safetensors")
    with pytest.raises(ModelError, match="--arch"):
        load_model(path, {"input_shape": SHAPE})


def test_weights_that_do_not_fit_are_reported(eager: nn.Module, tmp_path: Path) -> None:
    path = _save("state_dict", eager, tmp_path / "w.pt")
    with pytest.raises(ModelError, match="do not fit"):
        load_model(path, {"input_shape": SHAPE, "arch": "brain_age_3d", "arch_kwargs": {"channels": [4, 8, 16]}})


def test_unknown_file_and_missing_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world, not a model")
    with pytest.raises(ModelError, match="unrecognised"):
        load_model(junk, META)
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "absent.pt", META)


class _TwoOutputs(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :2]


class _NonFinite(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).sum(1) / 0.0


@pytest.mark.parametrize(("module", "match"), [(_TwoOutputs(), "one age per scan"), (_NonFinite(), "non-finite")])
def test_output_is_checked(module: nn.Module, match: str, tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(module), str(path))
    with pytest.raises(ModelError, match=match):
        load_model(path, {"input_shape": SHAPE})


def test_wrong_input_grid_is_reported(eager: nn.Module, tmp_path: Path) -> None:
    path = _save("torchscript", eager, tmp_path / "m.pt")
    with pytest.raises(ModelError, match="fails on a 1x1x2x2x2 input"):
        load_model(path, {"input_shape": (2, 2, 2)})


def test_options_win_over_the_sidecar(eager: nn.Module, tmp_path: Path) -> None:
    path = _save("torchscript", eager, tmp_path / "m.pt")
    write_sidecar(path, ModelMetadata(input_shape=SHAPE, voxel_size=4, normalize="none"))
    assert sidecar_path(path).name == "m.pt.json"
    meta = resolve_metadata(path, {"normalize": "zscore", "voxel_size": None})
    assert meta.input_shape == SHAPE and meta.voxel_size == (4.0, 4.0, 4.0) and meta.normalize == "zscore"
    assert load_model(path).metadata.normalize == "none"


def test_bad_sidecar_fields_are_named(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    path.write_bytes(b"")
    sidecar_path(path).write_text(json.dumps({"input_shape": [91, 109], "colour": "red"}))
    with pytest.raises(InputError) as info:
        resolve_metadata(path)
    assert "input_shape" in str(info.value) and "colour" in str(info.value) and "m.pt.json" in str(info.value)
    sidecar_path(path).write_text("{not json")
    with pytest.raises(InputError, match="cannot read"):
        resolve_metadata(path)


def test_parse_shape_and_unknown_architecture() -> None:
    assert parse_shape("91x109x91") == (91, 109, 91)
    with pytest.raises(InputError):
        parse_shape("91x109")
    with pytest.raises(InputError, match="brain_age_3d"):
        build_architecture("resnet")
