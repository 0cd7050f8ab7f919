"""Feature extraction end to end: manifest + model -> per-scan feature table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import TINY_CHANNELS, TINY_SHAPE, TINY_VOXEL, save_tiny_model
from worker.engine.cache import VolumeCache
from worker.engine.errors import InputError
from worker.engine.features import ExtractionOptions, extract_features, features_from_predictions
from worker.engine.manifest import load_manifest
from worker.engine.models import BrainAge3D, load_model
from worker.engine.training import load_volumes


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_tiny_model(BrainAge3D(channels=TINY_CHANNELS, mean_age=60.0, age_scale=5.0), tmp_path_factory.mktemp("m") / "m.pt")


def test_white_box_table(tiny_cohort: Path, tiny_model: Path, tmp_path: Path) -> None:
    manifest = load_manifest(tiny_cohort)
    model = load_model(tiny_model)
    cache = VolumeCache(tmp_path / "cache")
    ft = extract_features(model, manifest, ExtractionOptions(batch_size=7), cache=cache)
    n = len(manifest.records)
    table = ft.table
    assert list(table["scan_id"]) == [r.scan_id for r in manifest.records]
    assert list(table.columns[:5]) == ["scan_id", "member", "age", "prediction", "error"]
    assert set(table["member"]) == {0, 1}
    assert np.allclose(table["error"], table["prediction"] - table["age"])
    assert ft.layer_aliases == {"first_conv": "blocks.block1.conv", "last_conv": "conv6", "output": "output"}
    norms = ft.grad_norm_columns
    assert norms == [f"grad_norm:{p}" for p in ("blocks.block1.conv", "blocks.block2.conv", "blocks.block3.conv", "conv6", "output")]
    assert {"sex", "site"} <= set(table.columns) and ft.attributes[:2] == ["sex", "site"]
    hidden = 64
    assert ft.arrays["activation"].shape == (n, hidden)
    assert ft.arrays["grad:blocks.block1.conv"].shape == (n, TINY_CHANNELS[0] * 27 + TINY_CHANNELS[0])
    assert ft.arrays["grad:conv6"].shape == (n, TINY_CHANNELS[-1] * hidden + hidden)
    assert ft.arrays["grad:output"].shape == (n, hidden + 1)

    # predictions and gradients agree with a plain eager model, scan by scan
    eager = BrainAge3D(channels=TINY_CHANNELS)
    eager.load_state_dict({k: v for k, v in model.module.state_dict().items()})
    eager.eval()
    x = load_volumes(manifest.records[:3], model.metadata.conform_spec())
    for i in range(3):
        eager.zero_grad()
        pred = eager(x[i : i + 1]).reshape(())
        ((pred - manifest.records[i].age) ** 2).backward()
        assert float(pred) == pytest.approx(table["prediction"][i], rel=1e-5)
        out_grad = torch.cat([eager.output.weight.grad.flatten(), eager.output.bias.grad])
        assert np.allclose(ft.arrays["grad:output"][i], out_grad.numpy(), rtol=1e-4, atol=1e-5 * float(out_grad.abs().max()))
        assert table["grad_norm:output"][i] == pytest.approx(float(out_grad.norm()), rel=1e-4)

    # a second run reads conformed volumes from the cache
    misses = cache.stats.misses
    extract_features(model, manifest, ExtractionOptions(white_box=False), cache=cache)
    assert cache.stats.misses == misses and cache.stats.hits >= n

    path = ft.save(tmp_path / "features.parquet")
    assert pd.read_parquet(path).shape == table.shape
    assert set(np.load(tmp_path / "features.arrays.npz").files) == set(ft.arrays)


def test_black_box_table_has_no_gradients(tiny_cohort: Path, tiny_model: Path) -> None:
    ft = extract_features(load_model(tiny_model), load_manifest(tiny_cohort), ExtractionOptions(white_box=False))
    assert not ft.white_box and ft.arrays == {}
    assert {"prediction", "error"} <= set(ft.table.columns)


def test_layers_by_path_and_unknown_layer(tiny_cohort: Path, tiny_model: Path) -> None:
    model, manifest = load_model(tiny_model), load_manifest(tiny_cohort)
    ft = extract_features(model, manifest, ExtractionOptions(layers=("blocks.block2.conv",)))
    assert [k for k in ft.arrays if k.startswith("grad:")] == ["grad:blocks.block2.conv"]
    with pytest.raises(InputError, match="unknown layer 'fc9'.*blocks.block1.conv"):
        extract_features(model, manifest, ExtractionOptions(layers=("fc9",)))


def test_cuda_device(tiny_cohort: Path, tiny_model: Path) -> None:
    """On a GPU machine CUDA extraction matches the CPU; elsewhere asking for it is a clear error."""
    model, manifest = load_model(tiny_model), load_manifest(tiny_cohort)
    if torch.cuda.is_available():
        cpu = extract_features(model, manifest, ExtractionOptions(device="cpu"))
        gpu = extract_features(load_model(tiny_model), manifest, ExtractionOptions(device="cuda"))
        assert np.allclose(gpu.table["prediction"], cpu.table["prediction"], atol=1e-3)
        assert np.allclose(gpu.arrays["grad:output"], cpu.arrays["grad:output"], rtol=1e-3, atol=1e-3)
    else:
        with pytest.raises(InputError, match="CUDA is not available"):
            extract_features(model, manifest, ExtractionOptions(device="cuda"))


def test_features_from_predictions(tiny_cohort: Path) -> None:
    manifest = load_manifest(tiny_cohort)
    preds = {r.scan_id: r.age + 1.5 for r in manifest.records}
    ft = features_from_predictions(manifest, preds)
    assert np.allclose(ft.table["error"], 1.5)
    assert not ft.white_box


def test_tiny_grid_constants_match_the_cohort(tiny_cohort: Path) -> None:
    import nibabel as nib

    first = load_manifest(tiny_cohort).records[0]
    img = nib.load(first.path)
    assert img.shape == TINY_SHAPE and np.allclose(img.header.get_zooms(), TINY_VOXEL)


def test_exact_float32_turns_tf32_off_and_restores_it() -> None:
    from worker.engine.features.extract import exact_float32

    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = True
    try:
        with exact_float32():
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32
        with pytest.raises(RuntimeError), exact_float32():
            raise RuntimeError("restored on errors too")
        assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
