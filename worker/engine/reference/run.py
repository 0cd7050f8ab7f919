"""The reference-model attacks of one assessment: references obtained, their outputs, the entries.

Two sources of reference models (DESIGN.md, "Reference models"):

* trained by BrainMIA from a :class:`~worker.engine.reference.recipe.Recipe`: K models on a seeded
  balanced keep matrix over the audit scans (each scan IN exactly K/2 models), one model at a
  time (:func:`~worker.engine.reference.training.obtain_reference`), kept in a
  :class:`~worker.engine.reference.store.ReferenceStore` and reused by any later assessment with
  the same recipe, scans, keep matrix and conform grid;
* supplied by the user: model files (any supported format) and ``keep.csv``
  (:func:`~worker.engine.reference.keep.read_keep_csv`), loaded through ``loader`` (the job's
  confined model host) because they are uploaded code.

Every audit scan is scored by every attack (:mod:`~worker.engine.reference.calibrated`); the
accuracy threshold comes from reference 0 playing the target, so no member label of the target
is used.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..attacks.entries import error_entry
from ..attacks.scored import scored_attack_entry
from ..cache import VolumeCache
from ..errors import InputError
from ..features.table import FeatureTable
from ..manifest import Manifest
from ..models import ModelMetadata, load_model
from ..training import load_volumes
from .calibrated import available_reference_attacks, get_reference_attack, reference_target_scores, score_reference_attack
from .estimate import estimate_setup
from .keep import balanced_keep, keep_hash, read_keep_csv
from .recipe import Recipe, recipe_from_dict, recipe_hash
from .reference_signals import reference_outputs, target_layers
from .signals import ReferenceSignals
from .store import ReferenceStore, reference_set_key, scan_content_ids
from .training import obtain_reference

logger = logging.getLogger(__name__)

DEFAULT_N_MODELS = 8
"""Reference models trained when a recipe is given (LiRA's offline attacks work from 4)."""

Progress = Callable[[str, float, str], None]
Loader = Callable[[Path], Any]


@dataclass
class ReferenceOptions:
    """Which reference models an assessment uses, and which attacks run on them.

    Attributes:
        n_models: K, the models trained from ``recipe`` (even, at least 2).
        recipe: how the target was trained (None: the target's own recipe, from its metadata,
            unless ``models`` are supplied).
        models: user-supplied reference model files (with ``keep_csv``).
        keep_csv: which audit scans each supplied model trained on.
        store_dir: where trained references are kept and reused (None: a temporary folder).
        attacks: attack names (None: every registered one the signals allow).
        seed: seed of the keep matrix.
    """

    n_models: int = DEFAULT_N_MODELS
    recipe: Recipe | None = None
    models: Sequence[Path] = ()
    keep_csv: Path | None = None
    store_dir: Path | None = None
    attacks: Sequence[str] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.recipe is not None and self.models:
            raise InputError("reference models: give a recipe (BrainMIA trains them) or supplied models with "
                             "keep.csv, not both")
        if self.models and self.keep_csv is None:
            raise InputError("supplied reference models need keep.csv (which audit scans each one trained on)")
        if not self.models and (self.n_models < 2 or self.n_models % 2):
            raise InputError(f"reference models: the number to train must be even and at least 2, got {self.n_models}")

    def settings(self) -> dict[str, Any]:
        """The options as recorded in the report's provenance."""
        return {
            "source": "supplied" if self.models else "trained",
            "n_models": len(self.models) if self.models else self.n_models,
            "recipe": self.recipe.to_dict() if self.recipe is not None else None,
            "models": [Path(p).name for p in self.models] or None,
            "attacks": list(self.attacks) if self.attacks else None,
            "seed": self.seed,
        }


@dataclass
class ReferenceRun:
    """The reference attacks' report entries, their per-scan exposure and their provenance."""

    attacks: list[dict] = field(default_factory=list)
    exposure: dict[str, list[dict]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)


def attack_names(options: ReferenceOptions, white_box: bool) -> list[str]:
    """The attacks to run: the options' names (checked), else every registered one the signals allow."""
    if options.attacks:
        names = list(dict.fromkeys(options.attacks))
        for name in names:
            if get_reference_attack(name).white_box and not white_box:
                raise InputError(f"reference attack '{name}' needs gradients: assess a model, not predictions")
        return names
    return [n for n in available_reference_attacks() if white_box or not get_reference_attack(n).white_box]


def _with_recipe(options: ReferenceOptions, metadata: ModelMetadata) -> ReferenceOptions:
    """The options with a recipe: theirs, else the target's own (its metadata's ``recipe``)."""
    if options.recipe is not None:
        return options
    if not metadata.recipe:
        raise InputError("reference models need the recipe the target was trained with: give a recipe file "
                         "(--recipe / options.reference.recipe) or a 'recipe' in the model's metadata sidecar")
    known = {"arch": metadata.arch, "arch_kwargs": metadata.arch_kwargs} if metadata.arch else {}
    recipe = recipe_from_dict({**known, **metadata.recipe}, source="the model's metadata", prefix="recipe.")
    return replace(options, recipe=recipe)


@dataclass
class TrainedSetup:
    """What decides the training of an assessment's K reference models.

    :func:`trained_setup` is the one place that computes it, for the assessment and for the
    reference-training tasks (one Celery task per model), so that they cannot disagree on the
    recipe, a keep column, the scans or the store key.

    Attributes:
        recipe: the recipe the models train with.
        keep: ``(K, N)`` balanced keep matrix over the audit scans (row ``k``: model ``k``'s scans).
        keep_hash: its hash.
        set_key: the store key of the set (:func:`~worker.engine.reference.store.reference_set_key`).
        scan_ids: the scans' content ids, in manifest order.
        ages: ``(N,)`` ages.
        store: where the models are kept and reused.
        records: the audit scans.
        spec: the target's conform spec.
        volumes: the conformed volumes ``(N, 1, X, Y, Z)`` (None until :meth:`load`).
    """

    recipe: Recipe
    keep: np.ndarray
    keep_hash: str
    set_key: str
    scan_ids: list[str]
    ages: np.ndarray
    store: ReferenceStore
    records: Sequence[Any]
    spec: Any
    volumes: Any = None

    @property
    def n_models(self) -> int:
        """K."""
        return int(self.keep.shape[0])

    def load(self, cache: VolumeCache | None) -> Any:
        """The conformed volumes (loaded on first use)."""
        if self.volumes is None:
            self.volumes = load_volumes(self.records, self.spec, cache)
        return self.volumes

    def missing(self) -> list[int]:
        """Indices of the models not (yet) in the store."""
        return [k for k in range(self.n_models) if not self.store.has(self.set_key, k)]


def trained_setup(manifest: Manifest, options: ReferenceOptions, metadata: ModelMetadata,
                  cache: VolumeCache | None = None, *, with_volumes: bool = True) -> TrainedSetup:
    """The recipe, keep matrix, store key, scan ids and volumes of an assessment's trained references.

    Args:
        manifest: the audit scans.
        options: the reference options (without a recipe: the target's own, from ``metadata``).
        metadata: the target's metadata (conform grid, architecture, recipe).
        cache: conformed-volume cache (also memoises the scans' content ids).
        with_volumes: conform the scans now (False: on :meth:`TrainedSetup.load`).

    Raises:
        InputError: supplied models (nothing to train), or no recipe anywhere.
    """
    if options.models:
        raise InputError("supplied reference models are not trained")
    options = _with_recipe(options, metadata)
    assert options.recipe is not None
    records = manifest.records
    spec = metadata.conform_spec()
    keep = balanced_keep(options.n_models, len(records), options.seed)
    digest = keep_hash(keep)
    scan_ids = scan_content_ids([r.path for r in records], cache)
    store_dir = options.store_dir or Path(tempfile.mkdtemp(prefix="brainmia-references-"))
    setup = TrainedSetup(
        recipe=options.recipe, keep=keep, keep_hash=digest,
        set_key=reference_set_key(options.recipe, scan_ids, digest, spec), scan_ids=scan_ids,
        ages=np.array([r.age for r in records], dtype=np.float32), store=ReferenceStore(Path(store_dir)),
        records=records, spec=spec,
    )
    if with_volumes:
        setup.load(cache)
    return setup


def _trained(features: FeatureTable, manifest: Manifest, options: ReferenceOptions, metadata: ModelMetadata,
             device: str, cache: VolumeCache | None, report: Progress,
             should_stop: Callable[[], bool] | None) -> tuple[list[Any], np.ndarray, dict[str, Any], Any]:
    """K reference models trained (or reused) on a balanced keep matrix over the audit scans."""
    setup = trained_setup(manifest, options, metadata, cache)
    recipe, store, n_models = setup.recipe, setup.store, setup.n_models
    models, reused, maes = [], 0, []
    estimate = estimate_setup(setup, metadata, device=device)  # shown before the first epoch
    if estimate is not None:
        report("references", 0.0, estimate.describe())
    started = time.perf_counter()
    for k in range(n_models):
        epochs = max(recipe.epochs, 1)

        def on_epoch(epoch: int, loss: float, k: int = k) -> None:
            done = (k + epoch / epochs) / n_models
            report("references", done, f"reference model {k + 1}/{n_models}, epoch {epoch}/{epochs}")

        model, was_stored = obtain_reference(
            store, setup.set_key, recipe, setup.volumes, setup.ages, setup.keep[k], metadata=metadata,
            model_index=k, keep_hash=setup.keep_hash, scan_ids=setup.scan_ids, device=device, on_epoch=on_epoch,
            should_stop=should_stop,
        )
        reused += int(was_stored)
        maes.append(store.entry(setup.set_key, k).train_mae)
        models.append(model)
    provenance = {"keep_hash": setup.keep_hash, "set_key": setup.set_key, "recipe_hash": recipe_hash(recipe),
                  "reused": reused, "train_mae": maes,
                  "estimated_s": None if estimate is None else round(estimate.seconds, 1),
                  "training_s": round(time.perf_counter() - started, 1)}
    return models, setup.keep, provenance, setup.volumes


def _supplied(manifest: Manifest, options: ReferenceOptions, loader: Loader | None,
              spec: Any) -> tuple[Sequence[Any], np.ndarray, dict]:
    """The user's reference models (loaded through ``loader``) and their keep matrix."""
    assert options.keep_csv is not None
    paths = [Path(p) for p in options.models]
    stems = [p.stem for p in paths]
    duplicated = sorted({s for s in stems if stems.count(s) > 1})
    if duplicated:
        raise InputError(f"reference models: file stems must be unique (they name keep.csv's columns): "
                         f"{', '.join(duplicated)}")
    keep = read_keep_csv(options.keep_csv, [r.scan_id for r in manifest.records], stems)
    provenance = {"keep_hash": keep_hash(keep), "keep_csv": Path(options.keep_csv).name}
    return _LoadedInTurn(paths, loader, spec), keep, provenance


class _LoadedInTurn(Sequence):
    """Supplied reference models, each loaded when its outputs are computed (a model host holds
    one model at a time), checked to share the target's conform grid."""

    def __init__(self, paths: list[Path], loader: Loader | None, spec: Any):
        self.paths, self.loader, self.spec = paths, loader, spec

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        path = self.paths[k]
        model = self.loader(path) if self.loader is not None else load_model(path)
        if model.metadata.conform_spec() != self.spec:
            raise InputError(f"reference model {path.name}: its input grid differs from the target's "
                             "(references must take the target's conformed scans)")
        return model


def _signals(features: FeatureTable, keep: np.ndarray, outputs: Any) -> ReferenceSignals:
    table = features.table
    white_box = outputs.grad_norms is not None
    comparison = table["member"].to_numpy() == 0
    return ReferenceSignals(
        age=table["age"].to_numpy(dtype=np.float64),
        target_pred=table["prediction"].to_numpy(dtype=np.float64),
        ref_pred=outputs.predictions,
        keep=keep,
        target_gradnorm=table[outputs.columns].to_numpy(dtype=np.float64) if white_box else None,
        ref_gradnorm=outputs.grad_norms,
        comparison=comparison,
    )


def _entry(name: str, signals: ReferenceSignals, features: FeatureTable, *, seed: int, n_boot: int,
           age_bins: Sequence[float] | None) -> tuple[dict, list[dict]]:
    attack = get_reference_attack(name)
    start = time.perf_counter()
    score, used = score_reference_attack(name, signals)
    threshold_score, threshold_labels = reference_target_scores(name, signals, **{
        k: v for k, v in used.items() if k in ("tau", "a")})
    entry, exposure = scored_attack_entry(
        features, name=name, feature_set=attack.feature_set, method=attack.method, family="reference",
        threat_model=attack.threat_model, score=score, threshold_score=threshold_score,
        threshold_labels=threshold_labels, seed=seed, n_boot=n_boot, age_bins=age_bins,
        n_references=signals.n_references, n_features=signals.n_layers if attack.white_box else 1,
        duration_s=None,
    )
    entry["parameters"] = {k: (float(v) if isinstance(v, (int, float, np.floating)) else v)
                           for k, v in used.items() if k in ("tau", "a", "gamma")}
    entry["duration_s"] = round(time.perf_counter() - start, 3)
    return entry, exposure


def _error_entry(name: str, message: str, n_references: int | None) -> dict:
    try:
        attack = get_reference_attack(name)
        feature_set, method, tm = attack.feature_set, attack.method, attack.threat_model
    except InputError:
        feature_set, method, tm = "error", name, None
    return error_entry(name, message, feature_set=feature_set, threat_model=tm, classifier=method, family="reference",
                       n_references=n_references)


def run_reference_attacks(
    features: FeatureTable,
    manifest: Manifest,
    options: ReferenceOptions,
    *,
    metadata: ModelMetadata | None,
    device: str = "cpu",
    batch_size: int = 8,
    cache: VolumeCache | None = None,
    loader: Loader | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    seed: int = 0,
    n_boot: int = 200,
    age_bins: Sequence[float] | None = None,
) -> ReferenceRun:
    """Obtain the reference models, compute their outputs on the audit scans and run the attacks.

    Args:
        features: the target's per-scan feature table (rows in manifest order).
        manifest: the audit scans.
        options: the reference models and attacks.
        metadata: the target's metadata (conform grid; needed to train references).
        device: where references train and run.
        batch_size: scans per vectorised pass for the reference outputs.
        cache: conformed-volume cache.
        loader: loads a supplied reference model (the job's confined model host); None loads in
            this process (trusted files only).
        progress: ``(stage, fraction, message)``.
        should_stop: checked between batches and epochs; True cancels.
        seed, n_boot, age_bins: as for the other attacks.

    Returns:
        the entries (an attack that fails is recorded with ``status="error"``), exposure and provenance.

    Raises:
        InputError: bad options, a bad keep.csv, references that cannot be trained or loaded.
    """
    def report(stage: str, fraction: float, message: str) -> None:
        if progress is not None:
            progress(stage, fraction, message)

    if list(features.table["scan_id"]) != [r.scan_id for r in manifest.records]:
        raise InputError("the feature table's rows are not in the manifest's order")
    names = attack_names(options, features.white_box)
    if not options.models:
        if metadata is None:
            raise InputError("training reference models needs the target model (its input grid), not predictions")
        options = _with_recipe(options, metadata)
        models, keep, source, volumes = _trained(features, manifest, options, metadata, device, cache, report,
                                                 should_stop)
    else:
        if metadata is None:
            raise InputError("reference-model attacks need the target model (its input grid and gradients), "
                             "not predictions")
        models, keep, source = _supplied(manifest, options, loader, metadata.conform_spec())
        volumes = load_volumes(manifest.records, metadata.conform_spec(), cache)
    report("references", 1.0, f"outputs of {len(models)} reference models")
    white_box = any(get_reference_attack(n).white_box for n in names)
    outputs = reference_outputs(
        models, volumes, features.table["age"].to_numpy(dtype=np.float32),
        layers=target_layers(features) if white_box else None, device=device, batch_size=batch_size,
        should_stop=should_stop,
    )
    signals = _signals(features, keep, outputs)
    run = ReferenceRun(provenance={**options.settings(), **source, "n_models": len(models),
                                   "layers": outputs.layers or None})
    for name in names:
        try:
            entry, exposure = _entry(name, signals, features, seed=seed, n_boot=n_boot, age_bins=age_bins)
            run.exposure[name] = exposure
        except Exception as exc:  # noqa: BLE001 - recorded as a finding, never dropped
            message = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            logger.warning("reference attack %s failed: %s", name, message, exc_info=not isinstance(exc, InputError))
            entry = _error_entry(name, message, len(models))
        run.attacks.append(entry)
    return run
