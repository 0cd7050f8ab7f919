"""Tests of the synthetic cohort generator (worker.engine.synth)."""

from __future__ import annotations

import csv
import filecmp
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import stats

from worker.engine.errors import InputError
from worker.engine.synth import (
    MANIFEST_COLUMNS,
    SITES,
    CohortSpec,
    cohort_subjects,
    generate_cohort,
    grid_affine,
    subject_rng,
    synth_subject,
    template_on_grid,
)

COARSE = {"shape": (23, 27, 23), "voxel_size": 8.0}
MEDIUM = {"shape": (45, 54, 45), "voxel_size": 4.0}


def _read_manifest(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_grid_affine_is_fsl_mni_2mm_in_ras() -> None:
    expected = np.diag([2.0, 2.0, 2.0, 1.0])
    expected[:3, 3] = (-90.0, -126.0, -72.0)
    np.testing.assert_array_equal(grid_affine((91, 109, 91), 2.0), expected)
    np.testing.assert_array_equal(CohortSpec().affine, expected)


@pytest.mark.parametrize(("shape", "voxel_size"), [((45, 54, 45), 4.0), ((23, 27, 23), 8.0), ((182, 218, 182), 1.0)])
def test_other_grids_share_the_mni_field_of_view_centre(shape: tuple[int, int, int], voxel_size: float) -> None:
    affine = grid_affine(shape, voxel_size)
    centre = affine @ np.r_[(np.asarray(shape) - 1) / 2.0, 1.0]
    np.testing.assert_allclose(centre[:3], (0.0, -18.0, 18.0))
    np.testing.assert_allclose(np.diag(affine)[:3], voxel_size)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_subjects": 0},
        {"shape": (10, 10)},
        {"shape": (10, 0, 10)},
        {"voxel_size": 0.0},
        {"age_range": (80.0, 45.0)},
        {"member_fraction": 1.5},
        {"noise": -0.1},
        {"seed": -1},
        {"voxel_size": float("nan")},
    ],
)
def test_bad_spec_is_an_input_error(kwargs: dict) -> None:
    with pytest.raises(InputError):
        CohortSpec(**kwargs)


def test_template_grid_is_cached_and_read_only() -> None:
    grid = template_on_grid((23, 27, 23), 8.0)
    assert template_on_grid((23, 27, 23), 8.0) is grid
    assert grid.t1.shape == (23, 27, 23) and grid.t1.dtype == np.float32
    assert not grid.t1.flags.writeable
    # the brain (about 1.9 l in the template) survives resampling
    assert 1700 < grid.mask.sum() * 8.0**3 / 1000 < 2100


def test_synth_subject_is_deterministic_and_subject_specific() -> None:
    spec = CohortSpec(**MEDIUM)
    a = synth_subject(60.0, np.random.default_rng(1), spec, sex="F", site="site-A")
    b = synth_subject(60.0, np.random.default_rng(1), spec, sex="F", site="site-A")
    c = synth_subject(60.0, np.random.default_rng(2), spec, sex="F", site="site-A")
    assert a.tobytes() == b.tobytes()
    assert a.dtype == np.float32 and a.shape == spec.shape
    np.testing.assert_array_equal(a, np.rint(a))  # stores exactly as int16
    assert a.min() == 0.0 and 500 < np.median(a[a > 0]) < 1500
    # two subjects of the same age differ visibly: brains overlap imperfectly
    brain_a, brain_c = a > 0, c > 0
    dice = 2 * (brain_a & brain_c).sum() / (brain_a.sum() + brain_c.sum())
    assert dice < 0.97
    assert np.abs(a - c).mean() > 0.05 * np.median(a[a > 0])


def test_older_brains_have_more_csf() -> None:
    spec = CohortSpec(**MEDIUM, brain_age_gap=0.0)
    csf_fraction = []
    for age in (45.0, 60.0, 80.0):
        v = synth_subject(age, np.random.default_rng(3), spec, sex="M", site="site-A")
        brain = v[v > 0]
        csf_fraction.append(float((brain < 0.5 * np.percentile(brain, 90)).mean()))
    assert csf_fraction[0] < csf_fraction[1] < csf_fraction[2]


def test_same_draws_give_the_same_subject_on_two_grids() -> None:
    fine = synth_subject(70.0, np.random.default_rng(5), CohortSpec(), site="site-A")
    coarse = synth_subject(70.0, np.random.default_rng(5), CohortSpec(**MEDIUM), site="site-A")
    # 2 mm voxel 2j+1 sits at the centre of 4 mm voxel j
    downsampled = fine[1::2, 1::2, 1::2][:45, :54, :45]
    brain = (downsampled > 0) & (coarse > 0)
    assert np.corrcoef(downsampled[brain], coarse[brain])[0, 1] > 0.8


def test_unknown_site_or_sex_is_an_input_error() -> None:
    spec = CohortSpec(**COARSE)
    with pytest.raises(InputError):
        synth_subject(60.0, np.random.default_rng(0), spec, site="nowhere")
    with pytest.raises(InputError):
        synth_subject(60.0, np.random.default_rng(0), spec, sex="X")


def test_membership_is_exact_and_balanced_in_age() -> None:
    subjects = cohort_subjects(CohortSpec(n_subjects=400, seed=3))
    member = np.array([s.member for s in subjects])
    ages = np.array([s.age for s in subjects])
    assert member.sum() == 200
    assert stats.ks_2samp(ages[member], ages[~member]).pvalue > 0.9
    assert 45.0 <= ages.min() and ages.max() <= 80.0
    assert {s.sex for s in subjects} == {"F", "M"}
    assert {s.site for s in subjects} == {site.name for site in SITES}
    assert len({s.scan_id for s in subjects}) == 400


@pytest.mark.parametrize(("fraction", "expected"), [(0.0, 0), (0.3, 30), (0.5, 50), (1.0, 100)])
def test_member_fraction(fraction: float, expected: int) -> None:
    subjects = cohort_subjects(CohortSpec(n_subjects=100, member_fraction=fraction))
    assert sum(s.member for s in subjects) == expected


def test_generate_cohort_writes_scans_and_manifest(tmp_path: Path) -> None:
    spec = CohortSpec(n_subjects=6, seed=7, **COARSE)
    calls: list[tuple[int, int]] = []
    manifest = generate_cohort(tmp_path / "cohort", spec, progress=lambda done, total: calls.append((done, total)))

    assert manifest == tmp_path / "cohort" / "manifest.csv"
    assert calls == [(i, 6) for i in range(1, 7)]
    with manifest.open(newline="") as f:
        assert next(csv.reader(f)) == list(MANIFEST_COLUMNS)
    rows = _read_manifest(manifest)
    assert [r["scan_id"] for r in rows] == [f"sub-{i:04d}" for i in range(1, 7)]
    assert sum(int(r["member"]) for r in rows) == 3
    assert {r["sex"] for r in rows} <= {"F", "M"}
    assert {r["site"] for r in rows} <= {site.name for site in SITES}
    assert sorted(p.name for p in (tmp_path / "cohort").iterdir()) == ["manifest.csv", "scans"]

    subjects = cohort_subjects(spec)
    for row, subject in zip(rows, subjects):
        path = manifest.parent / row["path"]
        assert row["path"] == f"scans/{row['scan_id']}.nii.gz"
        img = nib.load(path)
        assert img.shape == spec.shape
        assert img.get_data_dtype() == np.int16
        np.testing.assert_array_equal(img.affine, spec.affine)
        assert int(img.header["sform_code"]) == 4  # MNI152
        assert float(row["age"]) == subject.age
        expected = synth_subject(subject.age, subject_rng(spec, subject.index), spec, sex=subject.sex, site=subject.site)
        np.testing.assert_array_equal(np.asanyarray(img.dataobj), expected)


def test_generate_cohort_is_byte_identical_by_seed(tmp_path: Path) -> None:
    spec = CohortSpec(n_subjects=4, seed=11, **COARSE)
    first = generate_cohort(tmp_path / "a", spec)
    second = generate_cohort(tmp_path / "b", spec)
    other = generate_cohort(tmp_path / "c", CohortSpec(n_subjects=4, seed=12, **COARSE))
    assert first.read_bytes() == second.read_bytes()
    names = [r["path"] for r in _read_manifest(first)]
    for name in names:
        assert filecmp.cmp(first.parent / name, second.parent / name, shallow=False)
    assert any(not filecmp.cmp(first.parent / n, other.parent / n, shallow=False) for n in names)


def test_generate_cohort_refuses_an_unwritable_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError):
        generate_cohort(blocker, CohortSpec(n_subjects=1, **COARSE))


def _tissue_histogram(volume: np.ndarray, bins: int = 24) -> np.ndarray:
    """Brain intensities relative to the median: a few tissue-composition features."""
    brain = volume[volume > 0]
    counts, _ = np.histogram(brain / np.median(brain), bins=bins, range=(0.0, 1.6))
    return counts / brain.size


def test_age_is_learnable_by_ridge_regression() -> None:
    """Acceptance: a ridge regression on 60 subjects predicts the age of 20 others.

    The features are a histogram of brain intensities (tissue composition), which the
    subject-specific deformation leaves alone; a voxelwise ridge needs far more than 60
    subjects to see through the deformation.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    spec = CohortSpec(n_subjects=80, seed=0, **MEDIUM)
    subjects = cohort_subjects(spec)
    features = np.stack(
        [
            _tissue_histogram(synth_subject(s.age, subject_rng(spec, s.index), spec, sex=s.sex, site=s.site))
            for s in subjects
        ]
    )
    ages = np.array([s.age for s in subjects])
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 5, 17)))
    model.fit(features[:60], ages[:60])
    mae = float(np.abs(model.predict(features[60:]) - ages[60:]).mean())
    assert mae < 0.6 * ages.std()
