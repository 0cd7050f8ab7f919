"""Per-round features: every scan under each used round's community model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..attacks import parse_feature_set, threat_model
from ..cache import VolumeCache
from ..dataset import loader_workers
from ..features import FeatureTable, extract_features, pick_device
from ..manifest import Manifest
from ..models import LoadedModel, load_model
from ..volumes import ConformSpec
from .options import FederatedAttackOptions
from .trajectory import get_trajectory_set, is_trajectory_set

__all__ = ["ModelRef", "round_features"]

ModelRef = LoadedModel | Path | str
ModelLoader = Callable[..., Any]  # (path, overrides, *, device=..., check=...) -> a loaded model
"""A round's model: loaded, or a path loaded when its turn comes."""

ProgressFn = Callable[[str, float, str], None]


def _grad_layers(feature_sets: Sequence[str]) -> list[str]:
    layers = []
    for fs in feature_sets:
        if is_trajectory_set(fs):
            continue
        for comp in parse_feature_set(fs):
            if comp.startswith("grad:"):
                layers.append(comp[len("grad:"):].strip())
    return list(dict.fromkeys(layers))


def _white_box(feature_sets: Sequence[str]) -> bool:
    for fs in feature_sets:
        if is_trajectory_set(fs):
            if get_trajectory_set(fs).white_box:
                return True
        elif threat_model(fs) == "white-box":
            return True
    return False


class _MemoryCache(VolumeCache):
    """A volume cache that also keeps conformed volumes in memory, up to a byte budget.

    Every round's model reads the same scans; keeping them in memory saves re-reading
    (and, without an on-disk cache, re-conforming) them once per round.
    """

    def __init__(self, inner: VolumeCache | None, budget_bytes: int):
        super().__init__(inner.root if inner is not None else None)
        self.inner = inner or VolumeCache(None)
        self.stats = self.inner.stats
        self.budget = int(budget_bytes)
        self._volumes: dict[tuple[str, str], np.ndarray] = {}
        self._used = 0

    def get(self, path: Path, spec: ConformSpec) -> np.ndarray:
        key = (str(path), spec.key())
        volume = self._volumes.get(key)
        if volume is not None:
            return volume
        volume = self.inner.get(path, spec)
        if self._used + volume.nbytes <= self.budget:
            self._volumes[key] = volume
            self._used += volume.nbytes
        return volume


def round_features(
    models: Sequence[ModelRef],
    manifest: Manifest,
    options: FederatedAttackOptions | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    cache: VolumeCache | None = None,
    memory_budget: int = 2 << 30,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    loader: ModelLoader = load_model,
) -> dict[int, FeatureTable]:
    """Per-scan features of every scan under each used round's model.

    White-box features are computed where an attack needs them; full per-sample gradients
    only at the final round (``options.extraction.layers`` and the ``grad:<layer>`` sets).
    Each table's ``learner`` column holds the scan's learner (None for unseen scans).

    Args:
        models: the round models in round order (loaded, or paths loaded one at a time).
        manifest: the federated manifest (members have a learner, unseen scans none).
        options: what will be attacked (decides the rounds and features computed).
        overrides: model metadata overrides for models given as paths.
        cache: conformed-volume cache; volumes are also kept in memory up to
            ``memory_budget`` bytes while the rounds are processed.
        memory_budget: bytes of conformed volumes kept in memory.
        progress: called with (stage, fraction 0-1, message).
        should_stop: polled between batches; True cancels (ExtractionCancelled).

    Returns:
        round (1-based) -> feature table, manifest order.
    """
    options = options or FederatedAttackOptions()
    n_rounds = len(models)
    used = options.rounds_used(n_rounds)
    curve = options.curve_attack()
    per_round_sets = list(options.trajectory_sets) + ([curve[0]] if curve else [])
    ext = options.extraction
    wb_rounds = ext.white_box and _white_box(per_round_sets)
    wb_final = ext.white_box and (wb_rounds or _white_box(options.feature_sets))
    final_layers = list(dict.fromkeys([*ext.layers, *_grad_layers(options.feature_sets)])) if wb_final else []
    round_layers = _grad_layers([curve[0]]) if (curve and wb_rounds) else []
    memo = _MemoryCache(cache, memory_budget)
    device = pick_device(ext.device)
    tables: dict[int, FeatureTable] = {}
    for i, r in enumerate(used):
        final = r == n_rounds
        ref = models[r - 1]
        model = ref if isinstance(ref, LoadedModel) else loader(Path(ref), overrides, device=device)
        opts = replace(ext, white_box=wb_final if final else wb_rounds,
                       layers=tuple(final_layers if final else round_layers), device=device,
                       scan_qa=ext.scan_qa and final)  # the same scans every round: QA once
        # loader workers for the first round only: they fill the disk cache (a copy of the memory
        # cache in each worker would be lost); later rounds read the decoded scans in this process,
        # which keeps them in memory
        workers = 0 if i else loader_workers(opts.num_workers, len(manifest.records), opts.batch_size)
        opts = replace(opts, num_workers=workers)

        def tell(done: int, total: int, i: int = i, r: int = r) -> None:
            if progress is not None:
                progress("features", (i + done / total) / len(used),
                         f"round {r}/{n_rounds}: features {done}/{total} scans")

        ft = extract_features(model, manifest, opts, cache=memo.inner if workers else memo, progress=tell,
                              should_stop=should_stop)
        ft.table["learner"] = [rec.learner for rec in manifest.records]
        if "learner" not in ft.attributes:
            ft.attributes.append("learner")
        tables[r] = ft
    return tables
