"""Bounds that hold over all attacks together: the verdict's multiplicity correction.

Each attack entry carries, per metric, its mean over repeats and a 95% bootstrap percentile
interval (:func:`worker.engine.metrics.summarize`). The verdict makes two kinds of claim:

* *An attack reaches a threshold* (medium / high). Taking the largest of many per-attack 95%
  lower bounds would raise false alarms as attacks are added, so the lower bounds are made
  simultaneous by Bonferroni over the ``m`` (attack, metric) pairs that were measured: each is the
  one-sided ``1 - alpha / m`` lower bound ``mean - z(1 - alpha / m) * se``, where ``se`` is the
  bootstrap standard error of the lower side, ``(mean - ci_low) / z(0.975)`` (the interval's own
  skew is kept). The chance that *any* of them exceeds its attack's true value is at most
  ``alpha``, whatever the dependence between attacks (Holm's step-down rejects at least one
  hypothesis exactly when Bonferroni does, so "any attack reaches medium" is the same decision).
* *No attack reaches medium* (low). This is an intersection-union test: it claims that every
  attack is below the threshold and is wrong only if some attack is not, in which case that
  attack's own 95% upper bound is below its true value with probability at most 5%. The
  per-attack upper bounds (``ci_high``, as in the tables) therefore hold together without any
  correction.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence

from .report_ranking import is_completed

ALPHA = 0.05
"""Family-wise error rate of the verdict's alarms."""
METRICS: tuple[str, ...] = ("auc", "tpr_at_fpr_0.01")
"""The metrics the verdict judges."""
CORRECTION = "bonferroni"
"""The multiplicity correction, as the verdict records it."""

_N = NormalDist()
_Z95 = _N.inv_cdf(0.975)

__all__ = ["ALPHA", "CORRECTION", "METRICS", "Bound", "simultaneous_bounds"]


@dataclass(frozen=True)
class Bound:
    """One attack's metric with its per-attack interval and its simultaneous lower bound.

    Attributes:
        attack: the attack's name.
        metric: ``auc`` or ``tpr_at_fpr_0.01``.
        mean: the estimate (mean over repeats).
        ci_low, ci_high: the per-attack 95% interval.
        low: the simultaneous lower bound (over every measured pair).
    """

    attack: str
    metric: str
    mean: float
    ci_low: float
    ci_high: float
    low: float


def _value(entry: dict, metric: str, key: str) -> float | None:
    v = ((entry.get("metrics") or {}).get(metric) or {}).get(key)
    return None if v is None else float(v)


def z_family(m: int, alpha: float = ALPHA) -> float:
    """The one-sided normal quantile of the Bonferroni level ``1 - alpha / m``."""
    return _N.inv_cdf(1.0 - alpha / max(int(m), 1))


def simultaneous_bounds(attacks: Sequence[dict], alpha: float = ALPHA) -> tuple[list[Bound], float]:
    """The (attack, metric) bounds of the completed attacks and the critical value used.

    A pair is measured when its mean and interval are defined (a TPR at 1% FPR on fewer than 100
    non-members is not). The simultaneous lower bound is clipped to ``[0, 1]`` and never above
    the per-attack ``ci_low``.

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
                found.append((entry["name"], metric, mean, lo, hi))
    z = z_family(len(found), alpha)
    out = []
    for name, metric, mean, lo, hi in found:
        se = max(mean - lo, 0.0) / _Z95
        low = min(max(mean - z * se, 0.0), lo)
        out.append(Bound(name, metric, mean, lo, hi, low))
    return out, z
