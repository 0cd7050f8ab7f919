"""Federated attacks: draws, the shared-scan bootstrap, and attacks on a trained federation."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from tests.conftest import TINY_SHAPE, TINY_VOXEL
from worker.engine.errors import BrainMIAError, InputError
from worker.engine.features import ExtractionOptions
from worker.engine.federated import (
    FederatedAttackOptions,
    FederatedDemoOptions,
    check_draw,
    draw_attacks,
    prepare_federated_demo,
    round_features,
    run_federated_assessment,
    run_federated_attacks,
    split_federation,
)
from worker.engine.federated.bootstrap import weighted_metrics
from worker.engine.manifest import Manifest
from worker.engine.metrics import bootstrap_metrics

# ---------------------------------------------------------------- draws and bootstrap


@pytest.mark.parametrize("sizes,unseen_fraction", [("uniform", 0.5), ("skewed", 0.5), ("skewed", 0.25)])
def test_attackers_never_test_on_their_own_or_training_scans(sizes, unseen_fraction):
    ages = np.random.default_rng(4).uniform(45, 80, 120)
    split = split_federation(ages, 6, sizes, "noniid", unseen_fraction, seed=4)
    learner_of = np.array(split.assignment, dtype=object)
    draws = draw_attacks(learner_of, ages, repeats=2, seed=1)
    assert len(draws) == 6 * 2
    for d in draws:
        own = set(split.indices(d.attacker))
        train = set(d.train.tolist())
        assert set(d.tests) == set(split.learners) - {d.attacker}
        for victim, rows in d.tests.items():
            rows = set(rows.tolist())
            assert not rows & own and not rows & train
            assert {learner_of[i] for i in rows} == {victim, None}
            members = sorted(ages[[i for i in rows if learner_of[i] is not None]])
            matched = sorted(ages[[i for i in rows if learner_of[i] is None]])
            assert len(members) == len(matched)
            if unseen_fraction == 0.5:  # a dense unseen pool: age-matched unseen scans
                assert np.abs(np.array(members) - np.array(matched)).mean() < 2.0
    bad = replace(draws[0], tests={**draws[0].tests, "x": draws[0].train})
    with pytest.raises(BrainMIAError, match="own scans"):
        check_draw(bad, learner_of)


def test_weighted_metrics_equal_bootstrap_metrics_under_multinomial_weights():
    rng = np.random.default_rng(0)
    y = rng.permutation(np.r_[np.ones(43, int), np.zeros(131, int)])  # TPR at 1% FPR estimable, 0.1% not
    score = np.round(rng.normal(size=174) + 0.8 * y, 1)  # ties too
    pred = (score > 0.4).astype(int)
    ref = bootstrap_metrics(y, score, pred, n_boot=50, seed=9)
    draw = np.random.default_rng(9)
    W = draw.multinomial(43, np.full(43, 1 / 43), size=50)
    V = draw.multinomial(131, np.full(131, 1 / 131), size=50)
    ours = weighted_metrics(y, score, pred, W, V)
    assert np.isnan(ours["tpr_at_fpr_0.001"]).all() and not np.isnan(ours["tpr_at_fpr_0.01"]).any()
    for name, values in ref.items():
        assert np.allclose(ours[name], values, equal_nan=True), name


# ---------------------------------------------------------------- attacks on a trained federation


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory):
    """4 IID learners x 6 scans, 48 unseen scans, 60 short FedAvg rounds on the 8 mm grid."""
    opts = FederatedDemoOptions(scans_per_learner=6, local_epochs=1, unseen_fraction=2 / 3, shape=TINY_SHAPE,
                                voxel_size=TINY_VOXEL, channels=(8, 16, 32), seed=3)
    return prepare_federated_demo(tmp_path_factory.mktemp("fed"), learners=4, rounds=60, sizes="uniform",
                                  ages="iid", options=opts)


FAST = dict(repeats=3, rounds=[20, 40, 60], n_boot=100, extraction=ExtractionOptions(layers=()))


def test_federated_attacks_beat_chance(federation):
    manifest = federation.manifest
    assert len(federation.model_paths) == 60
    assert federation.history[-1]["mae_members"] < federation.history[-1]["mae_unseen"]
    result = run_federated_assessment(federation.model_paths, manifest, FederatedAttackOptions(**FAST))
    json.dumps(result.report, allow_nan=False)
    sec = result.section
    assert sec["learners"] == [f"learner-{i}" for i in range(1, 5)] and sec["rounds"] == 60
    assert sec["rounds_used"] == [20, 40, 60] and [p["round"] for p in sec["per_round"]] == [20, 40, 60]
    acc = np.array(sec["matrix"]["accuracy"], dtype=float)
    assert acc.shape == (4, 4) and np.isnan(np.diag(acc)).all() and not np.isnan(acc[~np.eye(4, dtype=bool)]).any()
    assert set(sec["matrix_ci"]["auc"]) == {"low", "high"}
    assert [a["learner"] for a in sec["per_attacker"]] == sec["learners"]
    assert [s["learner"] for s in sec["learner_summary"]] == [*sec["learners"], None]
    assert sec["learner_summary"][0]["n_scans"] == 6 and sec["learner_summary"][-1]["n_scans"] == 48
    sections = {s["name"]: s for s in [*sec["final_round"]["attacks"], *sec["trajectory"]["attacks"]]}
    assert sections["final/error/threshold"]["overall"]["auc"]["ci_low"] > 0.5  # black-box, final round
    assert max(s["overall"]["accuracy"]["mean"] for s in sections.values()) > 0.7
    assert sections["trajectory/loss-trajectory/logistic"]["rounds"] == [20, 60]  # 2 points for 12 training scans
    assert sec["attack"] == result.report["verdict"]["strongest_attack"]
    assert [a["name"] for a in result.report["attacks"]] == list(sections)
    assert all(a["status"] == "ok" and a["scope"] in ("final", "trajectory") for a in result.report["attacks"])
    # a leaking federation is never cleared; with bounds that hold over every attack together, a
    # federation this small (6 scans a learner) may stop at inconclusive rather than medium
    assert result.report["verdict"]["level"] in ("inconclusive", "medium", "high") and not result.passed
    assert "membership_score" in result.features.table
    assert result.report["provenance"]["model"]["rounds"][-1]["round"] == 60


def _relabelled(manifest: Manifest) -> Manifest:
    """Every other unseen scan by age becomes a 'fake' learner's: victims the models never saw."""
    unseen = sorted((r for r in manifest.records if r.learner is None), key=lambda r: r.age)
    fake = {r.scan_id: f"fake-{i % 4 + 1}" for i, r in enumerate(unseen[::2])}
    records = [replace(r, learner=fake[r.scan_id], member=True) if r.scan_id in fake else r for r in manifest.records]
    return replace(manifest, records=records)


def test_victims_the_model_never_saw_score_chance(federation):
    manifest = _relabelled(federation.manifest)
    real = sorted({r.learner for r in federation.manifest.records if r.learner})
    fakes = sorted({r.learner for r in manifest.records if r.learner and r.learner.startswith("fake")})
    options = FederatedAttackOptions(**{**FAST, "rounds": [60]}, feature_sets=("error", "grad-norm"),
                                     trajectory_sets=(),
                                     attackers=real, victims=fakes)
    tables = round_features(federation.model_paths, manifest, options)
    result = run_federated_attacks(tables, manifest, options)
    for draw in result.draws:
        assert set(draw.tests) == set(fakes)
    for section in result.section["final_round"]["attacks"]:
        overall = section["overall"]
        assert overall["accuracy"]["ci_low"] <= 0.5 <= overall["accuracy"]["ci_high"], section["name"]
        assert overall["auc"]["ci_low"] <= 0.5 <= overall["auc"]["ci_high"], section["name"]
        assert abs(overall["accuracy"]["mean"] - 0.5) < 0.1
    acc = np.array(result.section["matrix"]["accuracy"], dtype=float)
    learners = result.section["learners"]
    assert np.isnan(acc[[learners.index(f) for f in fakes]]).all()  # fake learners do not attack


def test_later_rounds_read_the_scans_in_this_process_from_memory(federation, tmp_path):
    """The loader workers decode the scans once (the first round used), filling the disk cache;
    the next round reads each scan from that cache once, in this process, and keeps it in memory
    for the rest; the features equal those of a run without workers."""
    from worker.engine.cache import VolumeCache

    manifest, n = federation.manifest, len(federation.manifest.records)
    tables = {}
    for workers in (1, 0):
        cache = VolumeCache(tmp_path / f"cache{workers}")
        options = FederatedAttackOptions(**{**FAST, "extraction": ExtractionOptions(layers=(), batch_size=8,
                                                                                    num_workers=workers)})
        tables[workers] = round_features(federation.model_paths, manifest, options, cache=cache)
        # workers: round 20 decodes (in them), 40 reads the disk, 60 memory; else 20 decodes, 40 and 60 memory
        assert (cache.stats.misses, cache.stats.hits) == (n, n if workers else 0), vars(cache.stats)
    assert sorted(tables[1]) == [20, 40, 60]
    for r, table in tables[1].items():
        pd.testing.assert_frame_equal(table.table, tables[0][r].table)


def test_bad_federated_manifest(federation):
    records = [replace(r, learner=None) if r.learner == "learner-2" else r for r in federation.manifest.records]
    with pytest.raises(InputError, match="has no learner"):
        run_federated_assessment(federation.model_paths, replace(federation.manifest, records=records))
    with pytest.raises(InputError, match="outside 1..60"):
        run_federated_assessment(federation.model_paths, federation.manifest, FederatedAttackOptions(rounds=[61]))
