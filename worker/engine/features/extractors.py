"""The built-in feature extractors: black-box outputs and white-box gradient features."""

from __future__ import annotations

import torch

from .registry import BatchContext, register_feature_extractor
from .table import GRAD_NORM_PREFIX


@register_feature_extractor("prediction", white_box=False)
def prediction_features(ctx: BatchContext) -> dict[str, torch.Tensor]:
    """Black-box: the predicted age and the error (prediction - age), in years."""
    return {"prediction": ctx.pred, "error": ctx.pred - ctx.ages}


def _flat(ctx: BatchContext, path: str) -> torch.Tensor:
    assert ctx.jac is not None
    module = next(m for m in ctx.modules if m.path == path)
    return torch.cat([ctx.jac[n].flatten(1) for n in module.param_names], dim=1)


@register_feature_extractor("grad_norm", white_box=True)
def grad_norm_features(ctx: BatchContext) -> dict[str, torch.Tensor]:
    """White-box: L2 norm of the per-sample loss gradient of each module (weight and bias)."""
    assert ctx.jac is not None
    scale = ctx.loss_scale.abs()
    out = {}
    for module in ctx.modules:
        squares = sum(ctx.jac[n].flatten(1).pow(2).sum(dim=1) for n in module.param_names)
        out[f"{GRAD_NORM_PREFIX}{module.path}"] = scale * torch.sqrt(squares)
    return out


@register_feature_extractor("layer_grads", white_box=True)
def layer_gradient_features(ctx: BatchContext) -> dict[str, torch.Tensor]:
    """White-box: the full per-sample loss gradient of each requested layer, flattened."""
    scale = ctx.loss_scale.unsqueeze(1)
    return {f"grad:{path}": scale * _flat(ctx, path) for path in ctx.layers}


@register_feature_extractor("activation", white_box=True)
def activation_features(ctx: BatchContext) -> dict[str, torch.Tensor]:
    """White-box: the input of the output layer.

    For an affine output layer ``out = W a + b`` applied once per scan (after the global pooling
    of every built-in), the gradient of any per-scan objective ``L(out)`` with respect to ``W`` is
    ``g a^T`` and that with respect to ``b`` is ``g = dL/d out``. So the activation comes out of
    the same vectorised pass as the gradients, for every model format (TorchScript included),
    with no hooks:

    - one output (an age, objective = prediction): ``g = 1`` and the weight gradient is ``a``;
    - several outputs (age bins) or a loss objective: ``a = W_grad^T g / |g|^2``, exact wherever
      ``g != 0`` (``g = 0``, a loss at an exact stationary point, gives a zero row). A bins output
      layer without a bias gives no activation (``g`` is then not among the gradients).
    """
    assert ctx.jac is not None
    output = next(m for m in ctx.modules if m.path == ctx.aliases.get("output"))
    weight = next((n for n in output.param_names if n.endswith("weight")), None)
    if weight is None:
        return {}
    w_grad = ctx.jac[weight]
    size = 1 if ctx.head is None else ctx.head.size
    if size == 1 and ctx.objective_is_prediction:
        return {"activation": w_grad.flatten(1)}
    bias = next((n for n in output.param_names if n.endswith("bias")), None)
    if bias is None or ctx.jac[bias].shape[1:] != w_grad.shape[1:2]:
        return {}
    g = ctx.jac[bias]  # (B, out)
    w = w_grad.reshape(w_grad.shape[0], w_grad.shape[1], -1)  # (B, out, in * kernel)
    norm2 = g.pow(2).sum(dim=1, keepdim=True)
    a = torch.einsum("bo,boi->bi", g, w)
    return {"activation": torch.where(norm2 > 0, a / norm2.clamp_min(torch.finfo(g.dtype).tiny), 0.0)}
