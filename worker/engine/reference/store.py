"""Finished reference models, stored and reused by later assessments.

A stored model is a folder ``<root>/<key[:2]>/<key>/`` holding ``model.safetensors`` (weights of
a registered architecture, never a pickle), its sidecar ``model.safetensors.json`` (the grid and
architecture, so :func:`~worker.engine.models.load_model` reads it) and ``entry.json`` (the
recipe, model index, keep-matrix hash, the pool's scan content ids and which of them it trained
on, its train MAE, the scan sets it belongs to). The folder is written under ``<root>/.tmp/``
and renamed into place, so a reader sees a whole entry or none, and concurrent workers may
share a root (the first finished wins).

Keys: :func:`reference_set_key` hashes what decides the training of every model of one
assessment (recipe hash, the pool scans' content ids in order, the keep-matrix hash, the conform
spec and the conform pipeline's version); :func:`reference_key` adds the model index. The same
recipe, scans, keep matrix and seed therefore find the same models, and any change misses.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..cache import CACHE_FORMAT_VERSION, VolumeCache, file_sha256
from ..errors import BrainMIAError
from ..models import LoadedModel, ModelMetadata, load_model, write_sidecar
from ..volumes import ConformSpec
from .recipe import Recipe, recipe_hash

STORE_FORMAT_VERSION = 1
"""Bump when stored models must no longer be reused (a change of training code or layout)."""
WEIGHTS = "model.safetensors"
ENTRY = "entry.json"
_TMP = ".tmp"


class ReferenceStoreError(BrainMIAError):
    """A stored reference model that is missing or damaged (it should be retrained)."""


def scan_content_ids(paths: Iterable[Path], cache: VolumeCache | None = None) -> list[str]:
    """The content id of each scan: the SHA-256 of its file (memoised by ``cache`` when given)."""
    return [cache.content_hash(Path(p)) if cache is not None else file_sha256(Path(p)) for p in paths]


def reference_set_key(recipe_or_hash: Recipe | str, scan_ids: Sequence[str], keep_hash: str, spec: ConformSpec) -> str:
    """The key of one assessment's reference models (hex SHA-256), without the model index.

    Args:
        recipe_or_hash: the recipe or its :func:`~worker.engine.reference.recipe.recipe_hash`.
        scan_ids: content ids of the training pool's scans in keep-matrix order (audit scans,
            then population scans); see :func:`scan_content_ids`.
        keep_hash: the keep matrix's hash.
        spec: the target's conform spec.
    """
    rhash = recipe_hash(recipe_or_hash) if isinstance(recipe_or_hash, Recipe) else str(recipe_or_hash)
    text = json.dumps(
        {
            "brainmia_reference_store": STORE_FORMAT_VERSION,
            "conform_version": CACHE_FORMAT_VERSION,
            "recipe": rhash,
            "scans": list(scan_ids),
            "keep": str(keep_hash),
            "spec": spec.key(),
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()


def reference_key(set_key: str, model_index: int) -> str:
    """The key of one reference model: its set key and its index (hex SHA-256)."""
    return hashlib.sha256(f"{set_key}|model={int(model_index)}".encode()).hexdigest()


@dataclass
class StoredReference:
    """The index entry of a stored reference model (``entry.json``).

    Attributes:
        key: its key (:func:`reference_key`).
        set_key: the key of its set (:func:`reference_set_key`).
        model_index: its index in the set.
        recipe: the recipe it was trained with.
        keep_hash: the keep matrix's hash.
        scan_ids: content ids of the pool's scans, in order.
        train_mask: which of them it trained on.
        train_mae: its MAE on its training scans, in years (None when not measured).
        scan_sets: labels of the scan sets it was trained from (for deletion with them).
        weights_sha256: SHA-256 of its weights file.
        created: Unix time it was stored.
        path: its folder.
    """

    key: str
    set_key: str
    model_index: int
    recipe: dict[str, Any]
    keep_hash: str
    scan_ids: list[str]
    train_mask: list[bool]
    train_mae: float | None
    scan_sets: list[str] = field(default_factory=list)
    weights_sha256: str = ""
    created: float = 0.0
    path: Path = Path()

    @property
    def trained_on(self) -> list[str]:
        """Content ids of the scans it trained on."""
        return [s for s, m in zip(self.scan_ids, self.train_mask) if m]

    def to_json(self) -> dict[str, Any]:
        """The JSON of ``entry.json`` (the folder path is left out)."""
        data = {k: v for k, v in self.__dict__.items() if k != "path"}
        data["train_mask"] = "".join("1" if m else "0" for m in self.train_mask)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> "StoredReference":
        """Read an ``entry.json`` document."""
        mask = [c == "1" for c in str(data.get("train_mask", ""))]
        fields_ = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k not in ("train_mask", "path")}
        return cls(**fields_, train_mask=mask, path=path)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class ReferenceStore:
    """Reference models on disk, one folder per model key.

    Args:
        root: the store folder (created on first save).
    """

    def __init__(self, root: Path):
        self.root = Path(root)

    def path_for(self, set_key: str, model_index: int) -> Path:
        """The folder of model ``model_index`` of the set ``set_key``."""
        key = reference_key(set_key, model_index)
        return self.root / key[:2] / key

    def has(self, set_key: str, model_index: int) -> bool:
        """Whether that model is stored (its entry and weights are in place)."""
        folder = self.path_for(set_key, model_index)
        return (folder / ENTRY).is_file() and (folder / WEIGHTS).is_file()

    def save(
        self,
        model: nn.Module,
        set_key: str,
        model_index: int,
        *,
        recipe: Recipe,
        metadata: ModelMetadata,
        keep_hash: str,
        scan_ids: Sequence[str],
        train_mask: Sequence[bool] | np.ndarray,
        train_mae: float | None = None,
        scan_sets: Sequence[str] = (),
    ) -> StoredReference:
        """Store a trained reference model atomically (an existing entry is kept as it is).

        Args:
            model: the trained model (a registered architecture: its state dict is saved).
            set_key: :func:`reference_set_key` of its set.
            model_index: its index.
            recipe: the recipe it was trained with.
            metadata: its metadata (the target's grid, the recipe's architecture).
            keep_hash: the keep matrix's hash.
            scan_ids: the pool's content ids, in order.
            train_mask: which pool scans it trained on.
            train_mae: its MAE on its training scans.
            scan_sets: labels of the scan sets it comes from.

        Returns:
            the stored entry (the earlier one when another writer stored it first).
        """
        from safetensors.torch import save_file

        final = self.path_for(set_key, model_index)
        mask = [bool(m) for m in np.asarray(train_mask).tolist()]
        if len(mask) != len(scan_ids):
            raise ValueError(f"train_mask has {len(mask)} entries for {len(scan_ids)} scans")
        tmp = self.root / _TMP / f"{final.name}-{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        try:
            weights = tmp / WEIGHTS
            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(weights), metadata={"brainmia": "reference", "key": final.name})
            write_sidecar(weights, metadata)
            entry = StoredReference(
                key=final.name,
                set_key=set_key,
                model_index=int(model_index),
                recipe=recipe.to_dict(),
                keep_hash=str(keep_hash),
                scan_ids=list(scan_ids),
                train_mask=mask,
                train_mae=None if train_mae is None else float(train_mae),
                scan_sets=sorted(set(scan_sets)),
                weights_sha256=file_sha256(weights),
                created=time.time(),
            )
            _write_json(tmp / ENTRY, entry.to_json())
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
            except OSError:
                if not self.has(set_key, model_index):
                    raise
                return self.entry(set_key, model_index)  # another writer finished first
            entry.path = final
            return entry
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def entry(self, set_key: str, model_index: int) -> StoredReference:
        """The index entry of a stored model.

        Raises:
            ReferenceStoreError: not stored, or an unreadable entry.
        """
        return self._read_entry(self.path_for(set_key, model_index))

    @staticmethod
    def _read_entry(folder: Path) -> StoredReference:
        try:
            data = json.loads((folder / ENTRY).read_text(encoding="utf-8"))
            return StoredReference.from_json(data, folder)
        except FileNotFoundError:
            raise ReferenceStoreError(f"no stored reference model at {folder}") from None
        except (OSError, ValueError, TypeError) as exc:
            raise ReferenceStoreError(f"{folder / ENTRY}: unreadable reference entry ({exc})") from None

    def load(self, set_key: str, model_index: int, device: str = "cpu") -> LoadedModel:
        """Load a stored model: its built-in architecture and safetensors weights (never a pickle).

        Raises:
            ReferenceStoreError: not stored, or its weights do not match their recorded hash.
        """
        entry = self.entry(set_key, model_index)
        weights = entry.path / WEIGHTS
        try:
            loaded = load_model(weights, device=device, check=False)
        except BrainMIAError as exc:
            raise ReferenceStoreError(f"stored reference model {entry.key} cannot be loaded: {exc}") from None
        if entry.weights_sha256 and loaded.sha256 != entry.weights_sha256:
            raise ReferenceStoreError(f"stored reference model {entry.key}: weights changed since they were stored")
        return loaded

    def entries(self) -> Iterator[StoredReference]:
        """Every readable entry of the store (damaged ones are skipped)."""
        if not self.root.is_dir():
            return
        for shard in sorted(self.root.iterdir()):
            if shard.name == _TMP or not shard.is_dir():
                continue
            for folder in sorted(shard.iterdir()):
                try:
                    yield self._read_entry(folder)
                except ReferenceStoreError:
                    continue

    def find(self, *, scan_ids: Iterable[str] | None = None, scan_set: str | None = None) -> list[StoredReference]:
        """Entries whose pool holds any of ``scan_ids``, or that belong to ``scan_set``."""
        wanted = set(scan_ids or ())
        return [
            e for e in self.entries()
            if (wanted and wanted.intersection(e.scan_ids)) or (scan_set is not None and scan_set in e.scan_sets)
        ]

    def delete(self, set_key: str, model_index: int) -> bool:
        """Delete one stored model; True when there was one."""
        return self._delete_folder(self.path_for(set_key, model_index))

    def _delete_folder(self, folder: Path) -> bool:
        if not folder.exists():
            return False
        doomed = self.root / _TMP / f"deleted-{folder.name}-{uuid.uuid4().hex}"
        doomed.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(folder, doomed)  # out of sight at once: has() is False from here on
        except FileNotFoundError:
            return False
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    def sweep(self, older_than_s: float = 86_400.0) -> int:
        """Remove temporary folders left by writers that died (older than ``older_than_s``)."""
        tmp_root, removed = self.root / _TMP, 0
        if not tmp_root.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        for folder in tmp_root.iterdir():
            try:
                if folder.stat().st_mtime < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def delete_for_scans(self, scan_ids: Iterable[str]) -> int:
        """Delete every model whose pool held any of these scans (IN or OUT); how many went."""
        return sum(self._delete_folder(e.path) for e in self.find(scan_ids=scan_ids))

    def delete_for_scan_set(self, scan_set: str) -> int:
        """Delete every model stored with the scan-set label ``scan_set``; how many went."""
        return sum(self._delete_folder(e.path) for e in self.find(scan_set=scan_set))
