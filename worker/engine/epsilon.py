"""Empirical differential privacy: an (epsilon, delta) lower bound from an attack's per-scan scores.

A mechanism that is (epsilon, delta)-DP forces every membership test with false-positive rate
FPR and false-negative rate FNR to satisfy ``FPR + e^eps FNR >= 1 - delta`` and
``FNR + e^eps FPR >= 1 - delta`` (Kairouz et al. 2015). An attack that achieves small FPR and FNR
therefore proves ``eps >= max(log((1 - delta - FNR) / FPR), log((1 - delta - FPR) / FNR))``.

Here the rates are replaced by one-sided Clopper-Pearson upper bounds (``scipy.stats.beta``), so
the epsilon is a lower bound with confidence ``1 - alpha``: the rule "member iff score > t" is
tried at a fixed grid of thresholds, the score quantiles in :data:`QUANTILES` (label-free), on
every attack that scored the scans, and the confidence is shared by Bonferroni over all
(attack, threshold) pairs tried and the two rates of each (``alpha / (2 k)`` per rate for ``k``
pairs), so the largest bound over them holds at ``1 - alpha`` (as in google-deepmind/jax_privacy
``auditing.py``'s threshold correction). The *ceiling* is the bound a perfect attack (no false
positive, no false negative) would give with as many scans at the same correction: the most
this scan set could ever certify.

The per-scan scores of the classifier attacks average the repeats that tested the scan with an
attacker trained on other scans; those of the reference and quantile attacks score every scan
once. The bound treats each scan's call as an independent trial given its score, the usual
assumption of one-run audits (ML Privacy Meter's ``audit.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import beta

from .errors import InputError

DELTA = 1e-5
"""Default delta of the empirical (epsilon, delta) bound."""
ALPHA = 0.05
"""One minus the confidence of the bound."""
QUANTILES: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
"""Score quantiles tried as thresholds (label-free)."""

__all__ = [
    "ALPHA",
    "DELTA",
    "QUANTILES",
    "check_dp_claim",
    "clopper_pearson_upper",
    "empirical_epsilon",
    "epsilon_ceiling",
    "epsilon_from_rates",
    "epsilon_lower_bound",
]


def clopper_pearson_upper(k: np.ndarray | int, n: np.ndarray | int, alpha: float) -> np.ndarray:
    """One-sided ``1 - alpha`` Clopper-Pearson upper bound of a rate with ``k`` events in ``n`` trials."""
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        up = beta.ppf(1.0 - alpha, k + 1.0, np.maximum(n - k, 1e-12))
    return np.where(k >= n, 1.0, up)


def epsilon_from_rates(fpr: np.ndarray, fnr: np.ndarray, delta: float = DELTA) -> np.ndarray:
    """The epsilon that rates ``(fpr, fnr)`` prove, 0 where they prove nothing (vectorised)."""
    fpr, fnr = np.asarray(fpr, dtype=np.float64), np.asarray(fnr, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log((1.0 - delta - fnr) / fpr)
        b = np.log((1.0 - delta - fpr) / fnr)
    eps = np.fmax(np.nan_to_num(a, nan=0.0, neginf=0.0), np.nan_to_num(b, nan=0.0, neginf=0.0))
    return np.maximum(eps, 0.0)


def _counts(score: np.ndarray, member: np.ndarray, cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False positives and false negatives of "member iff score > t" at each cut."""
    s1, s0 = np.sort(score[member]), np.sort(score[~member])
    fn = np.searchsorted(s1, cuts, side="right")  # members at or below the cut
    fp = s0.size - np.searchsorted(s0, cuts, side="right")
    return fp, fn


def epsilon_lower_bound(score: np.ndarray, member: np.ndarray, *, delta: float = DELTA,
                        alpha: float = ALPHA, n_tests: int = 1) -> dict[str, Any]:
    """The best (epsilon, delta) lower bound of one attack's scores over the threshold grid.

    Args:
        score: per-scan scores (higher = member).
        member: per-scan labels (True = member).
        delta: the delta of the bound.
        alpha: one minus the confidence, shared over ``n_tests`` attacks and the thresholds.
        n_tests: the attacks this bound is one of (Bonferroni).

    Returns:
        ``epsilon``, ``threshold``, ``fpr``, ``fnr`` (observed), ``fpr_upper``, ``fnr_upper``,
        ``n_members``, ``n_nonmembers``.

    Raises:
        InputError: shapes differ, scores not finite, or a group is empty.
    """
    s = np.asarray(score, dtype=np.float64).ravel()
    y = np.asarray(member).astype(bool).ravel()
    if s.shape != y.shape:
        raise InputError(f"epsilon: {s.size} scores for {y.size} labels")
    if not np.isfinite(s).all():
        raise InputError("epsilon: the scores are not all finite")
    n1, n0 = int(y.sum()), int((~y).sum())
    if not n1 or not n0:
        raise InputError("epsilon: needs members and non-members")
    cuts = np.unique(np.quantile(s, QUANTILES))
    a = alpha / (2 * len(QUANTILES) * max(int(n_tests), 1))
    fp, fn = _counts(s, y, cuts)
    fpr_up, fnr_up = clopper_pearson_upper(fp, n0, a), clopper_pearson_upper(fn, n1, a)
    eps = epsilon_from_rates(fpr_up, fnr_up, delta)
    i = int(np.argmax(eps))
    return {
        "epsilon": float(eps[i]), "threshold": float(cuts[i]),
        "fpr": float(fp[i] / n0), "fnr": float(fn[i] / n1),
        "fpr_upper": float(fpr_up[i]), "fnr_upper": float(fnr_up[i]),
        "n_members": n1, "n_nonmembers": n0,
    }


def epsilon_ceiling(n_members: int, n_nonmembers: int, *, delta: float = DELTA, alpha: float = ALPHA,
                    n_tests: int = 1) -> float:
    """The largest epsilon these scans could certify: a perfect attack at the same correction."""
    a = alpha / (2 * len(QUANTILES) * max(int(n_tests), 1))
    return float(epsilon_from_rates(clopper_pearson_upper(0, n_nonmembers, a),
                                    clopper_pearson_upper(0, n_members, a), delta))


def _scores(scans: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    kept = [(float(s["score"]), bool(s["member"])) for s in scans
            if s.get("score") is not None and math.isfinite(float(s["score"]))]
    if not kept:
        return np.array([]), np.array([], bool)
    score, member = zip(*kept)
    return np.asarray(score), np.asarray(member, bool)


def empirical_epsilon(exposure: Mapping[str, Sequence[Mapping[str, Any]]], *, delta: float = DELTA,
                      alpha: float = ALPHA) -> dict[str, Any] | None:
    """The report's empirical (epsilon, delta) lower bound over every attack's per-scan scores.

    Args:
        exposure: attack name -> per-scan ``{"member", "score"}`` (``AttackRunResult.exposure``).
        delta: the delta of the bound.
        alpha: one minus the confidence, shared by Bonferroni over the attacks and thresholds.

    Returns:
        None when no attack scored members and non-members; else ``epsilon`` (the largest bound),
        ``attack`` (the attack that gave it), ``ceiling``, ``delta``, ``confidence``, ``correction``
        (words), ``n_attacks``, ``n_thresholds``, ``n_members``, ``n_nonmembers`` (of the largest
        scored set), the chosen ``threshold``, ``fpr``, ``fnr``, ``fpr_upper``, ``fnr_upper`` and
        ``message``.
    """
    usable = {}
    for name, scans in exposure.items():
        s, y = _scores(scans)
        if y.any() and (~y).any():
            usable[name] = (s, y)
    if not usable:
        return None
    k = len(usable)
    best_name, best = None, None
    for name, (s, y) in usable.items():
        b = epsilon_lower_bound(s, y, delta=delta, alpha=alpha, n_tests=k)
        if best is None or b["epsilon"] > best["epsilon"]:
            best_name, best = name, b
    n1 = max(int(y.sum()) for _, y in usable.values())
    n0 = max(int((~y).sum()) for _, y in usable.values())
    ceiling = epsilon_ceiling(n1, n0, delta=delta, alpha=alpha, n_tests=k)
    out = {
        **best, "attack": best_name, "ceiling": ceiling, "delta": float(delta), "confidence": 1.0 - alpha,
        "correction": (f"Clopper-Pearson bounds on the FPR and FNR, Bonferroni over {k} attack(s) x "
                       f"{len(QUANTILES)} thresholds"),
        "n_attacks": k, "n_thresholds": len(QUANTILES), "n_members": n1, "n_nonmembers": n0,
    }
    if best["epsilon"] > 0:
        lead = (f"This model is at best epsilon >= {best['epsilon']:.2f} differentially private "
                f"(delta = {delta:g}, {100 * (1 - alpha):.0f}% confidence; attack {best_name})")
    else:
        lead = (f"No attack proves an epsilon above 0 (delta = {delta:g}, {100 * (1 - alpha):.0f}% "
                "confidence): the empirical lower bound is epsilon >= 0")
    out["message"] = f"{lead}; the most these {n1} + {n0} scans could show is epsilon {ceiling:.2f}."
    return out


def check_dp_claim(claim: Mapping[str, Any] | None, exposure: Mapping[str, Sequence[Mapping[str, Any]]], *,
                   alpha: float = ALPHA) -> dict[str, Any] | None:
    """Check a declared ``dp: {epsilon, delta}`` against the empirical bound at the claimed delta.

    Returns:
        None without a claim; else ``claimed_epsilon``, ``claimed_delta``, ``empirical_epsilon``
        (at the claimed delta), ``ceiling``, ``contradicted`` (the bound exceeds the claim),
        ``testable`` (the ceiling exceeds the claim: a contradiction was possible) and ``message``.

    Raises:
        InputError: a claim without a positive epsilon or with a delta outside [0, 1).
    """
    if not claim:
        return None
    try:
        eps, dlt = float(claim["epsilon"]), float(claim.get("delta", 0.0) or 0.0)
    except (KeyError, TypeError, ValueError):
        raise InputError(f"model metadata 'dp' must be {{epsilon, delta}} numbers, got {dict(claim)!r}") from None
    if not (math.isfinite(eps) and eps > 0) or not 0.0 <= dlt < 1.0:
        raise InputError(f"model metadata 'dp': epsilon must be > 0 and delta in [0, 1), got {eps}, {dlt}")
    bound = empirical_epsilon(exposure, delta=dlt, alpha=alpha)
    got = bound["epsilon"] if bound else 0.0
    ceiling = bound["ceiling"] if bound else 0.0
    contradicted = got > eps
    if contradicted:
        message = (f"The DP claim is contradicted: the model is declared (epsilon = {eps:g}, delta = {dlt:g})-DP, "
                   f"but attack {bound['attack']} proves epsilon >= {got:.2f} at that delta "
                   f"({100 * (1 - alpha):.0f}% confidence).")
    elif ceiling <= eps:
        message = (f"The DP claim (epsilon = {eps:g}) cannot be tested with these scans: the most they could "
                   f"show is epsilon {ceiling:.2f}.")
    else:
        message = (f"The DP claim (epsilon = {eps:g}, delta = {dlt:g}) is not contradicted: the empirical lower "
                   f"bound is {got:.2f} (the most these scans could show is {ceiling:.2f}).")
    return {"claimed_epsilon": eps, "claimed_delta": dlt, "empirical_epsilon": got, "ceiling": ceiling,
            "contradicted": contradicted, "testable": ceiling > eps, "message": message}
