"""Exact per-sample gradients of a model's objective, batched with ``torch.func``.

The objective is the output head's (:mod:`worker.engine.models.heads`): the predicted age for a
squared-error loss (whose gradient is the prediction's times ``2 (prediction - age)``), or the
loss itself, as SFCN's soft-label KL divergence over age bins.

The model is called functionally (its parameters substituted) inside ``vmap(grad(...))``, so a
batch of B scans gives B separate gradients in one vectorised pass, with no batch-size-1 loop.
Each sample goes through the model as a batch of one, so models whose normalisation mixes
samples in training mode are still exact in eval mode, and exported programs with a static
batch size of one work too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from ..models.heads import OutputHead
from ..models.metadata import ModelMetadata


@dataclass(frozen=True)
class ParamModule:
    """A module that owns parameters.

    Attributes:
        path: module path (``blocks.block1.conv``); ``""`` for parameters of the root.
        param_names: full names of its parameters (``blocks.block1.conv.weight``...).
        is_conv: whether its weight is a convolution kernel (3 or more dimensions).
        size: number of scalar parameters.
    """

    path: str
    param_names: tuple[str, ...]
    is_conv: bool
    size: int


def param_modules(module: nn.Module) -> list[ParamModule]:
    """The parametrised modules of ``module``, in registration order."""
    groups: dict[str, list[tuple[str, torch.Tensor]]] = {}
    for name, param in module.named_parameters():
        path = name.rsplit(".", 1)[0] if "." in name else ""
        groups.setdefault(path, []).append((name, param))
    out = []
    for path, params in groups.items():
        weight = next((p for n, p in params if n.endswith("weight")), params[0][1])
        out.append(
            ParamModule(
                path=path,
                param_names=tuple(n for n, _ in params),
                is_conv=weight.dim() >= 3,
                size=sum(p.numel() for _, p in params),
            )
        )
    return out


def layer_aliases(modules: list[ParamModule]) -> dict[str, str]:
    """Resolve ``first_conv``, ``last_conv`` and ``output`` to module paths.

    ``output`` is the last parametrised module, ``first_conv`` the first convolution with
    parameters, ``last_conv`` the last convolution that is not the output layer.
    """
    aliases: dict[str, str] = {}
    if not modules:
        return aliases
    output = modules[-1]
    aliases["output"] = output.path
    convs = [m for m in modules if m.is_conv]
    if convs:
        aliases["first_conv"] = convs[0].path
        inner = [m for m in convs if m.path != output.path]
        if inner:
            aliases["last_conv"] = inner[-1].path
    return aliases


def _set_attr(module: nn.Module, name: str, value: torch.Tensor) -> None:
    *parents, leaf = name.split(".")
    for part in parents:
        module = getattr(module, part)
    setattr(module, leaf, value)


@contextmanager
def _substituted(module: nn.Module, params: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Temporarily replace the parameters of a TorchScript module (no stateless API there)."""
    original = dict(module.named_parameters())
    try:
        for name, value in params.items():
            _set_attr(module, name, value)
        yield
    finally:
        for name, value in original.items():
            _set_attr(module, name, value)


class FunctionalModel:
    """Call a model with substituted parameters, for ``torch.func`` transforms.

    Args:
        module: an eager ``nn.Module``, a TorchScript module or the module of an exported program.
        head: the model's output head (default: one age per scan, squared-error loss): how its raw
            output becomes a prediction, and the per-scan objective whose gradients are taken.
    """

    def __init__(self, module: nn.Module, head: OutputHead | None = None):
        self.module = module
        self.head = head if head is not None else OutputHead(ModelMetadata())
        self.params: dict[str, torch.Tensor] = {n: p.detach() for n, p in module.named_parameters()}
        self._scripted = isinstance(module, torch.jit.ScriptModule)

    def __call__(self, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Run the model on ``x`` with ``params`` in place of its own."""
        if self._scripted:
            with _substituted(self.module, params):
                return self.module(x)
        return functional_call(self.module, dict(params), (x,))

    def predict_one(self, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The prediction (a scalar) for one scan ``(1, X, Y, Z)``, run as a batch of one."""
        return self.head.prediction(self(params, x.unsqueeze(0))).reshape(())

    def objective_one(self, params: Mapping[str, torch.Tensor], x: torch.Tensor,
                      target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(objective, prediction)`` (scalars) for one scan, run as a batch of one.

        The objective is the head's (:meth:`~worker.engine.models.heads.OutputHead.objective`):
        the prediction itself for ``mse``, the loss for ``soft_label_kl``; ``target`` is the scan's
        row of :meth:`~worker.engine.models.heads.OutputHead.targets` (its soft label).
        """
        out = self(params, x.unsqueeze(0))
        pred = self.head.prediction(out).reshape(())
        if not self.head.objective_is_loss:
            return pred, pred
        return self.head.objective_of_targets(out, target.unsqueeze(0)).reshape(()), pred

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions ``(B,)`` for a batch ``(B, 1, X, Y, Z)``, without gradients."""
        with torch.no_grad():
            return vmap(self.predict_one, in_dims=(None, 0))(self.params, x)

    def prediction_jacobian(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Per-sample gradients of the prediction with respect to every parameter.

        Returns:
            ``(jac, pred)``: ``jac[name]`` has shape ``(B, *param.shape)`` and holds
            d prediction_i / d param for each sample i; ``pred`` has shape ``(B,)``.
        """
        return vmap(grad_and_value(self.predict_one), in_dims=(None, 0))(self.params, x)

    def objective_jacobian(self, x: torch.Tensor, ages: torch.Tensor | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Per-sample gradients of the head's objective (see :meth:`objective_one`).

        For the ``mse`` head this is :meth:`prediction_jacobian` (``ages`` are not needed).

        Returns:
            ``(jac, pred)``: ``jac[name]`` of shape ``(B, *param.shape)`` holds d objective_i / d param;
            ``pred`` ``(B,)`` the predictions.

        Raises:
            ValueError: the objective is the loss and no ages are given.
        """
        if not self.head.objective_is_loss:
            return self.prediction_jacobian(x)
        targets = self.head.targets(require_ages(self, x, ages))
        jac, (_, pred) = vmap(grad_and_value(self.objective_one, has_aux=True), in_dims=(None, 0, 0))(
            self.params, x, targets)
        return jac, pred


def require_ages(fmodel: FunctionalModel, x: torch.Tensor, ages: torch.Tensor | None) -> torch.Tensor:
    """``ages`` as a ``(B,)`` tensor on ``x``'s device, checked; the loss objective needs them.

    Raises:
        ValueError: no ages, or not one per scan.
    """
    if ages is None:
        raise ValueError(f"the gradient of the '{fmodel.head.loss.name}' loss needs the scans' ages")
    ages = torch.as_tensor(ages).to(x.device, torch.float32).reshape(-1)
    if ages.shape[0] != x.shape[0]:
        raise ValueError(f"need one age per scan ({x.shape[0]}), got {ages.shape[0]}")
    return ages


def per_sample_loss_grads(
    model: FunctionalModel, x: torch.Tensor, ages: torch.Tensor
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-sample gradients of the model's loss: ``(prediction - age)^2`` for ``mse``, the head's
    loss (e.g. ``soft_label_kl``) otherwise.

    Returns:
        ``(grads, pred)`` with ``grads[name]`` of shape ``(B, *param.shape)``.
    """
    jac, pred = model.objective_jacobian(x, ages)
    scale = model.head.loss_scale(pred, ages.to(pred.device, pred.dtype))
    return {n: g * scale.view(-1, *([1] * (g.dim() - 1))) for n, g in jac.items()}, pred
