"""Per-sample gradients must equal a batch-size-1 loop, for every built-in and model format."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from worker.engine.features.methods import JACOBIAN_METHODS, available_methods
from worker.engine.features.per_sample import (
    FunctionalModel,
    layer_aliases,
    param_modules,
)

METHODS = sorted(JACOBIAN_METHODS)
from worker.engine.models import BrainAge3D, BrainAgeSliceMean

SHAPE = (20, 24, 20)


def _loop_grads(module: nn.Module, x: torch.Tensor, ages: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """The reference: one backward pass per scan."""
    out = []
    params = dict(module.named_parameters())
    for i in range(x.shape[0]):
        for p in params.values():
            p.requires_grad_(True)
            p.grad = None
        loss = (module(x[i : i + 1]).reshape(()) - ages[i]) ** 2
        loss.backward()
        out.append({n: p.grad.detach().clone() for n, p in params.items()})
    for p in params.values():
        p.requires_grad_(False)
    return out


class _BatchNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm3d(4)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.bn(self.conv(x)))).flatten(1))[:, 0]


def _models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    bn = _BatchNormNet()
    with torch.no_grad():  # non-trivial running statistics, used as constants in eval mode
        bn.bn.running_mean.uniform_(-0.5, 0.5)
        bn.bn.running_var.uniform_(0.5, 2.0)
    return {
        "brain_age_3d": BrainAge3D(channels=(4, 8, 8), width=1.0, mean_age=60.0),
        "brain_age_slice_mean": BrainAgeSliceMean(channels=(4, 8, 8), width=0.25, mean_age=60.0),
        "batchnorm_eval": bn,
    }


def per_sample_loss_grads(model: FunctionalModel, x: torch.Tensor, ages: torch.Tensor,
                          method: str) -> tuple[dict[str, torch.Tensor], torch.Tensor] | None:
    """Per-sample gradients of the squared error by one of the exact methods (None: the method
    cannot run on this model, and says so)."""
    if method not in available_methods(model):
        with pytest.raises(ValueError, match="per-sample gradients by hooks need"):
            JACOBIAN_METHODS[method](model, x)
        return None
    jac, pred = JACOBIAN_METHODS[method](model, x)
    scale = 2.0 * (pred - ages)
    return {n: g * scale.view(-1, *([1] * (g.dim() - 1))) for n, g in jac.items()}, pred


def _batch(n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, *SHAPE, generator=g), 45 + 35 * torch.rand(n, generator=g)


def _assert_equal(batched: dict[str, torch.Tensor], reference: list[dict[str, torch.Tensor]]) -> None:
    for i, ref in enumerate(reference):
        # float32 rounding is relative to the sample's largest gradient entry (a conv bias
        # before an instance norm has a true gradient of 0 and only rounding noise)
        scale = max(g.abs().max() for g in ref.values())
        for name, g in ref.items():
            assert torch.allclose(batched[name][i], g, rtol=1e-4, atol=1e-5 * scale), (name, i)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", ["brain_age_3d", "brain_age_slice_mean", "batchnorm_eval"])
def test_per_sample_gradients_equal_batch_size_one_loop(name: str, method: str) -> None:
    module = _models()[name].eval()
    x, ages = _batch()
    result = per_sample_loss_grads(FunctionalModel(module), x, ages, method)
    if result is None:
        assert (name, method) == ("batchnorm_eval", "hooks")  # batch norm has parameters: not eligible
        return
    grads, pred = result
    with torch.no_grad():
        assert torch.allclose(pred, module(x), rtol=1e-5, atol=1e-4)
    _assert_equal(grads, _loop_grads(module, x, ages))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["script", "trace", "export"])
def test_per_sample_gradients_on_serialised_formats(kind: str, method: str, tmp_path: Path) -> None:
    eager = _models()["brain_age_3d"].eval()
    x, ages = _batch()
    if kind == "script":
        module: nn.Module = torch.jit.script(eager)
    elif kind == "trace":
        module = torch.jit.trace(eager, x[:2])
    else:
        path = tmp_path / "m.pt2"
        torch.export.save(torch.export.export(eager, (x[:1],)), path)
        module = torch.export.load(path).module()
    result = per_sample_loss_grads(FunctionalModel(module), x, ages, method)
    if result is None:
        assert method == "hooks"  # serialised models have no hooks
    else:
        _assert_equal(result[0], _loop_grads(eager, x, ages))
    # the substituted parameters are restored after the call
    for (n, p), (_, q) in zip(module.named_parameters(), eager.named_parameters()):
        assert torch.equal(p, q), n


def test_activation_is_input_of_output_layer() -> None:
    module = _models()["brain_age_3d"].eval()
    x, _ = _batch()
    captured: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        captured["a"] = inputs[0].flatten(1)

    handle = module.output.register_forward_hook(hook)
    with torch.no_grad():
        module(x)
    handle.remove()
    jac, _ = FunctionalModel(module).prediction_jacobian(x)
    assert torch.allclose(jac["output.weight"].flatten(1), captured["a"], rtol=1e-5, atol=1e-6)


def test_layer_aliases_of_built_ins() -> None:
    assert layer_aliases(param_modules(BrainAge3D())) == {
        "output": "output",
        "first_conv": "blocks.block1.conv",
        "last_conv": "conv6",
    }
    assert layer_aliases(param_modules(BrainAgeSliceMean())) == {
        "output": "output",
        "first_conv": "encoder.block1.conv",
        "last_conv": "conv7",
    }


def test_paper_parameter_counts() -> None:
    assert sum(p.numel() for p in BrainAge3D().parameters()) == pytest.approx(2.95e6, rel=0.01)
    assert sum(p.numel() for p in BrainAgeSliceMean().parameters()) == pytest.approx(1.0e6, rel=0.01)
