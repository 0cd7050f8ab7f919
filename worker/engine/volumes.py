"""Reading NIfTI scans and conforming them to a model's input grid.

Conforming a scan (:func:`conform`) takes four steps:

1. the voxel data as float32, with the header's ``scl_slope``/``scl_inter`` applied,
   whatever the on-disk type;
2. reorientation to the closest canonical (RAS+) axes, by flips and axis permutations
   only (as :func:`nibabel.as_closest_canonical`), so the same anatomy stored in two
   orientations gives the same array;
3. resampling to the target voxel size with :func:`scipy.ndimage.zoom` (trilinear,
   ``grid_mode=True``: the field of view is kept, and halving the resolution averages
   each 2 x 2 x 2 block of voxels);
4. centre crop or zero-pad to the target shape, then the intensity normalisation
   named by the spec (see :mod:`worker.engine.normalize`).

A 1 mm MNI152 volume (182 x 218 x 182) conforms to the 2 mm MNI grid (91 x 109 x 91)
with neither crop nor padding.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations
from nibabel.openers import ImageOpener
from scipy import ndimage

from worker.engine.errors import InputError, ScanError
from worker.engine.normalize import get_normalization
from worker.engine.volume_bounds import VolumeLimits, check_grid, check_header

__all__ = [
    "NIFTI_SUFFIXES",
    "ConformSpec",
    "conform",
    "crop_or_pad",
    "load_conformed",
    "read_nifti",
    "to_canonical",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class ConformSpec:
    """The input grid and intensity normalisation a model expects.

    Attributes:
        shape: output array shape, in canonical RAS voxel axes.
        voxel_size: output voxel size in mm, per axis.
        normalize: name of a registered intensity normalisation.
    """

    shape: tuple[int, int, int] = (91, 109, 91)
    voxel_size: tuple[float, float, float] = (2.0, 2.0, 2.0)
    normalize: str = "zscore"

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        voxel_size = tuple(float(v) for v in self.voxel_size)
        if len(shape) != 3 or any(s < 1 for s in shape):
            raise InputError(f"conform shape must be three positive integers, got {self.shape!r}")
        if len(voxel_size) != 3 or not all(np.isfinite(v) and v > 0 for v in voxel_size):
            raise InputError(f"conform voxel size must be three positive numbers, got {self.voxel_size!r}")
        get_normalization(self.normalize)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "voxel_size", voxel_size)

    def key(self) -> str:
        """A stable string that identifies the spec (for cache keys)."""
        shape = "x".join(str(s) for s in self.shape)
        vox = "x".join(repr(v) for v in self.voxel_size)
        return f"shape={shape};voxel={vox};normalize={self.normalize}"


def _check_suffix(path: Path) -> None:
    name = path.name.lower()
    if not name.endswith(NIFTI_SUFFIXES):
        raise ScanError(path, "not a NIfTI file: expected a .nii or .nii.gz file name")


def read_nifti(path: Path, limits: VolumeLimits | None = None) -> nib.Nifti1Image:
    """Load and validate a NIfTI-1 or NIfTI-2 scan, voxel data included.

    The voxel data are read once, as float32 with scaling applied, and kept in the
    image's cache, so ``img.get_fdata(dtype=np.float32)`` costs nothing afterwards.
    A 4D volume whose trailing dimensions are 1 is squeezed to 3D.

    The header is checked first (:func:`~worker.engine.volume_bounds.check_header`): a
    volume larger than ``limits`` or than its file can hold is refused before anything is
    allocated.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        limits: size limits (default: the process-wide ones).

    Returns:
        The image (a :class:`nibabel.Nifti1Image` or :class:`nibabel.Nifti2Image`).

    Raises:
        ScanError: naming the file, when it is missing, not a NIfTI file, its header
            does not parse, it declares too many voxels, its data are truncated, it is not a 3D volume, it has NaN
            or infinite voxels, or its voxel sizes are zero.
    """
    path = Path(path)
    _check_suffix(path)
    if not path.is_file():
        raise ScanError(path, "file not found" if not path.exists() else "not a file")
    check_header(path, limits)
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for a bad header
        raise ScanError(path, f"not a readable NIfTI file ({_describe(exc)})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ScanError(path, f"not a NIfTI-1/NIfTI-2 image (read as {type(img).__name__})")

    shape = img.shape
    if len(shape) > 3 and all(s == 1 for s in shape[3:]):
        shape = shape[:3]
    if len(shape) != 3:
        raise ScanError(path, f"expected a 3D volume, got shape {img.shape}")
    if any(s < 1 for s in shape):
        raise ScanError(path, f"empty volume, shape {img.shape}")

    _check_voxel_sizes(path, img)

    try:
        data = img.get_fdata(dtype=np.float32)
    except Exception as exc:  # EOFError, zlib.error, OSError, ValueError for truncated data
        raise ScanError(path, f"truncated or unreadable voxel data ({_describe(exc)})") from exc
    if not np.isfinite(data).all():
        n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        raise ScanError(path, f"{n_bad} voxel(s) are NaN or infinite")

    if data.shape != shape:
        squeezed = data.reshape(shape)
        header = img.header.copy()
        header.set_data_shape(shape)
        header.set_data_dtype(np.float32)
        header["scl_slope"], header["scl_inter"] = np.nan, np.nan
        img = type(img)(squeezed, img.affine, header)
        img.get_fdata(dtype=np.float32)  # prime the cache
    return img


def _check_voxel_sizes(path: Path, img: nib.Nifti1Image) -> None:
    """Reject zero or non-finite voxel sizes, in the header as written or in the affine.

    nibabel silently replaces a zero ``pixdim`` by 1 when loading, so the header is
    read again unchecked to see the values actually in the file.
    """
    try:
        with ImageOpener(path) as fh:
            raw = type(img.header).from_fileobj(fh, check=False)
        pixdim = [float(p) for p in raw["pixdim"][1:4]]
    except Exception as exc:  # pragma: no cover - nib.load has already read this header
        raise ScanError(path, f"not a readable NIfTI file ({_describe(exc)})") from exc
    if not all(np.isfinite(p) and p != 0 for p in pixdim):  # nibabel takes abs() of negatives
        raise ScanError(path, f"invalid voxel size {tuple(pixdim)} in the header (must be nonzero)")
    vox = [float(v) for v in nib.affines.voxel_sizes(img.affine)]
    if not all(np.isfinite(v) and v > 0 for v in vox):
        raise ScanError(path, f"invalid voxel size {tuple(vox)} in the affine (must be positive)")


def _describe(exc: BaseException) -> str:
    """A short description of a reader exception."""
    if isinstance(exc, (EOFError, zlib.error)):
        return f"file ends early or is corrupt: {exc}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def to_canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient a volume to the closest canonical RAS+ axes by flips and permutations.

    Args:
        data: the 3D voxel array.
        affine: its voxel-to-world affine.

    Returns:
        The reoriented array (a view where possible) and its affine.
    """
    ornt = orientations.io_orientation(affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return data, affine
    new_affine = affine @ orientations.inv_ornt_aff(ornt, data.shape)
    return orientations.apply_orientation(data, ornt), new_affine


def crop_or_pad(data: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Centre-crop or zero-pad a volume to ``shape``.

    When the difference on an axis is odd, the extra voxel is cropped from (or padded
    at) the high end of the axis.
    """
    slices = []
    pads = []
    for have, want in zip(data.shape, shape):
        if have >= want:
            start = (have - want) // 2
            slices.append(slice(start, start + want))
            pads.append((0, 0))
        else:
            before = (want - have) // 2
            slices.append(slice(None))
            pads.append((before, want - have - before))
    data = data[tuple(slices)]
    if any(p != (0, 0) for p in pads):
        data = np.pad(data, pads, mode="constant", constant_values=0)
    return data


def conform(img: nib.spatialimages.SpatialImage, spec: ConformSpec, *, source: Path | str = "<memory>") -> np.ndarray:
    """Conform an image to a spec: canonical axes, voxel size, shape, normalisation.

    Args:
        img: a 3D image (as returned by :func:`read_nifti`).
        spec: the target grid and normalisation.
        source: name of the scan in error messages.

    Returns:
        A C-contiguous float32 array of exactly ``spec.shape``.

    Raises:
        ScanError: naming ``source``, when the image is not 3D, its data are not
            finite, its affine has a zero voxel size, or resampling it would give more
            voxels than a scan may have.
    """
    data = np.asarray(img.get_fdata(dtype=np.float32))
    if data.ndim > 3 and all(s == 1 for s in data.shape[3:]):
        data = data.reshape(data.shape[:3])
    if data.ndim != 3:
        raise ScanError(source, f"expected a 3D volume, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise ScanError(source, "voxels are NaN or infinite")

    vox = nib.affines.voxel_sizes(img.affine)
    if not np.all(np.isfinite(vox) & (vox > 0)):
        raise ScanError(source, f"invalid voxel size {tuple(float(v) for v in vox)} in the affine")
    data, affine = to_canonical(data, img.affine)
    current = nib.affines.voxel_sizes(affine)
    factors = current / np.asarray(spec.voxel_size, dtype=np.float64)
    if not np.allclose(factors, 1.0, rtol=1e-4, atol=0):
        out_shape = tuple(max(1, int(round(n * f))) for n, f in zip(data.shape, factors))
        try:  # a few huge voxels resampled to a fine grid: bounded like a scan
            check_grid(out_shape)
        except ValueError as exc:
            raise ScanError(source, f"resampled to {spec.voxel_size} mm voxels, the {exc}") from None
        # zoom's grid_mode maps voxel edges to edges: exact scale = out_shape / in_shape
        data = ndimage.zoom(
            np.ascontiguousarray(data),
            [o / n for o, n in zip(out_shape, data.shape)],
            output=np.float32,
            order=1,
            mode="nearest",
            grid_mode=True,
            prefilter=False,
        )
    data = crop_or_pad(data, spec.shape)
    data = get_normalization(spec.normalize)(data, None)
    return np.ascontiguousarray(data, dtype=np.float32)


def load_conformed(path: Path, spec: ConformSpec) -> np.ndarray:
    """Read a NIfTI scan and conform it (see :func:`read_nifti` and :func:`conform`)."""
    return conform(read_nifti(path), spec, source=path)
