"""How long reference training will take, from a short measured run (shown before starting).

A few training steps (forward, backward, optimiser step) of the recipe's model on real batches are
timed after one untimed warm-up step; the median time per step is scaled by the steps of a whole run:
``epochs * ceil(n_train / batch_size)`` steps per model, ``ceil(n_models / workers)`` models one
after another on each worker. The warm-up and the measured steps change no stored model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..cache import VolumeCache
from ..errors import InputError
from ..models import ModelMetadata
from ..training import augment_batch, load_volumes, loss_per_scan, make_optimizer
from .recipe import Recipe
from .training import build_reference, check_inputs


@dataclass(frozen=True)
class TrainingEstimate:
    """A measured estimate of reference training.

    Attributes:
        seconds: estimated wall time of all the models, in seconds.
        seconds_per_step: median measured time of one training step of ``batch_size`` scans.
        scans_per_second: measured training throughput of one worker.
        steps_per_model: ``epochs * ceil(n_train / batch_size)``.
        n_train: training scans per model.
        n_models: reference models.
        workers: workers training in parallel.
        device: where the steps were measured.
        epochs: passes over the training scans per model.
    """

    seconds: float
    seconds_per_step: float
    scans_per_second: float
    steps_per_model: int
    n_train: int
    n_models: int
    workers: int
    device: str
    epochs: int = 0

    def describe(self) -> str:
        """One sentence for a person: what will be trained, and about how long it takes."""
        models = f"{self.n_models} reference model{'s' if self.n_models != 1 else ''}"
        where = f"{self.workers} worker{'s' if self.workers != 1 else ''} on {self.device}"
        return (f"training {models} ({self.epochs} epochs on {self.n_train} scans each): about "
                f"{format_duration(self.seconds)} with {where} (measured {self.scans_per_second:.1f} scans/s)")


def format_duration(seconds: float) -> str:
    """``"40 s"``, ``"12 min"``, ``"3.5 h"``."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def measure_training(
    recipe: Recipe,
    volumes: torch.Tensor,
    ages: torch.Tensor | np.ndarray,
    *,
    metadata: ModelMetadata,
    n_models: int,
    n_train: int | None = None,
    workers: int = 1,
    device: str = "cpu",
    steps: int = 3,
) -> TrainingEstimate:
    """Time ``steps`` training steps of the recipe's model and scale their median to the whole run.

    Args:
        recipe: the training recipe.
        volumes: scans on the target's grid ``(N, 1, X, Y, Z)``: the pool, or a sample of it
            (batches are drawn from them, repeated when fewer than ``batch_size``).
        ages: ``(N,)`` ages.
        metadata: the target's metadata.
        n_models: reference models to train.
        n_train: training scans per model (default: half of the ``N`` scans given).
        workers: workers training models at the same time (one model each).
        device: where to measure (and later train).
        steps: timed steps (after one warm-up step).

    Raises:
        InputError: no scans, or counts below 1.
    """
    ages_t = torch.as_tensor(np.asarray(ages, dtype=np.float32))
    check_inputs(volumes, ages_t, metadata)
    n = int(volumes.shape[0])
    if n < 1 or n_models < 1 or workers < 1 or steps < 1:
        raise InputError(f"an estimate needs scans, models, workers and steps (got {n}, {n_models}, {workers}, {steps})")
    n_train = max(1, n // 2) if n_train is None else int(n_train)
    batch = min(recipe.batch_size, max(1, n_train))
    options = recipe.training_options(recipe.seed * 1000, device)
    model = build_reference(recipe, ages_t, seed=options.seed).to(device).train()
    optimiser = make_optimizer(model, options)
    generator = torch.Generator().manual_seed(options.seed)

    def step(i: int) -> None:
        idx = torch.arange(i * batch, (i + 1) * batch) % n
        x = augment_batch(volumes[idx], recipe.augment, generator).to(device)
        y = ages_t[idx].to(device)
        loss = loss_per_scan(model(x), y, recipe.loss).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    step(0)  # warm-up: first-call allocation, kernel selection
    _sync(device)
    times = []
    for i in range(1, steps + 1):
        start = time.perf_counter()
        step(i)
        _sync(device)
        times.append(time.perf_counter() - start)
    per_step = float(np.median(times))  # one step slowed by another process does not set the estimate
    steps_per_model = recipe.epochs * math.ceil(n_train / batch)
    rounds = math.ceil(n_models / workers)
    return TrainingEstimate(
        seconds=per_step * steps_per_model * rounds,
        seconds_per_step=per_step,
        scans_per_second=batch / per_step if per_step > 0 else float("inf"),
        steps_per_model=steps_per_model,
        n_train=n_train,
        n_models=int(n_models),
        workers=int(workers),
        device=device,
        epochs=int(recipe.epochs),
    )


def estimate_setup(setup: Any, metadata: ModelMetadata, *, cache: VolumeCache | None = None, workers: int = 1,
                   device: str | None = "cpu", steps: int = 3) -> TrainingEstimate | None:
    """The estimate for the reference models of a :class:`~.run.TrainedSetup` not yet in its store.

    Only the scans of the measured batches are conformed (the setup's volumes when already loaded).

    Returns:
        None when every model is stored (nothing to train).
    """
    missing = setup.missing()
    if not missing:
        return None
    batch = max(1, min(setup.recipe.batch_size, len(setup.records)))
    sample = min(len(setup.records), batch * (steps + 1))
    volumes = setup.volumes[:sample] if setup.volumes is not None else load_volumes(
        setup.records[:sample], setup.spec, cache)
    n_train = int(round(float(np.asarray(setup.keep)[missing].sum(axis=1).mean())))  # about half the pool each
    return measure_training(setup.recipe, volumes, setup.ages[:sample], metadata=metadata, n_models=len(missing),
                            n_train=n_train, workers=workers, device=device or "cpu", steps=steps)


def estimate_training_time(
    recipe: Recipe,
    volumes: torch.Tensor,
    ages: torch.Tensor | np.ndarray,
    *,
    metadata: ModelMetadata,
    n_models: int,
    n_train: int | None = None,
    workers: int = 1,
    device: str = "cpu",
    steps: int = 3,
) -> float:
    """Estimated seconds to train ``n_models`` reference models (see :func:`measure_training`)."""
    return measure_training(
        recipe, volumes, ages, metadata=metadata, n_models=n_models, n_train=n_train,
        workers=workers, device=device, steps=steps,
    ).seconds
