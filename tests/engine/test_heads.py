"""Output heads: metadata of bin outputs and losses, predictions, soft labels, the loss objective."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

from worker.engine.errors import InputError, ModelError
from worker.engine.features.batch import BatchComputer
from worker.engine.models import (
    ModelMetadata,
    load_model,
    resolve_metadata,
    sidecar_path,
)
from worker.engine.models.heads import OutputHead
from worker.engine.training import (
    TrainingOptions,
    loss_per_scan,
    predict,
    train_brain_age,
)

SFCN_BINS = {"kind": "bins", "start": 42, "width": 1, "count": 40}
KL = {"name": "soft_label_kl", "sigma": 1.0}


def _head(**fields: object) -> OutputHead:
    return OutputHead(ModelMetadata.model_validate({"output": SFCN_BINS, "loss": KL, **fields}))


def _invalid(fields: dict, tmp_path: Path, match: str) -> None:
    model = tmp_path / "model.pt"
    sidecar_path(model).write_text(json.dumps(fields))
    with pytest.raises(InputError, match=match):
        resolve_metadata(model)


def test_bins_without_centres_are_refused_naming_the_sidecar(tmp_path: Path) -> None:
    _invalid({"output": {"kind": "bins"}}, tmp_path, r"model\.pt\.json.*field 'output'.*needs 'centers', or 'start'")
    _invalid({"output": {"kind": "bins", "start": 42, "width": 1}}, tmp_path, "needs 'centers'")
    _invalid({"output": "bins"}, tmp_path, "needs 'centers'")


def test_bad_centres_are_refused(tmp_path: Path) -> None:
    _invalid({"output": {"kind": "bins", "centers": [50, 40, 60]}}, tmp_path, "must increase strictly")
    _invalid({"output": {"kind": "bins", "centers": [50]}}, tmp_path, "at least two bins")
    _invalid({"output": {"kind": "bins", "centers": [40, 50], "start": 42, "width": 1, "count": 2}}, tmp_path,
             "not both")
    _invalid({"output": {"kind": "age", "centers": [40, 50]}}, tmp_path, "only with kind 'bins'")
    _invalid({"output": {"kind": "bins", "start": 42, "width": 0, "count": 40}}, tmp_path, "field 'output.width'")


def test_soft_label_kl_on_an_age_output_is_refused(tmp_path: Path) -> None:
    _invalid({"loss": "soft_label_kl"}, tmp_path, "loss 'soft_label_kl' needs an output of age bins")
    _invalid({"loss": {"name": "soft_label_kl", "sigma": 0}, "output": SFCN_BINS}, tmp_path, "field 'loss.sigma'")
    _invalid({"loss": "cross_entropy", "output": SFCN_BINS}, tmp_path, "field 'loss.name'")


class _Bins(nn.Module):
    """A tiny model with 40 bin outputs: log-probabilities, logits, or (wrongly) unnormalised."""

    def __init__(self, scores: str = "log_probs"):
        super().__init__()
        self.scores = scores
        self.conv = nn.Conv3d(1, 3, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.out = nn.Linear(3, 40)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.out(self.pool(torch.relu(self.conv(x))).flatten(1))
        return torch.log_softmax(z, dim=1) if self.scores == "log_probs" else z


def _saved(model: nn.Module, tmp_path: Path, **fields: object) -> Path:
    path = tmp_path / "bins.pt"
    torch.jit.save(torch.jit.script(model.eval()), str(path))
    sidecar_path(path).write_text(json.dumps({"input_shape": [8, 8, 8], "voxel_size": 4, **fields}))
    return path


def test_log_probs_that_do_not_sum_to_one_are_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = _saved(_Bins(scores="logits"), tmp_path, output=SFCN_BINS, loss=KL)
    with pytest.raises(ModelError, match="declared log-probabilities but their probabilities sum to"):
        load_model(path, metadata=resolve_metadata(path))
    loaded = load_model(path, metadata=resolve_metadata(path, {"output": {**SFCN_BINS, "scores": "logits"}}))
    assert loaded.metadata.output.scores == "logits"


def test_an_age_model_refuses_bin_outputs_and_the_bin_count_is_checked(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = _saved(_Bins(), tmp_path)
    with pytest.raises(ModelError, match="must return one age per scan"):
        load_model(path, metadata=resolve_metadata(path))
    with pytest.raises(ModelError, match="declares 20 age bins"):
        load_model(path, metadata=resolve_metadata(path, {"output": {**SFCN_BINS, "count": 20}}))


def _num2vect(age: float, centers: np.ndarray, sigma: float) -> np.ndarray:
    """SFCN's soft label: the mass of N(age, sigma^2) between each bin's edges."""
    half = (centers[1] - centers[0]) / 2
    return norm.cdf(centers + half, loc=age, scale=sigma) - norm.cdf(centers - half, loc=age, scale=sigma)


@pytest.mark.parametrize("sigma", [1.0, 2.5])
def test_soft_labels_are_sfcn_num2vect_renormalised(sigma: float) -> None:
    head = _head(loss={"name": "soft_label_kl", "sigma": sigma})
    centers = 42.5 + np.arange(40)
    ages = [44.0, 60.3, 79.9, 42.2]
    q = head.soft_labels(torch.tensor(ages, dtype=torch.float64)).numpy()
    for row, age in zip(q, ages):
        ref = _num2vect(age, centers, sigma)
        assert np.allclose(row, ref / ref.sum(), rtol=1e-9, atol=1e-12)
    assert np.allclose(q.sum(axis=1), 1.0)


def test_ages_outside_the_bins_give_a_label_at_the_nearest_bin_not_zeros() -> None:
    head = _head()
    q = head.soft_labels(torch.tensor([10.0, 120.0]))
    assert torch.isfinite(q).all() and torch.allclose(q.sum(dim=1), torch.ones(2))
    assert int(q[0].argmax()) == 0 and int(q[1].argmax()) == 39 and float(q[:, [0, 39]].max()) > 0.99
    log_p = torch.log_softmax(torch.randn(2, 40), dim=1)
    loss = head.objective(log_p, torch.tensor([10.0, 120.0]))
    assert torch.allclose(loss, -log_p[[0, 1], [0, 39]], rtol=1e-3)  # KL to (almost) a one-hot label


def test_prediction_is_the_expected_age_and_the_objective_the_kl() -> None:
    head = _head()
    torch.manual_seed(1)
    logits = torch.randn(3, 40, dtype=torch.float64)
    log_p = torch.log_softmax(logits, dim=1)
    centers = torch.arange(40, dtype=torch.float64) + 42.5
    assert torch.allclose(head.prediction(log_p), log_p.exp() @ centers)
    ages = torch.tensor([50.0, 61.5, 70.2], dtype=torch.float64)
    q = head.soft_labels(ages)
    kl = nn.functional.kl_div(log_p, q, reduction="none").sum(dim=1)
    assert torch.allclose(head.objective(log_p, ages), kl)
    assert torch.equal(head.loss_scale(head.prediction(log_p), ages), torch.ones(3, dtype=torch.float64))
    logit_head = _head(output={**SFCN_BINS, "scores": "logits"})
    assert torch.allclose(logit_head.objective(logits, ages), kl)
    assert torch.allclose(logit_head.prediction(logits), head.prediction(log_p))


def test_mse_head_is_the_prediction_scaled_by_twice_the_error() -> None:
    head = OutputHead(ModelMetadata())
    out = torch.tensor([[50.0], [70.0]])
    ages = torch.tensor([52.0, 65.0])
    assert torch.equal(head.prediction(out), torch.tensor([50.0, 70.0]))
    assert torch.equal(head.objective(out, ages), head.prediction(out))
    assert torch.equal(head.loss_scale(head.prediction(out), ages), torch.tensor([-4.0, 10.0]))


def _loop_loss_grads(module: nn.Module, x: torch.Tensor, ages: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Reference: autograd of nn.KLDivLoss on one scan at a time, SFCN's soft labels from scipy."""
    centers = 42.5 + np.arange(40)
    out = []
    params = dict(module.named_parameters())
    for i in range(x.shape[0]):
        ref = _num2vect(float(ages[i]), centers, 1.0)
        q = torch.tensor(ref / ref.sum(), dtype=torch.float32)[None]
        for p in params.values():
            p.requires_grad_(True)
            p.grad = None
        nn.KLDivLoss(reduction="sum")(module(x[i : i + 1]), q).backward()
        out.append({n: p.grad.detach().clone() for n, p in params.items()})
    for p in params.values():
        p.requires_grad_(False)
    return out


@pytest.mark.parametrize("method", ["vmap", "loop", "hooks"])
def test_features_of_a_bins_model_are_those_of_its_kl_loss(method: str) -> None:
    torch.manual_seed(2)
    module = _Bins().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(4)
    x, ages = torch.randn(4, 1, 8, 8, 8, generator=g), torch.tensor([45.0, 52.5, 66.0, 79.0])
    computer = BatchComputer(module, "cpu", method=method, head=_head())
    values = computer.compute(x, ages, True, ["out"])
    loops = _loop_loss_grads(module, x, ages)
    for i, ref in enumerate(loops):
        full = torch.cat([ref["out.weight"].flatten(), ref["out.bias"]])
        assert np.allclose(values["grad:out"][i], full.numpy(), rtol=1e-4, atol=1e-6)
        norm_conv = torch.sqrt(ref["conv.weight"].pow(2).sum() + ref["conv.bias"].pow(2).sum())
        assert np.isclose(values["grad_norm:conv"][i], float(norm_conv), rtol=1e-4)
    with torch.no_grad():
        expected = module(x).exp() @ (torch.arange(40) + 42.5)
        pooled = module.pool(torch.relu(module.conv(x))).flatten(1)
    assert np.allclose(values["prediction"], expected.numpy(), rtol=1e-6)
    assert np.allclose(values["error"], (expected - ages).numpy(), rtol=1e-5, atol=1e-4)
    # the input of the output layer, recovered from its weight and bias gradients
    assert np.allclose(values["activation"], pooled.numpy(), rtol=1e-3, atol=1e-5)
    black = computer.compute(x, ages, False, [])
    assert set(black) == {"prediction", "error"} and np.allclose(black["prediction"], values["prediction"])


def test_soft_label_kl_training_needs_a_bins_head_and_lowers_the_loss() -> None:
    torch.manual_seed(3)
    g = torch.Generator().manual_seed(5)
    x, ages = torch.randn(8, 1, 8, 8, 8, generator=g), torch.linspace(48, 75, 8)
    with pytest.raises(InputError, match="soft_label_kl' trains a model with age-bin outputs"):
        train_brain_age(_Bins(), x, ages, TrainingOptions(epochs=1, loss="soft_label_kl"))
    with pytest.raises(InputError, match="needs the raw bin outputs"):
        loss_per_scan(ages, ages, "soft_label_kl")
    head = _head()
    losses: list[float] = []
    options = TrainingOptions(epochs=15, batch_size=4, lr=3e-2, weight_decay=0.0, loss="soft_label_kl", head=head)
    model = train_brain_age(_Bins(), x, ages, options, on_epoch_stats=lambda s: losses.append(s.loss))
    assert losses[-1] < 0.9 * losses[0]
    pred = predict(model, x, head=head)
    with torch.no_grad():
        assert torch.allclose(pred, head.prediction(model(x)))
    assert pred.shape == (8,)
