"""The calibration check of a quantile attack: observed FPR on held-out non-members against alpha.

Bertran et al. (NeurIPS 2023, "Scalable Membership Inference Attacks via Quantile Regression")
fit a regressor to the (1 - alpha) quantile of the non-member score, so that a fraction alpha of
non-members exceeds its own threshold. Whether that holds on scans the regressor never saw is the
check: AI-SDC/SACRO-ML ``sacroml/attacks/qmia_attack.py`` compares the observed public FPR with
alpha within a normal-approximation binomial tolerance; here the exact Clopper-Pearson interval
is used (it is valid for the small counts that alpha = 0.001 or 0.01 give on a few hundred scans).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import beta

CONFIDENCE = 0.95


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval of a binomial proportion k / n.

    Args:
        k: successes (non-members flagged).
        n: trials (non-members tested), at least 1.
        confidence: coverage of the interval.

    Returns:
        ``(low, high)``; low is 0 when k = 0 and high is 1 when k = n.
    """
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"clopper_pearson needs 0 <= k <= n and n >= 1, got k={k}, n={n}")
    tail = (1.0 - confidence) / 2.0
    low = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1.0 - tail, k + 1, n - k))
    return low, high


def calibration_table(
    alphas: Sequence[float], flagged: np.ndarray, members: np.ndarray,
    attainable: Sequence[bool] | None = None,
) -> list[dict]:
    """One row per alpha: the quantile rule's observed FPR with its interval, and its TPR.

    Args:
        alphas: the target false-positive rates, in order.
        flagged: bool array (n_alphas, n_scans): whether each scan's score exceeds its own
            cross-fitted (1 - alpha) threshold.
        members: 1 member / 0 non-member per scan.
        attainable: per alpha, whether a threshold at that level could be set (a split-conformal
            threshold needs at least 1 / alpha - 1 calibration scans; below that nothing is
            flagged); None for all.

    Returns:
        JSON-ready dicts ``{alpha, fpr, fpr_ci_low, fpr_ci_high, n_nonmembers, n_flagged,
        tpr, n_members, calibrated, attainable}``; ``calibrated`` is whether alpha lies in the
        95% Clopper-Pearson interval of the FPR; ``tpr`` is None without members.

    The interval covers the binomial sampling of the held-out non-members given the fitted
    thresholds, not the thresholds' own estimation error, so a valid rule passes it somewhat
    less often than 95% of the time.
    """
    members = np.asarray(members).astype(int)
    flagged = np.asarray(flagged, dtype=bool)
    neg, pos = members == 0, members == 1
    n0, n1 = int(neg.sum()), int(pos.sum())
    ok = [True] * len(alphas) if attainable is None else [bool(x) for x in attainable]
    rows = []
    for a, flags, reach in zip(alphas, flagged, ok):
        k = int(flags[neg].sum())
        low, high = clopper_pearson(k, n0)
        rows.append({
            "alpha": float(a),
            "fpr": k / n0,
            "fpr_ci_low": low,
            "fpr_ci_high": high,
            "n_nonmembers": n0,
            "n_flagged": k,
            "tpr": float(flags[pos].mean()) if n1 else None,
            "n_members": n1,
            "calibrated": bool(low <= float(a) <= high),
            "attainable": reach,
        })
    return rows


__all__ = ["CONFIDENCE", "calibration_table", "clopper_pearson"]
