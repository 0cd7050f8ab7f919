"""Scan quality: does a conformed scan look like a registered, skull-stripped MNI152 brain?

Two numbers per scan, computed on the conformed volume (the model's grid and normalisation,
where :class:`~worker.engine.dataset.ScanDataset` conforms it) against the MNI152 T1 template
that nilearn ships (ICBM 2009a, read from the wheel; nothing is downloaded), resampled once per
grid (:func:`template_for`):

* ``qa_template_corr``: Pearson correlation of the scan with the template over the template's
  brain mask dilated by :data:`MASK_DILATION_MM`, both smoothed by :data:`SMOOTH_MM` (gross
  alignment counts, a subject's fine anatomy and noise less), on voxels of about
  :data:`QA_VOXEL_MM` (finer grids are block-averaged). A zero-filled background (skull-stripped
  scans, padding) is given the scan's lowest other value first, as it had before a z-score set
  it to 0; every registered normalisation is then an affine map of the intensities, so the value
  does not depend on it. A scan that is not in MNI space (native space, shifted, rotated,
  flipped) correlates poorly.
* ``qa_outside_mask``: of the scan's signal voxels (those differing from the background level,
  the median of the grid's outer faces, by more than :data:`SIGNAL_THRESHOLD` times the brain's
  median level), the fraction outside the dilated brain mask. Skull, scalp, eyes and neck put
  signal there; so does a brain that is not where the template's is.

The template is placed by MNI coordinates on the grid a conformed MNI-space scan occupies:
conforming centre-crops or pads, and the common MNI boxes (FSL's 182 x 218 x 182, fMRIPrep's
193 x 229 x 193) are centred within 0.5 mm of :data:`MNI_CENTRE_MM`.

A scan is *flagged* when its correlation is below :data:`MIN_TEMPLATE_CORR` or its outside
fraction above :data:`MAX_OUTSIDE_MASK` (:class:`~worker.engine.scan_qa_policy.ScanQaPolicy`); the assessment fails when more
than ``max_flagged_fraction`` of the scans are flagged (default: more than half). Grids coarser
than :data:`MAX_JUDGED_VOXEL_MM` or holding less than :data:`MIN_COVERAGE` of the brain are not
judged (values recorded, nothing flagged): the thresholds were not calibrated there.

Calibration (``tests/engine/test_scan_qa.py`` computes these; its slow test all of them). The
four real T1 scans of ``shared/data/real-t1`` (DeepBrainNet sample data: skull-stripped, linearly
registered to MNI152 at 1 mm), conformed to the 2 mm grid (91 x 109 x 91, z-score):

=====================================  =================  ===================
scans (4 each)                         template corr      outside the mask
=====================================  =================  ===================
originals, 2 mm grid                   0.933 - 0.945      0.000 - 0.001
originals, 1 mm (160 x 192 x 160)      0.931 - 0.944      0.000 - 0.002
originals, 4 mm (45 x 54 x 45)         0.896 - 0.910      0.002 - 0.003
shifted 15 mm (+-x, +-y, +-z)          0.527 - 0.653      0.053 - 0.084
rotated 15 degrees (each plane)        0.749 - 0.834      0.009 - 0.025
"unmasked" (simulated head)            0.904 - 0.917      0.269 - 0.273
synthetic cohort, 40 scans, 2 mm       0.824 - 0.936      0.000 - 0.007
synthetic cohort, 40 scans, 4 mm       0.826 - 0.932      0.000 - 0.021
=====================================  =================  ===================

The real scans are skull-stripped, so their "unmasked" versions are simulated: CSF, skull and a
textured scalp in layers 14 mm deep around the brain at T1-like levels, and noisy air. Hence
correlation >= 0.85 (the originals clear it by 0.08 at 2 mm; 15 degree rotations fall 0.016
below it, 20 degrees and 15 mm shifts much further) and outside fraction <= 0.10 (unmasked
scans are 2.7 times above it; skull-stripped ones leave room for larger heads and generous
stripping). The synthetic cohort varies more than the real scans (atrophy, smooth deformation,
head size): its 5th percentile is 0.884 at 2 mm, and its most deformed scans fall just below
0.85 and are listed, never most of a cohort (of 100 synthetic scans at 4 mm: 3 below 0.85, the
lowest 0.808; at most 4.4% of the signal outside the mask).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from .errors import BrainMIAError
from .volumes import ConformSpec

__all__ = [
    "MASK_DILATION_MM",
    "MAX_OUTSIDE_MASK",
    "MIN_TEMPLATE_CORR",
    "QA_COLUMNS",
    "SIGNAL_THRESHOLD",
    "QaTemplate",
    "scan_qa_values",
    "template_for",
]

QA_COLUMNS = ("qa_template_corr", "qa_outside_mask")
"""The feature-table columns of scan QA (never attack features)."""

MIN_TEMPLATE_CORR = 0.85
"""Least correlation with the MNI152 template of a scan that looks registered."""

MAX_OUTSIDE_MASK = 0.10
"""Largest fraction of a scan's signal outside the dilated brain mask of a skull-stripped scan."""

SIGNAL_THRESHOLD = 0.1
"""A voxel is signal when it differs from the background by this fraction of the brain's level."""

MASK_DILATION_MM = 6.0
"""The template's brain mask is dilated by this distance (registration residuals, brain size)."""

MASK_THRESHOLD = 0.2
"""Template intensity (0-1) above which a voxel is brain, as ``nilearn.datasets.load_mni152_brain_mask``."""

QA_VOXEL_MM = 2.0
"""Finer grids are block-averaged to voxels of about this size for QA."""

SMOOTH_MM = 3.0
"""Gaussian sigma (mm) of the smoothing of scan and template before their correlation: gross
alignment counts, a subject's fine anatomy and noise do not."""

MAX_JUDGED_VOXEL_MM = 4.0
"""Scans are judged on grids of voxels this size or finer (QA values are recorded on every grid)."""

MIN_COVERAGE = 0.9
"""Scans are judged on grids holding at least this fraction of the template's brain volume."""

MNI_CENTRE_MM = (0.0, -18.0, 18.0)
"""MNI position of the centre of a conformed grid: the centre of FSL's MNI152 box (182 x 218 x 182
at 1 mm, 91 x 109 x 91 at 2 mm); conforming centre-crops or pads, so grids share this centre."""


_FILLED_SHARE = 0.05


@dataclass(frozen=True)
class QaTemplate:
    """The MNI152 template on one conformed grid, as scan QA compares it (read-only arrays).

    The QA grid is the model's grid block-averaged to voxels of about :data:`QA_VOXEL_MM` (a finer
    grid holds no more registration evidence, and costs more), then smoothed by :data:`SMOOTH_MM`.

    Attributes:
        shape: the model's grid shape.
        voxel_size: its voxel size in mm, per axis.
        factors: block size (voxels of the model's grid per QA voxel, per axis).
        t1: template T1 intensity (0-1) on the QA grid, smoothed.
        region: the dilated brain mask on the QA grid (bool): where the correlation is taken and
            the signal belongs.
        brain: the undilated brain mask on the QA grid (bool).
        coverage: the fraction of the template's brain volume inside the model's grid.
    """

    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    factors: tuple[int, int, int]
    t1: np.ndarray
    region: np.ndarray
    brain: np.ndarray
    coverage: float

    @property
    def qa_voxel_size(self) -> tuple[float, float, float]:
        """Voxel size (mm) of the QA grid."""
        return tuple(v * f for v, f in zip(self.voxel_size, self.factors))  # type: ignore[return-value]

    def judgeable(self) -> str | None:
        """Why scans on this grid cannot be judged (None when they can)."""
        coarse = max(self.voxel_size)
        if coarse > MAX_JUDGED_VOXEL_MM:
            return (f"the model's grid ({coarse:g} mm voxels) is coarser than the {MAX_JUDGED_VOXEL_MM:g} mm "
                    "the thresholds were calibrated for")
        if self.coverage < MIN_COVERAGE:
            return (f"the model's grid holds {100 * self.coverage:.0f}% of the MNI152 brain "
                    f"(at least {100 * MIN_COVERAGE:.0f}% is needed)")
        return None


def _template_path() -> Path:
    """The T1 template file that nilearn ships (``nilearn.datasets.MNI152_FILE_PATH``)."""
    try:
        import nilearn
    except ImportError as exc:  # pragma: no cover - nilearn is a dependency
        raise BrainMIAError("nilearn is needed for the MNI152 template of scan QA") from exc
    path = Path(nilearn.__file__).parent / "datasets" / "data" / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    if path.is_file():  # importing nilearn.datasets takes seconds; the file sits at a known place
        return path
    from nilearn import datasets  # pragma: no cover - another nilearn layout

    return Path(datasets.MNI152_FILE_PATH)  # pragma: no cover


@functools.lru_cache(maxsize=1)
def _template_1mm() -> tuple[np.ndarray, np.ndarray]:
    """The 1 mm template in RAS axes, scaled to 0-1 (as ``load_mni152_template``), and its affine."""
    img = nib.load(_template_path())
    data = np.asarray(img.dataobj, dtype=np.float32)
    ornt = nib.orientations.io_orientation(img.affine)
    affine = img.affine @ nib.orientations.inv_ornt_aff(ornt, data.shape)
    data = np.ascontiguousarray(nib.orientations.apply_orientation(data, ornt))
    if not np.allclose(affine[:3, :3], np.eye(3)):
        raise BrainMIAError("MNI152 template: expected 1 mm RAS axis-aligned voxels")
    return data / float(data.max()), affine


def _grid_origin(shape: tuple[int, ...], voxel_size: tuple[float, ...]) -> np.ndarray:
    """MNI position (mm) of voxel (0, 0, 0) of a conformed grid."""
    return np.array([c - v * (n - 1) / 2.0 for c, v, n in zip(MNI_CENTRE_MM, voxel_size, shape)])


def _resample(data: np.ndarray, affine: np.ndarray, shape: tuple[int, int, int],
              voxel_size: tuple[float, float, float]) -> np.ndarray:
    """Trilinear resampling of a 1 mm RAS volume onto a grid, after anti-aliasing to its voxel size."""
    sigma = [np.sqrt(max(v * v - 1.0, 0.0)) / 2.3548 for v in voxel_size]  # FWHM of a target voxel
    if any(s > 0 for s in sigma):
        data = ndimage.gaussian_filter(data, sigma, mode="constant", cval=0.0)
    offset = _grid_origin(shape, voxel_size) - affine[:3, 3]
    return ndimage.affine_transform(data, np.asarray(voxel_size), offset=offset, output_shape=shape,
                                    order=1, mode="constant", cval=0.0).astype(np.float32)


def _factors(voxel_size: tuple[float, ...]) -> tuple[int, int, int]:
    return tuple(max(1, int(QA_VOXEL_MM // v + 1e-6)) for v in voxel_size)  # type: ignore[return-value]


def _reduce(volume: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Block-average a volume by integer factors, dropping the incomplete blocks."""
    if all(f == 1 for f in factors):
        return volume
    out = volume.astype(np.float32, copy=False)
    for axis, f in enumerate(factors):  # strided slices per axis: faster than one 6-D reshape reduction
        if f == 1:
            continue
        n = out.shape[axis] // f * f
        acc = out[(slice(None),) * axis + (slice(0, n, f),)].copy()
        for k in range(1, f):
            acc += out[(slice(None),) * axis + (slice(k, n, f),)]
        out = acc
    return out / np.float32(np.prod(factors))


def _smooth(volume: np.ndarray, voxel_size: tuple[float, ...]) -> np.ndarray:
    if SMOOTH_MM <= 0:
        return volume
    return ndimage.gaussian_filter(volume, [SMOOTH_MM / v for v in voxel_size], mode="nearest")


@functools.lru_cache(maxsize=8)
def _template(shape: tuple[int, int, int], voxel_size: tuple[float, float, float]) -> QaTemplate:
    data, affine = _template_1mm()
    t1 = _resample(data, affine, shape, voxel_size)
    brain_1mm = (data > MASK_THRESHOLD).astype(np.float32)
    brain = _resample(brain_1mm, affine, shape, voxel_size)
    coverage = float(brain.sum() * np.prod(voxel_size) / brain_1mm.sum())
    factors = _factors(voxel_size)
    qa_voxel = tuple(v * f for v, f in zip(voxel_size, factors))
    t1 = _smooth(_reduce(t1, factors), qa_voxel).astype(np.float32)
    brain = _reduce(brain, factors) >= 0.5
    distance = ndimage.distance_transform_edt(~brain, sampling=qa_voxel) if brain.any() else np.full(brain.shape, np.inf)
    region = distance <= max(MASK_DILATION_MM, max(qa_voxel))
    for array in (t1, region, brain):
        array.flags.writeable = False
    return QaTemplate(shape=shape, voxel_size=voxel_size, factors=factors, t1=t1, region=region, brain=brain,
                      coverage=coverage)


def template_for(spec: ConformSpec) -> QaTemplate:
    """The template on the grid of ``spec`` (computed once per grid and cached in this process)."""
    return _template(tuple(spec.shape), tuple(spec.voxel_size))


def _background(volume: np.ndarray) -> float:
    """The background level: the median of the grid's outer two-voxel faces."""
    faces = np.ones(volume.shape, dtype=bool)
    faces[tuple(slice(2, max(n - 2, 2)) for n in volume.shape)] = False
    return float(np.median(volume[faces]))


def _restore_background(volume: np.ndarray) -> np.ndarray:
    """The volume with a zero-filled background given the scan's lowest other value.

    A skull-stripped scan's background, and a conformed grid's padding, is one exact value (the
    background level); a z-score sets it to 0, the brain's mean, which would hide where the brain
    ends. Such voxels (at least :data:`_FILLED_SHARE` of the grid) were below every brain voxel before
    normalisation and get the lowest value of the others; a noisy (unmasked) background is left as it is.
    """
    background = _background(volume)
    filled = volume == np.float32(background)
    if filled.mean() < _FILLED_SHARE or filled.all():
        return volume
    out = volume.copy()
    out[filled] = volume[~filled].min()
    return out


def scan_qa_values(volume: np.ndarray, template: QaTemplate) -> tuple[float, float]:
    """The correlation with the template and the outside-mask signal fraction of a conformed volume.

    Args:
        volume: the conformed scan, of the template's grid shape.
        template: the template on that grid (:func:`template_for`).

    Returns:
        ``(qa_template_corr, qa_outside_mask)``; the correlation is 0 for a scan constant over
        the mask, the fraction 1 for a scan with no signal at all.
    """
    volume = np.asarray(volume, dtype=np.float32).reshape(template.shape)
    volume = _restore_background(_reduce(volume, template.factors))
    region = template.region

    background = _background(volume)
    deviation = np.abs(volume - np.float32(background))
    level = float(np.median(deviation[template.brain])) if template.brain.any() else 0.0
    if level <= 0:
        level = float(deviation.max())
    signal = deviation > SIGNAL_THRESHOLD * level if level > 0 else np.zeros(volume.shape, dtype=bool)
    n_signal = int(signal.sum())
    outside = float((signal & ~region).sum() / n_signal) if n_signal else 1.0

    if not region.any():  # a grid outside the brain: nothing to compare
        return 0.0, outside
    smoothed = _smooth(volume, template.qa_voxel_size)
    inside = smoothed[region].astype(np.float64)
    reference = template.t1[region].astype(np.float64)
    inside -= inside.mean()
    reference -= reference.mean()
    denom = float(np.sqrt((inside**2).sum() * (reference**2).sum()))
    corr = float((inside * reference).sum() / denom) if denom > 0 else 0.0
    return corr, outside

