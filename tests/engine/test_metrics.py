"""Attack metrics, bootstrap confidence intervals, ROC grid, slices, exposure and utility."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tests.engine.test_feature_sets import make_table
from worker.engine import metrics as M


def test_repeat_metrics_by_hand():
    y = np.array([1, 1, 0, 0])
    s = np.array([0.9, 0.4, 0.6, 0.1])
    pred = np.array([1, 0, 1, 0])
    m = M.repeat_metrics(y, s, pred)
    assert m["accuracy"] == 0.5 and m["balanced_accuracy"] == 0.5
    assert m["auc"] == pytest.approx(0.75)  # 3 of the 4 member/non-member pairs ordered right
    # FPR 0: only the member above every non-member (0.9) -> TPR 1/2
    assert M.tpr_at_fpr(y, s, 0.01) == 0.5 and M.tpr_at_fpr(y, s, 0.001) == 0.5
    # but 2 non-members cannot measure a 1% false-positive rate: undefined, not 0.5
    assert m["tpr_at_fpr_0.001"] is None and m["tpr_at_fpr_0.01"] is None
    assert list(m) == list(M.METRIC_NAMES)


def test_member_is_positive_flipping_labels_flips_auc():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(50, int), np.zeros(50, int)]
    s = rng.normal(size=100) + y
    a = M.repeat_metrics(y, s, (s > 0.5).astype(int))["auc"]
    b = M.repeat_metrics(1 - y, s, (s > 0.5).astype(int))["auc"]
    assert a > 0.7 and b == pytest.approx(1 - a)


def test_tpr_at_fpr_is_largest_tpr_within_fpr_budget():
    # 200 non-members 0..199, 10 members; at FPR <= 1% at most 2 false positives.
    non = np.arange(200, dtype=float)
    mem = np.array([500, 400, 198.5, 197.5, 196.5, 150, 100, 50, 10, 0.5])
    y = np.r_[np.zeros(200, int), np.ones(10, int)]
    s = np.r_[non, mem]
    # threshold just above the 3rd highest non-member (197): members > 197 -> 4 of 10
    assert M.tpr_at_fpr(y, s, 0.01) == pytest.approx(0.4)
    # FPR 0.001 -> no false positive allowed: members above 199 -> 2 of 10
    assert M.tpr_at_fpr(y, s, 0.001) == pytest.approx(0.2)
    assert M.tpr_at_fpr(y, s, 1.0) == 1.0


def test_bootstrap_matches_sklearn_on_the_resample():
    rng = np.random.default_rng(1)
    n1, n0, B = 37, 150, 6
    y = np.r_[np.ones(n1, int), np.zeros(n0, int)]
    s = np.round(rng.normal(size=n1 + n0) + 0.5 * y, 1)  # ties on purpose
    pred = (s > 0.3).astype(int)
    boot = M.bootstrap_metrics(y, s, pred, n_boot=B, seed=5)
    r = np.random.default_rng(5)
    W = r.multinomial(n1, np.full(n1, 1 / n1), size=B)
    V = r.multinomial(n0, np.full(n0, 1 / n0), size=B)
    for b in range(B):
        idx = np.r_[np.repeat(np.arange(n1), W[b]), n1 + np.repeat(np.arange(n0), V[b])]
        ref = M.repeat_metrics(y[idx], s[idx], pred[idx])
        for name in M.METRIC_NAMES:
            if ref[name] is None:  # not estimable on this many non-members (0.1% FPR on 150)
                assert np.isnan(boot[name][b]), name
            else:
                assert boot[name][b] == pytest.approx(ref[name], abs=1e-12), name


def test_summarize_mean_std_ci():
    out = M.summarize([0.6, 0.7, 0.8], [np.linspace(0, 1, 101)])
    assert out["mean"] == pytest.approx(0.7)
    assert out["std"] == pytest.approx(0.1)  # ddof=1
    assert out["ci_low"] == pytest.approx(0.025) and out["ci_high"] == pytest.approx(0.975)
    assert out["values"] == [0.6, 0.7, 0.8]
    one = M.summarize([0.6], [])
    assert one["std"] == 0.0 and one["ci_low"] is None
    assert M.summarize([float("nan")], [])["mean"] is None


def _null_outcomes(seed: int, repeats: int = 5, n: int = 150) -> list[M.RepeatOutcome]:
    rng = np.random.default_rng(seed)
    outs = []
    for r in range(repeats):
        y = np.r_[np.ones(n, int), np.zeros(n, int)]
        s = rng.uniform(size=2 * n)  # identical distributions for members and non-members
        outs.append(M.RepeatOutcome(np.arange(2 * n), y, s, (s >= 0.5).astype(int), seed * 100 + r))
    return outs


def test_auc_ci_contains_chance_for_null_data():
    covered = 0
    for seed in range(20):
        auc = M.attack_metrics(_null_outcomes(seed))["auc"]
        assert auc["ci_low"] < auc["ci_high"]
        covered += auc["ci_low"] <= 0.5 <= auc["ci_high"]
    assert covered >= 18  # fixed seeds: deterministic


def test_attack_metrics_keys_and_json():
    out = M.attack_metrics(_null_outcomes(0, repeats=3))
    assert set(out) == set(M.METRIC_NAMES)
    for summary in out.values():
        assert set(summary) == {"mean", "std", "ci_low", "ci_high", "values"}
        assert len(summary["values"]) == 3
    json.dumps(out, allow_nan=False)


def test_mean_roc_grid():
    outs = _null_outcomes(3, repeats=2)
    roc = M.mean_roc(outs)
    fpr, tpr = np.array(roc["fpr"]), np.array(roc["tpr"])
    assert fpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.all(np.diff(fpr) > 0) and np.all(np.diff(tpr) >= 0)
    assert np.isclose(fpr, 1e-3).any() and np.isclose(fpr, 1e-2).any() and (fpr < 0.01).sum() >= 10
    # each repeat's value at FPR 0.01 is its tpr_at_fpr
    expected = np.mean([M.tpr_at_fpr(o.y, o.score, 0.01) for o in outs])
    assert tpr[np.isclose(fpr, 0.01)][0] == pytest.approx(expected)
    # perfect attack
    y = np.r_[np.ones(10, int), np.zeros(10, int)]
    perfect = M.mean_roc([M.RepeatOutcome(np.arange(20), y, y + 0.1, y)])
    assert all(t == 1.0 for t in perfect["tpr"])


def test_accuracy_by_age_bin():
    ages = np.array([41, 45, 52, 59, 60, 77, 80])
    correct = np.array([1, 0, 1, 1, 0, 1, 1], bool)
    members = np.array([1, 0, 1, 0, 1, 0, 1])
    bins = M.accuracy_by_age_bin(ages, correct, members)
    assert [b["bin"] for b in bins] == ["40-50", "50-60", "60-70", "70-80", "80-90"]
    assert [b["n"] for b in bins] == [2, 2, 1, 1, 1]
    assert [b["accuracy"] for b in bins] == [0.5, 1.0, 0.0, 1.0, 1.0]
    assert bins[0]["low"] == 40 and bins[0]["high"] == 50 and bins[0]["n_members"] == 1
    custom = M.accuracy_by_age_bin(ages, correct, members, bins=[45, 60, 80])
    assert [b["bin"] for b in custom] == ["<45", "45-60", "60-80"]
    assert [b["n"] for b in custom] == [1, 3, 3]  # last bin closed: 80 included
    empty = M.accuracy_by_age_bin(ages, correct, members, bins=[0, 10, 100])
    assert empty[0]["n"] == 0 and empty[0]["accuracy"] is None


def test_accuracy_by_attribute():
    ft = make_table(5, 5)
    ft.table["sex"] = ["F", "M"] * 5
    ft.table.loc[9, "sex"] = None
    rows = np.array([0, 1, 2, 3, 9, 0])
    correct = np.array([1, 1, 0, 1, 0, 1], bool)
    out = M.accuracy_by_attribute(ft.table, ["sex", "site", "absent"], rows, correct)
    assert set(out) == {"sex", "site"}
    by = {g["value"]: g for g in out["sex"]}
    assert by["F"]["n"] == 3 and by["F"]["accuracy"] == pytest.approx(2 / 3)
    assert by["M"]["n"] == 2 and by["M"]["accuracy"] == 1.0
    assert by[None]["n"] == 1 and by[None]["accuracy"] == 0.0
    assert all(isinstance(g["value"], int) for g in out["site"])
    json.dumps(out)


def test_exposure_averages_over_tested_repeats():
    y = np.array([1, 0, 1, 0])
    o1 = M.RepeatOutcome(np.array([0, 1]), y[[0, 1]], np.array([0.8, 0.2]), np.array([1, 0]))
    o2 = M.RepeatOutcome(np.array([0, 3]), y[[0, 3]], np.array([0.6, 0.4]), np.array([1, 0]))
    exp = M.exposure(["a", "b", "c", "d"], y, [o1, o2])
    assert exp[0] == {"scan_id": "a", "member": 1, "score": pytest.approx(0.7), "n_tested": 2}
    assert exp[1]["score"] == pytest.approx(0.2) and exp[1]["n_tested"] == 1
    assert exp[2] == {"scan_id": "c", "member": 1, "score": None, "n_tested": 0}


def test_utility():
    ft = make_table(3, 2, white_box=False)
    ft.table["error"] = [1.0, -2.0, 3.0, -4.0, 6.0]
    u = M.utility(ft)
    assert u == {"mae_members": 2.0, "mae_nonmembers": 5.0, "n_members": 3, "n_nonmembers": 2,
                 "mae_gap": 3.0}


def test_auc_point_estimate_is_sklearn():
    rng = np.random.default_rng(4)
    y = np.r_[np.ones(30, int), np.zeros(40, int)]
    s = rng.normal(size=70) + y
    assert M.repeat_metrics(y, s, (s > 0).astype(int))["auc"] == pytest.approx(roc_auc_score(y, s))


def test_tpr_at_low_fpr_needs_enough_non_members() -> None:
    assert not M.estimable(99, 0.01) and M.estimable(100, 0.01) and M.estimable(1000, 0.001)
    rng = np.random.default_rng(0)
    for n0, defined in ((50, False), (100, True)):
        y = np.r_[np.ones(n0), np.zeros(n0)].astype(int)
        s = rng.random(2 * n0)
        m = M.repeat_metrics(y, s, (s > 0.5).astype(int))
        assert (m["tpr_at_fpr_0.01"] is not None) == defined
        boot = M.bootstrap_metrics(y, s, (s > 0.5).astype(int), n_boot=20)
        assert np.isfinite(boot["tpr_at_fpr_0.01"]).all() == defined
        summary = M.attack_metrics([M.RepeatOutcome(test=np.arange(2 * n0), y=y, score=s, pred=(s > 0.5).astype(int), seed=0)])
        assert (summary["tpr_at_fpr_0.01"]["ci_low"] is not None) == defined
