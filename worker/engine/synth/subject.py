"""One synthetic subject: the MNI152 template, aged, deformed, and acquired.

The steps, on the target grid:

1. **Brain age.** The subject's brain age is its chronological age plus a normal
   brain-age gap (``spec.brain_age_gap`` years); atrophy follows the brain age through
   ``a = ((age - 20) / 60) ** 1.5`` (0 at 20 years, 1 at 80: accelerating with age).
2. **Atrophy.** Tissue within ``3 a`` mm of sulcal or exterior CSF turns into CSF
   (cortical thinning and sulcal widening, varying smoothly over the cortex by +-25 %),
   the ventricles grow by ``4 a`` mm (times a subject factor, log-normal, sd 0.3),
   grey matter loses intensity and grey/white contrast falls with age.
3. **Site contrast** stretches intensities about grey matter.
4. **Anatomy.** A smooth random displacement (sd ``spec.deformation`` mm, 40 mm
   correlation, plus a finer 15 mm one at 40 % of it) and a global head-size scaling
   (women 1.5 % smaller, men 1.5 % larger, +-2 % each, clipped to +-5 %).
5. **Acquisition.** A smooth multiplicative bias field (log sd ``spec.bias``, 60 mm),
   Rician noise (sd ``spec.noise`` of white matter), skull stripping, and the site's
   global scaling; intensities are rounded (white matter ~ 1000), so they store exactly
   as int16.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from worker.engine.errors import InputError
from worker.engine.synth.fields import smooth_field
from worker.engine.synth.spec import SITES, CohortSpec, Site
from worker.engine.synth.template import template_on_grid

__all__ = ["atrophy_level", "synth_subject"]

CSF_LEVEL = 0.28  # T1 intensity of CSF relative to white matter (as in the template)
GM_PIVOT = 0.72  # intensity about which site contrast stretches
SULCAL_MM = 3.0  # cortical thinning / sulcal widening at a = 1
VENTRICLE_MM = 4.0  # ventricular expansion at a = 1
GM_FADE = 0.20  # fraction of grey matter intensity lost towards CSF at a = 1
WM_FADE = 0.06  # fraction of white matter intensity lost at a = 1
OUTPUT_SCALE = 1000.0  # white-matter intensity in the output


def atrophy_level(age: float | np.ndarray) -> float | np.ndarray:
    """Atrophy level ``a`` of a brain age: 0 up to 20 years, 1 at 80, accelerating."""
    return np.clip((np.asarray(age, dtype=np.float64) - 20.0) / 60.0, 0.0, None) ** 1.5


def _site(site: str | Site | None) -> Site:
    if isinstance(site, Site):
        return site
    if site is None:
        return SITES[0]
    for s in SITES:
        if s.name == site:
            return s
    raise InputError(f"unknown site {site!r}; expected one of {[s.name for s in SITES]}")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def synth_subject(
    age: float,
    rng: np.random.Generator,
    spec: CohortSpec,
    *,
    sex: str | None = None,
    site: str | Site | None = None,
) -> np.ndarray:
    """Synthesise one T1-weighted scan on the spec's grid.

    Args:
        age: chronological age in years.
        rng: random generator; the same state gives the same volume (it draws the same
            number of values for every grid, so the same state gives the same subject
            on a 2 mm and on a 4 mm grid, up to resolution and noise).
        spec: the cohort spec (grid, noise, deformation, bias, brain-age gap).
        sex: ``"F"``, ``"M"`` or None (neither: no sex effect on head size).
        site: a site name from :data:`~worker.engine.synth.spec.SITES` (default the first).

    Returns:
        float32 volume of shape ``spec.shape`` (RAS, affine ``spec.affine``), integer
        valued, zero outside the brain, white matter ~ 1000.
    """
    if not np.isfinite(age):
        raise InputError(f"age must be finite, got {age!r}")
    if sex not in (None, "F", "M"):
        raise InputError(f"sex must be 'F', 'M' or None, got {sex!r}")
    acq = _site(site)
    tpl = template_on_grid(spec.shape, spec.voxel_size)
    shape, vs = tpl.shape, tpl.voxel_size

    # subject-level draws (a fixed number, whatever the grid)
    brain_age = float(age) + spec.brain_age_gap * rng.standard_normal()
    a = float(atrophy_level(brain_age))
    sex_factor = {"F": 0.985, "M": 1.015, None: 1.0}[sex]
    head = float(np.clip(sex_factor * (1.0 + 0.02 * rng.standard_normal()), 0.95, 1.05))
    shift = 1.0 * rng.standard_normal(3)  # mm, residual misregistration
    ventricle_factor = float(np.exp(0.3 * rng.standard_normal()))
    thinning = smooth_field(rng, shape, vs, 30.0)[0]
    coarse = smooth_field(rng, shape, vs, 40.0, 3)
    fine = smooth_field(rng, shape, vs, 15.0, 3)
    log_bias = smooth_field(rng, shape, vs, 60.0)[0]

    # atrophy on the template grid
    width = 0.5 + 0.25 * vs  # mm; partial-volume width of a moving tissue boundary
    r_sulcal = SULCAL_MM * a * (1.0 + 0.25 * thinning)
    f_sulcal = _sigmoid((r_sulcal - tpl.d_sulcal) / width) * (1.0 - tpl.wm)
    r_ventricle = VENTRICLE_MM * a * ventricle_factor
    f_ventricle = _sigmoid((r_ventricle - tpl.d_ventricle) / width)
    keep = (1.0 - f_sulcal) * (1.0 - f_ventricle)  # tissue that stays tissue
    tissue = tpl.t1 - (GM_FADE * a) * (tpl.t1 - CSF_LEVEL * tpl.mask) * tpl.gm - (WM_FADE * a) * tpl.t1 * tpl.wm
    image = keep * tissue + (1.0 - keep) * CSF_LEVEL * tpl.mask
    # site contrast about grey matter, partial-volume aware: m * g(I / m)
    image = acq.contrast * image + (1.0 - acq.contrast) * GM_PIVOT * tpl.mask

    # anatomy: head size, misregistration, smooth deformation (in voxels of the grid)
    centre = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    disp = (spec.deformation / vs) * (coarse + 0.4 * fine)
    coords = np.indices(shape, dtype=np.float32)
    for axis in range(3):
        coords[axis] = centre[axis] + (coords[axis] - centre[axis]) / head + shift[axis] / vs + disp[axis]
    warped = ndimage.map_coordinates(image.astype(np.float32), coords, order=1, mode="constant", cval=0.0)

    # acquisition
    brain = warped > 0.45 * CSF_LEVEL
    signal = warped * np.exp((spec.bias * acq.bias) * log_bias)
    sigma = spec.noise * acq.noise
    n1 = rng.standard_normal(shape, dtype=np.float32)
    n2 = rng.standard_normal(shape, dtype=np.float32)
    noisy = np.sqrt((signal + sigma * n1) ** 2 + (sigma * n2) ** 2)
    out = np.where(brain, np.rint(noisy * (OUTPUT_SCALE * acq.scale)), 0.0)
    return out.astype(np.float32)
