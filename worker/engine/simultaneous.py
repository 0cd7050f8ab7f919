"""Bounds that hold over all attacks together: the verdict's multiplicity correction.

Each attack entry carries, per metric, its mean over repeats and a 95% bootstrap percentile
interval (:func:`worker.engine.metrics.summarize`). The verdict makes two kinds of claim:

* *An attack reaches a threshold* (medium / high). Taking the largest of many per-attack 95%
  lower bounds would raise false alarms as attacks are added, so the lower bounds are made
  simultaneous by Bonferroni over the ``m`` (attack, metric) pairs that were measured: each is the
  one-sided ``1 - alpha / m`` test of "the attack is below the threshold ``T``": it reaches ``T``
  when ``mean - z(1 - alpha / m) * se >= T``. ``se`` is the larger of the bootstrap standard error
  of the lower side, ``(mean - ci_low) / z(0.975)`` (the interval's own skew kept), and the
  model standard error at the threshold itself (Hanley-McNeil for the AUC, the binormal one for
  the TPR, :mod:`worker.engine.power`, on the attack's test set): a bootstrap standard error
  that happens to come out small would otherwise make the far tail, where Bonferroni works,
  too light (measured: 0.27% instead of 0.17% per attack at 40 + 40 scans). The chance that
  *any* attack is flagged at a threshold it is truly below is at most ``alpha``, whatever the
  dependence between attacks (Holm's step-down rejects at least one hypothesis exactly when
  Bonferroni does, so "any attack reaches medium" is the same decision).
* *No attack reaches medium* (low). This is an intersection-union test: it claims that every
  attack is below the threshold and is wrong only if some attack is not, in which case that
  attack's own 95% upper bound is below its true value with probability at most 5%. The
  per-attack upper bounds (``ci_high``, as in the tables) therefore hold together without any
  correction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from .power import auc_se, tpr_se
from .report_ranking import is_completed

ALPHA = 0.05
"""Family-wise error rate of the verdict's alarms."""
METRICS: tuple[str, ...] = ("auc", "tpr_at_fpr_0.01")
"""The metrics the verdict judges."""
CORRECTION = "bonferroni"
"""The multiplicity correction, as the verdict records it."""

_N = NormalDist()
_Z95 = _N.inv_cdf(0.975)

__all__ = ["ALPHA", "CORRECTION", "METRICS", "Bound", "simultaneous_bounds", "test_sizes", "z_family"]


def test_sizes(entry: dict, counts: tuple[int, int] | None = None) -> tuple[int, int]:
    """Members and non-members of one attack's test set (per repeat).

    The classifier attacks test balanced sets (``n_test / 2`` of each); an attack that scored every
    scan (``n_train`` 0) tested the assessment's ``counts`` when they add up to ``n_test``.
    """
    n_test = int(entry.get("n_test") or 0)
    if counts is not None and not entry.get("n_train") and sum(counts) == n_test:
        return int(counts[0]), int(counts[1])
    return n_test // 2, n_test // 2


def model_se(metric: str, value: float, n1: int, n0: int) -> float:
    """The model standard error of a metric at ``value`` on ``n1`` + ``n0`` test scans (0 if none)."""
    if n1 < 1 or n0 < 1:
        return 0.0
    v = min(max(value, 1e-6), 1 - 1e-6)
    return auc_se(max(v, 0.5), n1, n0) if metric == "auc" else tpr_se(max(v, 0.01), n1, n0)


@dataclass(frozen=True)
class Bound:
    """One attack's metric with its per-attack interval and its simultaneous lower bound.

    Attributes:
        attack: the attack's name.
        metric: ``auc`` or ``tpr_at_fpr_0.01``.
        mean: the estimate (mean over repeats).
        ci_low, ci_high: the per-attack 95% interval.
        se_boot: the bootstrap standard error of the lower side.
        z: the Bonferroni critical value.
        test: the attack's test set (members, non-members).
    """

    attack: str
    metric: str
    mean: float
    ci_low: float
    ci_high: float
    se_boot: float
    z: float
    test: tuple[int, int]

    def lower(self, threshold: float) -> float:
        """The simultaneous lower bound used to test ``threshold`` (clipped to [0, ``ci_low``])."""
        se = max(self.se_boot, model_se(self.metric, threshold, *self.test))
        return min(max(self.mean - self.z * se, 0.0), self.ci_low)

    def reaches(self, threshold: float) -> bool:
        """Whether the attack reaches ``threshold`` with the family's confidence."""
        return self.lower(threshold) >= threshold


def _value(entry: dict, metric: str, key: str) -> float | None:
    v = ((entry.get("metrics") or {}).get(metric) or {}).get(key)
    return None if v is None else float(v)


def z_family(m: int, alpha: float = ALPHA) -> float:
    """The one-sided normal quantile of the Bonferroni level ``1 - alpha / m``."""
    return _N.inv_cdf(1.0 - alpha / max(int(m), 1))


def simultaneous_bounds(attacks: Sequence[dict], alpha: float = ALPHA, *,
                        counts: tuple[int, int] | None = None) -> tuple[list[Bound], float]:
    """The (attack, metric) bounds of the completed attacks and the critical value used.

    A pair is measured when its mean and interval are defined (a TPR at 1% FPR on fewer than 100
    non-members is not).

    Args:
        attacks: report attack entries (errored ones are skipped).
        alpha: the family-wise error rate.
        counts: the assessment's (members, non-members), for the test sets of attacks that
            scored every scan (:func:`test_sizes`).

    Returns:
        The bounds, in attack order, and ``z`` (``z(1 - alpha / m)``).
    """
    found = []
    for entry in attacks:
        if not is_completed(entry):
            continue
        for metric in METRICS:
            mean, lo, hi = (_value(entry, metric, k) for k in ("mean", "ci_low", "ci_high"))
            if mean is not None and lo is not None and hi is not None:
                found.append((entry, metric, mean, lo, hi))
    z = z_family(len(found), alpha)
    out = [Bound(e["name"], metric, mean, lo, hi, max(mean - lo, 0.0) / _Z95, z, test_sizes(e, counts))
           for e, metric, mean, lo, hi in found]
    return out, z
