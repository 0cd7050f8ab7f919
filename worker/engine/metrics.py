"""Metrics of membership-inference attacks, with confidence intervals, and model utility.

Member is the positive class everywhere. Per repeat (one attacker-training / test split):
accuracy, balanced accuracy, ROC AUC and the TPR at FPR 0.1% and 1% on the test set.
Across repeats: mean, standard deviation (ddof=1 when there are several repeats, else 0)
and a 95% confidence interval that accounts for the finite test set: each repeat's test
scans are bootstrapped (stratified: members and non-members resampled separately, so the
test set stays balanced; B = 200 per repeat, seeded), the R * B bootstrap values are pooled
and the 2.5 and 97.5 percentiles taken. Pooling spreads the interval over both the repeat-
to-repeat variation (training split, classifier seed) and the test-set sampling error.

TPR at a target FPR is read off the empirical ROC curve (``sklearn.metrics.roc_curve``)
as the largest TPR among the curve's points with FPR <= target: the best true-positive
rate that a threshold achieves without exceeding the false-positive budget (a step, not a
linear interpolation, so it never overstates what an attacker can do). With fewer than
1/target non-members in the test set, the budget is zero false positives.

All returned numbers are plain Python floats (or ints), with ``None`` where undefined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score, roc_curve

from .features.table import FeatureTable
from .measurable import estimable

TPR_AT_FPR: dict[str, float] = {"tpr_at_fpr_0.001": 0.001, "tpr_at_fpr_0.01": 0.01}
"""Metric name -> target false-positive rate."""

METRIC_NAMES: tuple[str, ...] = ("accuracy", "balanced_accuracy", "auc", *TPR_AT_FPR)
"""The metrics reported for each attack, in report order."""

N_BOOTSTRAP = 200
"""Bootstrap resamples of each repeat's test set."""

FPR_GRID: np.ndarray = np.unique(
    np.round(np.concatenate([[0.0], np.logspace(-3, 0, 31), np.linspace(0.0, 1.0, 101)]), 12)
)
"""FPR grid of the mean ROC curve: linear steps of 0.01 plus log-spaced points from 1e-3
to 1, so that the curve renders on linear and on log-log axes."""

_FPR_TOL = 1e-12


def to_float(x: object) -> float | None:
    """A plain Python float, or None for None / NaN / infinity."""
    if x is None:
        return None
    x = float(x)  # type: ignore[arg-type]
    return x if math.isfinite(x) else None


@dataclass
class RepeatOutcome:
    """The test-set result of one repeat of one attack.

    Attributes:
        test: row indices (into the feature table) of the test scans.
        y: membership labels of the test scans (1 member).
        score: membership scores in [0, 1] (higher = member).
        pred: hard predictions (1 member).
        seed: the repeat's seed (seeds the bootstrap).
    """

    test: np.ndarray
    y: np.ndarray
    score: np.ndarray
    pred: np.ndarray
    seed: int = 0

    @property
    def correct(self) -> np.ndarray:
        """Whether each test prediction is right."""
        return np.asarray(self.pred).astype(int) == np.asarray(self.y).astype(int)


def tpr_at_fpr(y_true: np.ndarray, score: np.ndarray, target: float) -> float:
    """Largest TPR on the ROC curve among points with FPR <= ``target`` (member positive)."""
    fpr, tpr, _ = roc_curve(np.asarray(y_true).astype(int), score, pos_label=1,
                            drop_intermediate=False)
    return float(tpr[fpr <= target + _FPR_TOL].max())


def repeat_metrics(y_true: np.ndarray, score: np.ndarray, pred: np.ndarray) -> dict[str, float | None]:
    """The metrics of one test set (see :data:`METRIC_NAMES`)."""
    y = np.asarray(y_true).astype(int)
    out: dict[str, float | None] = {
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
    }
    if len(np.unique(y)) == 2:
        out["auc"] = float(roc_auc_score(y, score))
        n_neg = int((y == 0).sum())
        for name, target in TPR_AT_FPR.items():
            out[name] = tpr_at_fpr(y, score, target) if estimable(n_neg, target) else None
    else:
        out["auc"] = None
        out.update({name: None for name in TPR_AT_FPR})
    return out


def bootstrap_metrics(
    y_true: np.ndarray, score: np.ndarray, pred: np.ndarray, *, n_boot: int = N_BOOTSTRAP,
    seed: int | Sequence[int] = 0,
) -> dict[str, np.ndarray]:
    """Metrics of ``n_boot`` stratified bootstrap resamples of one test set.

    Members and non-members are resampled separately (with replacement, each group keeping
    its size). Vectorised: each resample is a vector of multiplicities, the AUC is the
    weighted Mann-Whitney statistic (ties count 1/2), the TPR at FPR the weighted share of
    members scoring strictly above the (k+1)-th highest non-member, k = floor(target * n0);
    the same values as ``sklearn`` on the expanded resample.

    Returns:
        metric name -> array of ``n_boot`` values.
    """
    y = np.asarray(y_true).astype(int)
    s = np.asarray(score, dtype=np.float64)
    correct = (np.asarray(pred).astype(int) == y).astype(np.float64)
    pos = y == 1
    s1, s0 = s[pos], s[~pos]
    n1, n0 = len(s1), len(s0)
    if n1 == 0 or n0 == 0:
        raise ValueError("bootstrap needs members and non-members in the test set")
    rng = np.random.default_rng(seed)
    W = rng.multinomial(n1, np.full(n1, 1.0 / n1), size=n_boot).astype(np.float64)
    V = rng.multinomial(n0, np.full(n0, 1.0 / n0), size=n_boot).astype(np.float64)
    tp, tn = W @ correct[pos], V @ correct[~pos]
    out = {"accuracy": (tp + tn) / (n1 + n0), "balanced_accuracy": 0.5 * (tp / n1 + tn / n0)}

    order = np.argsort(s0, kind="mergesort")
    s0s, Vs = s0[order], V[:, order]
    C = np.concatenate([np.zeros((n_boot, 1)), np.cumsum(Vs, axis=1)], axis=1)
    lt = np.searchsorted(s0s, s1, side="left")
    le = np.searchsorted(s0s, s1, side="right")
    below = C[:, lt] + 0.5 * (C[:, le] - C[:, lt])  # weighted non-members below each member
    out["auc"] = (W * below).sum(axis=1) / (n1 * n0)

    desc, Cd = s0s[::-1], np.cumsum(Vs[:, ::-1], axis=1)
    for name, target in TPR_AT_FPR.items():
        if not estimable(n0, target):
            out[name] = np.full(n_boot, np.nan)
            continue
        k = int(math.floor(target * n0 + 1e-9))
        if k >= n0:
            out[name] = np.ones(n_boot)
            continue
        cut = desc[np.argmax(Cd >= k + 1, axis=1)]
        out[name] = (W * (s1[None, :] > cut[:, None])).sum(axis=1) / n1
    return out


def summarize(values: Sequence[float | None], boot: Sequence[np.ndarray] = ()) -> dict:
    """Mean, std (ddof=1 when more than one value), bootstrap percentile 95% CI and values."""
    vals = [v for v in (to_float(x) for x in values) if v is not None]
    mean = float(np.mean(vals)) if vals else None
    std = (float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0) if vals else None
    pooled = np.concatenate([np.asarray(b, dtype=np.float64) for b in boot]) if len(boot) else np.array([])
    pooled = pooled[np.isfinite(pooled)]
    lo, hi = (np.percentile(pooled, [2.5, 97.5]) if pooled.size else (None, None))
    return {
        "mean": mean,
        "std": std,
        "ci_low": to_float(lo),
        "ci_high": to_float(hi),
        "values": [to_float(x) for x in values],
    }


def attack_metrics(outcomes: Sequence[RepeatOutcome], *, n_boot: int = N_BOOTSTRAP) -> dict[str, dict]:
    """Per-metric summaries (:func:`summarize`) over the repeats of one attack."""
    per_repeat = [repeat_metrics(o.y, o.score, o.pred) for o in outcomes]
    boots = [bootstrap_metrics(o.y, o.score, o.pred, n_boot=n_boot, seed=[int(o.seed), 0xB007])
             for o in outcomes if len(np.unique(o.y)) == 2]
    return {
        name: summarize([m[name] for m in per_repeat], [b[name] for b in boots])
        for name in METRIC_NAMES
    }


def roc_on_grid(y_true: np.ndarray, score: np.ndarray, grid: np.ndarray = FPR_GRID) -> np.ndarray:
    """TPR at each grid FPR: the largest TPR of the ROC curve with FPR <= that value."""
    fpr, tpr, _ = roc_curve(np.asarray(y_true).astype(int), score, pos_label=1,
                            drop_intermediate=False)
    idx = np.searchsorted(fpr, np.asarray(grid) + _FPR_TOL, side="right") - 1
    return tpr[idx]


def mean_roc(outcomes: Sequence[RepeatOutcome], grid: np.ndarray = FPR_GRID) -> dict[str, list[float]]:
    """Mean ROC curve over the repeats on a fixed FPR grid (``{"fpr": [...], "tpr": [...]}``)."""
    curves = [roc_on_grid(o.y, o.score, grid) for o in outcomes if len(np.unique(o.y)) == 2]
    tpr = np.mean(curves, axis=0) if curves else np.full(len(grid), np.nan)
    return {"fpr": [float(x) for x in grid], "tpr": [to_float(x) for x in tpr]}


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def default_age_bins(ages: np.ndarray) -> list[float]:
    """Decade edges covering ``ages`` (e.g. 40, 50, ..., 90)."""
    ages = np.asarray(ages, dtype=np.float64)
    ages = ages[np.isfinite(ages)]
    if not ages.size:
        return []
    lo, hi = math.floor(ages.min() / 10) * 10, math.floor(ages.max() / 10) * 10 + 10
    return [float(e) for e in range(int(lo), int(hi) + 1, 10)]


def _group_accuracy(correct: np.ndarray, members: np.ndarray) -> dict:
    n = int(len(correct))
    return {
        "accuracy": float(correct.mean()) if n else None,
        "n": n,
        "n_members": int(members.sum()),
    }


def accuracy_by_age_bin(
    ages: np.ndarray, correct: np.ndarray, members: np.ndarray, bins: Sequence[float] | None = None
) -> list[dict]:
    """Attack accuracy per age bin over pooled test predictions.

    Bins are ``[low, high)`` (the last one closed); default decades (:func:`default_age_bins`).
    Ages below the first or above the last edge go to open bins (``low`` or ``high`` None),
    listed only when not empty. ``n`` counts pooled predictions (a scan tested in several
    repeats counts each time); ``n_members`` those of members.
    """
    ages = np.asarray(ages, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    members = np.asarray(members).astype(int)
    edges = sorted(float(b) for b in (bins if bins is not None else default_age_bins(ages)))
    if len(edges) < 2:
        return []
    out = []
    below = ages < edges[0]
    if below.any():
        out.append({"bin": f"<{_fmt(edges[0])}", "low": None, "high": edges[0],
                    **_group_accuracy(correct[below], members[below])})
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        last = i == len(edges) - 2
        sel = (ages >= lo) & ((ages <= hi) if last else (ages < hi))
        out.append({"bin": f"{_fmt(lo)}-{_fmt(hi)}", "low": lo, "high": hi,
                    **_group_accuracy(correct[sel], members[sel])})
    above = ages > edges[-1]
    if above.any():
        out.append({"bin": f">{_fmt(edges[-1])}", "low": edges[-1], "high": None,
                    **_group_accuracy(correct[above], members[above])})
    return out


def _json_value(v: object) -> object:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v if isinstance(v, (str, int, float, bool)) else str(v)


def accuracy_by_attribute(
    table: pd.DataFrame, attributes: Sequence[str], rows: np.ndarray, correct: np.ndarray
) -> dict[str, list[dict]]:
    """Attack accuracy per value of each manifest attribute over pooled test predictions.

    Args:
        table: the feature table's DataFrame.
        attributes: attribute columns (e.g. ``sex``, ``site``); absent ones are skipped.
        rows: row index of each pooled prediction.
        correct: whether each pooled prediction is right.

    Returns:
        attribute -> ``[{"value", "accuracy", "n", "n_members"}]``, missing values as None.
    """
    rows = np.asarray(rows, dtype=int)
    correct = np.asarray(correct, dtype=bool)
    members = table["member"].to_numpy(dtype=int)[rows]
    out: dict[str, list[dict]] = {}
    for attr in attributes:
        if attr not in table.columns:
            continue
        vals = table[attr].to_numpy(dtype=object)[rows]
        missing = pd.isna(vals)
        keys = np.where(missing, "\0missing", vals.astype(str))
        groups = []
        for key in sorted(set(keys.tolist())):
            sel = keys == key
            value = None if key == "\0missing" else _json_value(vals[sel][0])
            groups.append({"value": value, **_group_accuracy(correct[sel], members[sel])})
        out[attr] = groups
    return out


def exposure(
    scan_ids: Sequence[object], members: np.ndarray, outcomes: Sequence[RepeatOutcome]
) -> list[dict]:
    """Per-scan membership score: the mean attack score over the repeats that tested it.

    Returns:
        one dict per scan, in table order: ``scan_id``, ``member``, ``score`` (None when the
        scan was never in a test set) and ``n_tested``.
    """
    n = len(scan_ids)
    total, count = np.zeros(n), np.zeros(n, dtype=int)
    for o in outcomes:
        np.add.at(total, np.asarray(o.test, dtype=int), np.asarray(o.score, dtype=np.float64))
        np.add.at(count, np.asarray(o.test, dtype=int), 1)
    members = np.asarray(members).astype(int)
    return [
        {
            "scan_id": _json_value(sid),
            "member": int(members[i]),
            "score": to_float(total[i] / count[i]) if count[i] else None,
            "n_tested": int(count[i]),
        }
        for i, sid in enumerate(scan_ids)
    ]


def utility(ft: FeatureTable) -> dict:
    """Mean absolute error of the model on members and non-members.

    Returns:
        ``mae_members``, ``mae_nonmembers``, ``n_members``, ``n_nonmembers`` and ``mae_gap``
        (non-members minus members: the generalisation gap in years, positive when the model
        fits its training scans better), None where a group is empty.
    """
    err = np.abs(ft.table["error"].to_numpy(dtype=np.float64))
    mem = ft.members == 1
    ok = np.isfinite(err)
    m, nm = err[mem & ok], err[~mem & ok]
    mae_m = float(m.mean()) if m.size else None
    mae_n = float(nm.mean()) if nm.size else None
    return {
        "mae_members": mae_m,
        "mae_nonmembers": mae_n,
        "n_members": int(mem.sum()),
        "n_nonmembers": int((~mem).sum()),
        "mae_gap": (mae_n - mae_m) if mae_m is not None and mae_n is not None else None,
    }
