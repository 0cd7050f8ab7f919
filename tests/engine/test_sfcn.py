"""The built-in SFCN (Peng et al. 2021): structure, published layer names, exact per-sample KL gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.engine.test_heads import _loop_loss_grads
from worker.engine.errors import InputError
from worker.engine.features.batch import BatchComputer
from worker.engine.features.methods import (
    JACOBIAN_METHODS,
    MethodChooser,
    available_methods,
    clear_method_cache,
)
from worker.engine.features.per_sample import (
    FunctionalModel,
    layer_aliases,
    param_modules,
)
from worker.engine.models import build_architecture
from worker.engine.models.heads import OutputHead
from worker.engine.models.sfcn import SFCN, sfcn_metadata
from worker.engine.normalize import get_normalization

SMALL = {"channels": [2, 4, 4, 4, 4, 3], "dropout": 0.5}
GRID = (32, 40, 32)


def _small() -> nn.Module:
    torch.manual_seed(0)
    model = build_architecture("sfcn", **SMALL)
    with torch.no_grad():  # non-trivial running statistics: batch norm is a per-channel affine map in eval
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def test_the_papers_structure_and_published_names() -> None:
    model = SFCN()
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(2.95e6, rel=0.01)  # "about 3 M"
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256, 256, 64, 40]
    assert [c.kernel_size for c in convs] == [(3, 3, 3)] * 5 + [(1, 1, 1)] * 2
    assert sum(isinstance(m, nn.MaxPool3d) for m in model.modules()) == 5
    assert sum(isinstance(m, nn.BatchNorm3d) for m in model.modules()) == 6
    assert next(m for m in model.modules() if isinstance(m, nn.Dropout)).p == 0.5
    # the authors' layout: feature_extractor.conv_<i>.<0 conv | 1 batch norm>, classifier.conv_6
    names = set(model.state_dict())
    expected = {f"feature_extractor.conv_{i}.{j}.{leaf}" for i in range(6) for j, leaves in
                ((0, ("weight", "bias")), (1, ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")))
                for leaf in leaves} | {"classifier.conv_6.weight", "classifier.conv_6.bias"}
    assert names == expected
    # a DataParallel checkpoint, 'module.' stripped, loads strictly and gives the same outputs
    other = SFCN(channels=SMALL["channels"]).eval()
    saved = {f"module.{k}": v for k, v in _small().state_dict().items()}
    assert not other.load_state_dict({k.removeprefix("module."): v for k, v in saved.items()}).missing_keys
    x = torch.randn(2, 1, *GRID)
    with torch.no_grad():
        out = other(x)
        assert torch.equal(out, _small()(x))
    assert out.shape == (2, 40) and torch.allclose(out.exp().sum(dim=1), torch.ones(2))


def test_bad_options_are_input_errors() -> None:
    with pytest.raises(InputError, match="bad options for architecture 'sfcn'.*at least two blocks"):
        build_architecture("sfcn", channels=[8])
    with pytest.raises(InputError, match="dropout must be in"):
        build_architecture("sfcn", dropout=1.0)
    with pytest.raises(InputError, match="bad options for architecture 'sfcn'"):
        build_architecture("sfcn", width=2)


def test_sfcn_metadata_is_the_published_sidecar() -> None:
    meta = sfcn_metadata()
    assert meta.input_shape == (160, 192, 160) and meta.voxel_size == (1.0, 1.0, 1.0)
    assert meta.normalize == "mean_mni182" and meta.arch == "sfcn"
    assert meta.output.bin_centers() == [42.5 + i for i in range(40)]
    assert (meta.loss.name, meta.loss.sigma) == ("soft_label_kl", 1.0)


def test_mean_normalisations() -> None:
    volume = np.zeros((20, 24, 20), dtype=np.float32)
    volume[5:15, 6:18, 5:15] = np.linspace(1, 3, 10 * 12 * 10, dtype=np.float32).reshape(10, 12, 10)
    out = get_normalization("mean")(volume, None)
    assert out.dtype == np.float32 and out.mean() == pytest.approx(1.0, rel=1e-5)
    assert np.allclose(out, volume / volume.mean())
    sfcn = get_normalization("mean_mni182")(volume, None)
    assert np.allclose(sfcn, volume / (volume.sum() / (182 * 218 * 182)), rtol=1e-5)
    # SFCN's own order: the 182 x 218 x 182 volume divided by its mean, then cropped
    full = np.zeros((182, 218, 182), dtype=np.float32)
    full[81:101, 97:121, 81:101] = volume
    assert np.allclose((full / full.mean())[81:101, 97:121, 81:101], sfcn, rtol=1e-5)
    assert not get_normalization("mean")(np.zeros((4, 4, 4), np.float32), None).any()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(4, 1, *GRID, generator=g), torch.tensor([46.0, 58.3, 67.9, 79.5])


@pytest.mark.parametrize("scripted", [False, True])
def test_per_sample_kl_gradients_equal_a_batch_of_one_loop_for_every_offered_method(scripted: bool) -> None:
    eager = _small()
    module = torch.jit.script(eager) if scripted else eager
    head = OutputHead(sfcn_metadata(input_shape=GRID, arch_kwargs=SMALL))
    fmodel = FunctionalModel(module, head)
    offered = available_methods(fmodel)
    assert offered == ["vmap", "loop"]  # batch norm has parameters: hooks is not offered
    x, ages = _batch()
    reference = _loop_loss_grads(eager, x, ages)
    with torch.no_grad():
        expected = eager(x).exp() @ (torch.arange(40) + 42.5)
    for method in offered:
        jac, pred = JACOBIAN_METHODS[method](fmodel, x, ages)
        assert torch.allclose(pred, expected, rtol=1e-5), method
        for i, ref in enumerate(reference):
            scale = max(float(g.abs().max()) for g in ref.values())
            for name, g in ref.items():
                assert torch.allclose(jac[name][i], g, rtol=1e-4, atol=1e-5 * scale), (method, name, i)
    with pytest.raises(ValueError, match="needs the scans' ages"):
        JACOBIAN_METHODS["loop"](fmodel, x)
    clear_method_cache()
    chooser = MethodChooser(fmodel, "cpu")
    while chooser.method is None:
        chooser.jacobian(x, ages)
    assert chooser.method in offered
    clear_method_cache()


def test_sfcn_features_are_those_of_its_loss() -> None:
    module = _small()
    head = OutputHead(sfcn_metadata(input_shape=GRID, arch_kwargs=SMALL))
    x, ages = _batch()
    aliases = layer_aliases(param_modules(module))
    assert aliases == {"output": "classifier.conv_6", "first_conv": "feature_extractor.conv_0.0",
                       "last_conv": "feature_extractor.conv_5.0"}
    values = BatchComputer(module, "cpu", method="loop", head=head).compute(x, ages, True, list(aliases.values()))
    reference = _loop_loss_grads(module, x, ages)
    for i, ref in enumerate(reference):
        for path in aliases.values():
            grads = [ref[f"{path}.weight"], ref[f"{path}.bias"]]
            full = torch.cat([g.flatten() for g in grads])
            assert np.allclose(values[f"grad:{path}"][i], full.numpy(), rtol=1e-4, atol=1e-5 * float(full.abs().max()))
            assert np.isclose(values[f"grad_norm:{path}"][i], float(full.norm()), rtol=1e-4)
    captured: dict[str, torch.Tensor] = {}
    handle = module.classifier.conv_6.register_forward_hook(lambda _m, inputs, _o: captured.update(a=inputs[0]))
    with torch.no_grad():
        module(x)
    handle.remove()
    assert np.allclose(values["activation"], captured["a"].flatten(1).numpy(), rtol=1e-3, atol=1e-5)


def test_reference_models_of_an_sfcn_train_with_its_soft_label_kl() -> None:
    from worker.engine.reference.recipe import Recipe
    from worker.engine.reference.reference_signals import reference_outputs
    from worker.engine.reference.training import (
        reference_metadata,
        train_mae,
        train_reference,
    )

    target = sfcn_metadata(input_shape=GRID, normalize="mean", arch_kwargs=SMALL)
    recipe = Recipe(arch="sfcn", arch_kwargs=SMALL, loss="soft_label_kl", epochs=2, batch_size=3, lr=1e-3)
    x, ages = _batch()
    mask = [True, True, False, True]
    model = train_reference(recipe, x, ages, mask, metadata=target, model_index=1)
    meta = reference_metadata(recipe, target)
    assert (meta.output, meta.loss) == (target.output, target.loss)
    head = OutputHead(meta)
    with torch.no_grad():
        expected = head.prediction(model(x))
    assert train_mae(model, x, ages, mask, head=head) == pytest.approx(
        float((expected - ages)[torch.tensor(mask)].abs().mean()), rel=1e-5)
    out = reference_outputs([model], x, ages.numpy(), layers=["classifier.conv_6"], device="cpu", head=head)
    assert np.allclose(out.predictions[0], expected.numpy(), rtol=1e-5)
    reference = _loop_loss_grads(model, x, ages)
    norms = [float(torch.cat([r["classifier.conv_6.weight"].flatten(), r["classifier.conv_6.bias"]]).norm())
             for r in reference]
    assert np.allclose(out.grad_norms[0, :, 0], norms, rtol=1e-4)
    with pytest.raises(InputError, match="soft_label_kl' trains a model with age-bin outputs"):
        train_reference(recipe, x, ages, mask, metadata=target.model_copy(
            update={"output": type(target.output)(), "loss": type(target.loss)()}), model_index=1)
