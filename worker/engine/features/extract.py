"""Per-scan feature extraction: a model and a manifest in, a :class:`FeatureTable` out."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..cache import VolumeCache
from ..dataset import ScanDataset, loader_workers, make_loader
from ..errors import BrainMIAError, InputError
from ..manifest import Manifest, ScanRecord
from ..models.loading import LoadedModel
from ..scan_qa import QA_COLUMNS, template_for
from .methods import AUTO
from .table import FeatureTable

DEFAULT_LAYERS = ("first_conv", "last_conv", "output")
ProgressFn = Callable[[int, int], None]


class ExtractionCancelled(BrainMIAError):
    """Feature extraction was stopped by the caller."""


@dataclass
class ExtractionOptions:
    """Options of feature extraction.

    Attributes:
        white_box: compute gradient features (otherwise predictions only).
        layers: layers (aliases or module paths) whose full per-sample gradient is kept.
        batch_size: scans per vectorised pass.
        device: ``cpu``, ``cuda``, ``cuda:1``...; None picks CUDA when present.
        num_workers: data-loader processes decoding and conforming scans in parallel (0: in
            this process; None: the cores minus one, capped; see
            :func:`~worker.engine.dataset.loader_workers`).
        scan_qa: compute each scan's QA values (:mod:`worker.engine.scan_qa`) where it is
            conformed; they become the table's ``qa_*`` columns (never attack features).
        gradient_method: how per-sample gradients are computed (:mod:`.methods`): ``auto``
            (the fastest exact method, timed on the first batches, which are computed by the
            batch-of-one loop meanwhile), or ``vmap``, ``loop``, ``hooks`` for every batch (the
            same method gives the same values whatever the split into shards).
    """

    white_box: bool = True
    layers: Sequence[str] = DEFAULT_LAYERS
    batch_size: int = 8
    device: str | None = None
    num_workers: int | None = None
    scan_qa: bool = True
    gradient_method: str = AUTO


@contextmanager
def exact_float32() -> Iterator[None]:
    """Full float32 matmuls and convolutions on CUDA (no TF32) inside the block; restored after.

    cuDNN allows TF32 convolutions by default, which on Ampere and later GPUs moves predictions
    and per-sample gradients by about 1e-3 relative: features must match a float32 CPU run.
    """
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def pick_device(device: str | None) -> str:
    """The device to use: the one asked for, else CUDA when present, else CPU."""
    if device:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"device '{device}' asked for, but CUDA is not available here")
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _base_table(records: Sequence[ScanRecord]) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "scan_id": [r.scan_id for r in records],
            "member": [int(bool(r.member)) for r in records],
            "age": np.array([r.age for r in records], dtype=np.float64),
        }
    )
    return table


def _with_attributes(table: pd.DataFrame, records: Sequence[ScanRecord], names: list[str]) -> pd.DataFrame:
    extra = {
        name: [(r.learner or "") if name == "learner" else r.attributes.get(name, "") for r in records]
        for name in names
    }
    return pd.concat([table, pd.DataFrame(extra, index=table.index)], axis=1) if extra else table


def _attribute_names(manifest: Manifest) -> list[str]:
    names = list(manifest.attribute_names)
    if any(r.learner for r in manifest.records) and "learner" not in names:
        names.append("learner")
    return names




def resolve_layers(requested: Sequence[str], aliases: dict[str, str], paths: Sequence[str]) -> list[str]:
    """Map requested layer names (aliases or module paths) to module paths.

    Raises:
        InputError: a name that is neither an alias of this model nor one of its module paths.
    """
    resolved = []
    for name in requested:
        path = aliases.get(name, name)
        if path not in paths:
            raise InputError(
                f"unknown layer '{name}': use first_conv, last_conv, output or a parametrised module "
                f"path of this model ({', '.join(paths)})"
            )
        if path not in resolved:
            resolved.append(path)
    return resolved


def extract_features(
    model: LoadedModel | Any,
    manifest: Manifest,
    options: ExtractionOptions | None = None,
    *,
    cache: VolumeCache | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FeatureTable:
    """Compute the per-scan features of ``model`` on every scan of ``manifest``.

    Args:
        model: the loaded model (its metadata gives the conform grid), in this process or in the
            sandboxed host (:class:`~worker.engine.sandbox.HostedModel`).
        manifest: the scans with ages and membership.
        options: extraction options.
        cache: conformed-volume cache (None: decode every scan).
        progress: called with (scans done, total) after each batch.
        should_stop: checked before each batch; True raises :class:`ExtractionCancelled`.

    Returns:
        the feature table, with gradient features when ``options.white_box``.
    """
    options = options or ExtractionOptions()
    device = pick_device(options.device)
    computer = model.computer(device)
    layers = resolve_layers(options.layers, computer.aliases, computer.paths) if options.white_box else []

    records = manifest.records
    spec = model.metadata.conform_spec()
    dataset = ScanDataset(records, spec, cache, qa=template_for(spec) if options.scan_qa else None)
    workers = loader_workers(options.num_workers, len(records), options.batch_size)
    loader = make_loader(dataset, batch_size=options.batch_size, num_workers=workers)
    ages_all = torch.tensor([r.age for r in records], dtype=torch.float32)

    columns: dict[str, list[np.ndarray]] = {}
    qa_parts: list[np.ndarray] = []
    done = 0
    with exact_float32():  # TF32 convolutions would move gradients by ~1e-3 relative on GPUs
        for batch in loader:
            x, index = batch[0], batch[1]
            if len(batch) > 2:
                qa_parts.append(batch[2].numpy())
            if should_stop is not None and should_stop():
                raise ExtractionCancelled("feature extraction cancelled")
            for name, value in computer.compute(x, ages_all[index], options.white_box, layers,
                                                options.gradient_method).items():
                columns.setdefault(name, []).append(value)
            done += len(index)
            if progress is not None:
                progress(done, len(records))

    merged = {name: np.concatenate(parts) for name, parts in columns.items()}
    if not np.all(np.isfinite(merged["prediction"])):
        bad = [records[i].scan_id for i in np.flatnonzero(~np.isfinite(merged["prediction"]))[:5]]
        raise InputError(f"{model.path.name}: the model predicts a non-finite age for scan(s) {', '.join(bad)}")
    table = _base_table(records)
    scalars = {k: v.astype(np.float64) for k, v in merged.items() if v.ndim == 1}
    table = pd.concat([table, pd.DataFrame(scalars, index=table.index)], axis=1)
    if qa_parts:
        qa = np.concatenate(qa_parts).reshape(len(records), len(QA_COLUMNS))
        table = pd.concat([table, pd.DataFrame(qa, columns=list(QA_COLUMNS), index=table.index)], axis=1)
    attributes = _attribute_names(manifest)
    table = _with_attributes(table, records, attributes)
    arrays = {k: v for k, v in merged.items() if v.ndim == 2}
    return FeatureTable(table=table, arrays=arrays, layer_aliases=dict(computer.aliases), attributes=attributes,
                        gradient_method=computer.gradient_method if options.white_box else None)


def features_from_predictions(manifest: Manifest, predictions: dict[str, float]) -> FeatureTable:
    """The black-box feature table of a model known only by its predictions.

    Args:
        manifest: the scans with ages and membership.
        predictions: scan_id -> predicted age (see ``worker.engine.predictions``).
    """
    records = manifest.records
    table = _base_table(records)
    table["prediction"] = np.array([predictions[r.scan_id] for r in records], dtype=np.float64)
    table["error"] = table["prediction"] - table["age"]
    attributes = _attribute_names(manifest)
    return FeatureTable(table=_with_attributes(table, records, attributes), attributes=attributes)
