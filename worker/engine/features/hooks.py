"""Per-sample gradients from one batched pass: hooks keep each layer's input and output gradient.

For a model whose samples do not interact (eval mode: instance norm, frozen batch norm), one
batched forward and one backward of the summed predictions give, for every layer, its input
``a_i`` and the gradient ``g_i`` of ``prediction_i`` with respect to its output; the per-sample
weight gradient of a convolution is then the convolution's weight gradient on sample ``i`` alone
(``aten.convolution_backward``), that of a linear layer ``g_i^T a_i``, and a bias's the sum of
``g_i`` (a layer whose batch holds k rows per sample, as the 2D encoder of a slice model, sums
sample ``i``'s rows, taken as consecutive). The costly part runs batched, as in training, and on a CPU this is as fast as a plain
training step.

Only eager modules whose parametrised modules are exactly ``Conv1d/2d/3d`` (zero padding, numeric
padding) or ``Linear`` are eligible (:func:`hooks_supported`). That samples do not interact is not
assumed: the method chooser (:mod:`.methods`) compares this method's result with the batch-of-one
loop on the batches it measures, and drops it for that model if they differ.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from .per_sample import FunctionalModel, require_ages

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _param_modules(module: nn.Module) -> dict[str, nn.Module] | None:
    """Path -> submodule of every parametrised module, or None when one is not eligible."""
    if isinstance(module, (torch.jit.ScriptModule, torch.fx.GraphModule)):
        return None
    found: dict[str, nn.Module] = {}
    for name, _ in module.named_parameters():
        path, _, leaf = name.rpartition(".")
        try:
            sub = module.get_submodule(path)
        except AttributeError:
            return None
        if type(sub) not in (*_CONVS, nn.Linear) or leaf not in ("weight", "bias"):
            return None
        if isinstance(sub, _CONVS) and (sub.padding_mode != "zeros" or isinstance(sub.padding, str)):
            return None
        found[path] = sub
    return found


def hooks_supported(fmodel: FunctionalModel) -> bool:
    """Whether :func:`hooks_jacobian` can run on this model (its layers; not its exactness)."""
    return _param_modules(fmodel.module) is not None


def _conv_grads(sub: nn.Conv1d | nn.Conv2d | nn.Conv3d, a: torch.Tensor, g: torch.Tensor, b: int) -> list[torch.Tensor]:
    k = a.shape[0] // b  # rows of the layer's batch per sample (e.g. the slices of a 2D-slice model)
    weights = []
    for i in range(b):
        _, gw, _ = torch.ops.aten.convolution_backward(
            g[i * k : (i + 1) * k], a[i * k : (i + 1) * k], sub.weight.detach(), None, sub.stride, sub.padding,
            sub.dilation, False, [0] * len(sub.stride), sub.groups, (False, True, False))
        weights.append(gw)
    out = [torch.stack(weights)]
    if sub.bias is not None:
        out.append(g.reshape(b, k, g.shape[1], -1).sum(dim=(1, 3)))
    return out


def _linear_grads(sub: nn.Linear, a: torch.Tensor, g: torch.Tensor, b: int) -> list[torch.Tensor]:
    a3, g3 = a.reshape(b, -1, a.shape[-1]), g.reshape(b, -1, g.shape[-1])
    out = [torch.einsum("bko,bki->boi", g3, a3)]
    if sub.bias is not None:
        out.append(g3.sum(dim=1))
    return out


def hooks_jacobian(fmodel: FunctionalModel, x: torch.Tensor,
                   ages: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-sample Jacobian ``(jac, pred)`` as :func:`~.methods.vmap_jacobian`, from one batched pass.

    The backward pass is that of the summed per-scan objectives of the head (the predictions,
    or the losses given ``ages``): each scan's objective depends on its own output only.

    Raises:
        ValueError: the model is not eligible, or calls a parametrised layer other than once.
    """
    subs = _param_modules(fmodel.module)
    if subs is None:
        raise ValueError("per-sample gradients by hooks need an eager model of Conv and Linear layers")
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {path: [] for path in subs}
    handles = []
    for path, sub in subs.items():
        def keep(_m: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor, path: str = path) -> None:
            seen[path].append((inputs[0].detach(), output))
        handles.append(sub.register_forward_hook(keep))
    # parameters that require grad put every layer's output in the graph; only the outputs'
    # gradients are asked for, so no weight gradient is formed by autograd
    params = {name: p.detach().requires_grad_(True) for name, p in fmodel.params.items()}
    try:
        with torch.enable_grad():
            out = functional_call(fmodel.module, params, (x,))
            pred = fmodel.head.prediction(out)
            if any(len(calls) != 1 for calls in seen.values()):
                raise ValueError("per-sample gradients by hooks need each layer called once per forward")
            objective = pred
            if fmodel.head.objective_is_loss:
                objective = fmodel.head.objective(out, require_ages(fmodel, x, ages))
            outputs = [calls[0][1] for calls in seen.values()]
            grads = torch.autograd.grad(objective.sum(), outputs, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    jac: dict[str, torch.Tensor] = {}
    for (path, sub), g in zip(subs.items(), grads):
        a = seen[path][0][0]
        g = torch.zeros_like(seen[path][0][1]) if g is None else g
        if a.shape[0] % x.shape[0]:
            raise ValueError(f"per-sample gradients by hooks: layer {path} sees a batch of {a.shape[0]} "
                             f"for {x.shape[0]} scans")
        grads_of = _conv_grads if isinstance(sub, _CONVS) else _linear_grads
        values = grads_of(sub, a, g, x.shape[0])
        prefix = f"{path}." if path else ""
        names = ["weight"] + (["bias"] if sub.bias is not None else [])
        for leaf_name, value in zip(names, values):
            jac[prefix + leaf_name] = value
    return {name: jac[name] for name in fmodel.params}, pred.detach()
