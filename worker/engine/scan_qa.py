"""Scan quality: does a conformed scan look like a registered, skull-stripped MNI152 brain?

Two numbers per scan, computed on the conformed volume (the model's grid and normalisation,
where :class:`~worker.engine.dataset.ScanDataset` conforms it) against the MNI152 T1 template
that nilearn ships (ICBM 2009a, read from the wheel; nothing is downloaded), resampled once per
grid (:func:`template_for`):

* ``qa_template_corr``: Pearson correlation of the scan with the template over the template's
  brain mask dilated by :data:`MASK_DILATION_MM`. Every registered normalisation is an affine map
  of the brain's intensities, so the value does not depend on it. A scan that is not in MNI space
  (native space, shifted, rotated, flipped) correlates poorly.
* ``qa_outside_mask``: of the scan's signal voxels (those differing from the background level,
  the median of the grid's outer faces, by more than :data:`SIGNAL_THRESHOLD` times the typical
  brain signal), the fraction outside the dilated brain mask. Skull, scalp, eyes and neck put
  signal there; so does a brain that is not where the template's is.

A scan is *flagged* when its correlation is below :data:`MIN_TEMPLATE_CORR` or its outside
fraction above :data:`MAX_OUTSIDE_MASK` (:class:`ScanQaPolicy`); the assessment fails when more
than ``max_flagged_fraction`` of the scans are flagged (default: more than half).

Calibration (``tests/engine/test_scan_qa.py`` computes every number below). The four real T1
scans of ``shared/data/real-t1`` (DeepBrainNet sample data: skull-stripped, linearly registered
to MNI152 at 1 mm) conformed to the 2 mm grid (91 x 109 x 91, z-score) give a correlation of
0.895-0.904 and an outside fraction of 0.004-0.006; the synthetic cohort (worker.engine.synth,
2 mm) gives 0.93-0.95 and 0.000. The same real scans moved by 15 mm (any axis) give at most 0.76
and at least 0.08; rotated by 15 degrees (any plane), at most 0.80 and at least 0.05. They are
skull-stripped, so their "unmasked" versions are simulated (a head of scalp, skull and CSF
layers 14 mm thick around the brain, and background noise, see the test): correlation at most
0.86, outside fraction at least 0.43. Hence the thresholds: correlation >= 0.85 and outside
fraction <= 0.05 (the originals clear both with margins of 0.045 and 0.044).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from .errors import BrainMIAError, InputError
from .volumes import ConformSpec

__all__ = [
    "MASK_DILATION_MM",
    "MAX_OUTSIDE_MASK",
    "MIN_TEMPLATE_CORR",
    "QA_COLUMNS",
    "QA_ADVICE",
    "SIGNAL_THRESHOLD",
    "ScanQaPolicy",
    "QaTemplate",
    "scan_qa_section",
    "scan_qa_values",
    "template_for",
]

QA_COLUMNS = ("qa_template_corr", "qa_outside_mask")
"""The feature-table columns of scan QA (never attack features)."""

MIN_TEMPLATE_CORR = 0.85
"""Least correlation with the MNI152 template of a scan that looks registered."""

MAX_OUTSIDE_MASK = 0.05
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

QA_ADVICE = (
    "register to MNI152 (e.g. with ANTs or FSL flirt) and skull-strip (e.g. HD-BET, SynthStrip) before assessing"
)
"""What to do about a flagged scan."""

_FILLED_SHARE = 0.05

QaMode = Literal["fail", "warn", "off"]


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


def _reduce(volume: np.ndarray, factors: tuple[int, int, int], how: str = "mean") -> np.ndarray:
    """Block-average (or block-max) a volume by integer factors, dropping the incomplete blocks."""
    if all(f == 1 for f in factors):
        return volume
    n = [s // f for s, f in zip(volume.shape, factors)]
    blocks = volume[: n[0] * factors[0], : n[1] * factors[1], : n[2] * factors[2]]
    blocks = blocks.reshape(n[0], factors[0], n[1], factors[1], n[2], factors[2])
    return blocks.max(axis=(1, 3, 5)) if how == "max" else blocks.mean(axis=(1, 3, 5), dtype=np.float32)


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
    volume = _reduce(_restore_background(volume), template.factors)
    region = template.region

    background = _background(volume)
    deviation = np.abs(volume - np.float32(background))
    level = float(np.median(deviation[template.brain])) if template.brain.any() else 0.0
    if level <= 0:
        level = float(deviation.max())
    signal = deviation > SIGNAL_THRESHOLD * level if level > 0 else np.zeros(volume.shape, dtype=bool)
    n_signal = int(signal.sum())
    outside = float((signal & ~region).sum() / n_signal) if n_signal else 1.0

    smoothed = _smooth(volume, template.qa_voxel_size)
    inside = smoothed[region].astype(np.float64)
    reference = template.t1[region].astype(np.float64)
    inside -= inside.mean()
    reference -= reference.mean()
    denom = float(np.sqrt((inside**2).sum() * (reference**2).sum()))
    corr = float((inside * reference).sum() / denom) if denom > 0 else 0.0
    return corr, outside


@dataclass(frozen=True)
class ScanQaPolicy:
    """What scan QA flags and when it stops an assessment.

    Attributes:
        mode: ``fail`` (flagged scans are listed; the assessment fails when more than
            ``max_flagged_fraction`` of them are flagged), ``warn`` (listed only) or ``off``
            (no QA is computed).
        min_template_corr: a scan correlating less with the template is flagged.
        max_outside_mask: a scan with more of its signal outside the brain mask is flagged.
        max_flagged_fraction: the assessment fails when more than this fraction is flagged.
    """

    mode: QaMode = "fail"
    min_template_corr: float = MIN_TEMPLATE_CORR
    max_outside_mask: float = MAX_OUTSIDE_MASK
    max_flagged_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in ("fail", "warn", "off"):
            raise InputError(f"scan_qa must be 'fail', 'warn' or 'off', got {self.mode!r}")
        if not 0.0 <= self.max_flagged_fraction <= 1.0:
            raise InputError(f"scan_qa max_flagged_fraction must be in [0, 1], got {self.max_flagged_fraction!r}")

    def reasons(self, corr: float, outside: float) -> list[str]:
        """Why a scan with these QA values is flagged (empty: it is not)."""
        out = []
        if not np.isfinite(corr) or corr < self.min_template_corr:
            out.append(f"correlation with the MNI152 template {corr:.2f} < {self.min_template_corr:g}: not registered?")
        if not np.isfinite(outside) or outside > self.max_outside_mask:
            out.append(f"{100 * outside:.0f}% of the signal outside the brain mask (> {100 * self.max_outside_mask:g}%): "
                       "not skull-stripped, or not registered?")
        return out


def _stats(values: np.ndarray) -> dict[str, float | None]:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return {"min": None, "median": None, "max": None}
    return {"min": float(finite.min()), "median": float(np.median(finite)), "max": float(finite.max())}


def scan_qa_section(table: pd.DataFrame, policy: ScanQaPolicy, template: QaTemplate) -> dict[str, Any]:
    """The report's ``scan_quality`` section from a feature table's QA columns.

    Args:
        table: the per-scan feature table (``scan_id``, ``member`` and the :data:`QA_COLUMNS`).
        policy: the thresholds and the mode.
        template: the template of the model's grid (says whether the grid can be judged).

    Returns:
        The section: mode, whether the scans were judged (and why not), thresholds, counts, the
        spread of both values and the flagged scans with their reasons and :data:`QA_ADVICE`.

    Raises:
        InputError: in ``fail`` mode, when more than ``max_flagged_fraction`` of the scans are
            flagged; the message names the first flagged scans and says what to do.
    """
    corr = table[QA_COLUMNS[0]].to_numpy(dtype=np.float64)
    outside = table[QA_COLUMNS[1]].to_numpy(dtype=np.float64)
    not_judged = template.judgeable()
    flagged = []
    if not_judged is None:
        for row, c, o in zip(table.itertuples(index=False), corr, outside):
            reasons = policy.reasons(float(c), float(o))
            if reasons:
                flagged.append({"scan_id": row.scan_id, "member": int(row.member), "template_corr": float(c),
                                "outside_mask": float(o), "reasons": reasons})
    n = len(table)
    section = {
        "mode": policy.mode,
        "judged": not_judged is None,
        "not_judged_reason": not_judged,
        "thresholds": {"min_template_corr": policy.min_template_corr, "max_outside_mask": policy.max_outside_mask,
                       "max_flagged_fraction": policy.max_flagged_fraction},
        "grid": {"shape": list(template.shape), "voxel_size": list(template.voxel_size)},
        "n_scans": n,
        "n_flagged": len(flagged),
        "template_corr": _stats(corr),
        "outside_mask": _stats(outside),
        "flagged": flagged,
        "advice": QA_ADVICE if flagged else None,
        "failed": bool(policy.mode == "fail" and n and len(flagged) > policy.max_flagged_fraction * n),
    }
    if section["failed"]:
        names = ", ".join(str(f["scan_id"]) for f in flagged[:5]) + (", ..." if len(flagged) > 5 else "")
        raise InputError(
            f"scan QA: {len(flagged)} of {n} scans do not look like registered, skull-stripped MNI152 brains "
            f"(more than {100 * policy.max_flagged_fraction:g}%): {names}; e.g. {flagged[0]['scan_id']}: "
            f"{'; '.join(flagged[0]['reasons'])}. {QA_ADVICE[0].upper() + QA_ADVICE[1:]} "
            "(or set scan_qa to 'warn' to assess anyway)"
        )
    return section
