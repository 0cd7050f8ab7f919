"""Per-scan outputs of reference models: predictions ``(K, N)`` and per-layer gradient norms ``(K, N, L)``.

Reference models trained by BrainMIA are registered architectures built here, not uploaded code,
so they run in the worker process through the engine's own feature computer
(:class:`~worker.engine.features.batch.BatchComputer`, the one ``extract_features`` uses): the
gradient norm of layer ``p`` is the L2 norm of the per-sample squared-error gradient of module
``p``'s parameters, exactly as in the target's ``grad_norm:<p>`` columns. The layers come out in
the order of the target's columns, so ``grad_norms[k, :, l]`` lines up with ``layers[l]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..features.batch import BatchComputer
from ..features.extract import ExtractionCancelled, exact_float32, pick_device
from ..features.table import GRAD_NORM_PREFIX, FeatureTable
from ..models import LoadedModel
from ..models.heads import OutputHead


@dataclass(frozen=True)
class ReferenceOutputs:
    """What K reference models output on N scans.

    Attributes:
        predictions: ``(K, N)`` predicted ages, float64.
        grad_norms: ``(K, N, L)`` per-layer gradient norms of each scan's squared error, float64;
            None when computed black-box.
        layers: the L module paths, in the order of the target's ``grad_norm:`` columns.
    """

    predictions: np.ndarray
    grad_norms: np.ndarray | None
    layers: list[str]

    @property
    def columns(self) -> list[str]:
        """The ``grad_norm:<path>`` column names of :attr:`layers`."""
        return [GRAD_NORM_PREFIX + p for p in self.layers]


def target_layers(target: FeatureTable | Sequence[str]) -> list[str]:
    """The module paths of the target's gradient-norm columns, in column order.

    Args:
        target: the target's feature table, or its column names (``grad_norm:<path>`` names;
            other names are ignored).
    """
    columns = target.grad_norm_columns if isinstance(target, FeatureTable) else list(target)
    return [c[len(GRAD_NORM_PREFIX):] for c in columns if c.startswith(GRAD_NORM_PREFIX)]


def _computer(model: LoadedModel | nn.Module | Any, device: str, head: OutputHead | None) -> Any:
    if isinstance(model, LoadedModel) or not isinstance(model, nn.Module):
        return model.computer(device)  # a loaded model, or a hosted one (computed in its confined host)
    module = model.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return BatchComputer(module, device, head=head)


def _check_layers(layers: Sequence[str], paths: Sequence[str], k: int) -> None:
    missing = [p for p in layers if p not in paths]
    if missing:
        raise InputError(
            f"reference model {k} has no layer(s) {', '.join(missing[:5])} of the target's gradient-norm "
            f"columns (its layers: {', '.join(paths)}): train the references with the target's architecture"
        )


def reference_outputs(
    models: Sequence[LoadedModel | nn.Module],
    volumes: torch.Tensor,
    ages: Any,
    *,
    layers: Sequence[str] | FeatureTable | None = None,
    device: str | None = None,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    head: OutputHead | None = None,
) -> ReferenceOutputs:
    """Predictions and (white-box) per-layer gradient norms of each reference model on each scan.

    Args:
        models: the K reference models (loaded from the store, or trained modules).
        volumes: the N scans conformed to the target's spec, ``(N, 1, X, Y, Z)``.
        ages: ``(N,)`` true ages (the gradient is that of the model's loss: ``(prediction - age)^2``,
            or the soft-label KL of a bins model).
        layers: the target's gradient-norm layers (module paths, ``grad_norm:`` column names,
            or the target's feature table); None computes predictions only (black-box).
        device: where to compute (None: CUDA when present).
        batch_size: scans per vectorised pass.
        progress: called with (model-scans done, K * N) after each batch.
        should_stop: checked before each batch; True raises
            :class:`~worker.engine.features.ExtractionCancelled`.
        head: the output head of models given as modules (a loaded model has its own, from its
            metadata); None: one age per scan, squared-error loss.

    Returns:
        the outputs, ``grad_norms[k, n, l]`` for layer ``layers[l]``.

    Raises:
        InputError: no models, mismatched ages, a target layer a reference model lacks, or a
            non-finite prediction.
    """
    if not models:
        raise InputError("reference outputs need at least one reference model")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    ages_t = torch.as_tensor(np.asarray(ages, dtype=np.float32))
    n = int(volumes.shape[0])
    if tuple(ages_t.shape) != (n,):
        raise InputError(f"need one age per volume ({n}), got shape {tuple(ages_t.shape)}")
    white_box = layers is not None
    wanted = target_layers(layers) if isinstance(layers, FeatureTable) else (
        [s.removeprefix(GRAD_NORM_PREFIX) for s in layers] if layers is not None else []
    )
    if white_box and not wanted:
        raise InputError("white-box reference outputs need at least one target layer")
    device = pick_device(device)
    preds = np.empty((len(models), n), dtype=np.float64)
    norms = np.empty((len(models), n, len(wanted)), dtype=np.float64) if white_box else None
    done, total = 0, len(models) * n
    with exact_float32():
        for k, model in enumerate(models):
            computer = _computer(model, device, head)
            if white_box:
                _check_layers(wanted, computer.paths, k)
            for start in range(0, n, batch_size):
                if should_stop is not None and should_stop():
                    raise ExtractionCancelled("reference outputs cancelled")
                stop = min(n, start + batch_size)
                out = computer.compute(volumes[start:stop], ages_t[start:stop], white_box, [])
                preds[k, start:stop] = out["prediction"]
                if norms is not None:
                    for l, path in enumerate(wanted):
                        norms[k, start:stop, l] = out[GRAD_NORM_PREFIX + path]
                done += stop - start
                if progress is not None:
                    progress(done, total)
    if not np.all(np.isfinite(preds)):
        k, i = (int(v) for v in np.argwhere(~np.isfinite(preds))[0])
        raise InputError(f"reference model {k} predicts a non-finite age for scan {i}")
    return ReferenceOutputs(predictions=preds, grad_norms=norms, layers=list(wanted))
