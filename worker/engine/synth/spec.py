"""The parameters of a synthetic cohort and the MNI target grid it is written on."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from worker.engine.errors import InputError

__all__ = ["MNI_CENTRE_MM", "SITES", "CohortSpec", "Site", "grid_affine"]

#: World (MNI, mm) position of the centre of FSL's 2 mm MNI152 grid (91 x 109 x 91,
#: first voxel at (-90, -126, -72) in RAS). Every target grid is centred here.
MNI_CENTRE_MM: tuple[float, float, float] = (0.0, -18.0, 18.0)


@dataclass(frozen=True)
class Site:
    """Scanner effects of one acquisition site.

    Attributes:
        name: the value written in the manifest's ``site`` column.
        scale: global intensity scaling.
        contrast: tissue contrast factor (intensities are stretched about grey matter).
        noise: factor on the cohort's noise level.
        bias: factor on the cohort's bias-field strength.
    """

    name: str
    scale: float
    contrast: float
    noise: float
    bias: float


#: The sites a subject is drawn from (uniformly), each with a small scanner effect.
SITES: tuple[Site, ...] = (
    Site("site-A", scale=1.00, contrast=1.00, noise=1.00, bias=1.00),
    Site("site-B", scale=0.92, contrast=0.92, noise=1.25, bias=1.30),
    Site("site-C", scale=1.07, contrast=1.07, noise=0.80, bias=0.80),
)


@dataclass(frozen=True)
class CohortSpec:
    """What :func:`~worker.engine.synth.generate_cohort` makes.

    Attributes:
        n_subjects: number of subjects (one scan each).
        shape: target grid shape (RAS voxel axes).
        voxel_size: isotropic voxel size in mm; the grid is centred on the MNI152 field of
            view, so (91, 109, 91) at 2 mm is FSL's MNI152 2 mm grid (in RAS).
        seed: seed of every random draw; the same spec gives byte-identical scans.
        age_range: chronological ages are drawn uniformly in this interval (years).
        member_fraction: fraction of subjects labelled member (1), balanced in age.
        noise: Rician noise level, relative to the white-matter intensity.
        deformation: standard deviation (mm) of the subject-specific smooth displacement.
        bias: standard deviation of the log multiplicative bias field.
        brain_age_gap: standard deviation (years) of the subject's brain age around its
            chronological age; atrophy follows the brain age, so this is the part of age
            no model can predict (and a model that memorises its members can).
    """

    n_subjects: int = 200
    shape: tuple[int, int, int] = (91, 109, 91)
    voxel_size: float = 2.0
    seed: int = 0
    age_range: tuple[float, float] = (45.0, 80.0)
    member_fraction: float = 0.5
    noise: float = 0.03
    deformation: float = 2.0
    bias: float = 0.06
    brain_age_gap: float = 3.0

    def __post_init__(self) -> None:
        try:
            shape = tuple(int(s) for s in self.shape)
            age_range = tuple(float(a) for a in self.age_range)
            numbers = {
                name: float(getattr(self, name))
                for name in ("voxel_size", "member_fraction", "noise", "deformation", "bias", "brain_age_gap")
            }
            n_subjects, seed = int(self.n_subjects), int(self.seed)
        except (TypeError, ValueError) as exc:
            raise InputError(f"invalid cohort spec: {exc}") from exc
        if n_subjects < 1:
            raise InputError(f"n_subjects must be at least 1, got {self.n_subjects!r}")
        if seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {self.seed!r}")
        if len(shape) != 3 or any(s < 2 for s in shape):
            raise InputError(f"shape must be three integers >= 2, got {self.shape!r}")
        if not all(math.isfinite(v) for v in numbers.values()):
            raise InputError("cohort spec numbers must be finite")
        if numbers["voxel_size"] <= 0:
            raise InputError(f"voxel_size must be positive, got {self.voxel_size!r}")
        if len(age_range) != 2 or not (0 <= age_range[0] <= age_range[1] <= 120):
            raise InputError(f"age_range must be (low, high) with 0 <= low <= high <= 120, got {self.age_range!r}")
        if not 0.0 <= numbers["member_fraction"] <= 1.0:
            raise InputError(f"member_fraction must be in [0, 1], got {self.member_fraction!r}")
        for name in ("noise", "deformation", "bias", "brain_age_gap"):
            if numbers[name] < 0:
                raise InputError(f"{name} must be non-negative, got {getattr(self, name)!r}")
        object.__setattr__(self, "n_subjects", n_subjects)
        object.__setattr__(self, "seed", seed)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "age_range", age_range)
        for name, value in numbers.items():
            object.__setattr__(self, name, value)

    @property
    def affine(self) -> np.ndarray:
        """The voxel-to-MNI (RAS, mm) affine of the target grid."""
        return grid_affine(self.shape, self.voxel_size)


def grid_affine(shape: tuple[int, int, int], voxel_size: float) -> np.ndarray:
    """The RAS affine of a grid of ``shape`` voxels of ``voxel_size`` mm centred on MNI space.

    Args:
        shape: grid shape.
        voxel_size: isotropic voxel size in mm.

    Returns:
        A 4 x 4 float64 affine; for (91, 109, 91) at 2 mm it is ``diag(2, 2, 2)`` with
        offset (-90, -126, -72), the RAS equivalent of FSL's MNI152 2 mm grid.
    """
    affine = np.eye(4)
    affine[:3, :3] *= float(voxel_size)
    for axis in range(3):
        affine[axis, 3] = MNI_CENTRE_MM[axis] - float(voxel_size) * (int(shape[axis]) - 1) / 2.0
    return affine
