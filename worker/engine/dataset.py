"""A PyTorch dataset of conformed scans, in manifest order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from worker.engine import volumes
from worker.engine.cache import VolumeCache
from worker.engine.errors import ScanError
from worker.engine.manifest import ScanRecord
from worker.engine.volumes import ConformSpec

__all__ = ["ScanDataset", "make_loader"]


class ScanDataset(Dataset):
    """Conformed volumes of a list of scans.

    Item ``i`` is ``(volume, i)``: the scan of ``records[i]`` as a float32 tensor of
    shape ``(1, *spec.shape)`` and its index, so batches can be matched back to records.

    Args:
        records: the scans, e.g. ``manifest.records``.
        spec: the model's input grid and normalisation.
        cache: a volume cache, or None to conform every time.
    """

    def __init__(self, records: Sequence[ScanRecord], spec: ConformSpec, cache: VolumeCache | None = None):
        self.records = list(records)
        self.spec = spec
        self.cache = cache

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path = self.records[i].path
        if self.cache is not None:
            volume = self.cache.get(path, self.spec)
        else:
            volume = volumes.load_conformed(path, self.spec)
        return torch.from_numpy(volume).unsqueeze(0), int(i)


@dataclass(frozen=True)
class _FailedItem:
    """A scan that failed in a worker process, carried to the main process as data."""

    path: object
    reason: str


class _CatchScanErrors(Dataset):
    """Wraps a dataset so that a ScanError in a worker process becomes a :class:`_FailedItem`.

    PyTorch re-raises a worker's exception by calling its class with one message
    argument, which turns a :class:`ScanError` into a RuntimeError; this keeps the type.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        try:
            return self.dataset[i]
        except ScanError as exc:
            return _FailedItem(exc.path, exc.reason)


def _collate(items: list[Any]) -> Any:
    for item in items:
        if isinstance(item, _FailedItem):
            return item
    return default_collate(items)


class _ScanLoader(DataLoader):
    """A DataLoader that re-raises scan errors from worker processes as ScanError."""

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        for batch in super().__iter__():
            if isinstance(batch, _FailedItem):
                raise ScanError(batch.path, batch.reason)
            yield batch


def make_loader(dataset: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    """A loader that keeps dataset order (no shuffling, last partial batch kept).

    Args:
        dataset: the dataset, typically a :class:`ScanDataset`.
        batch_size: scans per batch.
        num_workers: worker processes that read and conform scans (0 = in process).
            A :class:`ScanError` raised in a worker reaches the caller as a ScanError.

    Returns:
        The data loader; batches are ``(volumes, indices)``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if num_workers > 0:
        return _ScanLoader(
            _CatchScanErrors(dataset),
            batch_size=batch_size,
            shuffle=False,
            drop_last=False,
            num_workers=num_workers,
            collate_fn=_collate,
            pin_memory=torch.cuda.is_available(),
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=0,
        pin_memory=torch.cuda.is_available(),
    )
