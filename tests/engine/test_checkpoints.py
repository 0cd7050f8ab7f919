"""Checkpoints as training code writes them: Opacus, DDP and Lightning prefixes and wrappers."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from torch import nn

from worker.engine.errors import ModelError
from worker.engine.models import (
    ARCHITECTURES,
    build_architecture,
    load_model,
    register_architecture,
)
from worker.engine.models.checkpoints import fit_state_dict

GRID = (16, 16, 16)
TINY = {"arch": "brain_age_3d", "arch_kwargs": {"channels": [2, 2]}, "input_shape": list(GRID), "voxel_size": 4}


def _predict(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    module.eval()
    with torch.no_grad():
        return module(x)


def _opacus_trained(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """A tiny brain_age_3d trained two DP-SGD steps by Opacus: (GradSampleModule, its module)."""
    from opacus import PrivacyEngine
    from opacus.validators import ModuleValidator

    torch.manual_seed(seed)
    net = build_architecture("brain_age_3d", channels=(2, 2))
    assert ModuleValidator.validate(net, strict=False) == []  # InstanceNorm, no BatchNorm
    data = torch.utils.data.TensorDataset(torch.randn(8, 1, *GRID), torch.rand(8) * 40 + 40)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    engine = PrivacyEngine()
    model, optimizer, loader = engine.make_private(
        module=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.05),
        data_loader=torch.utils.data.DataLoader(data, batch_size=4), noise_multiplier=1.0, max_grad_norm=1.0)
    for x, y in loader:
        optimizer.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        optimizer.step()
    assert engine.accountant.history, "Opacus took no private step"
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items()), "training changed nothing"
    return model, net


def test_opacus_checkpoint_loads_as_the_built_in(tmp_path: Path) -> None:
    private, net = _opacus_trained()
    state = private.state_dict()
    assert all(k.startswith("_module.") for k in state)
    path = tmp_path / "dp.pt"
    torch.save(state, path)
    loaded = load_model(path, TINY)
    x = torch.randn(3, 1, *GRID)
    assert torch.allclose(_predict(loaded.module, x), _predict(net, x), atol=1e-5)
    assert loaded.format == "state_dict"
    assert loaded.provenance()["weights_note"] == "stripped the '_module.' prefix (Opacus) from every parameter name"


def test_ddp_checkpoint_loads(tmp_path: Path) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(1)
    net = build_architecture("brain_age_3d", channels=(2, 2))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(net)
        state = ddp.state_dict()
    finally:
        dist.destroy_process_group()
    assert all(k.startswith("module.") for k in state)
    path = tmp_path / "ddp.pth"
    torch.save(state, path)
    loaded = load_model(path, TINY)
    x = torch.randn(2, 1, *GRID)
    assert torch.allclose(_predict(loaded.module, x), _predict(net, x))
    assert "'module.' prefix (DistributedDataParallel)" in loaded.provenance()["weights_note"]


def _lightning_checkpoint(net: nn.Module, hyper_parameters: dict) -> dict:
    """A checkpoint laid out as Lightning 2.x's ``Trainer.save_checkpoint`` writes it (the
    LightningModule holds the network as ``self.model``)."""
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    ((net(torch.randn(2, 1, *GRID)) - 50.0) ** 2).mean().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    return {
        "epoch": 0, "global_step": 2, "pytorch-lightning_version": "2.6.6",
        "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 1, "completed": 1}}}},
        "callbacks": {"ModelCheckpoint{'monitor': None, 'mode': 'min'}": {
            "best_model_score": None, "best_model_path": "/runs/epoch=0-step=2.ckpt", "dirpath": "/runs",
            "best_k_models": {}, "kth_value": torch.tensor(float("inf"))}},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [scheduler.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": hyper_parameters,
    }


def test_lightning_checkpoint_loads(tmp_path: Path) -> None:
    torch.manual_seed(2)
    net = build_architecture("brain_age_3d", channels=(2, 2))
    path = tmp_path / "last.ckpt"
    torch.save(_lightning_checkpoint(net, {"lr": 0.01, "channels": (2, 2)}), path)
    loaded = load_model(path, TINY)
    x = torch.randn(2, 1, *GRID)
    assert torch.allclose(_predict(loaded.module, x), _predict(net, x))
    assert "'model.' prefix (Lightning)" in loaded.provenance()["weights_note"]


def test_lightning_checkpoint_with_python_objects_is_refused_clearly(tmp_path: Path) -> None:
    net = build_architecture("brain_age_3d", channels=(2, 2))
    path = tmp_path / "last.ckpt"
    torch.save(_lightning_checkpoint(net, {"args": argparse.Namespace(lr=0.01)}), path)
    with pytest.raises(ModelError) as err:
        load_model(path, TINY)
    reason = err.value.reason
    assert "argparse.Namespace" in reason and "full Lightning checkpoint" in reason
    assert "['state_dict']" in reason


def test_stripped_keys_that_do_not_fit_give_the_usual_error(tmp_path: Path) -> None:
    other = build_architecture("brain_age_slice_mean", channels=(2, 2))
    path = tmp_path / "dp.pt"
    torch.save({f"_module.{k}": v for k, v in other.state_dict().items()}, path)
    with pytest.raises(ModelError) as err:
        load_model(path, TINY)
    reason = err.value.reason
    assert "weights do not fit architecture 'brain_age_3d'" in reason
    assert "'_module.'" in reason and "Opacus" in reason and "still do not fit" in reason


class _Outer(nn.Module):
    """A network whose own first module is called ``model``."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Conv3d(1, 1, 3, padding=1)
        self.head = nn.Linear(1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.model(x).mean(dim=(2, 3, 4)))[:, 0]


@pytest.fixture
def outer_arch():
    name = "test_outer_model_named_model"
    register_architecture(name)(_Outer)
    yield name
    ARCHITECTURES.pop(name, None)


def test_a_model_whose_first_module_is_called_model_keeps_its_keys(tmp_path: Path, outer_arch: str) -> None:
    torch.manual_seed(3)
    net = _Outer()
    meta = {**TINY, "arch": outer_arch, "arch_kwargs": {}}
    path = tmp_path / "plain.pt"
    torch.save(net.state_dict(), path)
    loaded = load_model(path, meta)
    assert loaded.weights_note is None and "weights_note" not in loaded.provenance()
    x = torch.randn(2, 1, *GRID)
    assert torch.allclose(_predict(loaded.module, x), _predict(net, x))
    # the same model trained by Lightning as self.model: one 'model.' stripped, not two
    path = tmp_path / "lightning.pt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}, "epoch": 1}, path)
    loaded = load_model(path, meta)
    assert torch.allclose(_predict(loaded.module, x), _predict(net, x))
    assert loaded.weights_note == "stripped the 'model.' prefix (Lightning) from every parameter name"


def test_fit_state_dict_nested_prefixes_and_no_partial_strip() -> None:
    w = torch.zeros(1)
    fitted, note = fit_state_dict({"model._module.a": w, "model._module.b": w}, ["a", "b"])
    assert sorted(fitted) == ["a", "b"] and "'model._module.'" in note and "Lightning around Opacus" in note
    # a prefix on only some keys is never stripped
    kept, note = fit_state_dict({"module.a": w, "b": w}, ["a", "b"])
    assert sorted(kept) == ["b", "module.a"] and note is None
