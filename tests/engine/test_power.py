"""Power of an assessment: the minimum detectable AUC and TPR at 1% FPR, checked by simulation."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from worker.engine.policy import Policy
from worker.engine.power import (
    auc_se,
    min_detectable_auc,
    min_detectable_tpr,
    planned_test_sizes,
    power_statement,
    scans_needed,
    tpr_se,
)

_N = NormalDist()


def _aucs(x1: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC of each row (continuous scores: no ties)."""
    n1, n0 = x1.shape[1], x0.shape[1]
    ranks = np.concatenate([x1, x0], 1).argsort(1).argsort(1) + 1
    return (ranks[:, :n1].sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)


@pytest.mark.parametrize("n", [200, 600])
def test_min_detectable_auc_is_detected_at_80_percent(n):
    """Binormal scores with the minimum detectable AUC: the one-sided 5% test fires in about 80% of 3000 sims."""
    rng = np.random.default_rng(n)
    theta = min_detectable_auc(n, n)
    d = np.sqrt(2) * _N.inv_cdf(theta)  # binormal AUC = Phi(d / sqrt 2)
    auc = _aucs(rng.normal(size=(3000, n)) + d, rng.normal(size=(3000, n)))
    detected = (auc - 0.5) / auc_se(0.5, n, n) > _N.inv_cdf(0.95)
    assert 0.77 <= detected.mean() <= 0.83
    # and at chance the test fires about 5% of the time
    null = _aucs(rng.normal(size=(3000, n)), rng.normal(size=(3000, n)))
    assert ((null - 0.5) / auc_se(0.5, n, n) > _N.inv_cdf(0.95)).mean() <= 0.065


def test_min_detectable_tpr_is_detected_at_least_80_percent():
    """The TPR's binormal standard error is conservative: its minimum detectable value is seen at least 80% of the time."""
    rng = np.random.default_rng(5)
    n = 600
    t = min_detectable_tpr(n, n)
    x1 = rng.normal(size=(3000, n)) + (_N.inv_cdf(t) - _N.inv_cdf(0.01))
    x0 = rng.normal(size=(3000, n))
    cut = -np.sort(-x0, 1)[:, int(0.01 * n)]  # the k+1-th highest non-member, k = floor(0.01 n)
    tpr = (x1 > cut[:, None]).mean(1)
    assert ((tpr - 0.01) / tpr_se(0.01, n, n) > _N.inv_cdf(0.95)).mean() >= 0.8


def test_detectable_values_shrink_with_scans_and_need_100_non_members_for_the_tpr():
    aucs = [min_detectable_auc(n, n) for n in (50, 100, 400, 1600)]
    assert aucs == sorted(aucs, reverse=True) and aucs[-1] < 0.53 and aucs[0] > 0.6
    assert min_detectable_tpr(80, 99) is None and min_detectable_tpr(80, 100) is not None
    assert min_detectable_auc(0, 10) is None


def test_scans_needed_and_the_statement():
    n = scans_needed()
    assert 500 <= n <= 700  # the default policy: AUC 0.55 and TPR 3% at 80% power, every scan tested
    assert min_detectable_auc(n, n) <= 0.55 and min_detectable_tpr(n, n) <= 0.03
    assert min_detectable_tpr(int(n * 0.97), int(n * 0.97)) > 0.03 or min_detectable_auc(int(n * 0.97), int(n * 0.97)) > 0.55
    assert scans_needed(test_share=0.5) == pytest.approx(2 * n, rel=0.03)
    assert scans_needed(Policy(auc_medium=0.6, auc_high=0.7, tpr_at_1pct_fpr_medium=0.06)) < n

    small = power_statement(80, 80)
    assert not small["adequate"] and small["min_detectable_tpr_at_fpr_0.01"] is None
    assert "0.613" in small["message"] and "cannot be measured" in small["message"]
    assert f"About {n} members and {n} non-members" in small["message"]
    big = power_statement(1000, 1000)
    assert big["adequate"] and not big["warnings"] and "at or below" in big["message"]
    # the classifier attacks test half of each group by default
    assert planned_test_sizes(100, 120, every_scan=False) == (50, 50)
    assert planned_test_sizes(100, 120, every_scan=False, train_size=30) == (70, 70)
    assert planned_test_sizes(100, 120, every_scan=True) == (100, 120)
