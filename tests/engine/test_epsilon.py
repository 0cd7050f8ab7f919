"""The empirical (epsilon, delta) lower bound: soundness on randomised response, the ceiling, DP claims."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from worker.engine.epsilon import (
    QUANTILES,
    check_dp_claim,
    clopper_pearson_upper,
    empirical_epsilon,
    epsilon_ceiling,
    epsilon_from_rates,
    epsilon_lower_bound,
)
from worker.engine.errors import InputError


def _randomised_response(rng: np.random.Generator, n: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Each scan's membership bit, reported truthfully with probability e^eps / (1 + e^eps): eps-DP exactly."""
    member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    truthful = rng.random(2 * n) < math.exp(eps) / (1 + math.exp(eps))
    return np.where(truthful, member, ~member).astype(float), member


def test_bound_is_sound_on_randomised_response_at_epsilon_1():
    """400 runs of a mechanism with epsilon exactly 1: the 95% lower bound exceeds 1 in at most 5% of them."""
    rng = np.random.default_rng(0)
    bounds = np.array([epsilon_lower_bound(*_randomised_response(rng, 1000, 1.0))["epsilon"] for _ in range(400)])
    assert (bounds > 1.0).mean() <= 0.05
    # and it is informative: with 1000 + 1000 scans it recovers most of the true epsilon
    assert 0.6 < bounds.mean() < 1.0


def test_clopper_pearson_covers():
    """The one-sided upper bound is below the true rate at most alpha of the time (exact binomial sum)."""
    n, p, a = 200, 0.03, 0.05
    ks = np.arange(n + 1)
    miss = binom.pmf(ks, n, p)[clopper_pearson_upper(ks, n, a) < p].sum()
    assert miss <= a
    assert clopper_pearson_upper(0, 100, 0.05) == pytest.approx(1 - 0.05 ** (1 / 100))
    assert clopper_pearson_upper(100, 100, 0.05) == 1.0


def test_rates_to_epsilon_and_the_ceiling():
    assert epsilon_from_rates(0.5, 0.5, 0.0) == 0.0  # chance proves nothing
    assert epsilon_from_rates(0.1, 0.5, 0.0) == pytest.approx(math.log(5))
    assert epsilon_from_rates(0.5, 0.1, 0.0) == pytest.approx(math.log(5))  # the other tail
    assert epsilon_from_rates(0.0, 1.0, 0.0) == 0.0
    c = epsilon_ceiling(100, 100)
    a = 0.05 / (2 * len(QUANTILES))
    assert c == pytest.approx(math.log((1 - 1e-5 - (1 - a ** 0.01)) / (1 - a ** 0.01)))
    assert epsilon_ceiling(1000, 1000) > c > epsilon_ceiling(50, 50)
    assert epsilon_ceiling(100, 100, n_tests=20) < c
    # a perfect attack reaches the ceiling and no more
    member = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    perfect = epsilon_lower_bound(member.astype(float), member)
    assert perfect["epsilon"] == pytest.approx(c) and perfect["fpr"] == 0.0 and perfect["fnr"] == 0.0


def test_report_section_and_dp_claims():
    rng = np.random.default_rng(1)
    member = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    leaky = member * 3.0 + rng.normal(size=600)  # separates members almost perfectly
    null = rng.normal(size=600)
    exposure = {
        "leaky/mlp": [{"scan_id": i, "member": int(m), "score": float(s), "n_tested": 1}
                      for i, (m, s) in enumerate(zip(member, leaky))],
        "null/mlp": [{"scan_id": i, "member": int(m), "score": float(s), "n_tested": 1}
                     for i, (m, s) in enumerate(zip(member, null))],
        "untested": [{"scan_id": 0, "member": 1, "score": None, "n_tested": 0}],
    }
    out = empirical_epsilon(exposure)
    assert out["attack"] == "leaky/mlp" and out["n_attacks"] == 2 and out["epsilon"] > 1.5
    assert out["epsilon"] <= out["ceiling"] and "the most these 300 + 300 scans could show" in out["message"]
    dp = check_dp_claim({"epsilon": 1.0, "delta": 1e-5}, exposure)
    assert dp["contradicted"] and dp["testable"] and "contradicted" in dp["message"]
    assert not check_dp_claim({"epsilon": 8.0}, exposure)["contradicted"]
    nothing = check_dp_claim({"epsilon": 1.0}, {"null/mlp": exposure["null/mlp"]})
    assert not nothing["contradicted"]
    assert empirical_epsilon({"untested": exposure["untested"]}) is None
    with pytest.raises(InputError, match="epsilon must be > 0"):
        check_dp_claim({"epsilon": -1}, exposure)
    with pytest.raises(InputError, match="'dp' must be"):
        check_dp_claim({"eps": 1}, exposure)
    with pytest.raises(InputError, match="members and non-members"):
        epsilon_lower_bound(np.zeros(3), np.ones(3, bool))
