"""The exact per-sample gradient methods and the measured choice between them."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from worker.engine.errors import InputError
from worker.engine.features import methods
from worker.engine.features.batch import BatchComputer
from worker.engine.features.methods import (
    JACOBIAN_METHODS,
    MethodChooser,
    loop_jacobian,
    vmap_jacobian,
)
from worker.engine.features.per_sample import FunctionalModel
from worker.engine.models import BrainAge3D

SHAPE = (16, 20, 16)


@pytest.fixture(autouse=True)
def _fresh_cache():
    methods.clear_method_cache()
    yield
    methods.clear_method_cache()


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    module = BrainAge3D(channels=(4, 8, 8), mean_age=60.0, age_scale=5.0).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _batch(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 1, *SHAPE, generator=g), 45 + 35 * torch.rand(n, generator=g)


def _assert_same_features(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    scale = max(float(np.abs(v).max()) for v in b.values())
    for name in a:
        assert np.allclose(a[name], b[name], rtol=1e-4, atol=1e-5 * scale), name


def test_every_method_gives_the_same_features() -> None:
    module = _model()
    x, ages = _batch()
    layers = ["blocks.block1.conv", "conv6", "output"]
    by_method = {name: BatchComputer(module, "cpu", method=name).compute(x, ages, True, layers)
                 for name in [*JACOBIAN_METHODS, "auto"]}
    for name, values in by_method.items():
        _assert_same_features(values, by_method["loop"])
    with torch.no_grad():
        assert np.allclose(by_method["loop"]["prediction"], module(x).numpy(), rtol=1e-5, atol=1e-4)


def test_loop_matches_vmap_jacobian_exactly_in_shape_and_value() -> None:
    fmodel = FunctionalModel(_model())
    x, _ = _batch(3)
    jac_v, pred_v = vmap_jacobian(fmodel, x)
    jac_l, pred_l = loop_jacobian(fmodel, x)
    assert torch.allclose(pred_v, pred_l, rtol=1e-5, atol=1e-5)
    # rounding is relative to the largest entry (a conv bias before an instance norm has a true
    # gradient of 0 and only rounding noise)
    scale = max(float(g.abs().max()) for g in jac_v.values())
    for name, g in jac_v.items():
        assert jac_l[name].shape == g.shape
        assert torch.allclose(jac_l[name], g, rtol=1e-4, atol=1e-5 * scale), name


def test_auto_measures_once_then_reuses_the_choice() -> None:
    fmodel = FunctionalModel(_model())
    x, _ = _batch()
    chooser = MethodChooser(fmodel, "cpu")
    for _ in range(methods.MAX_ROUNDS):
        chooser.jacobian(x)
    chosen = chooser.method
    assert chosen in JACOBIAN_METHODS
    assert list(methods.chosen_methods().values()) == [chosen]
    # a new run on the same structure, grid, batch and device reuses it without measuring
    again = MethodChooser(FunctionalModel(_model()), "cpu")
    again.jacobian(x)
    assert again.method == chosen and again._times == {}
    # another grid is measured on its own
    other = MethodChooser(fmodel, "cpu")
    other.jacobian(torch.randn(4, 1, 24, 20, 16))
    assert len(methods.chosen_methods()) in (1, 2) and other._key != again._key


def test_auto_picks_the_faster_exact_method(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exact method made six times slower than the loop (and 200 ms a scan) is not the one
    chosen (five rounds: the minimum of each survives a busy machine's pauses)."""

    def slow(fmodel: FunctionalModel, x: torch.Tensor, ages: torch.Tensor | None = None):
        start = time.perf_counter()
        result = loop_jacobian(fmodel, x, ages)
        time.sleep(5 * (time.perf_counter() - start) + 0.2 * x.shape[0])
        return result

    monkeypatch.setattr(methods, "JACOBIAN_METHODS", {"slow": slow, "loop": loop_jacobian})
    monkeypatch.setattr(methods, "MAX_ROUNDS", 5)
    chooser = MethodChooser(FunctionalModel(_model()), "cpu")
    x, _ = _batch()
    while chooser.method is None:
        chooser.jacobian(x)
    assert chooser.method == "loop"


def test_unknown_method_is_refused() -> None:
    with pytest.raises(InputError, match="unknown gradient method 'fast'"):
        MethodChooser(FunctionalModel(_model()), "cpu", method="fast")


class _Mixing(torch.nn.Module):
    """Subtracts the batch mean in eval mode: samples interact, so one batched pass is not exact."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 3, padding=1)
        self.fc = torch.nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x)).mean(dim=(2, 3, 4))
        return self.fc(h - h.mean(dim=0, keepdim=True) + h)[:, 0]


def test_hooks_method_is_exact_where_eligible_and_dropped_where_samples_interact() -> None:
    fmodel = FunctionalModel(_model())
    x, _ = _batch()
    assert "hooks" in methods.available_methods(fmodel)
    assert methods._agree(methods.hooks_jacobian(fmodel, x), loop_jacobian(fmodel, x))
    # TorchScript has no hooks: not offered, and refused when asked for
    scripted = FunctionalModel(torch.jit.script(_model()))
    assert "hooks" not in methods.available_methods(scripted)
    with pytest.raises(InputError, match="'hooks' needs an eager model"):
        MethodChooser(scripted, "cpu", method="hooks")
    # a model that mixes samples: hooks differs from the loop and is never chosen
    torch.manual_seed(1)
    mixing = FunctionalModel(_Mixing().eval())
    assert not methods._agree(methods.hooks_jacobian(mixing, x), loop_jacobian(mixing, x))
    chooser = MethodChooser(mixing, "cpu")
    while chooser.method is None:
        jac, pred = chooser.jacobian(x)
        assert methods._agree((jac, pred), loop_jacobian(mixing, x))
    assert chooser.method in ("vmap", "loop")


def test_a_method_asked_for_per_batch_is_used_for_that_batch_and_reported() -> None:
    module = _model()
    x, ages = _batch()
    layers = ["conv6", "output"]
    computer = BatchComputer(module, "cpu")
    assert computer.gradient_method is None  # auto, nothing timed yet
    fixed = {name: BatchComputer(module, "cpu", method=name).compute(x, ages, True, layers) for name in ("vmap", "loop")}
    for name in ("vmap", "loop", "vmap"):
        values = computer.compute(x, ages, True, layers, name)
        assert computer.gradient_method == name
        for key, value in values.items():  # bit for bit the computer built with that method
            np.testing.assert_array_equal(value, fixed[name][key], err_msg=f"{name} {key}")
    computer.compute(x, ages, True, layers, "auto")
    computer.compute(x, ages, True, layers)  # None keeps the computer's own (auto, now decided)
    assert computer.gradient_method in JACOBIAN_METHODS
    with pytest.raises(InputError, match="unknown gradient method 'fast'"):
        computer.compute(x, ages, True, layers, "fast")


def test_the_settings_the_api_and_the_cli_offer_exactly_the_engine_s_methods() -> None:
    from typing import get_args

    from backend.cli.common import GRADIENT_METHODS
    from backend.fields import GradientMethod

    assert set(get_args(GradientMethod)) == set(GRADIENT_METHODS) == {methods.AUTO, *JACOBIAN_METHODS}
