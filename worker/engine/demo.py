"""The demo: a synthetic cohort and a brain-age model that has memorised its members.

Trains a narrow ``brain_age_3d`` on a coarse grid (8 mm) until it overfits its members (train MAE
well under test MAE), saves it as TorchScript with its sidecar, ready for a full assessment. The
sidecar declares the training recipe (:func:`demo_recipe`), so reference models can be trained
exactly as the demo model was (``brainmia assess --model ... --reference 4`` needs no ``--recipe``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .cache import VolumeCache
from .manifest import Manifest, load_manifest
from .models import BrainAge3D, ModelMetadata, write_sidecar
from .reference.recipe import Recipe
from .synth import CohortSpec, generate_cohort
from .training import TrainingOptions, load_volumes, predict, train_brain_age


DEMO_EPOCHS = 80
"""Training epochs of the demo model (and of its reference models: the same recipe)."""
DEMO_REFERENCES = 4
"""Reference models the demo trains (``brainmia demo --references``)."""


@dataclass
class DemoOptions:
    """Size of the demo (defaults: the model and 4 reference models in a few minutes on 2 CPU cores).

    Attributes:
        subjects: subjects in the synthetic cohort (half are members). 200 gives 100 non-members:
            the fewest at which the reference-model and quantile attacks (every scan tested) can
            measure a TPR at 1% FPR.
        shape: the model's input grid.
        voxel_size: voxel size in mm.
        channels: channels of the conv blocks (three blocks suit an 8 mm grid).
        training: training options of the demo model (long enough to overfit).
        seed: cohort seed.
    """

    subjects: int = 200
    shape: tuple[int, int, int] = (23, 27, 23)
    voxel_size: float = 8.0
    channels: tuple[int, ...] = (8, 16, 32)
    training: TrainingOptions = field(
        default_factory=lambda: TrainingOptions(epochs=DEMO_EPOCHS, batch_size=4, lr=1e-2, weight_decay=0.0,
                                                cosine=True)
    )
    seed: int = 0


@dataclass
class DemoArtifacts:
    """What :func:`prepare_demo` made."""

    manifest: Manifest
    model_path: Path
    train_mae: float
    test_mae: float


def demo_metadata(shape: tuple[int, int, int], voxel_size: float, channels: tuple[int, ...],
                  recipe: Recipe | None = None) -> ModelMetadata:
    """The sidecar of a demo 3D-CNN: its grid, isotropic voxels, z-scored intensities, channels,
    and (when given) the recipe it was trained with."""
    return ModelMetadata(
        input_shape=shape,
        voxel_size=(voxel_size,) * 3,
        normalize="zscore",
        arch="brain_age_3d",
        arch_kwargs={"channels": list(channels)},
        recipe=recipe.to_dict() if recipe is not None else None,
    )


def demo_recipe(options: DemoOptions) -> Recipe:
    """The recipe of the demo model: its architecture and channels, and its training options
    (:meth:`Recipe.from_options`); reference models trained from it are trained as the demo was.

    Raises:
        InputError: training options no recipe can express.
    """
    return Recipe.from_options(options.training, "brain_age_3d", {"channels": list(options.channels)})


def prepare_demo(
    out_dir: Path,
    options: DemoOptions | None = None,
    *,
    cache: VolumeCache | None = None,
    progress: Callable[[str, float, str], None] | None = None,
) -> DemoArtifacts:
    """Write a synthetic cohort and train a model on its members.

    Args:
        out_dir: where the cohort (``cohort/``) and the model (``model/``) go.
        options: demo size.
        cache: conformed-volume cache.
        progress: called with (stage, fraction, message).

    Returns:
        the manifest, the TorchScript model path, and the model's MAE on members and non-members.
    """
    options = options or DemoOptions()
    out_dir = Path(out_dir)

    def tell(stage: str, fraction: float, message: str) -> None:
        if progress is not None:
            progress(stage, fraction, message)

    spec = CohortSpec(
        n_subjects=options.subjects, shape=options.shape, voxel_size=options.voxel_size, seed=options.seed
    )
    manifest_path = generate_cohort(
        out_dir / "cohort",
        spec,
        progress=lambda done, total: tell("cohort", done / total, f"synthetic subject {done}/{total}"),
    )
    manifest = load_manifest(manifest_path)
    metadata = demo_metadata(options.shape, options.voxel_size, options.channels, demo_recipe(options))
    conform = metadata.conform_spec()
    members = [r for r in manifest.records if r.member]
    others = [r for r in manifest.records if not r.member]
    x_train = load_volumes(members, conform, cache)
    y_train = torch.tensor([r.age for r in members], dtype=torch.float32)
    x_test = load_volumes(others, conform, cache)
    y_test = torch.tensor([r.age for r in others], dtype=torch.float32)

    torch.manual_seed(options.training.seed)
    model = BrainAge3D(channels=options.channels, mean_age=float(y_train.mean()), age_scale=float(y_train.std()))
    epochs = options.training.epochs
    train_brain_age(
        model,
        x_train,
        y_train,
        options.training,
        on_epoch=lambda epoch, mae: tell("training", (epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs}, train MAE {mae:.2f} y"),
    )
    train_mae = float((predict(model, x_train) - y_train).abs().mean())
    test_mae = float((predict(model, x_test) - y_test).abs().mean())

    model_dir = out_dir / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    model_path = model_dir / "demo_brain_age_3d.pt"
    torch.jit.save(torch.jit.script(model.cpu().eval()), str(model_path))
    write_sidecar(model_path, metadata)
    return DemoArtifacts(manifest=manifest, model_path=model_path, train_mae=train_mae, test_mae=test_mae)
