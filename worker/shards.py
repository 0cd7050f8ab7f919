"""Feature shards: a large assessment's feature extraction split into tasks any worker can take.

An assessment with more than ``settings.shard_scans`` scans extracts its features in shards of
that many scans, in manifest order, as units of the job's fan-out (:mod:`worker.fanout`, the one
shared with reference training; rows of kind ``shard``). Each shard loads the model in a confined
model host (:func:`backend.services.model_hosts.model_host`: the model never runs in a worker
process), extracts the features of its slice of the manifest, and writes them to storage under
``shards/<assessment>/<index>/`` (renamed into place when complete: a shard is done when its
folder exists). The job's worker then merges the shards in manifest order into one
:class:`~worker.engine.features.FeatureTable`, whose per-scan vectors (gradients, activations)
are ``.npy`` files read memory-mapped, never all in memory at once, and runs the attacks on it.

With the gradient method ``auto``, the job's worker times the exact methods once, on the first
batches of the first shard, before any shard is sent, and writes the winner to
``shards/<assessment>/method.json``: every shard, on whichever worker, then computes every batch
with that one method, so the merged table equals an unsharded run with that method, value for
value (the methods agree only to float32 rounding, and each process would otherwise time its own).

A shard's files: ``meta.json`` (column order, text columns and their dtypes, layer aliases,
attributes, array names), ``columns.npz`` (numeric columns, exact dtypes) and ``a<i>.npy`` per array; nothing is
pickled.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from backend.services import options as job_options
from backend.services.job_states import ReferenceAttempt
from backend.services.model_hosts import model_host
from backend.services.reference_task_states import SHARD
from backend.services.resources import Resources

from .fanout import SendUnit, Units, obtain
from .job_context import PROGRESS_MIN_INTERVAL_S, JobContext, Stopped
from .runner import job_extraction, job_manifest, job_rows, public_text, stored_path

logger = logging.getLogger(__name__)

FEATURES_SHARE = 0.6
"""Share of the job's progress bar for the shards (the engine's own share for features)."""
_COPY_ROWS = 256  # rows of a per-scan array copied at once while merging
METHOD_FILE = "method.json"
"""The job's gradient method, decided once before the shards are sent (in the shards' folder)."""


@dataclass
class ShardPlan:
    """The shards of one assessment, as every worker computes them from the job row.

    Attributes:
        assessment_id: the job.
        manifest: the scan set's manifest (all scans).
        size: scans per shard (the last one may hold fewer).
        model_path: the stored model file.
        overrides: model metadata of the record.
        extraction: the engine's extraction options (device, batch size, loader workers).
        root: ``shards/<assessment>`` in storage.
    """

    assessment_id: str
    manifest: Any
    size: int
    model_path: Path
    overrides: dict[str, Any] | None
    extraction: Any
    root: Path

    @property
    def n(self) -> int:
        """Number of shards."""
        return math.ceil(len(self.manifest.records) / self.size)

    def records(self, k: int) -> list[Any]:
        """The manifest records of shard ``k``, in manifest order."""
        return self.manifest.records[k * self.size:(k + 1) * self.size]

    def folder(self, k: int) -> Path:
        """Where shard ``k``'s features are (once complete)."""
        return self.root / f"{k:05d}"


def shards_root(resources: Resources, assessment_id: str) -> Path:
    """``shards/<assessment>`` in the storage folder."""
    return resources.storage.shards_dir(assessment_id)


def remove_shards(resources: Resources, assessment_id: str) -> None:
    """Delete the job's shard files (once it is finished: a re-queued job reuses them)."""
    shutil.rmtree(shards_root(resources, assessment_id), ignore_errors=True)


def shard_plan(resources: Resources, assessment_id: str) -> ShardPlan | None:
    """The job's shards, or None when it extracts its features in one piece (at most
    ``settings.shard_scans`` scans, or a federated assessment).

    Raises:
        Stopped: the job was deleted.
        InputError: a changed manifest.
    """
    from worker.engine.features.methods import AUTO
    from worker.engine.models import ModelMetadata

    row, model_row, scan_set = job_rows(resources, assessment_id)
    size = resources.settings.shard_scans
    if scan_set.n_scans <= size:
        return None
    manifest = job_manifest(resources, scan_set)
    if len(manifest.records) <= size:
        return None
    if model_row.kind == "federated_rounds" and model_row.rounds and any(r.learner is not None for r in manifest.records):
        return None
    options = job_options.read_stored(row.options)
    known = set(ModelMetadata.model_fields)
    overrides = {k: v for k, v in (model_row.model_metadata or {}).items() if k in known} or None
    path = stored_path(resources.storage, model_row.path)  # the model the job's own host loads (the final round)
    root = shards_root(resources, assessment_id)
    extraction = job_extraction(resources, options)
    decided = _read_method(root)
    if extraction.gradient_method == AUTO and decided is not None:
        extraction = replace(extraction, gradient_method=decided)
    return ShardPlan(assessment_id, manifest, size, path, overrides, extraction, root)


def _read_method(root: Path) -> str | None:
    from worker.engine.features.methods import JACOBIAN_METHODS

    try:
        method = json.loads((root / METHOD_FILE).read_text())["method"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return method if method in JACOBIAN_METHODS else None


def _write_method(root: Path, method: str, tmp: Path) -> None:
    (tmp / METHOD_FILE).write_text(json.dumps({"method": method}))
    root.mkdir(parents=True, exist_ok=True)
    os.replace(tmp / METHOD_FILE, root / METHOD_FILE)
    shutil.rmtree(tmp, ignore_errors=True)


class ShardUnits(Units):
    """The shards of one plan as fan-out units (done = the shard's folder exists)."""

    kind = SHARD
    noun = "shard"

    def __init__(self, plan: ShardPlan):
        self.plan = plan
        self.n = plan.n
        self._host: Any = None  # one model host for every shard this worker extracts for the job
        self._model: Any = None
        self._halt: Callable[[], bool] = lambda: False

    def close(self) -> None:
        """End the model host (if one was started)."""
        if self._host is not None:
            self._host.close()
            self._host = self._model = None

    def _loaded(self, resources: Resources) -> Any:
        if self._host is None:
            self._host = model_host(resources.settings, self.plan.extraction.device, lambda: self._halt())
            self._model = self._host.load(self.plan.model_path, self.plan.overrides, check=False)
        return self._model

    def decide_method(self, resources: Resources, stop: Callable[[], bool]) -> str:
        """With ``auto``: time the gradient methods on the first batches of the first shard (in
        this worker's model host), store the winner for every shard and use it; else the plan's.

        Raises:
            ExtractionCancelled, HostStopped: ``stop`` said so.
        """
        from worker.engine.features import extract_features
        from worker.engine.features.methods import AUTO, REFERENCE

        plan = self.plan
        if plan.extraction.gradient_method != AUTO:
            return str(plan.extraction.gradient_method)
        self._halt = stop
        sample = plan.records(0)[:2 * plan.extraction.batch_size]  # timing decides within two batches
        table = extract_features(self._loaded(resources), replace(plan.manifest, records=sample),
                                 replace(plan.extraction, scan_qa=False), cache=resources.volume_cache(),
                                 should_stop=stop)
        method = table.gradient_method or REFERENCE  # undecided (one batch, no clear winner): the loop
        _write_method(plan.root, method, resources.storage.temp_dir())
        plan.extraction = replace(plan.extraction, gradient_method=method)
        return method

    def stored(self) -> list[bool]:
        """Which shards are complete in storage."""
        return [self.plan.folder(k).is_dir() for k in range(self.n)]

    def run(self, resources: Resources, attempt: ReferenceAttempt, *, stop: Callable[[], bool],
            on_step: Callable[[], None] | None = None) -> str:
        """Extract shard ``attempt.model_index`` in a confined model host and write it to storage."""
        from worker.engine.errors import InputError, ModelError
        from worker.engine.features import ExtractionCancelled, extract_features
        from worker.engine.sandbox import HostStopped

        plan, k = self.plan, attempt.model_index
        last = [0.0]

        def progress(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_MIN_INTERVAL_S or done >= total:
                last[0] = now
                attempt.heartbeat(epoch=done)
            if on_step is not None:
                on_step()

        halt = self._halt = lambda: attempt.lost or stop()
        try:
            table = extract_features(self._loaded(resources), replace(plan.manifest, records=plan.records(k)),
                                     plan.extraction, cache=resources.volume_cache(), progress=progress,
                                     should_stop=halt)
            write_shard(table, plan.folder(k), resources.storage.temp_dir())
        except (ExtractionCancelled, HostStopped):
            self.close()
            return "stopped"
        except Exception as exc:
            self.close()
            if halt():
                return "stopped"
            known = isinstance(exc, (InputError, ModelError))
            message = str(exc) if known else f"{type(exc).__name__}: {exc}"
            logger.warning("shard %d of assessment %s failed: %s", k, plan.assessment_id, message, exc_info=not known)
            attempt.fail(public_text(resources, message))
            return "failed"
        return "succeeded" if attempt.succeed() else "stopped"

    def progress(self, stored: list[bool], running: list[Any]) -> tuple[str, float, str]:
        """``features: n/N shards (shard s: d/S scans on worker...)``."""
        n, done, size = len(stored), sum(stored), self.plan.size
        partial = sum(min(r.epoch, size) / size for r in running)
        where = "; ".join(f"shard {r.model_index + 1}: {r.epoch}/{len(self.plan.records(r.model_index))} scans on "
                          f"{r.worker}" for r in running[:4])
        return ("features", FEATURES_SHARE * (done + partial) / n,
                f"features: {done}/{n} shards of {size} scans" + (f" ({where})" if where else ""))


def obtain_shards(resources: Resources, job: JobContext, *, worker: str, send: SendUnit | None) -> Any:
    """The job's features from its shards (extracted over the workers, or here), merged; None when
    the job is not sharded (the engine extracts its features itself).

    Raises:
        Stopped: cancelled, lost or shutting down.
        InputError: a shard failed (its error), or its workers kept dying.
    """
    plan = shard_plan(resources, job.id)
    if plan is None:
        return None
    from worker.engine.features import ExtractionCancelled
    from worker.engine.features.methods import AUTO
    from worker.engine.sandbox import HostStopped

    units = ShardUnits(plan)
    missing = units.n - sum(units.stored())
    job.append_log(f"features: {len(plan.manifest.records)} scans in {units.n} shards of {plan.size}"
                   + (f", {missing} to extract" if missing < units.n else "")
                   + (" as tasks over the workers" if send else " in this worker"))
    try:
        if missing:
            timed = plan.extraction.gradient_method == AUTO
            try:
                method = units.decide_method(resources, job.should_stop)
            except (ExtractionCancelled, HostStopped):
                raise Stopped() from None
            job.append_log(f"features: per-sample gradients by {method} in every shard"
                           + (" (timed on the first shard's first batches)" if timed else ""))
        obtain(resources, job, units, worker=worker, send=send)
    finally:
        units.close()
    job.progress("features", FEATURES_SHARE, f"features: merging {units.n} shards")
    return merge_shards([plan.folder(k) for k in range(units.n)], plan.root / "merged")


def write_shard(table: Any, folder: Path, tmp: Path) -> Path:
    """Write a shard's :class:`FeatureTable` to ``folder`` (built in ``tmp``, then renamed into place)."""
    frame = table.table
    numeric = {f"c{i}": frame[c].to_numpy() for i, c in enumerate(frame.columns) if frame[c].dtype.kind in "biuf"}
    text = {c: frame[c].tolist() for i, c in enumerate(frame.columns) if f"c{i}" not in numeric}
    names = list(table.arrays)
    dtypes = {c: str(frame[c].dtype) for c in text}  # pandas' text dtypes by name ("object", "str", ...)
    meta = {"columns": list(frame.columns), "text": text, "dtypes": dtypes, "layer_aliases": table.layer_aliases,
            "attributes": list(table.attributes), "arrays": names, "rows": len(frame),
            "gradient_method": table.gradient_method}
    np.savez(tmp / "columns.npz", allow_pickle=False, **numeric)
    for i, name in enumerate(names):
        np.save(tmp / f"a{i}.npy", np.ascontiguousarray(table.arrays[name]), allow_pickle=False)
    (tmp / "meta.json").write_text(json.dumps(meta))
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, folder)
    except OSError:
        if not folder.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # written meanwhile by an attempt thought dead: the same features
    return folder


def _read_meta(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "meta.json").read_text())


def merge_shards(folders: list[Path], dest: Path) -> Any:
    """One :class:`FeatureTable` from shard folders, rows in their order; the per-scan arrays
    are written to ``dest`` shard by shard and returned memory-mapped (read-only)."""
    import pandas as pd

    from worker.engine.features import FeatureTable

    metas = [_read_meta(f) for f in folders]
    frames = []
    for folder, meta in zip(folders, metas):
        with np.load(folder / "columns.npz", allow_pickle=False) as numeric:
            data = {c: (numeric[f"c{i}"] if f"c{i}" in numeric.files
                        else pd.Series(meta["text"][c], dtype=pd.api.types.pandas_dtype(meta["dtypes"][c])))
                    for i, c in enumerate(meta["columns"])}
        frames.append(pd.DataFrame(data, columns=meta["columns"]))
    table = pd.concat(frames, ignore_index=True)
    first, total = metas[0], sum(m["rows"] for m in metas)
    dest.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for i, name in enumerate(first["arrays"]):
        parts = [np.load(f / f"a{m['arrays'].index(name)}.npy", mmap_mode="r") for f, m in zip(folders, metas)]
        path = dest / f"a{i}.npy"
        out = np.lib.format.open_memmap(path, mode="w+", dtype=parts[0].dtype, shape=(total, *parts[0].shape[1:]))
        row = 0
        for part in parts:
            for start in range(0, len(part), _COPY_ROWS):
                chunk = part[start:start + _COPY_ROWS]
                out[row:row + len(chunk)] = chunk
                row += len(chunk)
        out.flush()
        del out, parts
        arrays[name] = np.load(path, mmap_mode="r")
    methods = {m.get("gradient_method") for m in metas}
    return FeatureTable(table=table, arrays=arrays, layer_aliases=dict(first["layer_aliases"]),
                        attributes=list(first["attributes"]),
                        gradient_method=methods.pop() if len(methods) == 1 else None)
