"""Intensity normalisations of conformed volumes, by name.

A normalisation maps a volume and an optional brain mask to a float32 volume of the
same shape. New ones are added with :func:`register_normalization`::

    @register_normalization("clip99")
    def clip99(volume, mask=None):
        ...

Brain mask: when none is given, the brain is the nonzero voxels if the volume has a
zero background (at least one voxel exactly 0, as in skull-stripped or padded scans),
else every voxel. The statistics of ``zscore`` and ``robust`` are taken over the brain
and voxels outside the brain are set to 0, so that the background (and the zero padding
of :func:`worker.engine.volumes.conform`) stays 0 after normalisation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from worker.engine.errors import InputError

__all__ = [
    "NORMALIZATIONS",
    "Normalization",
    "brain_mask",
    "get_normalization",
    "register_normalization",
]

Normalization = Callable[[np.ndarray, np.ndarray | None], np.ndarray]

NORMALIZATIONS: dict[str, Normalization] = {}
"""Registered normalisations by name."""


def register_normalization(name: str) -> Callable[[Normalization], Normalization]:
    """Decorator that registers a normalisation under ``name``.

    Args:
        name: the name used in model metadata and :class:`ConformSpec`.

    Returns:
        A decorator that registers and returns the function unchanged.
    """

    def decorator(fn: Normalization) -> Normalization:
        if name in NORMALIZATIONS and NORMALIZATIONS[name] is not fn:
            raise ValueError(f"normalization {name!r} is already registered")
        NORMALIZATIONS[name] = fn
        return fn

    return decorator


def get_normalization(name: str) -> Normalization:
    """Look up a normalisation by name.

    Raises:
        InputError: when ``name`` is not registered; the message lists the known names.
    """
    try:
        return NORMALIZATIONS[name]
    except KeyError:
        known = ", ".join(sorted(NORMALIZATIONS))
        raise InputError(f"unknown intensity normalization {name!r} (known: {known})") from None


def brain_mask(volume: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The voxels that normalisation statistics are taken over.

    Args:
        volume: the volume.
        mask: an explicit mask (nonzero = brain) of the same shape, or None.

    Returns:
        A boolean array of the volume's shape: ``mask`` when given, else the nonzero
        voxels when the volume has a zero background, else every voxel.
    """
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != volume.shape:
            raise ValueError(f"mask shape {mask.shape} does not match volume shape {volume.shape}")
        return mask
    nonzero = volume != 0
    if nonzero.all() or not nonzero.any():
        return np.ones(volume.shape, dtype=bool)
    return nonzero


def _apply(volume: np.ndarray, inside: np.ndarray, centre: float, scale: float) -> np.ndarray:
    """``(volume - centre) / scale`` inside the mask, 0 outside, as float32."""
    out = volume.astype(np.float32, copy=True)
    out -= np.float32(centre)
    if scale > 0 and np.isfinite(scale):
        out /= np.float32(scale)
    if not inside.all():
        out[~inside] = 0.0
    return out


@register_normalization("none")
def no_normalization(volume: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Intensities unchanged (as a float32 copy)."""
    return np.array(volume, dtype=np.float32, copy=True)


@register_normalization("zscore")
def zscore(volume: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-scan z-score: ``(x - mean) / std`` over the brain; only centred when std is 0."""
    inside = brain_mask(volume, mask)
    values = volume[inside].astype(np.float64)
    if values.size == 0:
        return np.zeros(volume.shape, dtype=np.float32)
    return _apply(volume, inside, float(values.mean()), float(values.std()))


@register_normalization("robust")
def robust(volume: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Robust z-score: ``(x - median) / IQR`` over the brain; only centred when IQR is 0."""
    inside = brain_mask(volume, mask)
    values = volume[inside]
    if values.size == 0:
        return np.zeros(volume.shape, dtype=np.float32)
    q25, median, q75 = np.percentile(values, [25.0, 50.0, 75.0])
    return _apply(volume, inside, float(median), float(q75 - q25))


@register_normalization("minmax")
def minmax(volume: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Linear rescaling of the whole volume to [0, 1] (all zeros for a constant volume).

    A mask, when given, sets the range and voxels outside it are set to 0; values
    inside the mask then lie in [0, 1].
    """
    inside = np.ones(volume.shape, dtype=bool) if mask is None else brain_mask(volume, mask)
    values = volume[inside]
    if values.size == 0:
        return np.zeros(volume.shape, dtype=np.float32)
    lo, hi = float(values.min()), float(values.max())
    out = _apply(volume, inside, lo, hi - lo)
    if hi == lo:
        out[...] = 0.0
    return out


MNI182_VOXELS = 182 * 218 * 182
"""Voxels of the 1 mm MNI152 grid (182 x 218 x 182) that SFCN's scans come in before its crop."""


def _divided(volume: np.ndarray, mask: np.ndarray | None, count: int | None) -> np.ndarray:
    inside = np.ones(volume.shape, dtype=bool) if mask is None else brain_mask(volume, mask)
    total = float(volume[inside].sum(dtype=np.float64))
    mean = total / (count if count is not None else max(1, int(inside.sum())))
    if mean == 0 or not np.isfinite(mean):
        return np.zeros(volume.shape, dtype=np.float32)
    out = volume.astype(np.float32, copy=True)
    out /= np.float32(mean)
    if not inside.all():
        out[~inside] = 0.0
    return out


@register_normalization("mean")
def mean(volume: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Division by the mean intensity of the conformed volume (SFCN's ``data / data.mean()``).

    The mean is over every voxel (background included), or over ``mask`` with voxels outside it
    set to 0. All zeros for a volume of mean 0.
    """
    return _divided(volume, mask, None)


@register_normalization("mean_mni182")
def mean_mni182(volume: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """SFCN's preprocessing exactly, on its 160 x 192 x 160 crop: division by the mean of the full
    182 x 218 x 182 MNI volume (``sum / 7,221,032``).

    SFCN divides the 1 mm MNI-space scan by its mean and then crops the centre 160 x 192 x 160;
    conformed scans are cropped first, so ``mean`` of the crop would be ``7221032 / 4915200``
    = 1.47 times SFCN's for a skull-stripped scan whose cropped-away border is background (0).
    This divides the crop's sum by the full grid's voxel count instead, which is SFCN's mean
    whenever that border is 0. ``mask``: as for :func:`mean`, with the same voxel count.
    """
    return _divided(volume, mask, MNI182_VOXELS)
