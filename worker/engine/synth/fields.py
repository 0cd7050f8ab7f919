"""Smooth random fields on a target grid, independent of its resolution.

A field is a sum of Gaussian bumps on a fixed lattice of control points in MNI space
(spacing ``spacing`` mm, covering +-120 mm around the grid centre) with standard-normal
weights. The basis is separable, so evaluating it on a grid is three small matrix
products. Because the lattice does not depend on the grid, the same random draws give
the same field on a 2 mm and on a 4 mm grid.

The products are small, so they run on one BLAS thread: a multi-threaded BLAS spends
most of its time waiting on a busy machine (ten times slower with 2 threads on 2 cores).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import numpy as np

__all__ = ["smooth_field"]

_HALF_EXTENT_MM = 120.0


@functools.lru_cache(maxsize=1)
def _blas_controller() -> object | None:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - installed with scikit-learn
        return None
    return ThreadpoolController()


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    controller = _blas_controller()
    if controller is None:  # pragma: no cover
        yield
        return
    with controller.limit(limits=1, user_api="blas"):  # type: ignore[attr-defined]
        yield


def _basis(n: int, voxel_size: float, spacing: float) -> np.ndarray:
    """Weights (n voxels x n control points) of the Gaussian bumps along one axis."""
    k = int(np.ceil(_HALF_EXTENT_MM / spacing))
    centres = np.arange(-k, k + 1) * spacing
    x = (np.arange(n) - (n - 1) / 2.0) * voxel_size
    w = np.exp(-0.5 * ((x[:, None] - centres[None, :]) / spacing) ** 2)
    # unit variance at every voxel for unit-variance weights
    return w / np.sqrt((w**2).sum(axis=1, keepdims=True))


def smooth_field(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    voxel_size: float,
    spacing: float,
    n_fields: int = 1,
) -> np.ndarray:
    """Draw ``n_fields`` smooth, zero-mean, unit-variance random fields.

    Args:
        rng: the random generator (draws a fixed number of values for a given spacing).
        shape: grid shape.
        voxel_size: voxel size in mm.
        spacing: correlation length in mm (spacing and width of the bumps).
        n_fields: number of independent fields.

    Returns:
        float32 array of shape ``(n_fields, *shape)``.
    """
    b0, b1, b2 = (_basis(n, voxel_size, spacing).astype(np.float32) for n in shape)
    k = b0.shape[1]
    weights = rng.standard_normal((n_fields, k, k, k)).astype(np.float32)
    with _one_blas_thread():
        out = weights @ b2.T  # (f, a, b, z)
        out = b1 @ out  # (f, a, y, z)
        out = b0 @ out.reshape(n_fields, k, -1)  # (f, x, y * z)
    return out.reshape(n_fields, *shape)
