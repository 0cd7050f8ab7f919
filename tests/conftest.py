"""Shared fixtures: the real T1 scans beside the repository, small synthetic cohorts and models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL_T1 = SHARED / "data" / "real-t1"

# a coarse grid keeps end-to-end tests fast; three pooling blocks leave a 2x3x2 map
TINY_SHAPE = (23, 27, 23)
TINY_VOXEL = 8.0
TINY_CHANNELS = (4, 8, 8)


def require(condition: bool, reason: str) -> None:
    """Skip when a real component is missing locally; fail in CI, where nothing may skip silently."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must not skip this)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def real_t1_dir() -> Path:
    """The four real T1 scans of ../shared/data/real-t1."""
    require((REAL_T1 / "manifest.csv").exists(), f"real scans not found at {REAL_T1}")
    return REAL_T1


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60-subject synthetic cohort on an 8 mm grid; returns its manifest."""
    from worker.engine.synth import CohortSpec, generate_cohort

    out = tmp_path_factory.mktemp("tiny_cohort")
    return generate_cohort(out, CohortSpec(n_subjects=60, shape=TINY_SHAPE, voxel_size=TINY_VOXEL, seed=11))


def save_tiny_model(model: torch.nn.Module, path: Path) -> Path:
    """Save ``model`` as TorchScript with a sidecar for the tiny grid."""
    from worker.engine.models import ModelMetadata, write_sidecar

    torch.jit.save(torch.jit.script(model.eval()), str(path))
    write_sidecar(
        path,
        ModelMetadata(
            input_shape=TINY_SHAPE,
            voxel_size=(TINY_VOXEL,) * 3,
            normalize="zscore",
            arch="brain_age_3d",
            arch_kwargs={"channels": list(TINY_CHANNELS)},
        ),
    )
    return path
