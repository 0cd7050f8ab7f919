"""A PyTorch dataset of conformed scans, in manifest order."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from worker.engine import volumes
from worker.engine.cache import VolumeCache
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


def make_loader(dataset: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    """A loader that keeps dataset order (no shuffling, last partial batch kept).

    Args:
        dataset: the dataset, typically a :class:`ScanDataset`.
        batch_size: scans per batch.
        num_workers: worker processes that read and conform scans (0 = in process).

    Returns:
        The data loader; batches are ``(volumes, indices)``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )
