"""Helpers for tests that need NIfTI scans: synthetic phantoms and the real T1 scans.

Import what you need (fixtures included) into a test module, e.g.
``from tests.engine.conftest_scans import real_t1_dir, write_phantom``.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REAL_T1_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "real-t1"
"""The four real T1 scans, in the ``shared`` folder beside the repository."""


def real_t1_paths() -> list[Path]:
    """The real scans, or skip (fail when the CI environment variable is set) if absent."""
    paths = sorted(REAL_T1_DIR.glob("subject*.nii.gz"))
    if len(paths) < 4:
        message = f"real T1 scans not found: expected 4 files subject*.nii.gz in {REAL_T1_DIR}"
        if os.environ.get("CI"):
            pytest.fail(message + " (required when CI is set)")
        pytest.skip(message)
    return paths


@pytest.fixture
def real_t1_dir() -> Path:
    """Folder of the real T1 scans and their manifest.csv (skip or fail when absent)."""
    real_t1_paths()
    return REAL_T1_DIR


def phantom(shape: tuple[int, int, int] = (40, 48, 36), voxel: float = 2.0, seed: int = 0) -> np.ndarray:
    """A synthetic head: an off-centre, asymmetric ellipsoid with texture, zero outside.

    The anatomy is defined in world millimetres around the volume centre, so phantoms
    of different voxel sizes show the same object.
    """
    rng = np.random.default_rng(seed)
    axes = [(np.arange(n) - (n - 1) / 2) * voxel for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    r = (x / 30) ** 2 + ((y - 6) / 38) ** 2 + ((z + 4) / 26) ** 2
    vol = np.where(r < 1, 100.0 + 40.0 * (1 - r) + 30.0 * (x > 10) + 20.0 * (y > 15), 0.0)
    vol = vol + np.where(r < 1, rng.normal(0, 2.0, shape), 0.0)
    return vol


def ras_affine(shape: tuple[int, int, int], voxel: float | tuple[float, float, float]) -> np.ndarray:
    """A RAS affine that puts the world origin at the volume centre."""
    vox = np.broadcast_to(np.asarray(voxel, dtype=float), (3,))
    aff = np.diag([*vox, 1.0])
    aff[:3, 3] = -vox * (np.asarray(shape) - 1) / 2
    return aff


def to_lps(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same anatomy stored with the first two axes flipped (L, P, S)."""
    nx, ny, _ = data.shape
    flip = np.array([[-1, 0, 0, nx - 1], [0, -1, 0, ny - 1], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    return np.ascontiguousarray(data[::-1, ::-1, :]), affine @ flip


def to_permuted(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same anatomy stored with voxel axes in the order (y, z, x) (e.g. A, S, R)."""
    swap = np.zeros((4, 4))
    swap[0, 2] = swap[1, 0] = swap[2, 1] = swap[3, 3] = 1.0  # new voxel (j, k, i) -> old (i, j, k)
    return np.ascontiguousarray(np.transpose(data, (1, 2, 0))), affine @ swap


def write_nifti(
    path: Path,
    data: np.ndarray,
    affine: np.ndarray,
    *,
    dtype: type | np.dtype | None = None,
    slope: float | None = None,
    inter: float = 0.0,
    nifti2: bool = False,
) -> Path:
    """Write a NIfTI file; with ``slope`` the stored values are ``(data - inter) / slope``."""
    cls = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    if slope is None:
        arr = data.astype(dtype) if dtype is not None else data
        img = cls(arr, affine)
        img.set_data_dtype(arr.dtype)
        nib.save(img, str(path))
        return Path(path)
    if nifti2 or str(path).endswith(".gz"):
        raise ValueError("scaled phantoms are written as uncompressed NIfTI-1 only")
    stored = np.round((data - inter) / slope).astype(dtype or np.int16)
    nib.save(nib.Nifti1Image(stored, affine), str(path))
    # patch scl_slope / scl_inter in place (nibabel resets them for in-memory arrays)
    with open(path, "r+b") as fh:
        fh.seek(112)
        fh.write(struct.pack("<ff", slope, inter))
    return Path(path)


def write_phantom(
    path: Path,
    shape: tuple[int, int, int] = (40, 48, 36),
    voxel: float = 2.0,
    *,
    dtype: type | np.dtype = np.float32,
    seed: int = 0,
) -> Path:
    """Write a RAS phantom scan."""
    return write_nifti(path, phantom(shape, voxel, seed), ras_affine(shape, voxel), dtype=dtype)
