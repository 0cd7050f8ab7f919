"""Power of an assessment: the smallest leak a scan set can detect, before or after running.

An attack *detects* leakage when its one-sided 95% lower bound is above chance (AUC 0.5, or a
TPR at 1% FPR of 1%). The *minimum detectable* AUC (or TPR) of a test set is the smallest true
value that is detected with 80% probability:

* AUC: ``theta - 0.5 = z_a * se(0.5) + z_b * se(theta)``, with the Hanley-McNeil standard error
  ``se(theta)`` of the Mann-Whitney AUC on ``n1`` members and ``n0`` non-members.
* TPR at FPR ``f``: the binormal ROC curve (equal variances) through ``(f, t)``; the standard
  error of the empirical TPR at the FPR-``f`` threshold is
  ``sqrt(t (1 - t) / n1 + slope^2 f (1 - f) / n0)`` (members' binomial error plus the error of
  the threshold read off ``n0`` non-members, times the curve's slope there). Undefined below
  ``1 / f`` non-members (:func:`worker.engine.metrics.estimable`).

:func:`scans_needed` inverts these: the members (= non-members) a test set needs for both to be
at or below the policy's medium thresholds. :func:`power_statement` is what ``brainmia assess``,
the API's dry run and the new-assessment page print before a run, and what the verdict uses after
one (a well-powered assessment that found nothing is ``low``).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

from .measurable import estimable
from .policy import DEFAULT_POLICY, Policy

ALPHA = 0.05
"""One-sided level of the detection test."""
POWER = 0.80
"""Probability of detecting a leak at the minimum detectable value."""
FPR = 0.01
"""The false-positive rate of the low-FPR metric."""
_MAX_SCANS = 10**7
_N = NormalDist()

__all__ = [
    "ALPHA",
    "POWER",
    "auc_se",
    "min_detectable_auc",
    "min_detectable_tpr",
    "planned_power",
    "planned_test_sizes",
    "power_statement",
    "scans_needed",
    "tpr_se",
]


def auc_se(auc: float, n1: int, n0: int) -> float:
    """Hanley-McNeil (1982) standard error of an AUC on ``n1`` members and ``n0`` non-members."""
    q1, q2 = auc / (2.0 - auc), 2.0 * auc * auc / (1.0 + auc)
    var = (auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n0 - 1) * (q2 - auc**2)) / (n1 * n0)
    return math.sqrt(max(var, 0.0))


def tpr_se(tpr: float, n1: int, n0: int, fpr: float = FPR) -> float:
    """Standard error of the empirical TPR at FPR ``fpr`` under the binormal ROC through ``(fpr, tpr)``."""
    zt, zf = _N.inv_cdf(tpr), _N.inv_cdf(fpr)
    slope = _N.pdf(zt) / _N.pdf(zf)
    return math.sqrt(tpr * (1 - tpr) / n1 + slope**2 * fpr * (1 - fpr) / n0)


def _z(alpha: float, power: float) -> tuple[float, float]:
    return _N.inv_cdf(1 - alpha), _N.inv_cdf(power)


def _bisect(gap, lo: float, hi: float) -> float | None:
    """The smallest x in [lo, hi] with ``gap(x) >= 0`` (``gap`` increasing), None if none."""
    if gap(hi) < 0:
        return None
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if gap(mid) < 0 else (lo, mid)
    return hi


def min_detectable_auc(n1: int, n0: int, *, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest AUC that a test set of ``n1`` members and ``n0`` non-members detects at ``power``."""
    if n1 < 1 or n0 < 1:
        return None
    za, zb = _z(alpha, power)
    base = za * auc_se(0.5, n1, n0)
    return _bisect(lambda t: (t - 0.5) - base - zb * auc_se(t, n1, n0), 0.5, 1.0 - 1e-9)


def min_detectable_tpr(n1: int, n0: int, *, fpr: float = FPR, alpha: float = ALPHA,
                       power: float = POWER) -> float | None:
    """The smallest TPR at ``fpr`` that the test set detects at ``power``; None when not measurable."""
    if n1 < 1 or n0 < 1 or not estimable(n0, fpr):
        return None
    za, zb = _z(alpha, power)
    base = za * tpr_se(fpr, n1, n0, fpr)
    return _bisect(lambda t: (t - fpr) - base - zb * tpr_se(t, n1, n0, fpr), fpr, 1.0 - 1e-9)


def _settled(n: int, policy: Policy, test_share: float) -> bool:
    t = max(1, int(n * test_share))
    auc = min_detectable_auc(t, t)
    tpr = min_detectable_tpr(t, t)
    return (auc is not None and auc <= policy.auc_medium
            and tpr is not None and tpr <= policy.tpr_at_1pct_fpr_medium)


def scans_needed(policy: Policy = DEFAULT_POLICY, *, test_share: float = 1.0) -> int | None:
    """Members (= non-members) for which both minimum detectable values reach the medium thresholds.

    Args:
        policy: the thresholds.
        test_share: the share of each group an attack tests (1 for attacks that score every scan,
            about 0.5 for the classifier attacks' splits).

    Returns:
        The smallest such group size (to about 1%), None when even ten million would not do.
    """
    lo, hi = 1, 2
    while not _settled(hi, policy, test_share):
        lo, hi = hi, hi * 2
        if hi > _MAX_SCANS:
            return None
    while hi - lo > max(1, lo // 100):
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _settled(mid, policy, test_share) else (mid, hi)
    return hi


def planned_test_sizes(n_members: int, n_nonmembers: int, *, every_scan: bool,
                       train_size: int | None = None) -> tuple[int, int]:
    """Members and non-members of the largest test set an assessment will have.

    Attacks that score every scan (quantile, reference-model) test all of them; the classifier
    attacks test the balanced remainder of their training split (half the smaller group by default).
    """
    if every_scan:
        return int(n_members), int(n_nonmembers)
    smaller = min(int(n_members), int(n_nonmembers))
    train = smaller // 2 if train_size is None else int(train_size)
    test = max(smaller - train, 0)
    return test, test


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def power_statement(n_members: int, n_nonmembers: int, policy: Policy = DEFAULT_POLICY, *,
                    test_members: int | None = None, test_nonmembers: int | None = None) -> dict[str, Any]:
    """What a scan set can detect: minimum detectable AUC and TPR at 1% FPR, warnings, a message.

    Args:
        n_members, n_nonmembers: the scans of the assessment.
        policy: the medium thresholds the detectable values are compared with.
        test_members, test_nonmembers: the largest test set (default: every scan).

    Returns:
        JSON-ready: ``n_members``, ``n_nonmembers``, ``test_members``, ``test_nonmembers``, ``alpha``,
        ``power``, ``min_detectable_auc``, ``min_detectable_tpr_at_fpr_0.01`` (None: fewer than 100
        non-members tested), ``adequate`` (both at or below the medium thresholds), ``warnings``,
        ``scans_needed`` (members = non-members for an adequate test, every scan tested) and
        ``message``.
    """
    t1 = int(n_members if test_members is None else test_members)
    t0 = int(n_nonmembers if test_nonmembers is None else test_nonmembers)
    auc, tpr = min_detectable_auc(t1, t0), min_detectable_tpr(t1, t0)
    warnings = []
    if auc is None or auc > policy.auc_medium:
        warnings.append(
            f"with {t1} + {t0} scans tested the smallest AUC detectable at 80% power is "
            f"{'undefined' if auc is None else f'{auc:.3f}'}, above the medium-risk threshold "
            f"{policy.auc_medium:.2f}: a medium leak could go unseen")
    if tpr is None:
        warnings.append(
            f"with {t0} non-members tested the TPR at 1% FPR cannot be measured (it needs at least 100)")
    elif tpr > policy.tpr_at_1pct_fpr_medium:
        warnings.append(
            f"the smallest TPR at 1% FPR detectable at 80% power is {_pct(tpr)}, above the medium-risk "
            f"threshold {_pct(policy.tpr_at_1pct_fpr_medium)}")
    needed = scans_needed(policy)
    adequate = not warnings
    head = (f"With {t1} members and {t0} non-members tested, the smallest leak this assessment detects "
            f"at 80% power (one-sided 5% test) is AUC {'n/a' if auc is None else f'{auc:.3f}'} and TPR at "
            f"1% FPR {'n/a' if tpr is None else _pct(tpr)}.")
    if adequate:
        message = head + " Both are at or below the policy's medium-risk thresholds."
    else:
        message = (head + " Warning: " + "; ".join(warnings) + "."
                   + (f" About {needed} members and {needed} non-members would be enough." if needed else ""))
    return {
        "n_members": int(n_members), "n_nonmembers": int(n_nonmembers),
        "test_members": t1, "test_nonmembers": t0, "alpha": ALPHA, "power": POWER,
        "min_detectable_auc": auc, "min_detectable_tpr_at_fpr_0.01": tpr,
        "adequate": adequate, "warnings": warnings, "scans_needed": needed, "message": message,
    }


def planned_power(n_members: int, n_nonmembers: int, policy: Policy | None = None, *, every_scan: bool,
                  train_size: int | None = None) -> dict[str, Any]:
    """The power statement of an assessment before it runs (:func:`power_statement` on its largest test set).

    Args:
        n_members, n_nonmembers: the scan set.
        policy: the thresholds (None: the default policy).
        every_scan: quantile or reference-model attacks will run (they test every scan).
        train_size: the classifier attacks' training split per group (None: half the smaller group).
    """
    t1, t0 = planned_test_sizes(n_members, n_nonmembers, every_scan=every_scan, train_size=train_size)
    return power_statement(n_members, n_nonmembers, policy or DEFAULT_POLICY, test_members=t1, test_nonmembers=t0)
