"""The federated demo: a synthetic federation trained with FedAvg, every round's model saved.

Learners hold few scans each (5) on a coarse grid (8 mm) with a narrow model, and the
federation runs many short rounds (100 rounds of one local epoch): with non-IID ages, longer
local training makes each learner fit its own age range and the average cancels out, while
short rounds let the community model fit the learners' scans better than unseen ones (the
leak the federated assessment measures), within a couple of minutes on 2 CPU cores.

The model is trained on standardised ages (``(age - mean) / std`` of the members, the
output layer initialised to zero mean and unit scale), so that Adam's steps move
predictions by a fraction of the age spread rather than by a fraction of a year; every
round's weights are then saved with the output layer rescaled to years (exact: the output
layer is affine), as a plain ``brain_age_3d``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..cache import VolumeCache
from ..errors import InputError
from ..manifest import Manifest, load_manifest
from ..demo import demo_metadata
from ..models import BrainAge3D
from ..synth import CohortSpec
from ..training import TrainingOptions, load_volumes
from .fedavg import RoundInfo, save_rounds, train_fedavg
from .split import write_federated_cohort

__all__ = ["FederatedDemoArtifacts", "FederatedDemoOptions", "prepare_federated_demo", "to_years"]

ProgressFn = Callable[[str, float, str], None]


@dataclass
class FederatedDemoOptions:
    """Size of the federated demo.

    Attributes:
        scans_per_learner: mean member scans per learner.
        local_epochs: local epochs per round.
        unseen_fraction: share of unseen scans (non-members) in the cohort.
        shape: the model's input grid.
        voxel_size: voxel size in mm.
        channels: channels of the conv blocks.
        training: local training options on standardised ages (``epochs`` ignored; ``cosine``
            anneals the learning rate over the rounds).
        seed: cohort, split and training seed.
        threads: torch CPU threads while training (None: leave torch's setting). One by
            default: on a busy 2-core host two threads on these small volumes were measured
            up to 4x slower than one, and never faster.
    """

    scans_per_learner: int = 5
    local_epochs: int = 1
    unseen_fraction: float = 0.5
    shape: tuple[int, int, int] = (23, 27, 23)
    voxel_size: float = 8.0
    channels: tuple[int, ...] = (8, 16, 32)
    training: TrainingOptions = field(
        default_factory=lambda: TrainingOptions(batch_size=4, lr=1e-2, weight_decay=0.0, cosine=True)
    )
    seed: int = 0
    threads: int | None = 1


@dataclass
class FederatedDemoArtifacts:
    """What :func:`prepare_federated_demo` made.

    Attributes:
        manifest: the federated manifest (``learner`` column; unseen scans have none).
        model_paths: every round's community model (TorchScript + sidecar), round 1 first.
        history: per round ``{"round", "mae_members", "mae_unseen"}`` of the community model.
    """

    manifest: Manifest
    model_paths: list[Path]
    history: list[dict[str, float]]


def prepare_federated_demo(
    out_dir: Path,
    learners: int = 8,
    rounds: int = 100,
    sizes: str = "uniform",
    ages: str = "noniid",
    options: FederatedDemoOptions | None = None,
    *,
    cache: VolumeCache | None = None,
    progress: ProgressFn | None = None,
) -> FederatedDemoArtifacts:
    """Write a synthetic federation, train it with FedAvg and save every round's model.

    Args:
        out_dir: where the cohort (``cohort/``) and the round models (``rounds/``) go.
        learners: number of learners.
        rounds: FedAvg rounds.
        sizes: ``uniform`` or ``skewed`` learner sizes.
        ages: ``iid`` or ``noniid`` ages across learners.
        options: demo size and training.
        cache: conformed-volume cache.
        progress: called with (stage, fraction 0-1, message).

    Returns:
        the manifest, the round model paths and the per-round MAEs.
    """
    options = options or FederatedDemoOptions()
    out_dir = Path(out_dir)
    if rounds < 1:
        raise InputError(f"rounds must be at least 1, got {rounds}")

    def tell(stage: str, fraction: float, message: str) -> None:
        if progress is not None:
            progress(stage, min(max(fraction, 0.0), 1.0), message)

    n_members = learners * options.scans_per_learner
    subjects = int(math.ceil(n_members / (1.0 - options.unseen_fraction)))
    spec = CohortSpec(n_subjects=subjects, shape=options.shape, voxel_size=options.voxel_size, seed=options.seed)
    manifest_path = write_federated_cohort(
        out_dir / "cohort", spec, learners, sizes, ages, options.unseen_fraction, options.seed,
        progress=lambda done, total: tell("cohort", done / total, f"synthetic subject {done}/{total}"),
    )
    manifest = load_manifest(manifest_path)
    metadata = demo_metadata(options.shape, options.voxel_size, options.channels)
    conform = metadata.conform_spec()
    names = sorted({r.learner for r in manifest.records if r.learner is not None})
    held = {n: [r for r in manifest.records if r.learner == n] for n in names}
    unseen = [r for r in manifest.records if r.learner is None]
    volumes = {n: load_volumes(recs, conform, cache) for n, recs in held.items()}
    ages_by = {n: torch.tensor([r.age for r in recs], dtype=torch.float32) for n, recs in held.items()}
    x_unseen = load_volumes(unseen, conform, cache)
    y_unseen = torch.tensor([r.age for r in unseen], dtype=torch.float32)
    x_members = torch.cat([volumes[n] for n in names])
    y_members = torch.cat([ages_by[n] for n in names])
    mean_age, age_scale = float(y_members.mean()), float(y_members.std())
    z_by = {n: (y - mean_age) / age_scale for n, y in ages_by.items()}

    def factory() -> BrainAge3D:
        return BrainAge3D(channels=options.channels, mean_age=0.0, age_scale=1.0)

    probe = factory()
    history: list[dict[str, float]] = []

    def mae(x: torch.Tensor, y: torch.Tensor) -> float:
        with torch.no_grad():
            return float(torch.cat([probe(x[i:i + 16]) for i in range(0, len(x), 16)]).sub(y).abs().mean())

    def on_round(info: RoundInfo) -> None:
        probe.load_state_dict(to_years(info.state, mean_age, age_scale))
        probe.eval()
        row = {"round": info.round, "mae_members": mae(x_members, y_members), "mae_unseen": mae(x_unseen, y_unseen)}
        history.append(row)
        tell("training", info.round / info.rounds,
             f"round {info.round}/{info.rounds}: MAE members {row['mae_members']:.2f} y, "
             f"unseen {row['mae_unseen']:.2f} y")

    with _torch_threads(options.threads):
        states = train_fedavg(factory, volumes, z_by, rounds, options.local_epochs, options.training, on_round)
    paths = save_rounds([to_years(s, mean_age, age_scale) for s in states], out_dir / "rounds", metadata,
                        model_factory=factory)
    return FederatedDemoArtifacts(manifest=manifest, model_paths=paths, history=history)


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (None: leave it)."""
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def to_years(state: dict[str, torch.Tensor], mean_age: float, age_scale: float) -> dict[str, torch.Tensor]:
    """Weights of a ``brain_age_3d`` trained on standardised ages, rescaled to predict years.

    The output layer is affine, so ``age = mean + scale * (w . h + b)`` is the layer with
    weight ``scale * w`` and bias ``scale * b + mean``.
    """
    out = dict(state)
    out["output.weight"] = state["output.weight"] * age_scale
    out["output.bias"] = state["output.bias"] * age_scale + mean_age
    return out
