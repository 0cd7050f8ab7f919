"""Training of brain-age models on conformed scans (the demo, synthetic federations, reference models).

:func:`train_brain_age` runs the loop of the paper (MSE, Adam lr 1e-4, weight decay 1e-4) by
default; :class:`TrainingOptions` also chooses the optimiser (``adam``, ``adamw``, ``sgd``), the
loss (``mse``, ``l1``, ``huber``, or SFCN's ``soft_label_kl`` for a model with age-bin outputs,
given its output head), the augmentation (``none``, ``flip``, ``shift``) and a cosine
schedule, so that reference models can be trained with a target's declared recipe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .cache import VolumeCache
from .errors import BrainMIAError, InputError
from .manifest import ScanRecord
from .models.heads import OutputHead
from .volumes import ConformSpec, load_conformed

OPTIMIZERS = ("adam", "adamw", "sgd")
LOSSES = ("mse", "l1", "huber", "soft_label_kl")
AUGMENTATIONS = ("none", "flip", "shift")
SHIFT_VOXELS = 2
"""Largest shift of the ``shift`` augmentation, in voxels per axis (zero padded, no wrap-around)."""
HUBER_DELTA = 1.0
"""Where the ``huber`` loss turns from squared to absolute error, in years."""


class TrainingCancelled(BrainMIAError):
    """Training was stopped by the caller (``should_stop`` returned True)."""


@dataclass
class TrainingOptions:
    """Options of :func:`train_brain_age` (the paper: MSE, Adam lr 1e-4, weight decay 1e-4).

    Attributes:
        epochs: passes over the training scans.
        batch_size: scans per step.
        lr: learning rate.
        weight_decay: weight decay (L2 for ``adam`` and ``sgd``, decoupled for ``adamw``).
        seed: shuffling seed (augmentation draws from its own generator derived from it).
        device: where to train.
        cosine: anneal the learning rate to zero over the epochs (cosine schedule).
        optimizer: ``adam``, ``adamw`` or ``sgd``.
        momentum: SGD momentum (other optimisers ignore it).
        loss: ``mse``, ``l1`` or ``huber`` (delta :data:`HUBER_DELTA` years) of the predicted
            age, or ``soft_label_kl`` (the KL divergence to Gaussian soft labels over age bins, as
            SFCN trains; needs a ``head`` with bins).
        augment: ``none``, ``flip`` (left-right, probability 1/2 per scan) or ``shift``
            (a random shift of up to :data:`SHIFT_VOXELS` voxels per axis, per scan).
        head: the model's output head (None: the model returns one age per scan); a bins model's
            predicted age is its expected age, and ``soft_label_kl`` uses its bins and sigma.
    """

    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "cpu"
    cosine: bool = False
    optimizer: str = "adam"
    momentum: float = 0.0
    loss: str = "mse"
    augment: str = "none"
    head: OutputHead | None = None

    def check(self) -> None:
        """Raise :class:`InputError` on an unknown optimiser, loss or augmentation, or bad sizes."""
        for name, value, known in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("loss", self.loss, LOSSES),
            ("augment", self.augment, AUGMENTATIONS),
        ):
            if value not in known:
                raise InputError(f"unknown {name} '{value}' (known: {', '.join(known)})")
        if self.loss == "soft_label_kl" and (self.head is None or self.head.output.kind != "bins"):
            raise InputError("loss 'soft_label_kl' trains a model with age-bin outputs: give its output head "
                             "(metadata output: {\"kind\": \"bins\", ...})")
        if self.epochs < 1 or self.batch_size < 1:
            raise InputError(f"epochs and batch_size must be at least 1, got {self.epochs} and {self.batch_size}")


@dataclass(frozen=True)
class EpochStats:
    """What one epoch of training measured on its training scans (in training mode).

    Attributes:
        epoch: 0-based epoch.
        loss: mean training loss per scan (of ``options.loss``).
        mae: mean absolute error in years.
    """

    epoch: int
    loss: float
    mae: float


def load_volumes(
    records: Sequence[ScanRecord], spec: ConformSpec, cache: VolumeCache | None = None
) -> torch.Tensor:
    """Conformed volumes of ``records`` stacked as ``(N, 1, X, Y, Z)`` float32."""
    arrays = [cache.get(r.path, spec) if cache is not None else load_conformed(r.path, spec) for r in records]
    return torch.from_numpy(np.stack(arrays)[:, None]).float()


def make_optimizer(model: nn.Module, options: TrainingOptions) -> torch.optim.Optimizer:
    """The optimiser of ``options`` over the parameters of ``model``."""
    params = model.parameters()
    if options.optimizer == "adam":
        return torch.optim.Adam(params, lr=options.lr, weight_decay=options.weight_decay)
    if options.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
    if options.optimizer == "sgd":
        return torch.optim.SGD(params, lr=options.lr, weight_decay=options.weight_decay, momentum=options.momentum)
    raise InputError(f"unknown optimizer '{options.optimizer}' (known: {', '.join(OPTIMIZERS)})")


def loss_per_scan(pred: torch.Tensor, y: torch.Tensor, loss: str, *, out: torch.Tensor | None = None,
                  head: OutputHead | None = None) -> torch.Tensor:
    """The per-scan training loss ``(B,)`` named by ``loss``.

    Args:
        pred: predicted ages ``(B,)``.
        y: true ages ``(B,)``.
        loss: the loss name (:data:`LOSSES`).
        out: the model's raw output (``soft_label_kl`` only).
        head: the model's output head (``soft_label_kl`` only).
    """
    if loss == "soft_label_kl":
        if out is None or head is None or head.output.kind != "bins":
            raise InputError("loss 'soft_label_kl' needs the raw bin outputs and the model's output head")
        return head.soft_label_kl(out, y)
    if loss == "mse":
        return (pred - y) ** 2
    if loss == "l1":
        return (pred - y).abs()
    if loss == "huber":
        return nn.functional.huber_loss(pred, y, reduction="none", delta=HUBER_DELTA)
    raise InputError(f"unknown loss '{loss}' (known: {', '.join(LOSSES)})")


def _shift(volume: torch.Tensor, offsets: Sequence[int]) -> torch.Tensor:
    """``volume`` (C, X, Y, Z) moved by ``offsets`` voxels per spatial axis, zero filled."""
    out = torch.zeros_like(volume)
    src, dst = [slice(None)], [slice(None)]
    for d, n in zip(offsets, volume.shape[1:]):
        d = max(-n, min(n, int(d)))
        src.append(slice(max(0, -d), n - max(0, d)))
        dst.append(slice(max(0, d), n - max(0, -d)))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def augment_batch(x: torch.Tensor, augment: str, generator: torch.Generator | None) -> torch.Tensor:
    """Augment a batch ``(B, 1, X, Y, Z)`` (``none`` returns it unchanged).

    ``flip`` mirrors a scan along its first (left-right) axis with probability 1/2; ``shift``
    moves each scan by a uniform integer in [-SHIFT_VOXELS, SHIFT_VOXELS] voxels per axis.
    """
    if augment == "none":
        return x
    if augment == "flip":
        flip = torch.rand(x.shape[0], generator=generator) < 0.5
        if not bool(flip.any()):
            return x
        out = x.clone()
        out[flip.to(x.device)] = torch.flip(x[flip.to(x.device)], dims=(2,))
        return out
    if augment == "shift":
        offsets = torch.randint(-SHIFT_VOXELS, SHIFT_VOXELS + 1, (x.shape[0], 3), generator=generator)
        return torch.stack([_shift(x[i], offsets[i].tolist()) for i in range(x.shape[0])])
    raise InputError(f"unknown augment '{augment}' (known: {', '.join(AUGMENTATIONS)})")


def _augment_generator(options: TrainingOptions) -> torch.Generator | None:
    if options.augment == "none":
        return None  # no extra draws: the shuffling of existing callers is unchanged
    seed = int(np.random.SeedSequence([abs(int(options.seed)), 1]).generate_state(1)[0])
    return torch.Generator().manual_seed(seed)


def train_brain_age(
    model: nn.Module,
    volumes: torch.Tensor,
    ages: torch.Tensor,
    options: TrainingOptions,
    *,
    on_epoch: Callable[[int, float], None] | None = None,
    on_epoch_stats: Callable[[EpochStats], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> nn.Module:
    """Fit ``model`` to predict ``ages`` from ``volumes``.

    Args:
        model: a model mapping ``(B, 1, X, Y, Z)`` to ``(B,)``.
        volumes: training volumes ``(N, 1, X, Y, Z)``.
        ages: ``(N,)`` ages in years.
        options: training options.
        on_epoch: called with (epoch, mean absolute error on the training scans).
        on_epoch_stats: called with the :class:`EpochStats` of each epoch.
        should_stop: checked before every batch; True raises :class:`TrainingCancelled`.

    Returns:
        the trained model, in eval mode.

    Raises:
        TrainingCancelled: ``should_stop`` returned True (the model is left part-trained).
        InputError: unknown optimiser, loss or augmentation.
    """
    options.check()
    generator = torch.Generator().manual_seed(options.seed)
    aug_generator = _augment_generator(options)
    model = model.to(options.device).train()
    for p in model.parameters():
        p.requires_grad_(True)
    optimiser = make_optimizer(model, options)
    schedule = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=options.epochs) if options.cosine else None
    )
    n = volumes.shape[0]
    for epoch in range(options.epochs):
        order = torch.randperm(n, generator=generator)
        abs_err = 0.0
        total_loss = 0.0
        for start in range(0, n, options.batch_size):
            if should_stop is not None and should_stop():
                raise TrainingCancelled(f"training cancelled in epoch {epoch + 1}/{options.epochs}")
            idx = order[start : start + options.batch_size]
            x = augment_batch(volumes[idx], options.augment, aug_generator).to(options.device)
            y = ages[idx].to(options.device)
            out = model(x)
            pred = out if options.head is None else options.head.prediction(out)
            per_scan = loss_per_scan(pred, y, options.loss, out=out, head=options.head)
            loss = per_scan.mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            abs_err += float((pred.detach() - y).abs().sum())
            total_loss += float(per_scan.detach().sum())
        if schedule is not None:
            schedule.step()
        if on_epoch is not None:
            on_epoch(epoch, abs_err / n)
        if on_epoch_stats is not None:
            on_epoch_stats(EpochStats(epoch=epoch, loss=total_loss / n, mae=abs_err / n))
    return model.eval()


def predict(model: nn.Module, volumes: torch.Tensor, batch_size: int = 16, device: str = "cpu",
            head: OutputHead | None = None) -> torch.Tensor:
    """Predicted ages ``(N,)`` of ``model`` on ``volumes``, without gradients (``head``: its output
    head, for a model whose output is not one age per scan)."""
    model = model.to(device).eval()

    def ages(out: torch.Tensor) -> torch.Tensor:
        return out if head is None else head.prediction(out)

    with torch.no_grad():
        return torch.cat([ages(model(volumes[i : i + batch_size].to(device))).cpu()
                          for i in range(0, len(volumes), batch_size)])
