"""Synthetic federations: learner sizes, age schemes, unseen scans, the federated cohort on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_SHAPE, TINY_VOXEL
from worker.engine.errors import InputError
from worker.engine.federated import learner_sizes, split_federation, write_federated_cohort
from worker.engine.manifest import load_manifest
from worker.engine.synth import CohortSpec


def _ranges(split, ages):
    return {name: (ages[split.indices(name)].min(), ages[split.indices(name)].max()) for name in split.learners}


def test_uniform_split_sizes_and_unseen():
    ages = np.random.default_rng(0).uniform(45, 80, 203)
    split = split_federation(ages, learners=8, sizes="uniform", ages="iid", unseen_fraction=0.5, seed=1)
    sizes = np.array(list(split.sizes().values()))
    assert len(split.unseen) == 102  # round(203 * 0.5), half up
    assert sizes.sum() + len(split.unseen) == 203 and sizes.max() - sizes.min() <= 1
    assert all(split.assignment[i] is None for i in split.unseen)
    # unseen scans cover the whole age range
    unseen_ages = ages[split.unseen]
    assert unseen_ages.min() - ages.min() < 2 and ages.max() - unseen_ages.max() < 2
    # deterministic by seed
    assert split_federation(ages, 8, "uniform", "iid", 0.5, seed=1) == split


def test_skewed_sizes():
    sizes = learner_sizes(400, 8, "skewed", rng=np.random.default_rng(0))
    assert sizes.sum() == 400 and sizes.min() >= 2
    assert sizes.max() / sizes.min() >= 5  # DEFAULT_SKEW 8, up to the floor of 2 and rounding
    assert sorted(sizes.tolist()) != sorted(learner_sizes(400, 8, "uniform").tolist())
    assert learner_sizes(20, 8, "skewed").min() == 2
    with pytest.raises(InputError, match="too few"):
        learner_sizes(10, 8, "uniform")
    with pytest.raises(InputError, match="unknown size scheme"):
        learner_sizes(100, 8, "lopsided")


def test_noniid_learners_hold_disjoint_age_ranges_and_iid_do_not():
    ages = np.random.default_rng(2).uniform(45, 80, 160)
    noniid = split_federation(ages, 8, "skewed", "noniid", 0.5, seed=3)
    ranges = sorted(_ranges(noniid, ages).values())
    assert all(hi <= next_lo for (_, hi), (next_lo, _) in zip(ranges, ranges[1:]))
    iid = split_federation(ages, 8, "uniform", "iid", 0.5, seed=3)
    spans = [hi - lo for lo, hi in _ranges(iid, ages).values()]
    assert min(spans) > 15  # each IID learner spans a large part of 45-80
    with pytest.raises(InputError, match="unknown age scheme"):
        split_federation(ages, 8, "uniform", "by-site")


def test_write_federated_cohort(tmp_path: Path):
    spec = CohortSpec(n_subjects=24, shape=TINY_SHAPE, voxel_size=TINY_VOXEL, seed=5)
    manifest = load_manifest(write_federated_cohort(tmp_path, spec, learners=4, sizes="uniform", ages="noniid",
                                                    unseen_fraction=0.5))
    learners = {r.learner for r in manifest.records if r.learner}
    assert len(learners) == 4 and manifest.n_members == 12 and manifest.n_nonmembers == 12
    assert all(r.member is (r.learner is not None) for r in manifest.records)
    assert {"sex", "site"} <= set(manifest.attribute_names)
    # split.apply gives the same labels on the manifest's records
    split = split_federation(manifest, 4, "uniform", "noniid", 0.5, seed=5)
    assert [r.learner for r in split.apply(manifest.records)] == [r.learner for r in manifest.records]
