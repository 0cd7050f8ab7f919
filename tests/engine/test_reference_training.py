"""Reference models trained by BrainMIA: recipes, one-model training, the store, their signals, the estimate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY_CHANNELS, save_tiny_model
from worker.engine.errors import InputError
from worker.engine.features import ExtractionCancelled, ExtractionOptions, extract_features
from worker.engine.manifest import load_manifest
from worker.engine.models import BrainAge3D, ModelMetadata, load_model
from worker.engine.reference import training as ref_training
from worker.engine.reference.estimate import estimate_training_time, measure_training
from worker.engine.reference.recipe import Recipe, load_recipe, recipe_from_metadata, recipe_hash
from worker.engine.reference.reference_signals import reference_outputs, target_layers
from worker.engine.reference.store import (
    ReferenceStore,
    reference_key,
    reference_set_key,
    scan_content_ids,
)
from worker.engine.reference.training import (
    ReferenceTrainingCancelled,
    model_seed,
    obtain_reference,
    train_mae,
    train_reference,
)
from worker.engine.training import TrainingOptions, predict, train_brain_age
from worker.engine.volumes import ConformSpec

SHAPE = (16, 16, 16)
METADATA = ModelMetadata(input_shape=SHAPE, voxel_size=4.0, arch="brain_age_3d", arch_kwargs={"channels": [4, 8]})
RECIPE = Recipe(arch_kwargs={"channels": [4, 8]}, epochs=2, batch_size=4, lr=1e-2, weight_decay=0.0, seed=3)
N = 16


def _cohort(n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiny volumes whose blob brightness tells the age, plus noise."""
    g = torch.Generator().manual_seed(seed)
    ages = 30.0 + 50.0 * torch.rand(n, generator=g)
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, s) for s in SHAPE], indexing="ij"))
    blob = (grid.pow(2).sum(0) < 0.4).float()
    x = 0.3 * torch.randn(n, 1, *SHAPE, generator=g) + ((ages - 55.0) / 25.0).view(-1, 1, 1, 1, 1) * blob
    return x, ages


def _mask(n: int = N) -> np.ndarray:
    return np.arange(n) % 2 == 0


def _keep_hash(keep: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.packbits(np.asarray(keep, bool)).tobytes()).hexdigest()


# ---------------------------------------------------------------------- recipes

RECIPE_FIELDS = {"arch": "brain_age_3d", "arch_kwargs": {"channels": [4, 8]}, "optimizer": "sgd",
                 "lr": 0.01, "epochs": 3, "batch_size": 2, "augment": "flip", "loss": "huber", "seed": 5}
TOML_BODY = """arch = "brain_age_3d"
arch_kwargs = {channels = [4, 8]}
optimizer = "sgd"
lr = 1e-2
epochs = 3
batch_size = 2
augment = "flip"
loss = "huber"
seed = 5
"""


@pytest.mark.parametrize(
    "name, text",
    [
        ("top.json", json.dumps(RECIPE_FIELDS)),
        ("table.json", json.dumps({"recipe": RECIPE_FIELDS})),
        ("top.toml", TOML_BODY),
        ("table.toml", "[recipe]\n" + TOML_BODY),
    ],
)
def test_recipe_files_top_level_or_table(name: str, text: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_text(text)
    recipe = load_recipe(path)
    assert recipe == Recipe(**RECIPE_FIELDS)
    assert recipe.weight_decay == 1e-4 and recipe.schedule == "constant"  # the paper's defaults
    assert recipe_hash(recipe) == recipe_hash(Recipe(**RECIPE_FIELDS))


@pytest.mark.parametrize(
    "text, field",
    [
        ('optimizer = "rmsprop"', "optimizer"),
        ("learning_rate = 0.1", "learning_rate"),
        ('augment = "rotate"', "augment"),
        ("lr = -1.0", "lr"),
        ('arch = "resnet"', "arch"),
        ("arch_kwargs = {colours = 3}", "arch_kwargs"),
        ("epochs = 2.5", "epochs"),
    ],
)
def test_bad_recipe_field_is_named_with_the_file(text: str, field: str, tmp_path: Path) -> None:
    path = tmp_path / "recipe.toml"
    path.write_text("[recipe]\n" + text + "\n")
    with pytest.raises(InputError) as info:
        load_recipe(path)
    assert str(path) in str(info.value) and f"field '{field}'" in str(info.value)


def test_unreadable_recipe_files(tmp_path: Path) -> None:
    for name, text, words in [("r.yaml", "a: 1", ".json or .toml"), ("r.json", "{", "not valid JSON"),
                              ("r.toml", "x = ", "not valid TOML"), ("r.json", "[1]", "table of fields")]:
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(InputError, match=words):
            load_recipe(path)
    with pytest.raises(InputError, match="cannot read"):
        load_recipe(tmp_path / "absent.toml")


def test_recipe_hash_is_canonical() -> None:
    a = Recipe(lr=1e-3, epochs=4)
    b = Recipe.model_validate({"epochs": 4, "lr": 0.001, "optimizer": "adam", "weight_decay": 1e-4})
    assert recipe_hash(a) == recipe_hash(b) and len(recipe_hash(a)) == 64
    assert recipe_hash(Recipe(lr=1)) == recipe_hash(Recipe(lr=1.0))
    changed = {recipe_hash(Recipe(**{f: v})) for f, v in
               [("lr", 2e-4), ("seed", 1), ("augment", "shift"), ("loss", "l1"), ("epochs", 31), ("arch_kwargs", {"width": 0.5})]}
    assert len(changed) == 6 and recipe_hash(Recipe()) not in changed


def test_recipe_from_the_model_sidecar(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    sidecar = {"input_shape": [16, 16, 16], "arch": "brain_age_3d", "arch_kwargs": {"channels": [4, 8]},
               "recipe": {"epochs": 7, "optimizer": "adamw"}}
    (tmp_path / "model.pt.json").write_text(json.dumps(sidecar))
    recipe = recipe_from_metadata(model)
    assert recipe is not None and recipe.epochs == 7 and recipe.optimizer == "adamw"
    assert recipe.arch == "brain_age_3d" and recipe.arch_kwargs == {"channels": [4, 8]}  # from the sidecar
    assert recipe_from_metadata(tmp_path / "model.pt.json") == recipe
    assert recipe_from_metadata({"arch": "brain_age_3d"}) is None  # no recipe declared
    assert recipe_from_metadata(tmp_path / "other.pt") is None  # no sidecar
    sidecar["recipe"] = {"lr": "fast"}
    (tmp_path / "model.pt.json").write_text(json.dumps(sidecar))
    with pytest.raises(InputError, match=r"model\.pt\.json.*field 'recipe\.lr'"):
        recipe_from_metadata(model)


# ---------------------------------------------------------------------- training one reference model


def test_training_a_reference_on_half_the_scans_reduces_its_loss() -> None:
    x, y = _cohort()
    mask = _mask()
    recipe = RECIPE.model_copy(update={"epochs": 4})
    untrained = ref_training.build_reference(recipe, y[mask], model_seed(recipe, 0))
    before = float(((predict(untrained, x[mask]) - y[mask]) ** 2).mean())
    losses: list[tuple[int, float]] = []
    model = train_reference(recipe, x, y, mask, metadata=METADATA, model_index=0, on_epoch=lambda e, l: losses.append((e, l)))
    after = float(((predict(model, x[mask]) - y[mask]) ** 2).mean())
    assert [e for e, _ in losses] == [0, 1, 2, 3]
    assert losses[-1][1] < losses[0][1] and after < before
    assert train_mae(model, x, y, mask) == pytest.approx(float((predict(model, x[mask]) - y[mask]).abs().mean()))


def test_cancel_stops_within_one_epoch() -> None:
    x, y = _cohort()
    epochs: list[int] = []
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return bool(epochs)  # stop as soon as the first epoch ended

    with pytest.raises(ReferenceTrainingCancelled) as info:
        train_reference(RECIPE.model_copy(update={"epochs": 50}), x, y, _mask(), metadata=METADATA, model_index=4,
                        on_epoch=lambda e, _l: epochs.append(e), should_stop=should_stop)
    assert epochs == [0] and info.value.model_index == 4
    assert calls["n"] == 2 + 1  # checked before every batch: 8 scans / 4 per batch, then the first of epoch 2


def test_same_seed_same_weights_other_index_other_weights() -> None:
    x, y = _cohort()
    a = train_reference(RECIPE, x, y, _mask(), metadata=METADATA, model_index=2)
    b = train_reference(RECIPE, x, y, _mask(), metadata=METADATA, model_index=2)
    c = train_reference(RECIPE, x, y, _mask(), metadata=METADATA, model_index=3)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.allclose(sa[k], sb[k]) for k in sa)
    assert not all(torch.allclose(sa[k], sc[k]) for k in sa)
    assert model_seed(RECIPE, 2) == 3 * 1000 + 2


def test_bad_inputs_are_refused() -> None:
    x, y = _cohort()
    with pytest.raises(InputError, match="at least one training scan"):
        train_reference(RECIPE, x, y, np.zeros(N, bool), metadata=METADATA, model_index=0)
    with pytest.raises(InputError, match="one entry per scan"):
        train_reference(RECIPE, x, y, np.ones(N - 1, bool), metadata=METADATA, model_index=0)
    with pytest.raises(InputError, match="target's grid"):
        train_reference(RECIPE, x[:, :, :8], y, _mask(), metadata=METADATA, model_index=0)
    with pytest.raises(InputError, match="index"):
        train_reference(RECIPE, x, y, _mask(), metadata=METADATA, model_index=1000)


@pytest.mark.parametrize("optimizer, loss, augment", [("sgd", "l1", "flip"), ("adamw", "huber", "shift"), ("adam", "mse", "none")])
def test_every_optimizer_loss_and_augmentation_trains(optimizer: str, loss: str, augment: str) -> None:
    x, y = _cohort(8)
    options = TrainingOptions(epochs=1, batch_size=4, lr=1e-3, optimizer=optimizer, loss=loss, augment=augment,
                              momentum=0.9 if optimizer == "sgd" else 0.0)
    torch.manual_seed(0)
    model = train_brain_age(BrainAge3D(channels=(2, 4), mean_age=55.0), x, y, options)
    assert torch.isfinite(predict(model, x)).all()
    with pytest.raises(InputError, match="unknown loss"):
        train_brain_age(model, x, y, TrainingOptions(loss="hinge"))


def test_augmentations_keep_shape_and_content() -> None:
    from worker.engine.training import SHIFT_VOXELS, augment_batch

    x = torch.arange(2 * 4 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4, 4) + 1
    g = torch.Generator().manual_seed(1)
    flipped = augment_batch(x, "flip", g)
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], torch.flip(x[i], dims=(1,)))
    shifted = augment_batch(x, "shift", g)
    assert shifted.shape == x.shape and SHIFT_VOXELS == 2
    assert all(set(shifted[i].unique().tolist()) - {0.0} <= set(x[i].unique().tolist()) for i in range(2))
    assert augment_batch(x, "none", None) is x


# ---------------------------------------------------------------------- the store


def _key(recipe: Recipe = RECIPE, scans: tuple[str, ...] = ("a", "b"), keep: str = "k1", spec: ConformSpec | None = None) -> str:
    return reference_set_key(recipe, list(scans), keep, spec or METADATA.conform_spec())


def test_store_round_trip_gives_the_same_predictions(tmp_path: Path) -> None:
    x, y = _cohort()
    model = train_reference(RECIPE, x, y, _mask(), metadata=METADATA, model_index=1)
    store = ReferenceStore(tmp_path / "refs")
    ids = [f"scan{i}" for i in range(N)]
    key = reference_set_key(RECIPE, ids, "keep-hash", METADATA.conform_spec())
    assert not store.has(key, 1)
    entry = store.save(model, key, 1, recipe=RECIPE, metadata=ref_training.reference_metadata(RECIPE, METADATA),
                       keep_hash="keep-hash", scan_ids=ids, train_mask=_mask(), train_mae=1.5, scan_sets=["set-7"])
    assert store.has(key, 1) and not store.has(key, 2)
    folder = store.path_for(key, 1)
    assert entry.path == folder and sorted(p.name for p in folder.iterdir()) == ["entry.json", "model.safetensors", "model.safetensors.json"]
    assert not list((tmp_path / "refs" / ".tmp").iterdir())  # no temporary left
    loaded = store.load(key, 1)
    assert loaded.format == "safetensors"
    assert torch.allclose(predict(loaded.module, x), predict(model, x), atol=1e-5)
    stored = store.entry(key, 1)
    assert stored.recipe == RECIPE.to_dict() and stored.model_index == 1 and stored.keep_hash == "keep-hash"
    assert stored.train_mae == 1.5 and stored.trained_on == ids[::2] and stored.scan_sets == ["set-7"]
    assert recipe_hash(Recipe.model_validate(stored.recipe)) == recipe_hash(RECIPE)


def test_key_changes_with_recipe_scans_keep_spec_and_index() -> None:
    base = _key()
    others = [
        _key(recipe=RECIPE.model_copy(update={"seed": 4})),
        _key(scans=("b", "a")),
        _key(scans=("a", "b", "c")),
        _key(keep="k2"),
        _key(spec=ConformSpec(shape=SHAPE, voxel_size=(2.0, 2.0, 2.0))),
    ]
    assert base == _key() and len({base, *others}) == 6
    assert len({reference_key(base, i) for i in range(8)}) == 8


def test_a_stored_model_is_reused_not_retrained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _cohort()
    store = ReferenceStore(tmp_path)
    ids = [f"s{i}" for i in range(N)]
    keep = np.stack([_mask(), ~_mask()])
    key = reference_set_key(RECIPE, ids, _keep_hash(keep), METADATA.conform_spec())
    args = dict(metadata=METADATA, keep_hash=_keep_hash(keep), scan_ids=ids)
    first, reused = obtain_reference(store, key, RECIPE, x, y, keep[1], model_index=1, **args)
    assert not reused and store.has(key, 1)

    def no_training(*_a: object, **_k: object) -> None:
        raise AssertionError("a stored reference model was retrained")

    monkeypatch.setattr(ref_training, "train_reference", no_training)
    again, reused = obtain_reference(store, key, RECIPE, x, y, keep[1], model_index=1, **args)
    assert reused and torch.allclose(predict(again.module, x), predict(first.module, x))
    with pytest.raises(ref_training.ReferenceStoreError, match="keep"):
        obtain_reference(store, key, RECIPE, x, y, keep[0], model_index=1, **args)  # another column, same key
    monkeypatch.undo()
    (store.path_for(key, 1) / "model.safetensors").write_bytes(b"damaged")
    _, reused = obtain_reference(store, key, RECIPE, x, y, keep[1], model_index=1, **args)
    assert not reused  # a damaged entry is retrained


def test_stored_models_are_found_and_deleted_with_their_scans(tmp_path: Path) -> None:
    x, y = _cohort()
    model = train_reference(RECIPE.model_copy(update={"epochs": 1}), x, y, _mask(), metadata=METADATA, model_index=0)
    store = ReferenceStore(tmp_path)
    md = ref_training.reference_metadata(RECIPE, METADATA)
    pools = {"set-a": [f"a{i}" for i in range(N)], "set-b": [f"b{i}" for i in range(N)]}
    for name, ids in pools.items():
        key = reference_set_key(RECIPE, ids, "k", METADATA.conform_spec())
        for index in (0, 1):
            store.save(model, key, index, recipe=RECIPE, metadata=md, keep_hash="k", scan_ids=ids,
                       train_mask=_mask(), scan_sets=[name])
    assert len(list(store.entries())) == 4
    assert len(store.find(scan_ids=["a3"])) == 2 and len(store.find(scan_set="set-b")) == 2
    assert store.delete_for_scans(["a3"]) == 2  # an OUT scan of the pool counts too
    assert {e.scan_sets[0] for e in store.entries()} == {"set-b"}
    assert store.delete_for_scan_set("set-b") == 2 and not list(store.entries())
    assert store.delete_for_scan_set("set-b") == 0


def test_scan_content_ids_are_file_hashes(tmp_path: Path) -> None:
    from worker.engine.cache import VolumeCache, file_sha256

    a, b = tmp_path / "a.nii", tmp_path / "b.nii"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    assert scan_content_ids([a, b]) == [file_sha256(a), file_sha256(b)]
    assert scan_content_ids([a, b], VolumeCache(None)) == scan_content_ids([a, b])


# ---------------------------------------------------------------------- reference signals


@pytest.fixture(scope="module")
def target_features(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory):
    manifest = load_manifest(tiny_cohort)
    torch.manual_seed(0)
    path = save_tiny_model(BrainAge3D(channels=TINY_CHANNELS, mean_age=60.0), tmp_path_factory.mktemp("target") / "t.pt")
    target = load_model(path)
    table = extract_features(target, manifest, ExtractionOptions(layers=(), device="cpu"))
    return manifest, target, table


def test_reference_signals_line_up_with_the_targets_columns(target_features) -> None:
    manifest, target, table = target_features
    volumes = ref_training_volumes(manifest, target.metadata)
    ages = np.array([r.age for r in manifest.records])
    recipe = Recipe(arch_kwargs={"channels": list(TINY_CHANNELS)}, epochs=1, batch_size=8, lr=1e-3)
    keep = np.stack([np.arange(len(ages)) % 2 == 0, np.arange(len(ages)) % 2 == 1, np.arange(len(ages)) < 30])
    models = [train_reference(recipe, volumes, ages, keep[k], metadata=target.metadata, model_index=k) for k in range(3)]
    seen: list[tuple[int, int]] = []
    out = reference_outputs(models, volumes, ages, layers=table, device="cpu", batch_size=16, progress=lambda d, t: seen.append((d, t)))
    n, layers = len(ages), table.grad_norm_columns
    assert out.predictions.shape == (3, n) and out.grad_norms.shape == (3, n, len(layers))
    assert out.columns == layers and out.layers == target_layers(table) and seen[-1] == (3 * n, 3 * n)
    assert np.all(out.grad_norms >= 0) and not np.allclose(out.predictions[0], out.predictions[1])
    # the target itself through the same path gives its own feature-table columns
    own = reference_outputs([target], volumes, ages, layers=layers[::-1], device="cpu")
    assert np.allclose(own.predictions[0], table.table["prediction"], rtol=1e-5, atol=1e-4)
    assert np.allclose(own.grad_norms[0], table.table[layers[::-1]].to_numpy(), rtol=1e-4, atol=1e-6)
    black = reference_outputs(models[:1], volumes, ages)
    assert black.grad_norms is None and np.allclose(black.predictions, out.predictions[:1], atol=1e-4)
    with pytest.raises(InputError, match="no layer"):
        reference_outputs(models[:1], volumes, ages, layers=["grad_norm:not.a.layer"])
    with pytest.raises(ExtractionCancelled):
        reference_outputs(models, volumes, ages, should_stop=lambda: True)


def ref_training_volumes(manifest, metadata: ModelMetadata) -> torch.Tensor:
    from worker.engine.training import load_volumes

    return load_volumes(manifest.records, metadata.conform_spec())


# ---------------------------------------------------------------------- the estimate


def test_estimate_scales_with_models_epochs_and_workers() -> None:
    x, y = _cohort()
    est = measure_training(RECIPE, x, y, metadata=METADATA, n_models=4)
    assert est.seconds > 0 and est.n_train == N // 2 and est.steps_per_model == RECIPE.epochs * 2
    assert est.seconds == pytest.approx(est.seconds_per_step * est.steps_per_model * 4)
    assert est.scans_per_second == pytest.approx(RECIPE.batch_size / est.seconds_per_step)
    two = measure_training(RECIPE, x, y, metadata=METADATA, n_models=4, workers=2)
    assert two.seconds == pytest.approx(two.seconds_per_step * two.steps_per_model * 2)
    assert estimate_training_time(RECIPE, x, y, metadata=METADATA, n_models=1) > 0
    with pytest.raises(InputError):
        measure_training(RECIPE, x, y, metadata=METADATA, n_models=0)


def test_estimate_of_a_setup_counts_only_models_not_stored_and_reads_as_a_sentence(tmp_path: Path) -> None:
    from worker.engine.reference.estimate import estimate_setup, format_duration
    from worker.engine.reference.keep import balanced_keep
    from worker.engine.reference.run import TrainedSetup

    x, y = _cohort()
    keep = balanced_keep(4, N, 0)
    setup = TrainedSetup(recipe=RECIPE, keep=keep, keep_hash=_keep_hash(keep), set_key="s" * 64,
                         scan_ids=[f"id{i}" for i in range(N)], ages=y.numpy(), store=ReferenceStore(tmp_path),
                         records=[None] * N, spec=None, volumes=x)
    est = estimate_setup(setup, METADATA, device=None)  # None: the engine's default device (CPU here)
    assert est is not None and est.n_models == 4 and est.n_train == N // 2 and est.device == "cpu"
    text = est.describe()
    assert text.startswith(f"training 4 reference models ({RECIPE.epochs} epochs on {N // 2} scans each): about ")
    assert "with 1 worker on cpu" in text and "scans/s" in text
    monkey_missing = setup.missing
    setup.missing = lambda: []  # type: ignore[method-assign]
    assert estimate_setup(setup, METADATA) is None  # everything stored: nothing to train
    setup.missing = monkey_missing  # type: ignore[method-assign]
    assert [format_duration(s) for s in (0.2, 40, 600, 3 * 3600)] == ["1 s", "40 s", "10 min", "3.0 h"]


def test_recipe_from_training_options_round_trips() -> None:
    options = RECIPE.training_options(seed=3)
    back = Recipe.from_options(options, RECIPE.arch, RECIPE.arch_kwargs)
    assert back == RECIPE and recipe_hash(back) == recipe_hash(RECIPE)
    demo = TrainingOptions(epochs=60, batch_size=4, lr=1e-2, weight_decay=0.0, cosine=True)
    assert Recipe.from_options(demo, "brain_age_3d").schedule == "cosine"
    with pytest.raises(InputError, match="field 'optimizer'"):
        Recipe.from_options(TrainingOptions(optimizer="lbfgs"), "brain_age_3d")


def test_sweep_removes_only_old_temporaries(tmp_path: Path) -> None:
    import os

    store = ReferenceStore(tmp_path)
    old, new = tmp_path / ".tmp" / "old-x", tmp_path / ".tmp" / "new-y"
    old.mkdir(parents=True)
    new.mkdir()
    os.utime(old, (0, 0))
    assert store.sweep(older_than_s=3600) == 1 and new.exists() and not old.exists()
