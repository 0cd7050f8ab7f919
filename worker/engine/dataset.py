"""A PyTorch dataset of conformed scans, in manifest order, and its parallel loader.

Scans are decoded and conformed by data-loader worker processes (:func:`default_loader_workers`:
the cores minus one, capped), each preparing whole batches ahead of the model, so a warm GPU
does not wait on decoding; at most :func:`in_flight_batches` batches are held at once. Workers
start from a fork server (a clean process that imported this module and the parent's main script
once: :mod:`worker.engine.loader_preload`), never by forking this process, which may hold threads
(the model host's pipes, a web server, a Celery pool) and CUDA.
The conformed-volume cache (:class:`~worker.engine.cache.VolumeCache`) is a folder written
atomically, so every worker on a machine shares it; each worker's hit and miss counts are added to
the caller's cache. With a scan-QA template (:mod:`worker.engine.scan_qa`), each item also
carries the scan's QA values, computed in the worker right after conforming.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from worker.engine import scan_qa, volumes
from worker.engine.cache import CacheStats, VolumeCache
from worker.engine.errors import ScanError
from worker.engine.manifest import ScanRecord
from worker.engine.volumes import ConformSpec

__all__ = ["MAX_LOADER_WORKERS", "ScanDataset", "default_loader_workers", "in_flight_batches", "loader_workers",
           "make_loader"]

MAX_LOADER_WORKERS = 16
"""Most data-loader workers by default (a GPU box's cores; a cold 1 mm scan takes ~0.16 s)."""

logger = logging.getLogger(__name__)


def default_loader_workers() -> int:
    """The cores this process may use minus one (one computes), between 0 and :data:`MAX_LOADER_WORKERS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(0, min(cores - 1, MAX_LOADER_WORKERS))


def loader_workers(requested: int | None, n_scans: int, batch_size: int) -> int:
    """The workers to start for ``n_scans``: ``requested`` (None: the default), no more than the
    batches, none for a single batch or inside a daemonic process (a Celery prefork child, which
    may not have children)."""
    workers = default_loader_workers() if requested is None else int(requested)
    if workers < 0:
        raise ValueError(f"loader workers must be 0 or more, got {workers}")
    batches = math.ceil(n_scans / max(batch_size, 1))
    workers = 0 if batches <= 1 else min(workers, batches)
    if workers and multiprocessing.current_process().daemon:
        logger.info("decoding scans in this process: a daemonic process cannot start loader workers")
        return 0
    return workers


def _prefetch_factor(num_workers: int) -> int:
    return 2 if num_workers < 4 else 1


def in_flight_batches(num_workers: int) -> int:
    """Most batches decoded ahead at once (memory: this many batches of conformed volumes)."""
    return num_workers * _prefetch_factor(num_workers) if num_workers else 1


def _context() -> Any:
    """The fork server's multiprocessing context, preloading the parent's main script
    (:mod:`worker.engine.loader_preload`) and this module (and so torch)."""
    from multiprocessing import spawn

    from worker.engine import loader_preload

    main = spawn.get_preparation_data("loader").get("init_main_from_path")  # the path children would re-run
    if main:
        os.environ[loader_preload.MAIN_ENV] = main  # read by the fork server when it starts
    else:
        os.environ.pop(loader_preload.MAIN_ENV, None)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([loader_preload.__name__, __name__])
    return ctx


class ScanDataset(Dataset):
    """Conformed volumes of a list of scans.

    Item ``i`` is ``(volume, i)``: the scan of ``records[i]`` as a float32 tensor of
    shape ``(1, *spec.shape)`` and its index, so batches can be matched back to records. With
    ``qa``, it is ``(volume, i, qa_values)``, the last a float64 tensor of the
    :data:`~worker.engine.scan_qa.QA_COLUMNS` values of the conformed scan.

    Args:
        records: the scans, e.g. ``manifest.records``.
        spec: the model's input grid and normalisation.
        cache: a volume cache, or None to conform every time.
        qa: the scan-QA template on ``spec``'s grid (:func:`~worker.engine.scan_qa.template_for`,
            computed once by the caller and sent to each worker with the dataset), or None.
    """

    def __init__(self, records: Sequence[ScanRecord], spec: ConformSpec, cache: VolumeCache | None = None,
                 qa: scan_qa.QaTemplate | None = None):
        self.records = list(records)
        self.spec = spec
        self.cache = cache
        self.qa = qa

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        path = self.records[i].path
        if self.cache is not None:
            volume = self.cache.get(path, self.spec)
        else:
            volume = volumes.load_conformed(path, self.spec)
        if self.qa is not None:
            values = torch.tensor(scan_qa.scan_qa_values(volume, self.qa), dtype=torch.float64)
            return torch.from_numpy(volume).unsqueeze(0), int(i), values
        return torch.from_numpy(volume).unsqueeze(0), int(i)


@dataclass(frozen=True)
class _FailedItem:
    """A scan that failed in a worker process, carried to the main process as data."""

    path: object
    reason: str


@dataclass
class _WorkerBatch:
    """A batch made in a worker process, with the worker's cache counts for it."""

    batch: Any
    stats: CacheStats


def _cache_of(dataset: Dataset) -> VolumeCache | None:
    return getattr(dataset, "cache", None)


class _InWorker(Dataset):
    """Wraps a dataset for worker processes: a ScanError becomes a :class:`_FailedItem`, and each
    item carries the cache counts it added.

    PyTorch re-raises a worker's exception by calling its class with one message
    argument, which turns a :class:`ScanError` into a RuntimeError; this keeps the type.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        cache = _cache_of(self.dataset)
        before = CacheStats(**vars(cache.stats)) if cache is not None else CacheStats()
        try:
            item = self.dataset[i]
        except ScanError as exc:
            return _FailedItem(exc.path, exc.reason)
        after = cache.stats if cache is not None else CacheStats()
        return item, CacheStats(**{k: getattr(after, k) - v for k, v in vars(before).items()})


def _collate(items: list[Any]) -> Any:
    for item in items:
        if isinstance(item, _FailedItem):
            return item
    stats = CacheStats(**{k: sum(getattr(s, k) for _, s in items) for k in vars(CacheStats())})
    return _WorkerBatch(default_collate([value for value, _ in items]), stats)


class _ScanLoader(DataLoader):
    """A DataLoader over worker processes: scan errors re-raised as ScanError, the workers'
    cache counts added to the caller's cache."""

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        cache = _cache_of(self.dataset.dataset)  # type: ignore[attr-defined]
        for batch in super().__iter__():
            if isinstance(batch, _FailedItem):
                raise ScanError(batch.path, batch.reason)
            if cache is not None:
                for key, value in vars(batch.stats).items():
                    setattr(cache.stats, key, getattr(cache.stats, key) + value)
            yield batch.batch


def make_loader(dataset: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    """A loader that keeps dataset order (no shuffling, last partial batch kept).

    Args:
        dataset: the dataset, typically a :class:`ScanDataset`.
        batch_size: scans per batch.
        num_workers: worker processes that read and conform scans (0 = in process), started
            from a fork server; each holds at most two batches ahead (one from four workers on).
            A :class:`ScanError` raised in a worker reaches the caller as a ScanError.

    Returns:
        The data loader; batches are ``(volumes, indices)``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if num_workers > 0:
        return _ScanLoader(
            _InWorker(dataset),
            batch_size=batch_size,
            shuffle=False,
            drop_last=False,
            num_workers=num_workers,
            collate_fn=_collate,
            pin_memory=torch.cuda.is_available(),
            prefetch_factor=_prefetch_factor(num_workers),
            multiprocessing_context=_context(),
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=0,
        pin_memory=torch.cuda.is_available(),
    )
