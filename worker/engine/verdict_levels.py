"""The level table of the verdict: low / inconclusive / medium / high.

For the AUC and the TPR at 1% FPR (``m`` measured (attack, metric) pairs in all):

* ``high`` / ``medium``: some attack's *simultaneous* lower bound (Bonferroni over the ``m``
  pairs, :mod:`worker.engine.simultaneous`) reaches the high / medium threshold. A model whose
  attacks are all below medium is flagged with probability at most 5%, however many attacks ran.
* ``low``: nothing reached medium and, for each of the two metrics, the data rule medium out:
  (a) every completed attack measured the metric and its 95% upper bound (``ci_high``, as in the
  tables) is below the medium threshold (an intersection-union test, valid over all attacks
  without correction), or (b) the scan set had the power: some attacks tested enough scans that
  a leak at the medium threshold would be detected with 80% probability
  (:func:`worker.engine.power.min_detectable_auc` / ``_tpr`` at or below the threshold), and each
  of these *powered* attacks' one-sided 80% upper bound, ``mean + z(0.8) se``, is below it (so an
  attack truly at the threshold passes unseen at most 20% of the time).
* ``inconclusive``: neither, with the reason and the scans that would settle it
  (:func:`settle_estimate`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

from .policy import Policy
from .power import min_detectable_auc, min_detectable_tpr, scans_needed
from .report_ranking import is_completed
from .simultaneous import METRICS, Bound, simultaneous_bounds, test_sizes

_N = NormalDist()
_Z95 = _N.inv_cdf(0.975)
_Z80 = _N.inv_cdf(0.80)

__all__ = ["Clearance", "LevelDecision", "bound_level", "decide_level", "metric_level", "test_sizes", "thresholds"]


def metric_level(value: float | None, medium: float, high: float) -> str:
    """``"high"`` if ``value >= high``, ``"medium"`` if ``>= medium``, else ``"low"``."""
    if value is None:
        return "low"
    if value >= high:
        return "high"
    if value >= medium:
        return "medium"
    return "low"


def bound_level(bound: Bound, policy: Policy) -> str:
    """``high`` / ``medium`` when the bound reaches that threshold with the family's confidence, else ``low``."""
    medium, high = thresholds(bound.metric, policy)
    return "high" if bound.reaches(high) else "medium" if bound.reaches(medium) else "low"


def thresholds(metric: str, policy: Policy) -> tuple[float, float]:
    """The (medium, high) thresholds of a metric."""
    if metric == "auc":
        return policy.auc_medium, policy.auc_high
    return policy.tpr_at_1pct_fpr_medium, policy.tpr_at_1pct_fpr_high


def _mde(metric: str, n1: int, n0: int) -> float | None:
    return min_detectable_auc(n1, n0) if metric == "auc" else min_detectable_tpr(n1, n0)


@dataclass
class Clearance:
    """Whether one metric's medium threshold is ruled out, and how (or why not).

    Attributes:
        metric: ``auc`` or ``tpr_at_fpr_0.01``.
        cleared: ruled out.
        route: ``bounds`` (every upper bound below), ``power`` (powered attacks below), or None.
        worst: the attack with the highest upper bound (None: not measured by any attack).
        worst_high: its 95% upper bound.
        mde: the smallest value the best-powered attack detects at 80% power (None: unmeasurable).
        test: that attack's (members, non-members).
    """

    metric: str
    cleared: bool
    route: str | None
    worst: str | None = None
    worst_high: float | None = None
    mde: float | None = None
    test: tuple[int, int] = (0, 0)


@dataclass
class LevelDecision:
    """The level, the bounds behind it and, for ``inconclusive``, what would settle it."""

    level: str
    alarm: Bound | None
    bounds: list[Bound]
    z: float
    lows: dict[tuple[str, str], float] = field(default_factory=dict)
    """(attack, metric) -> the simultaneous lower bound that tests the metric's medium threshold."""
    clearances: list[Clearance] = field(default_factory=list)
    scans_needed: int | None = None


def _clear(metric: str, ok: Sequence[dict], bounds: list[Bound], policy: Policy,
           counts: tuple[int, int] | None) -> Clearance:
    medium = thresholds(metric, policy)[0]
    mine = {b.attack: b for b in bounds if b.metric == metric}
    worst = max(mine.values(), key=lambda b: b.ci_high, default=None)
    sizes = {a["name"]: test_sizes(a, counts) for a in ok}
    best = max(sizes.items(), key=lambda kv: min(kv[1]), default=(None, (0, 0)))[1]
    out = Clearance(metric, False, None, worst.attack if worst else None,
                    worst.ci_high if worst else None, _mde(metric, *best) if min(best) > 0 else None, best)
    if mine and len(mine) == len(ok) and all(b.ci_high < medium for b in mine.values()):
        out.cleared, out.route = True, "bounds"
        return out
    mdes = {name: _mde(metric, *sizes[name]) for name in mine}
    powered = [b for name, b in mine.items() if mdes[name] is not None and mdes[name] <= medium]
    if powered and all(b.mean + _Z80 * max(b.ci_high - b.mean, 0.0) / _Z95 < medium for b in powered):
        out.cleared, out.route = True, "power"
    return out


def settle_estimate(decision: LevelDecision, policy: Policy, n_per_group: int, every_scan: bool) -> int | None:
    """Members (= non-members) that would settle an inconclusive verdict, about.

    The fewer of: the group size at which the assessment has the power to rule medium out
    (:func:`worker.engine.power.scans_needed`), and, where the strongest estimate is above the
    medium threshold, the size at which its simultaneous lower bound would reach it (the width
    shrinking as one over the square root of the scans).
    """
    power_n = scans_needed(policy, test_share=1.0 if every_scan else 0.5)
    needed: list[int] = []
    for c in decision.clearances:
        if c.cleared:
            continue
        medium = thresholds(c.metric, policy)[0]
        cands = [power_n] if power_n is not None else []
        mine = [b for b in decision.bounds if b.metric == c.metric and b.mean > medium and b.mean > b.lower(medium)]
        if mine:
            top = max(mine, key=lambda b: b.mean - medium)
            factor = ((top.mean - top.lower(medium)) / (top.mean - medium)) ** 2
            cands.append(math.ceil(n_per_group * factor))
        if cands:
            needed.append(min(cands))
    return max(needed) if needed else None


def decide_level(attacks: Sequence[dict], policy: Policy, *, counts: tuple[int, int] | None = None) -> LevelDecision:
    """The verdict's level from the completed attacks (see the module docstring).

    Args:
        attacks: report attack entries (errored ones are ignored here).
        policy: the thresholds.
        counts: the assessment's (members, non-members), for the test sizes of attacks that
            scored every scan.
    """
    ok = [a for a in attacks if is_completed(a)]
    bounds, z = simultaneous_bounds(ok, counts=counts)
    alarm, alarm_level, order = None, "low", ("low", "medium", "high")
    for b in bounds:
        lv = bound_level(b, policy)
        if order.index(lv) > order.index(alarm_level) or (
                lv == alarm_level != "low" and alarm is not None and b.mean > alarm.mean):
            alarm, alarm_level = b, lv
    lows = {(b.attack, b.metric): b.lower(thresholds(b.metric, policy)[0]) for b in bounds}
    decision = LevelDecision(alarm_level, alarm, bounds, z, lows)
    if alarm is not None or not ok:
        return decision
    decision.clearances = [_clear(m, ok, bounds, policy, counts) for m in METRICS]
    if not all(c.cleared for c in decision.clearances):
        decision.level = "inconclusive"
        n = min(counts) if counts else max((min(test_sizes(a)) for a in ok), default=0)
        every = any(not a.get("n_train") for a in ok)
        decision.scans_needed = settle_estimate(decision, policy, n, every)
    return decision
