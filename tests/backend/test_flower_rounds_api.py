"""Flower rounds (``.npz`` parameter arrays) and a MONAI state dict uploaded through the API."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from fastapi.testclient import TestClient

from tests.conftest import TINY_SHAPE, TINY_VOXEL
from worker.engine.models import build_architecture

from . import test_federated_api as federated_api
from .test_federated_api import error, stored_nothing, upload_rounds
from .upload_fixtures import tiny_metadata

upload_app = federated_api.upload_app  # the upload-only app and its client (fixtures)
uploader = federated_api.uploader


def _flower_rounds(folder: Path, n: int = 3) -> list[list[np.ndarray]]:
    folder.mkdir()
    rounds = []
    for r in range(1, n + 1):
        torch.manual_seed(r)
        meta = tiny_metadata()
        net = build_architecture(meta["arch"], **meta["arch_kwargs"])
        arrays = [v.numpy() for v in net.state_dict().values()]
        np.savez(folder / f"round_{r:03d}.npz", *arrays)
        rounds.append(arrays)
    return rounds


def _zip(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, path.name)
    return archive


def test_flower_rounds_upload_as_federated_rounds(upload_app, uploader: TestClient, tmp_path: Path) -> None:
    _flower_rounds(tmp_path / "rounds")
    response = upload_rounds(uploader, _zip(tmp_path / "rounds", tmp_path / "rounds.zip"), tiny_metadata())
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["kind"] == "federated_rounds" and model["n_rounds"] == 3 and model["format"] == "npz"
    stored = sorted(p.name for p in upload_app.state.storage.model_dir(model["id"]).iterdir())
    assert stored == sorted([f"round_{r:03d}.npz" for r in (1, 2, 3)] + [f"round_{r:03d}.npz.json" for r in (1, 2, 3)])


def test_a_flower_round_that_does_not_fit_is_refused_naming_it(upload_app, uploader: TestClient, tmp_path: Path) -> None:
    rounds = _flower_rounds(tmp_path / "rounds")
    arrays = rounds[1]
    arrays[0] = arrays[0][:, :, :2]
    np.savez(tmp_path / "rounds" / "round_002.npz", *arrays)
    body = error(upload_rounds(uploader, _zip(tmp_path / "rounds", tmp_path / "bad.zip"), tiny_metadata()),
                 422, "invalid_model")
    assert body["message"].startswith("round_002.npz:")
    assert "array 0 (arr_0)" in body["message"] and "'blocks.block1.conv.weight'" in body["message"]
    assert stored_nothing(upload_app)


def test_a_ddp_trained_monai_state_dict_uploads(uploader: TestClient, tmp_path: Path) -> None:
    kwargs = {"init_features": 4, "growth_rate": 4, "block_config": [1, 1]}
    net = build_architecture("monai_densenet121", **kwargs)
    path = tmp_path / "densenet.pt"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    metadata = {"input_shape": list(TINY_SHAPE), "voxel_size": TINY_VOXEL, "arch": "monai_densenet121",
                "arch_kwargs": kwargs}
    response = upload_rounds(uploader, path, metadata, kind=None)
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["format"] == "state_dict" and model["metadata"]["arch"] == "monai_densenet121"
