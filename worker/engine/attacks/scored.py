"""Report entries of attacks that score every audit scan once (reference-model and quantile attacks).

The classifier attacks (:mod:`.runner`) spend part of the scans on attacker training and repeat
over splits. A reference-model attack (:mod:`worker.engine.reference.calibrated`) or a quantile
attack spends none: each audit scan is scored once, and that is one repeat whose test set is
every scored scan. :func:`scored_attack_entry` turns such a score into an entry with the keys of
the classifier attacks' entries (plus ``family`` and ``n_references``), with the same metrics,
bootstrap intervals, ROC curve, slices and exposure (:mod:`worker.engine.metrics`).

Hard predictions (accuracy, balanced accuracy, the slices) need a threshold, and choosing it on
the target's own labels would flatter the attack. The threshold is therefore chosen without them:
the one that maximises balanced accuracy for a reference model playing the target
(``threshold_score`` / ``threshold_labels``, from
:func:`worker.engine.reference.calibrated.reference_target_scores`), or given (``threshold``), or,
with neither (or empty reference scores: two references leave no reference model to play the
target with both members and non-members), the median of the scored scans' scores (label-free: half the scans called members,
right for a balanced audit set). Scans scoring above it are called members.

The exposure score (the report's "most exposed scans") is a strictly increasing map of the score
onto (0, 1), 0.5 at the threshold, ``0.5 (1 + u / (1 + |u|))`` with ``u = (score - threshold) /
spread`` (the threshold attack's map, :class:`worker.engine.attacks.classifiers.ThresholdAttack`);
metrics are computed on the raw score (the same ranking).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .. import metrics as M
from ..errors import InputError
from ..features.table import FeatureTable

FAMILIES: tuple[str, ...] = ("reference", "quantile", "classifier")
"""The attack families the report marks."""


def balanced_threshold(score: np.ndarray, labels: np.ndarray) -> float:
    """The cut ``t`` of the rule "member iff score > t" with the highest balanced accuracy.

    Cuts are midpoints between consecutive distinct scores (the first maximum wins); with a single
    distinct score, that score.

    Args:
        score: ``(n,)`` scores (higher = member).
        labels: ``(n,)`` 1/True = member.

    Raises:
        InputError: empty, non-finite, or not both classes.
    """
    s = np.asarray(score, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape or not s.size:
        raise InputError("threshold: the scores and labels of the reference model playing the target do not match")
    if not np.isfinite(s).all():
        raise InputError("threshold: the reference model's scores are not all finite")
    n1, n0 = int(y.sum()), int((~y).sum())
    if not n1 or not n0:
        raise InputError("threshold: the reference model playing the target needs members and non-members")
    order = np.argsort(s, kind="mergesort")
    ss, yy = s[order], y[order]
    distinct = np.flatnonzero(ss[1:] > ss[:-1])  # cut between ss[i] and ss[i+1]
    if not distinct.size:
        return float(ss[0])
    mem_le = np.cumsum(yy)[distinct]
    non_le = np.cumsum(~yy)[distinct]
    bacc = 0.5 * ((n1 - mem_le) / n1 + non_le / n0)
    i = distinct[int(np.argmax(bacc))]
    return float(0.5 * (ss[i] + ss[i + 1]))


def _softsign01(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + z / (1.0 + np.abs(z)))


def scored_attack_entry(
    ft_or_table: FeatureTable | pd.DataFrame,
    *,
    name: str,
    feature_set: str,
    method: str,
    family: str,
    threat_model: str,
    score: np.ndarray,
    threshold_score: np.ndarray | None = None,
    threshold_labels: np.ndarray | None = None,
    threshold: float | None = None,
    scored: np.ndarray | None = None,
    seed: int = 0,
    n_boot: int = M.N_BOOTSTRAP,
    age_bins: Sequence[float] | None = None,
    n_references: int | None = None,
    n_features: int = 1,
    attributes: Sequence[str] | None = None,
    duration_s: float | None = None,
) -> tuple[dict, list[dict]]:
    """The report entry and the exposure of one attack that scored every audit scan once.

    Args:
        ft_or_table: the feature table (or its DataFrame: ``scan_id``, ``member``, ``age``).
        name: the attack's report name (``lira-online:grad-norm``).
        feature_set: the signal's feature-set name (``error``, ``grad-norm``).
        method: the method (written as ``classifier``), e.g. ``lira-online``.
        family: ``reference``, ``quantile`` or ``classifier``.
        threat_model: ``black-box`` or ``white-box``.
        score: ``(n_rows,)`` member score of every row (higher = member); only ``scored`` rows
            are read.
        threshold_score, threshold_labels: the scores and member labels of a reference model
            playing the target; the threshold maximises their balanced accuracy (empty: the
            median fallback).
        threshold: the threshold itself (wins over ``threshold_score``).
        scored: ``(n_rows,)`` bool, the rows scored; None for all.
        seed: seeds the bootstrap.
        n_boot: bootstrap resamples.
        age_bins: age-bin edges; None for decades.
        n_references: K, the reference models used (None where none).
        n_features: the number of signals the score combines (layers for ``:grad-norm``).
        attributes: the slicing attributes; None for the feature table's (none for a DataFrame).
        duration_s: the attack's running time, if known.

    Returns:
        The entry (keys of :func:`worker.engine.attacks.runner.run_attacks`' entries plus
        ``family`` and ``n_references``; ``n_train`` 0, ``n_test`` the scored scans, ``repeats``
        1) and the per-scan exposure (:func:`worker.engine.metrics.exposure`).

    Raises:
        InputError: a score of the wrong length or not finite on a scored row, an unknown family
            or threat model, no scored row.
    """
    if isinstance(ft_or_table, FeatureTable):
        table = ft_or_table.table
        attrs = list(ft_or_table.attributes if attributes is None else attributes)
    else:
        table = ft_or_table
        attrs = list(attributes or [])
    if family not in FAMILIES:
        raise InputError(f"{name}: unknown attack family '{family}' (one of {', '.join(FAMILIES)})")
    if threat_model not in ("black-box", "white-box"):
        raise InputError(f"{name}: unknown threat model '{threat_model}'")
    n = len(table)
    s = np.asarray(score, dtype=np.float64).ravel()
    if s.shape != (n,):
        raise InputError(f"{name}: {s.shape[0]} scores for {n} scans")
    mask = np.ones(n, bool) if scored is None else np.asarray(scored, dtype=bool).ravel()
    if mask.shape != (n,) or not mask.any():
        raise InputError(f"{name}: the scored mask selects no scan (or has the wrong length)")
    rows = np.flatnonzero(mask)
    if not np.isfinite(s[rows]).all():
        raise InputError(f"{name}: {int((~np.isfinite(s[rows])).sum())} scored scan(s) have no finite score")
    y = table["member"].to_numpy(dtype=int)
    test_s = s[rows]

    if threshold is not None:
        cut = float(threshold)
    elif threshold_score is not None and np.asarray(threshold_score).size:
        if threshold_labels is None:
            raise InputError(f"{name}: threshold_score needs threshold_labels")
        cut = balanced_threshold(threshold_score, threshold_labels)
    else:
        cut = float(np.median(test_s))
    ref = np.asarray(threshold_score if threshold_score is not None else [], dtype=np.float64)
    spread_src = ref if ref.size > 1 else test_s
    spread = float(np.std(spread_src)) if spread_src.size > 1 else 0.0
    if not np.isfinite(spread) or spread <= 0:
        spread = 1.0
    pred = (test_s > cut).astype(int)

    outcome = M.RepeatOutcome(rows, y[rows], test_s, pred, seed)
    shown = M.RepeatOutcome(rows, y[rows], _softsign01((test_s - cut) / spread), pred, seed)
    ages = table["age"].to_numpy(dtype=np.float64)[rows]
    entry = {
        "name": name,
        "feature_set": feature_set,
        "threat_model": threat_model,
        "classifier": method,
        "status": "ok",
        "error": None,
        "n_features": int(n_features),
        "n_train": 0,
        "n_test": int(rows.size),
        "repeats": 1,
        "metrics": M.attack_metrics([outcome], n_boot=n_boot),
        "roc": M.mean_roc([outcome]),
        "by_age_bin": M.accuracy_by_age_bin(ages, outcome.correct, y[rows], age_bins),
        "by_attribute": M.accuracy_by_attribute(table, attrs, rows, outcome.correct),
        "duration_s": duration_s,
        "family": family,
        "n_references": None if n_references is None else int(n_references),
    }
    return entry, M.exposure(table["scan_id"].tolist(), y, [shown])


__all__ = ["FAMILIES", "balanced_threshold", "scored_attack_entry"]
