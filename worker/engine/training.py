"""Training of brain-age models on conformed scans (used by the demo and synthetic federations)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .cache import VolumeCache
from .manifest import ScanRecord
from .volumes import ConformSpec, load_conformed


@dataclass
class TrainingOptions:
    """Options of :func:`train_brain_age` (the paper: MSE, Adam lr 1e-4, weight decay 1e-4).

    Attributes:
        epochs: passes over the training scans.
        batch_size: scans per step.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        seed: shuffling and initialisation seed.
        device: where to train.
        cosine: anneal the learning rate to zero over the epochs (cosine schedule).
    """

    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "cpu"
    cosine: bool = False


def load_volumes(
    records: Sequence[ScanRecord], spec: ConformSpec, cache: VolumeCache | None = None
) -> torch.Tensor:
    """Conformed volumes of ``records`` stacked as ``(N, 1, X, Y, Z)`` float32."""
    arrays = [cache.get(r.path, spec) if cache is not None else load_conformed(r.path, spec) for r in records]
    return torch.from_numpy(np.stack(arrays)[:, None]).float()


def train_brain_age(
    model: nn.Module,
    volumes: torch.Tensor,
    ages: torch.Tensor,
    options: TrainingOptions,
    *,
    on_epoch: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """Fit ``model`` to predict ``ages`` from ``volumes`` with the squared error.

    Args:
        model: a model mapping ``(B, 1, X, Y, Z)`` to ``(B,)``.
        volumes: training volumes ``(N, 1, X, Y, Z)``.
        ages: ``(N,)`` ages in years.
        options: training options.
        on_epoch: called with (epoch, mean absolute error on the training scans).

    Returns:
        the trained model, in eval mode.
    """
    generator = torch.Generator().manual_seed(options.seed)
    model = model.to(options.device).train()
    for p in model.parameters():
        p.requires_grad_(True)
    optimiser = torch.optim.Adam(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    schedule = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=options.epochs) if options.cosine else None
    )
    n = volumes.shape[0]
    for epoch in range(options.epochs):
        order = torch.randperm(n, generator=generator)
        abs_err = 0.0
        for start in range(0, n, options.batch_size):
            idx = order[start : start + options.batch_size]
            x = volumes[idx].to(options.device)
            y = ages[idx].to(options.device)
            pred = model(x)
            loss = ((pred - y) ** 2).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            abs_err += float((pred.detach() - y).abs().sum())
        if schedule is not None:
            schedule.step()
        if on_epoch is not None:
            on_epoch(epoch, abs_err / n)
    return model.eval()


def predict(model: nn.Module, volumes: torch.Tensor, batch_size: int = 16, device: str = "cpu") -> torch.Tensor:
    """Predictions ``(N,)`` of ``model`` on ``volumes``, without gradients."""
    model = model.to(device).eval()
    with torch.no_grad():
        return torch.cat([model(volumes[i : i + batch_size].to(device)).cpu() for i in range(0, len(volumes), batch_size)])
