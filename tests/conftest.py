"""Shared fixtures: the real T1 scans beside the repository, small synthetic cohorts and models."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


# -- headless Chromium, one instance for every test that needs one (browser and security tests) --


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The Chromium the product prints PDFs with (``BRAINMIA_CHROMIUM`` or PATH)."""
    from backend.settings import Settings

    path = Settings().chromium_path
    require(bool(path) and Path(str(path)).exists(), "no chromium (Debian: apt-get install chromium; scripts/setup.sh installs it)")
    return str(path)


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[Any]:
    """Headless Chromium (Playwright's sync API, Debian's binary: no ``playwright install``)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright is not installed (pip install -e '.[test]')")
        raise
    from frontend.pdf import CHROMIUM_FLAGS

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium_path, args=list(CHROMIUM_FLAGS))
        try:
            yield instance
        finally:
            instance.close()
