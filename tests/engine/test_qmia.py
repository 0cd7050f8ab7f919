"""QMIA (worker/engine/quantile): calibration, power, null, cross-fitting, determinism, entries.

Simulations with known answers: the non-member score's mean and spread depend on age
(heteroscedastic); members' scores are shifted up by a known delta.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from worker.engine import metrics as M
from worker.engine.errors import InputError
from worker.engine.features.table import FeatureTable
from worker.engine.quantile import core
from worker.engine.quantile import (
    QMIA_ATTACKS, clopper_pearson, conformal_quantile, qmia, qmia_entry, run_qmia_attacks,
)
from worker.engine.report_model import Attack

REPS = 20
ALPHAS = (0.01, 0.05, 0.1)


def hetero_scores(seed: int, n0: int = 1000, n1: int = 1000, delta: float = 1.0):
    """Age-dependent mean (peaked at 50) and spread (0.3 at 20 to 3.3 at 80); members + delta."""
    r = np.random.default_rng(seed)
    age = r.uniform(20, 80, n0 + n1)
    y = np.r_[np.zeros(n0, int), np.ones(n1, int)]
    mean = -2.0 * ((age - 50) / 10) ** 2
    sd = 0.3 + 3.0 * ((age - 20) / 60) ** 2
    return age[:, None], mean + sd * r.standard_normal(n0 + n1) + delta * y, y


def brain_age_table(seed: int, n0: int = 300, n1: int = 300, shrink: float = 0.6, null: bool = False,
                    grad: bool = True) -> FeatureTable:
    """A brain-age-like feature table: regression to the mean, error growing with age; members'
    errors shrunk by ``shrink`` (unless ``null``); gradient norms proportional to the error."""
    r = np.random.default_rng(seed)
    n = n0 + n1
    age = r.uniform(20, 85, n)
    y = np.r_[np.zeros(n0, int), np.ones(n1, int)]
    err = -0.25 * (age - 52) + (2.0 + 0.08 * (age - 20)) * r.standard_normal(n)
    if not null:
        err = np.where(y == 1, shrink * err, err)
    t = pd.DataFrame({"scan_id": [f"s{i:04d}" for i in range(n)], "member": y, "age": age,
                      "prediction": age + err, "error": err, "sex": r.choice(["F", "M"], n)})
    if grad:
        for layer, scale in (("conv1", 3.0), ("output", 0.5)):
            t[f"grad_norm:{layer}"] = scale * np.abs(err) * np.exp(0.2 * r.standard_normal(n))
    return FeatureTable(t, attributes=["sex"])


# --------------------------------------------------------------------------- the interval and the threshold


def test_clopper_pearson_matches_closed_forms() -> None:
    n = 50
    assert clopper_pearson(0, n) == (0.0, pytest.approx(1 - 0.025 ** (1 / n)))
    assert clopper_pearson(n, n) == (pytest.approx(0.025 ** (1 / n)), 1.0)
    low, high = clopper_pearson(5, 100)
    assert 0.016 < low < 0.017 and 0.112 < high < 0.113  # the textbook 95% interval of 5/100


def test_conformal_quantile_rank() -> None:
    vals = np.arange(1.0, 200.0)  # 199 values
    assert conformal_quantile(vals, 0.05) == 190.0  # ceil(0.95 * 200) = 190th smallest
    assert math.isinf(conformal_quantile(vals[:50], 0.01))  # 1 / alpha - 1 > n: unattainable


# --------------------------------------------------------------------------- calibration and power


@pytest.fixture(scope="module")
def hetero_runs() -> dict[str, list]:
    runs: dict[str, list] = {"quantile": [], "gaussian": [], "raw_auc": [], "y": []}
    for rep in range(REPS):
        X, s, y = hetero_scores(rep)
        runs["raw_auc"].append(roc_auc_score(y, s))
        runs["y"].append(y)
        for variant in ("quantile", "gaussian"):
            runs[variant].append(qmia(X, s, y, alpha_grid=ALPHAS, seed=rep, variant=variant))
    return runs


@pytest.mark.parametrize("variant", ["quantile", "gaussian"])
def test_observed_fpr_is_calibrated(hetero_runs: dict, variant: str) -> None:
    """At each alpha, alpha lies in the held-out FPR's Clopper-Pearson interval in >= 85% of runs."""
    rows = np.array([[c["calibrated"] for c in res.calibration] for res in hetero_runs[variant]])
    coverage = rows.mean(axis=0)
    assert (coverage >= 0.85).all(), dict(zip(ALPHAS, coverage))
    fpr = np.array([[c["fpr"] for c in res.calibration] for res in hetero_runs[variant]]).mean(axis=0)
    assert np.allclose(fpr, ALPHAS, rtol=0.25), fpr  # mean observed FPR close to alpha
    for res in hetero_runs[variant]:
        for row, a in zip(res.calibration, ALPHAS):
            assert row["alpha"] == a and row["n_nonmembers"] == 1000 and row["attainable"]
            assert row["fpr_ci_low"] <= row["fpr"] <= row["fpr_ci_high"]
            assert row["tpr"] > row["fpr"]  # members shifted up are flagged more often


def test_calibration_beats_the_uncalibrated_score(hetero_runs: dict) -> None:
    """Age-dependent difficulty: z = (score - mu(age)) / sigma(age) ranks far better than the score."""
    qmia_auc = np.array([roc_auc_score(y, res.z) for y, res in zip(hetero_runs["y"], hetero_runs["gaussian"])])
    raw_auc = np.array(hetero_runs["raw_auc"])
    assert (qmia_auc - raw_auc > 0.1).all(), (qmia_auc, raw_auc)
    assert qmia_auc.mean() > 0.72 and raw_auc.mean() < 0.6


# --------------------------------------------------------------------------- null


def test_null_auc_interval_contains_half() -> None:
    """Members drawn like non-members: the AUC's 95% interval contains 0.5 in >= 90% of runs."""
    misses = 0
    for rep in range(REPS):
        X, s, y = hetero_scores(100 + rep, n0=400, n1=400, delta=0.0)
        res = qmia(X, s, y, alpha_grid=(0.5,), seed=rep, variant="gaussian")
        auc = M.attack_metrics([M.RepeatOutcome(np.arange(len(y)), y, res.z, res.flag(0.5), rep)])["auc"]
        misses += not (auc["ci_low"] <= 0.5 <= auc["ci_high"])
    assert misses <= 0.1 * REPS


def test_null_entry_is_not_a_finding() -> None:
    ft = brain_age_table(7, null=True)
    entry, _ = qmia_entry(ft, "qmia", seed=7, n_boot=200, alpha_grid=(0.05,))
    auc = entry["metrics"]["auc"]
    assert auc["ci_low"] <= 0.5 <= auc["ci_high"]
    half = next(c for c in entry["calibration_gaussian"] if c["alpha"] == 0.5)
    assert half["calibrated"]  # the pred rule flags about half of the non-members


# --------------------------------------------------------------------------- cross-fitting


class _Memoriser:
    """Predicts SEEN for the rows it was fitted on and 0 elsewhere; records every fit."""

    SEEN = 1e6
    fits: list[set] = []

    def __init__(self, **_: object) -> None:
        self.rows: set = set()

    def fit(self, X: np.ndarray, s: np.ndarray) -> "_Memoriser":
        self.rows = {int(i) for i in X[:, 0]}
        _Memoriser.fits.append(self.rows)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.array([self.SEEN if int(i) in self.rows else 0.0 for i in X[:, 0]])


@pytest.mark.parametrize("variant", ["quantile", "gaussian"])
@pytest.mark.parametrize("member_scoring", ["fold", "average"])
def test_no_scan_is_scored_by_a_regressor_fitted_on_it(monkeypatch, variant: str, member_scoring: str) -> None:
    monkeypatch.setattr(core, "_hgb", lambda *a, **kw: _Memoriser())
    _Memoriser.fits = []
    r = np.random.default_rng(0)
    n0, n1 = 60, 40
    y = np.r_[np.zeros(n0, int), np.ones(n1, int)]
    X = np.column_stack([np.arange(n0 + n1), r.uniform(20, 80, n0 + n1)])  # column 0: the scan's id
    res = qmia(X, r.standard_normal(n0 + n1), y, alpha_grid=(0.1, 0.5), seed=3, variant=variant,
               member_scoring=member_scoring)
    assert np.abs(res.thresholds).max() < _Memoriser.SEEN / 10  # no memorised prediction was used
    if variant == "gaussian":
        assert np.abs(res.mu).max() < _Memoriser.SEEN / 10
    members = set(range(n0, n0 + n1))
    assert _Memoriser.fits and all(not (f & members) for f in _Memoriser.fits)  # fitted on non-members only
    folds = res.folds[:n0]
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 1  # balanced folds
    if member_scoring == "fold":
        assert np.bincount(res.folds[n0:]).max() - np.bincount(res.folds[n0:]).min() <= 1
    else:
        assert (res.folds[n0:] == -1).all()


# --------------------------------------------------------------------------- determinism and errors


def test_deterministic_with_a_seed() -> None:
    X, s, y = hetero_scores(3, n0=200, n1=100)
    a = qmia(X, s, y, alpha_grid=ALPHAS, seed=11, variant="gaussian")
    b = qmia(X, s, y, alpha_grid=ALPHAS, seed=11, variant="gaussian")
    c = qmia(X, s, y, alpha_grid=ALPHAS, seed=12, variant="gaussian")
    assert np.array_equal(a.thresholds, b.thresholds) and np.array_equal(a.z, b.z)
    assert a.calibration == b.calibration and np.array_equal(a.folds, b.folds)
    assert not np.array_equal(a.folds, c.folds)
    ft = brain_age_table(3, n0=80, n1=80)
    e1 = run_qmia_attacks(ft, ["qmia"], seed=5, n_boot=50)
    e2 = run_qmia_attacks(ft, ["qmia"], seed=5, n_boot=50)
    for e in (e1[0], e2[0]):
        e.pop("duration_s")
    assert e1 == e2


def test_too_few_nonmembers_is_an_input_error() -> None:
    X, s, y = hetero_scores(0, n0=9, n1=30)
    with pytest.raises(InputError, match=r"at least 10 non-members .* got 9"):
        qmia(X, s, y, alpha_grid=ALPHAS, folds=5)
    ft = brain_age_table(0, n0=9, n1=30)
    (entry,) = run_qmia_attacks(ft, ["qmia"], n_boot=10)
    assert entry["status"] == "error" and "non-members" in entry["error"]
    Attack.model_validate(entry)


def test_missing_prediction_or_gradients_is_named() -> None:
    ft = brain_age_table(0, n0=40, n1=40, grad=False)
    with pytest.raises(InputError, match="'prediction' column"):
        qmia_entry(FeatureTable(ft.table.drop(columns=["prediction"])), "qmia", n_boot=10)
    bad, white = run_qmia_attacks(FeatureTable(ft.table.drop(columns=["prediction"])),
                                  ["qmia", "qmia:grad-norm"], n_boot=10)
    assert bad["status"] == "error" and "'prediction'" in bad["error"]
    assert white["status"] == "error" and "grad_norm" in white["error"]
    with pytest.raises(InputError, match="unknown quantile attack"):
        run_qmia_attacks(ft, ["qmia:activation"])
    with pytest.raises(InputError, match="between 0 and 1"):
        qmia(np.zeros((40, 1)), np.zeros(40), np.zeros(40, int), alpha_grid=(0.0,))


def test_continuous_scores_are_not_truncated() -> None:
    """LeakPro's pitfall (an int cast of the target): scores far below 1 must keep their ranking."""
    X, s, y = hetero_scores(5, n0=400, n1=400)
    for variant in ("gaussian", "quantile"):
        small = qmia(X, 1e-3 * s + 0.5, y, alpha_grid=ALPHAS, seed=0, variant=variant)
        full = qmia(X, s, y, alpha_grid=ALPHAS, seed=0, variant=variant)
        assert np.array_equal(small.flagged, full.flagged) or (
            np.mean(small.flagged != full.flagged) < 1e-3)  # the same rule up to float rounding
        assert [c["fpr"] for c in small.calibration] == pytest.approx([c["fpr"] for c in full.calibration], abs=2e-3)
    assert roc_auc_score(y, small.member_score) > 0.5
    gauss_small = qmia(X, 1e-3 * s, y, alpha_grid=ALPHAS, seed=0, variant="gaussian")
    assert roc_auc_score(y, gauss_small.z) > 0.7


# --------------------------------------------------------------------------- report entries


def test_entries_validate_and_find_a_leaky_model() -> None:
    ft = brain_age_table(1, n0=300, n1=300, shrink=0.5)
    exposure: dict = {}
    entries = run_qmia_attacks(ft, list(QMIA_ATTACKS), seed=1, n_boot=100, exposure=exposure)
    assert [e["name"] for e in entries] == ["qmia", "qmia:grad-norm"]
    for e, tm, fs in zip(entries, ("black-box", "white-box"), ("error", "grad-norm")):
        Attack.model_validate(e)
        json.dumps(e)
        assert e["status"] == "ok" and e["threat_model"] == tm and e["feature_set"] == fs
        assert e["classifier"] == "qmia" and e["family"] == "quantile"
        assert e["n_train"] == 0 and e["n_test"] == 600 and e["repeats"] == 1
        assert e["metrics"]["auc"]["ci_low"] > 0.55  # the leak is found
        assert e["metrics"]["tpr_at_fpr_0.01"]["mean"] is not None  # 300 non-members tested
        assert [c["alpha"] for c in e["calibration"]] == list(core.DEFAULT_ALPHAS)
        assert set(e["calibration"][0]) >= {"alpha", "fpr", "fpr_ci_low", "fpr_ci_high", "n_nonmembers",
                                            "tpr", "calibrated"}
        assert e["qmia"]["regressor_features"] == ["age", "sex"]
        assert len(exposure[e["name"]]) == 600
        assert all(0.0 < s["score"] < 1.0 for s in exposure[e["name"]])


def test_the_prediction_is_kept_out_of_the_regressor() -> None:
    """With the target's output in X the regressor can learn the score itself and the attack
    vanishes: X = (age, error) fixes -(error)^2 exactly."""
    ft = brain_age_table(2, n0=400, n1=400, shrink=0.5, grad=False)
    fair, _ = qmia_entry(ft, "qmia", seed=2, n_boot=50, alpha_grid=(0.05,))
    leaky, _ = qmia_entry(ft, "qmia", seed=2, n_boot=50, alpha_grid=(0.05,), x_columns=["age", "error"])
    assert fair["metrics"]["auc"]["mean"] > 0.62
    assert leaky["metrics"]["auc"]["mean"] < fair["metrics"]["auc"]["mean"] - 0.05
