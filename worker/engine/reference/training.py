"""Training of one reference model from a recipe (one Celery task per model in distributed mode).

Reference model ``i`` trains on the pool scans where its keep column is True, with the target's
recipe and the seed ``recipe.seed * 1000 + i`` (:func:`model_seed`): that seed initialises the
weights (``torch.manual_seed`` before the architecture is built) and orders the batches, so a
model is the same whichever worker trains it, and retraining one lost model alone reproduces it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..models import LoadedModel, ModelMetadata, build_architecture
from ..models.heads import OutputHead
from ..training import EpochStats, TrainingCancelled, predict, train_brain_age
from .recipe import Recipe
from .store import ReferenceStore, ReferenceStoreError

SEED_STRIDE = 1000
"""Seeds of reference models: ``recipe.seed * SEED_STRIDE + model_index``."""
MAX_MODELS = SEED_STRIDE
"""Model indices run from 0 to ``MAX_MODELS - 1`` (so that seeds never collide)."""
_AGE_INIT = ("mean_age", "age_scale")


class ReferenceTrainingCancelled(TrainingCancelled):
    """Training of a reference model was stopped by the caller.

    Attributes:
        model_index: the reference model that was being trained.
    """

    def __init__(self, message: str, model_index: int):
        super().__init__(message)
        self.model_index = model_index


def model_seed(recipe: Recipe, model_index: int) -> int:
    """The seed of reference model ``model_index``: ``recipe.seed * 1000 + model_index``."""
    check_index(model_index)
    return int(recipe.seed) * SEED_STRIDE + int(model_index)


def check_index(model_index: int) -> None:
    """Raise :class:`InputError` unless ``0 <= model_index < MAX_MODELS``."""
    if isinstance(model_index, bool) or not isinstance(model_index, (int, np.integer)) or not 0 <= model_index < MAX_MODELS:
        raise InputError(f"a reference model index must be an integer from 0 to {MAX_MODELS - 1}, got {model_index!r}")


def build_reference(recipe: Recipe, ages: torch.Tensor | None = None, seed: int | None = None) -> nn.Module:
    """A fresh model of the recipe's architecture, initialised from ``seed`` (``torch.manual_seed``).

    When ``ages`` are given and ``arch_kwargs`` sets neither ``mean_age`` nor ``age_scale``, the
    output layer starts at their mean and spread (as the demo's model does), if the architecture
    takes those arguments.
    """
    kwargs: dict[str, Any] = dict(recipe.arch_kwargs)
    if ages is not None and len(ages) > 0 and not any(k in kwargs for k in _AGE_INIT):
        spread = float(ages.std()) if len(ages) > 1 else 1.0
        init = {"mean_age": float(ages.mean()), "age_scale": spread if np.isfinite(spread) and spread > 0 else 1.0}
        try:
            _seed(seed)
            return build_architecture(recipe.arch, **kwargs, **init)
        except InputError:
            pass  # an architecture without those arguments: built as declared
    _seed(seed)
    return build_architecture(recipe.arch, **kwargs)


def _seed(seed: int | None) -> None:
    if seed is not None:
        torch.manual_seed(seed)


def reference_metadata(recipe: Recipe, target: ModelMetadata) -> ModelMetadata:
    """The metadata of a reference model: the target's grid and normalisation, the recipe's architecture."""
    return ModelMetadata(
        input_shape=target.input_shape,
        voxel_size=target.voxel_size,
        normalize=target.normalize,
        arch=recipe.arch,
        arch_kwargs=dict(recipe.arch_kwargs),
        **({"output": target.output, "loss": target.loss} if target.output.kind != "age" else {}),
    )


def _mask(train_mask: Any, n: int) -> torch.Tensor:
    mask = torch.as_tensor(np.asarray(train_mask))
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise InputError("a train mask must hold only True/False (or 1/0) values")
        mask = mask.bool()
    if mask.shape != (n,):
        raise InputError(f"the train mask must have one entry per scan ({n}), got shape {tuple(mask.shape)}")
    if not bool(mask.any()):
        raise InputError("a reference model needs at least one training scan (its train mask is all False)")
    return mask


def check_inputs(volumes: torch.Tensor, ages: torch.Tensor, metadata: ModelMetadata) -> None:
    """Raise :class:`InputError` unless ``volumes`` are ``(N, 1, *input_shape)`` with ``N`` ages."""
    want = (1, *metadata.input_shape)
    if volumes.dim() != 5 or tuple(volumes.shape[1:]) != want:
        raise InputError(
            f"reference training needs volumes conformed to the target's grid (N, {', '.join(map(str, want))}), "
            f"got shape {tuple(volumes.shape)}"
        )
    if tuple(ages.shape) != (volumes.shape[0],):
        raise InputError(f"need one age per volume ({volumes.shape[0]}), got shape {tuple(ages.shape)}")


def train_reference(
    recipe: Recipe,
    volumes: torch.Tensor,
    ages: torch.Tensor | np.ndarray,
    train_mask: Any,
    *,
    metadata: ModelMetadata,
    model_index: int,
    device: str = "cpu",
    on_epoch: Callable[[int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> nn.Module:
    """Train reference model ``model_index`` on the scans where ``train_mask`` is True.

    Args:
        recipe: how the target was trained.
        volumes: the pool's conformed volumes ``(N, 1, X, Y, Z)`` (audit scans, then any
            population scans), on the target's grid.
        ages: ``(N,)`` ages in years.
        train_mask: ``(N,)`` booleans, this model's keep column.
        metadata: the target's metadata (grid, voxel size, normalisation).
        model_index: which reference model (its seed is :func:`model_seed`).
        device: where to train.
        on_epoch: called with (epoch, mean training loss of the recipe's loss) after each epoch.
        should_stop: checked before every batch; True raises :class:`ReferenceTrainingCancelled`.

    Returns:
        the trained model on CPU, in eval mode.

    Raises:
        ReferenceTrainingCancelled: stopped by ``should_stop`` (within one batch).
        InputError: mismatched shapes, an empty or bad train mask, a bad model index.
    """
    seed = model_seed(recipe, model_index)
    ages_t = torch.as_tensor(np.asarray(ages, dtype=np.float32))
    check_inputs(volumes, ages_t, metadata)
    mask = _mask(train_mask, volumes.shape[0])
    x, y = volumes[mask], ages_t[mask]
    model = build_reference(recipe, y, seed)

    def stats(s: EpochStats) -> None:
        if on_epoch is not None:
            on_epoch(s.epoch, s.loss)

    try:
        options = recipe.training_options(seed, device)
        options.head = OutputHead(metadata)  # a bins target's references: expected age, its soft-label KL
        train_brain_age(model, x, y, options, on_epoch_stats=stats, should_stop=should_stop)
    except TrainingCancelled as exc:
        raise ReferenceTrainingCancelled(f"reference model {model_index}: {exc}", model_index) from None
    return model.cpu().eval()


def train_mae(model: nn.Module, volumes: torch.Tensor, ages: Any, train_mask: Any, device: str = "cpu",
              head: OutputHead | None = None) -> float:
    """Mean absolute error of ``model`` on its training scans (eval mode), in years (``head``: a bins
    model's output head)."""
    ages_t = torch.as_tensor(np.asarray(ages, dtype=np.float32))
    mask = _mask(train_mask, volumes.shape[0])
    pred = predict(model, volumes[mask], device=device, head=head)
    model.cpu()
    return float((pred - ages_t[mask]).abs().mean())


def obtain_reference(
    store: ReferenceStore,
    set_key: str,
    recipe: Recipe,
    volumes: torch.Tensor,
    ages: torch.Tensor | np.ndarray,
    train_mask: Any,
    *,
    metadata: ModelMetadata,
    model_index: int,
    keep_hash: str,
    scan_ids: Sequence[str],
    device: str = "cpu",
    scan_sets: Sequence[str] = (),
    on_epoch: Callable[[int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[LoadedModel, bool]:
    """Reference model ``model_index`` from ``store``, trained and stored first when absent.

    The unit of work of one reference-training task: a model already stored under its key is
    loaded, not retrained; a damaged entry is deleted and retrained.

    Args:
        store: where finished models are kept.
        set_key: :func:`~worker.engine.reference.store.reference_set_key` of the set.
        recipe, volumes, ages, train_mask, metadata, model_index, device, on_epoch,
            should_stop: as for :func:`train_reference` (``metadata`` is the target's).
        keep_hash: the keep matrix's hash (recorded in the entry).
        scan_ids: the pool's content ids, in order (recorded in the entry).
        scan_sets: labels of the scan sets the pool comes from (for deletion with them).

    Returns:
        ``(model, reused)``: the loaded model, and whether it came from the store.

    Raises:
        ReferenceStoreError: the stored model trained on other scans than ``train_mask`` says
            (the keep hash given does not describe this keep column).
    """
    mask = _mask(train_mask, volumes.shape[0]).tolist()
    if store.has(set_key, model_index):
        entry = None
        try:
            entry = store.entry(set_key, model_index)
        except ReferenceStoreError:
            store.delete(set_key, model_index)  # damaged: retrained below
        if entry is not None:
            if entry.train_mask != mask:
                raise ReferenceStoreError(
                    f"stored reference model {model_index} trained on other scans than its keep column: "
                    "the keep hash given does not describe the keep matrix"
                )
            try:
                return store.load(set_key, model_index, device), True
            except ReferenceStoreError:
                store.delete(set_key, model_index)
    model = train_reference(
        recipe, volumes, ages, mask, metadata=metadata, model_index=model_index, device=device,
        on_epoch=on_epoch, should_stop=should_stop,
    )
    mae = train_mae(model, volumes, ages, mask, device=device, head=OutputHead(metadata))
    store.save(
        model, set_key, model_index, recipe=recipe, metadata=reference_metadata(recipe, metadata),
        keep_hash=keep_hash, scan_ids=scan_ids, train_mask=mask, train_mae=mae, scan_sets=scan_sets,
    )
    return store.load(set_key, model_index, device), False
