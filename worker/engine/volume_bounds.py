"""Bounds on volume sizes, checked from a NIfTI header before any voxel is read.

A NIfTI header says how many voxels follow and of which type; nibabel allocates (and
zero-fills) that much before it notices the data are missing, so an 86-byte ``.nii.gz``
claiming 800^3 float32 voxels costs 2 GB. :func:`check_header` reads only the fixed-size
header (348 or 540 bytes) and refuses the file, naming it, when

* the voxel count (all dimensions, 4D included) exceeds :attr:`VolumeLimits.max_voxels`;
* an uncompressed ``.nii`` is shorter than ``vox_offset + voxels x bytes per voxel``;
* a ``.nii.gz`` would have to expand more than :data:`DEFLATE_MAX_RATIO` times its size,
  which deflate cannot do (its longest match, 258 bytes, takes at least 2 bits): such a file
  is truncated or forged, whatever its content.

The default limit, :data:`DEFAULT_MAX_VOXELS` = 2^25 (33.5 M voxels, twice a 256^3 1 mm
whole-head volume), admits every usual T1 (1 mm: 256 x 256 x 176-256; 0.7 mm HCP:
260 x 311 x 260 = 21 M) and bounds one scan's float32 copy to 128 MiB. The same bound
applies to a model's declared input grid (:func:`check_grid`).

The process-wide limits (:func:`volume_limits`) are set once by the composition roots from
the settings (``BRAINMIA_MAX_VOLUME_VOXELS``) with :func:`set_volume_limits`.
"""

from __future__ import annotations

import gzip
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ScanError

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "DEFLATE_MAX_RATIO",
    "VolumeLimits",
    "check_grid",
    "check_header",
    "set_volume_limits",
    "volume_limits",
]

DEFAULT_MAX_VOXELS = 1 << 25
DEFLATE_MAX_RATIO = 1032
"""Most bytes deflate can expand one compressed byte to (258-byte matches in 2 bits)."""
_GZIP_SLACK = 4096
"""Bytes always allowed beyond the ratio (gzip header, tiny files)."""
_HEADER_SIZES = (348, 540)  # NIfTI-1, NIfTI-2


@dataclass(frozen=True)
class VolumeLimits:
    """Limits of one volume.

    Attributes:
        max_voxels: most voxels a scan header (all dimensions) or a model's input grid may hold.
    """

    max_voxels: int = DEFAULT_MAX_VOXELS

    def __post_init__(self) -> None:
        if int(self.max_voxels) < 1:
            raise ValueError(f"max_voxels must be positive, got {self.max_voxels!r}")


_limits = VolumeLimits()


def set_volume_limits(limits: VolumeLimits) -> None:
    """Set the process-wide limits (called once at start from the settings)."""
    global _limits
    _limits = limits


def volume_limits() -> VolumeLimits:
    """The process-wide limits (the defaults unless :func:`set_volume_limits` was called)."""
    return _limits


def check_grid(shape: Sequence[int], limits: VolumeLimits | None = None) -> None:
    """Refuse a grid (a model's declared input shape) of more than ``max_voxels`` voxels.

    Raises:
        ValueError: the grid is too large (a message fit for a field error).
    """
    limit = (limits or _limits).max_voxels
    voxels = math.prod(int(s) for s in shape)
    if voxels > limit:
        raise ValueError(f"grid {'x'.join(str(int(s)) for s in shape)} has {voxels} voxels, more than the limit of {limit}")


def _read_header_block(path: Path, compressed: bool) -> bytes:
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as fh:
            return fh.read(max(_HEADER_SIZES))
    except (OSError, EOFError) as exc:
        raise ScanError(path, f"not a readable NIfTI file ({type(exc).__name__}: {exc})") from None


def _parse(path: Path, block: bytes) -> tuple[object, int]:
    """The nibabel header of ``block`` (no extension, no data read) and its size."""
    import nibabel as nib

    for endian in "<>":
        if len(block) >= 4 and struct.unpack(f"{endian}i", block[:4])[0] in _HEADER_SIZES:
            size = struct.unpack(f"{endian}i", block[:4])[0]
            break
    else:
        raise ScanError(path, "not a readable NIfTI file (no NIfTI-1 or NIfTI-2 header)")
    if len(block) < size:
        raise ScanError(path, f"not a readable NIfTI file (the header is cut short at {len(block)} bytes)")
    header_class = nib.Nifti1Header if size == 348 else nib.Nifti2Header
    try:
        return header_class(binaryblock=block[:size], check=False), size
    except Exception as exc:  # nibabel raises several types for a bad header
        raise ScanError(path, f"not a readable NIfTI header ({type(exc).__name__}: {exc})") from None


def check_header(path: Path, limits: VolumeLimits | None = None) -> tuple[int, ...]:
    """Check a NIfTI file's declared size against ``limits`` and its file size, reading only its header.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        limits: the limits (default: the process-wide ones).

    Returns:
        The declared data shape.

    Raises:
        ScanError: naming the file, when its header does not parse, declares more voxels than
            allowed, or more data than the file can hold.
    """
    path = Path(path)
    limit = (limits or _limits).max_voxels
    compressed = path.name.lower().endswith(".gz")
    header: Any
    header, header_size = _parse(path, _read_header_block(path, compressed))
    try:
        shape = tuple(int(s) for s in header.get_data_shape())
        itemsize = header.get_data_dtype().itemsize
    except Exception as exc:  # unknown data type code, bad dim[0]...
        raise ScanError(path, f"not a readable NIfTI header ({type(exc).__name__}: {exc})") from None
    if any(s < 0 for s in shape):
        raise ScanError(path, f"negative dimension in the header, shape {shape}")
    voxels = math.prod(shape)
    if voxels > limit:
        raise ScanError(
            path, f"the header declares {'x'.join(map(str, shape))} = {voxels} voxels, more than the limit of {limit}"
        )
    offset = max(int(header.get_data_offset()), header_size + 4)
    needed = offset + voxels * itemsize
    size = path.stat().st_size
    if compressed and needed > size * DEFLATE_MAX_RATIO + _GZIP_SLACK:
        raise ScanError(
            path,
            f"the header declares {needed} bytes of data, more than a {size}-byte compressed file can hold "
            "(truncated or forged)",
        )
    if not compressed and needed > size:
        raise ScanError(path, f"truncated: the header declares {needed} bytes of data, the file has {size}")
    return shape
