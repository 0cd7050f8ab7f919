"""MONAI's 3D DenseNet121 and ResNet as built-in architectures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import DenseNet121, ResNet, resnet10, resnet50

from worker.engine.errors import InputError
from worker.engine.features.batch import BatchComputer
from worker.engine.features.methods import loop_jacobian, vmap_jacobian
from worker.engine.features.per_sample import FunctionalModel
from worker.engine.models import (
    ModelMetadata,
    build_architecture,
    load_model,
    write_sidecar,
)

GRID = (16, 16, 16)
DENSE = {"init_features": 4, "growth_rate": 4, "block_config": [1, 1]}
RESNET = {"depth": 10, "block_inplanes": [2, 4, 4, 4]}


def _frozen(module: torch.nn.Module) -> torch.nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _trained_bn(module: torch.nn.Module) -> torch.nn.Module:
    """Give BatchNorm running statistics other than 0 / 1 (a few training-mode passes)."""
    module.train()
    with torch.no_grad():
        for _ in range(3):
            module(torch.randn(4, 1, *GRID) * 2 + 1)
    return module.eval()


def _monai_dense() -> torch.nn.Module:
    return DenseNet121(spatial_dims=3, in_channels=1, out_channels=1, init_features=4, growth_rate=4,
                       block_config=(1, 1))


def _monai_resnet() -> torch.nn.Module:
    return ResNet("basic", [1, 1, 1, 1], [2, 4, 4, 4], spatial_dims=3, n_input_channels=1, num_classes=1)


@pytest.mark.parametrize(("arch", "kwargs", "monai_net"), [
    ("monai_densenet121", DENSE, _monai_dense), ("monai_resnet", RESNET, _monai_resnet)])
def test_a_monai_state_dict_loads_and_predicts_the_same(tmp_path: Path, arch, kwargs, monai_net) -> None:
    torch.manual_seed(0)
    theirs = _trained_bn(monai_net())
    path = tmp_path / "model.pt"
    torch.save(theirs.state_dict(), path)  # MONAI's own keys, as a user saves them
    write_sidecar(path, ModelMetadata(arch=arch, arch_kwargs=kwargs, input_shape=GRID, voxel_size=(4, 4, 4)))
    loaded = load_model(path)
    assert loaded.weights_note is None
    assert list(loaded.module.state_dict()) == list(theirs.state_dict())
    x = torch.randn(3, 1, *GRID)
    with torch.no_grad():
        ours, ref = loaded.module(x), theirs(x)
    assert ref.shape == (3, 1) and ours.shape == (3,)
    assert torch.allclose(ours, ref[:, 0], atol=1e-6)


@pytest.mark.parametrize(("depth", "monai_fn"), [(10, resnet10), (50, resnet50)])
def test_resnet_depths_are_monais(depth: int, monai_fn) -> None:
    ours = build_architecture("monai_resnet", depth=depth, widen_factor=1 / 16)
    theirs = monai_fn(spatial_dims=3, n_input_channels=1, num_classes=1, widen_factor=1 / 16)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


def test_options_pass_through_and_bad_ones_are_clear() -> None:
    net = build_architecture("monai_densenet121", **DENSE, out_channels=40)
    with torch.no_grad():
        assert _frozen(net)(torch.zeros(2, 1, *GRID)).shape == (2, 40)  # age bins stay (B, K)
    with pytest.raises(InputError, match="monai_resnet.*depth must be one of"):
        build_architecture("monai_resnet", depth=11)
    with pytest.raises(InputError, match="monai_densenet121.*pretrained"):
        build_architecture("monai_densenet121", pretrained=True)
    with pytest.raises(InputError, match="monai_densenet121"):
        build_architecture("monai_densenet121", no_such_option=1)


@pytest.mark.parametrize(("arch", "kwargs"), [("monai_densenet121", DENSE), ("monai_resnet", RESNET)])
def test_white_box_gradients_vmap_equal_the_loop(arch: str, kwargs: dict) -> None:
    torch.manual_seed(1)
    net = _frozen(_trained_bn(build_architecture(arch, **kwargs)))
    x = torch.randn(3, 1, *GRID)
    fmodel = FunctionalModel(net)
    jac_v, pred_v = vmap_jacobian(fmodel, x)
    jac_l, pred_l = loop_jacobian(fmodel, x)
    with torch.no_grad():
        assert torch.allclose(pred_l, net(x), atol=1e-5)
    assert torch.allclose(pred_v, pred_l, atol=1e-5)
    assert set(jac_v) == set(jac_l) == {n for n, _ in net.named_parameters()}
    for name, g in jac_l.items():
        assert float(g.abs().max()) > 0 or "bias" in name or "norm" in name or "bn" in name
        assert torch.allclose(jac_v[name], g, rtol=1e-4, atol=1e-6 * float(g.abs().max() + 1)), name
    for method in ("vmap", "loop"):
        computer = BatchComputer(net, "cpu", method=method)
        layers = [computer.aliases["first_conv"], computer.aliases["output"]]
        out = computer.compute(x, torch.tensor([50.0, 60.0, 70.0]), True, layers)
        assert np.allclose(out["prediction"], pred_l.numpy(), atol=1e-5)
        for layer in layers:
            assert out[f"grad:{layer}"].shape[0] == 3 and np.isfinite(out[f"grad:{layer}"]).all()


def test_torchscript_of_a_monai_built_in_loads(tmp_path: Path) -> None:
    torch.manual_seed(2)
    net = _frozen(build_architecture("monai_resnet", **RESNET))
    path = tmp_path / "resnet.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    loaded = load_model(path, {"input_shape": list(GRID), "voxel_size": 4})
    x = torch.randn(2, 1, *GRID)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), net(x), atol=1e-6)


def test_a_monai_state_dict_is_checked_in_the_sandbox(tmp_path: Path) -> None:
    from worker.engine.sandbox.check import check_model_file

    path = tmp_path / "dense.pt"
    torch.save({f"module.{k}": v for k, v in _monai_dense().state_dict().items()}, path)  # DDP-trained
    write_sidecar(path, ModelMetadata(arch="monai_densenet121", arch_kwargs=DENSE, input_shape=GRID,
                                      voxel_size=(4, 4, 4)))
    checked = check_model_file(path, timeout_s=120)
    assert checked.format == "state_dict" and checked.metadata.arch == "monai_densenet121"


def test_importing_the_models_does_not_import_monai() -> None:
    code = "import sys, worker.engine.models as m; assert 'monai_resnet' in m.ARCHITECTURES; assert 'monai' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
