"""The MNI152 template (ICBM 2009a, shipped inside the nilearn wheel) on a target grid.

Nothing is downloaded: the T1, grey- and white-matter maps are read by path from
:mod:`nilearn.datasets`. The 1 mm maps and each target grid are cached in-process.
Besides the anti-aliased T1 and tissue maps, a grid holds two distance maps (mm) that
drive atrophy: to the nearest sulcal/exterior CSF, and to the ventricles.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from worker.engine.errors import BrainMIAError
from worker.engine.synth.spec import grid_affine

__all__ = ["TemplateGrid", "template_on_grid"]

# Ventricles: CSF near the centre of the brain, within this MNI ellipsoid (centre, semi-axes, mm).
_VENTRICLE_CENTRE = (0.0, -14.0, 12.0)
_VENTRICLE_AXES = (30.0, 46.0, 26.0)
_VENTRICLE_MIN_VOXELS = 1000  # connected CSF components smaller than this (1 mm voxels) are sulci
_CSF_THRESHOLD = 0.45
_MARGIN = 2  # voxels of 1 mm kept around the brain (everything outside is background)
_DISTANCE_CAP = 40.0  # mm; distances beyond this never matter


@dataclass(frozen=True)
class _Template1mm:
    """The template cropped to the brain, 1 mm RAS voxels (all float32)."""

    affine: np.ndarray
    t1: np.ndarray  # white matter ~ 1
    gm: np.ndarray
    wm: np.ndarray
    mask: np.ndarray  # brain (1) / background (0)
    d_sulcal: np.ndarray  # mm to the nearest sulcal CSF or the brain's exterior
    d_ventricle: np.ndarray  # mm to the nearest ventricle voxel


@dataclass(frozen=True)
class TemplateGrid:
    """The template resampled to one target grid (read-only float32 arrays).

    Attributes:
        shape: grid shape.
        voxel_size: voxel size in mm.
        affine: voxel-to-MNI affine (RAS).
        t1: T1 intensity, white matter ~ 1, zero outside the brain.
        gm: grey-matter probability.
        wm: white-matter probability.
        mask: brain fraction of each voxel (0-1).
        d_sulcal: distance (mm) to the nearest sulcal CSF or the brain's exterior.
        d_ventricle: distance (mm) to the nearest ventricle voxel.
    """

    shape: tuple[int, int, int]
    voxel_size: float
    affine: np.ndarray
    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    mask: np.ndarray
    d_sulcal: np.ndarray
    d_ventricle: np.ndarray


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(path)
    return img.affine, np.asarray(img.dataobj, dtype=np.float32)


def _paths() -> tuple[Path, Path, Path]:
    """The T1, GM and WM files that nilearn ships (nilearn.datasets.*_FILE_PATH)."""
    try:
        import nilearn
    except ImportError as exc:  # pragma: no cover - nilearn is a dependency
        raise BrainMIAError("nilearn is needed for the MNI152 template of synthetic cohorts") from exc
    # Importing nilearn.datasets takes seconds; the files sit at a known place in the wheel.
    data = Path(nilearn.__file__).parent / "datasets" / "data"
    paths = tuple(data / f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz" for kind in ("t1", "gm", "wm"))
    if all(p.is_file() for p in paths):
        return paths  # type: ignore[return-value]
    from nilearn import datasets

    return (
        Path(datasets.MNI152_FILE_PATH),
        Path(datasets.GM_MNI152_FILE_PATH),
        Path(datasets.WM_MNI152_FILE_PATH),
    )


def _to_ras(affine: np.ndarray, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ornt = nib.orientations.io_orientation(affine)
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, data.shape)
    return new_affine, np.ascontiguousarray(nib.orientations.apply_orientation(data, ornt))


def _ventricles(csf: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Ventricles: large connected CSF components inside a central MNI ellipsoid."""
    grids = np.ogrid[tuple(slice(0, n) for n in csf.shape)]
    r2 = 0.0
    for axis in range(3):
        mm = affine[axis, axis] * grids[axis] + affine[axis, 3]
        r2 = r2 + ((mm - _VENTRICLE_CENTRE[axis]) / _VENTRICLE_AXES[axis]) ** 2
    inside = (r2 < 1.0) & (csf > _CSF_THRESHOLD) & mask
    labels, n = ndimage.label(inside)
    if n == 0:
        raise BrainMIAError("MNI152 template: no ventricles found")
    sizes = ndimage.sum_labels(inside, labels, index=np.arange(1, n + 1))
    keep = np.flatnonzero(sizes >= _VENTRICLE_MIN_VOXELS) + 1
    return np.isin(labels, keep)


@functools.lru_cache(maxsize=1)
def _template_1mm() -> _Template1mm:
    t1_path, gm_path, wm_path = _paths()
    affine, t1 = _to_ras(*_read(t1_path))
    _, gm = _to_ras(*_read(gm_path))
    _, wm = _to_ras(*_read(wm_path))
    if not np.allclose(np.abs(np.diag(affine)[:3]), 1.0) or not np.allclose(affine[:3, :3], np.diag(np.diag(affine)[:3])):
        raise BrainMIAError("MNI152 template: expected 1 mm axis-aligned voxels")
    mask = t1 > 0
    # Crop to the brain plus a margin.
    lo = np.maximum(np.argwhere(mask).min(axis=0) - _MARGIN, 0)
    hi = np.minimum(np.argwhere(mask).max(axis=0) + _MARGIN + 1, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    mask = mask[box]
    t1, gm, wm = t1[box] / 255.0 * mask, gm[box] / 255.0 * mask, wm[box] / 255.0 * mask
    affine = affine.copy()
    affine[:3, 3] += affine[:3, :3] @ lo
    wm_level = float(np.median(t1[wm > 0.9]))
    t1 = t1 / wm_level
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * mask
    ventricles = _ventricles(csf, mask, affine)
    sulcal = ((csf > _CSF_THRESHOLD) & ~ventricles) | ~mask
    d_sulcal = np.minimum(ndimage.distance_transform_edt(~sulcal), _DISTANCE_CAP).astype(np.float32)
    d_ventricle = np.minimum(ndimage.distance_transform_edt(~ventricles), _DISTANCE_CAP).astype(np.float32)
    return _Template1mm(
        affine=affine,
        t1=t1.astype(np.float32),
        gm=gm.astype(np.float32),
        wm=wm.astype(np.float32),
        mask=mask.astype(np.float32),
        d_sulcal=d_sulcal,
        d_ventricle=d_ventricle,
    )


def _resample(data: np.ndarray, source_affine: np.ndarray, target: np.ndarray, shape: tuple[int, int, int],
              smooth: float, cval: float) -> np.ndarray:
    """Trilinear resampling of an axis-aligned volume, after Gaussian anti-aliasing (sigma in voxels)."""
    if smooth > 0:
        data = ndimage.gaussian_filter(data, smooth, mode="constant", cval=cval)
    # target voxel -> world -> source voxel, both axis-aligned
    step = np.diag(target)[:3] / np.diag(source_affine)[:3]
    offset = (target[:3, 3] - source_affine[:3, 3]) / np.diag(source_affine)[:3]
    out = ndimage.affine_transform(data, step, offset=offset, output_shape=shape, order=1, mode="constant", cval=cval)
    out = out.astype(np.float32)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=8)
def template_on_grid(shape: tuple[int, int, int], voxel_size: float) -> TemplateGrid:
    """The MNI152 template on the grid of ``shape`` voxels of ``voxel_size`` mm (cached).

    Args:
        shape: target grid shape.
        voxel_size: isotropic voxel size in mm.

    Returns:
        The template maps on that grid (see :class:`TemplateGrid`).
    """
    shape = tuple(int(s) for s in shape)
    tpl = _template_1mm()
    affine = grid_affine(shape, voxel_size)
    sigma = float(np.sqrt(max(voxel_size**2 - 1.0, 0.0)) / 2.3548)  # FWHM of a target voxel
    maps = {
        name: _resample(getattr(tpl, name), tpl.affine, affine, shape, sigma, 0.0)
        for name in ("t1", "gm", "wm", "mask")
    }
    maps["d_sulcal"] = _resample(tpl.d_sulcal, tpl.affine, affine, shape, 0.0, 0.0)
    maps["d_ventricle"] = _resample(tpl.d_ventricle, tpl.affine, affine, shape, 0.0, _DISTANCE_CAP)
    return TemplateGrid(shape=shape, voxel_size=float(voxel_size), affine=affine, **maps)
