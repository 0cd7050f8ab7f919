"""Synthetic brain-age cohorts built from the MNI152 template shipped with nilearn.

:func:`generate_cohort` writes NIfTI scans and a manifest (``scan_id, path, age,
member, sex, site``); :func:`synth_subject` makes one scan in memory. Subjects age
(cortical thinning, sulcal widening, ventricular growth, grey-matter fading), differ
by a smooth deformation, head size, brain-age gap, bias field and noise, and come
from a few sites with small intensity effects. Everything is deterministic by seed.
"""

from __future__ import annotations

from worker.engine.synth.cohort import (
    MANIFEST_COLUMNS,
    SubjectInfo,
    cohort_subjects,
    generate_cohort,
    save_scan,
    subject_rng,
)
from worker.engine.synth.spec import SITES, CohortSpec, Site, grid_affine
from worker.engine.synth.subject import atrophy_level, synth_subject
from worker.engine.synth.template import TemplateGrid, template_on_grid

__all__ = [
    "MANIFEST_COLUMNS",
    "SITES",
    "CohortSpec",
    "Site",
    "SubjectInfo",
    "TemplateGrid",
    "atrophy_level",
    "cohort_subjects",
    "generate_cohort",
    "grid_affine",
    "save_scan",
    "subject_rng",
    "synth_subject",
    "template_on_grid",
]
