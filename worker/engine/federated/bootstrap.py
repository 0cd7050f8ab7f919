"""Confidence intervals for many attacker x victim test sets that share scans.

In a federation the same scans are tested many times: a victim's scans by every attacker,
the unseen scans by every attacker against every victim. Bootstrapping each test set on
its own (as :func:`worker.engine.metrics.bootstrap_metrics` does for one attack) and
averaging would treat those tests as independent and give intervals far too narrow for a
mean over attacker-victim pairs. Here one bootstrap draw resamples the *scans*: every
scan that appears in any test set gets a multiplicity (members and non-members resampled
separately, each group keeping its size), and every test set is weighed with the
multiplicities of its scans. A group of test sets (one pair's repeats, one attacker's
victims, the whole federation) then has one bootstrap distribution of its mean metric,
whose 2.5 and 97.5 percentiles are the 95% interval.

The weighted metrics are those of :func:`~worker.engine.metrics.bootstrap_metrics`
(accuracy, balanced accuracy, Mann-Whitney AUC with ties as 1/2, TPR at FPR as the share
of members strictly above the (k+1)-th highest non-member, k = floor(target * n0)); with
per-test-set multinomial weights they are the same numbers (tests check it).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ..metrics import METRIC_NAMES, TPR_AT_FPR, RepeatOutcome, estimable, repeat_metrics, summarize

__all__ = ["ScanBootstrap", "summarize_group", "weighted_metrics"]


def weighted_metrics(
    y_true: np.ndarray, score: np.ndarray, pred: np.ndarray, W: np.ndarray, V: np.ndarray
) -> dict[str, np.ndarray]:
    """Metrics of one test set under many weightings of its scans.

    Args:
        y_true: labels (1 member).
        score: membership scores.
        pred: hard predictions.
        W: ``(B, n_members)`` weights of the members, in test-set order.
        V: ``(B, n_nonmembers)`` weights of the non-members, in test-set order.

    Returns:
        metric name -> ``(B,)`` values (NaN where a class has zero weight).
    """
    y = np.asarray(y_true).astype(int)
    s = np.asarray(score, dtype=np.float64)
    correct = (np.asarray(pred).astype(int) == y).astype(np.float64)
    pos = y == 1
    s1, s0 = s[pos], s[~pos]
    W = np.asarray(W, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    w1, w0 = W.sum(axis=1), V.sum(axis=1)
    ok = (w1 > 0) & (w0 > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tp, tn = W @ correct[pos], V @ correct[~pos]
        out = {"accuracy": (tp + tn) / (w1 + w0), "balanced_accuracy": 0.5 * (tp / w1 + tn / w0)}
        order = np.argsort(s0, kind="mergesort")
        s0s, Vs = s0[order], V[:, order]
        C = np.concatenate([np.zeros((len(V), 1)), np.cumsum(Vs, axis=1)], axis=1)
        lt = np.searchsorted(s0s, s1, side="left")
        le = np.searchsorted(s0s, s1, side="right")
        below = C[:, lt] + 0.5 * (C[:, le] - C[:, lt])
        out["auc"] = (W * below).sum(axis=1) / (w1 * w0)
        desc, Cd = s0s[::-1], np.cumsum(Vs[:, ::-1], axis=1)
        for name, target in TPR_AT_FPR.items():
            if not estimable(len(s0), target):  # too few non-members for this FPR: undefined
                out[name] = np.full(len(W), np.nan)
                continue
            k = np.floor(target * w0 + 1e-9)
            all_fp = k >= w0
            first = np.argmax(Cd >= (k + 1)[:, None], axis=1)
            cut = desc[first]
            tpr = (W * (s1[None, :] > cut[:, None])).sum(axis=1) / w1
            out[name] = np.where(all_fp, 1.0, tpr)
    return {k: np.where(ok, v, np.nan) for k, v in out.items()}


class ScanBootstrap:
    """Shared-scan bootstrap of many test sets (see the module docstring).

    Args:
        rows: the rows (scan indices) that may appear in the test sets.
        labels: membership label of each of ``rows`` (1 member).
        n_boot: bootstrap draws.
        seed: seed of the draws.
    """

    def __init__(self, rows: np.ndarray, labels: np.ndarray, n_boot: int, seed: int = 0):
        rows = np.asarray(rows, dtype=int)
        labels = np.asarray(labels).astype(int)
        self.n_boot = int(n_boot)
        n_rows = int(rows.max()) + 1 if rows.size else 0
        self.weights = np.zeros((self.n_boot, n_rows), dtype=np.float64)
        rng = np.random.default_rng([int(seed), 0xB007])
        for cls in (1, 0):
            group = np.unique(rows[labels == cls])
            if group.size and self.n_boot:
                counts = rng.multinomial(group.size, np.full(group.size, 1.0 / group.size), size=self.n_boot)
                self.weights[:, group] = counts
        # keyed by id(outcome); the outcome is kept alive so that its id is never reused
        self._boot: dict[int, tuple[RepeatOutcome, dict[str, np.ndarray]]] = {}
        self._point: dict[int, tuple[RepeatOutcome, dict[str, float | None]]] = {}

    @classmethod
    def of(cls, outcomes: Sequence[RepeatOutcome], n_boot: int, seed: int = 0) -> "ScanBootstrap":
        """A bootstrap over every scan tested in ``outcomes``."""
        rows = np.concatenate([np.asarray(o.test, dtype=int) for o in outcomes]) if outcomes else np.array([], int)
        labels = np.concatenate([np.asarray(o.y).astype(int) for o in outcomes]) if outcomes else np.array([], int)
        return cls(rows, labels, n_boot, seed)

    def metrics(self, outcome: RepeatOutcome) -> dict[str, np.ndarray]:
        """The ``(B,)`` bootstrap values of each metric for one test set (memoised)."""
        key = id(outcome)
        if key not in self._boot:
            y = np.asarray(outcome.y).astype(int)
            test = np.asarray(outcome.test, dtype=int)
            W = self.weights[:, test[y == 1]]
            V = self.weights[:, test[y == 0]]
            self._boot[key] = (outcome, weighted_metrics(y, outcome.score, outcome.pred, W, V))
        return self._boot[key][1]

    def point(self, outcome: RepeatOutcome) -> dict[str, float | None]:
        """The metrics of one test set (:func:`~worker.engine.metrics.repeat_metrics`, memoised)."""
        key = id(outcome)
        if key not in self._point:
            self._point[key] = (outcome, repeat_metrics(outcome.y, outcome.score, outcome.pred))
        return self._point[key][1]


def summarize_group(
    groups: Sequence[Sequence[RepeatOutcome]], boot: ScanBootstrap, metrics: Sequence[str] = METRIC_NAMES
) -> dict[str, dict]:
    """Summaries (:func:`~worker.engine.metrics.summarize`) of a group of test sets.

    Args:
        groups: the test sets, in sub-groups whose means are the reported ``values`` (e.g. one
            sub-group per attacker-victim pair, holding its repeats).
        boot: the shared-scan bootstrap.
        metrics: metric names.

    Returns:
        metric -> ``mean`` (of the sub-group means), ``std`` (across sub-groups), ``ci_low`` /
        ``ci_high`` (percentiles of the bootstrap mean over every test set of the group) and
        ``values`` (the sub-group means).
    """
    groups = [list(g) for g in groups if len(g)]
    flat = [o for g in groups for o in g]
    point = {id(o): boot.point(o) for o in flat}
    out: dict[str, dict] = {}
    for name in metrics:
        values = []
        for g in groups:
            vals = [point[id(o)][name] for o in g if point[id(o)][name] is not None]
            values.append(float(np.mean(vals)) if vals else None)
        boots = []
        if flat and boot.n_boot:
            stacked = np.stack([boot.metrics(o)[name] for o in flat])
            with warnings.catch_warnings():  # a draw where the metric is undefined everywhere
                warnings.simplefilter("ignore", RuntimeWarning)
                boots = [np.nanmean(stacked, axis=0)]
        out[name] = summarize(values, boots)
    return out
