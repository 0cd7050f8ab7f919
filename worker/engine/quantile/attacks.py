"""The QMIA attacks of an assessment: ``qmia`` (black-box) and ``qmia:grad-norm`` (white-box).

Bertran et al., "Scalable Membership Inference Attacks via Quantile Regression" (NeurIPS 2023),
for a regression model: every audit scan is scored (nothing is spent on attacker training) by
:func:`~.core.qmia`, cross-fitted on the non-members.

Scores (higher = more member-like):
    ``qmia``: the negative squared error, -(prediction - age)^2.
    ``qmia:grad-norm``: the negative log of the total per-sample gradient norm (the square root of
        the sum of the squared ``grad_norm:<layer>`` columns, as the ``grad-norm`` threshold attack).

What the regressor sees (``X``): the true age and the manifest's slicing attributes (``sex``,
``site``, ...; text as categories), i.e. what the attacker knows of a scan *apart from the target
model's output*. The prediction is NOT in ``X``: with the age, it fixes the error exactly
(score = -(age - prediction)^2), so a regressor of the score given (age, prediction) learns the
score itself and every scan sits on its own threshold; the attack then measures only how badly
the regressor fits that function. (Bertran et al. likewise regress on the sample and its label,
never on the target's output.) ``x_columns`` overrides the choice.

Each entry (:func:`worker.engine.attacks.scored.scored_attack_entry`, ``family`` ``quantile``):
    metrics and ROC: the Gaussian variant's continuous score, centred at the scan's own predicted
        non-member median: (score - q_0.5(X)) / sigma(X), q_0.5 the split-conformal median.
    pred (accuracy, slices): that score > 0, i.e. the score exceeds the scan's predicted
        non-member median (alpha = 0.5 of the Gaussian rule). No member label is used; about half
        of the non-members are flagged whatever the class balance (checked by the
        ``calibration_gaussian`` row at alpha 0.5).
    ``calibration``: the quantile variant's (one pinball-loss regressor per alpha) observed FPR on
        held-out non-members per alpha with its Clopper-Pearson interval, and the TPR.
    ``calibration_gaussian``: the same for the Gaussian rule; ``qmia``: the settings.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .. import metrics as M
from ..attacks.entries import error_entry
from ..attacks.scored import scored_attack_entry
from ..errors import InputError
from ..features.table import FeatureTable
from .core import DEFAULT_ALPHAS, qmia

logger = logging.getLogger(__name__)

_LOG_FLOOR = 1e-30
_MAX_CATEGORIES = 254  # HistGradientBoosting's limit (max_bins - 1)


def _prediction_error(ft: FeatureTable, name: str) -> np.ndarray:
    for col in ("age", "prediction"):
        if col not in ft.table.columns:
            raise InputError(f"{name} needs the '{col}' column (the model's predicted age and the true age); "
                             "the feature table lacks it")
    err = ft.table["prediction"].to_numpy(dtype=np.float64) - ft.table["age"].to_numpy(dtype=np.float64)
    if not np.isfinite(err).all():
        raise InputError(f"{name}: {int((~np.isfinite(err)).sum())} scan(s) have no finite prediction or age")
    return err


def negative_squared_error(ft: FeatureTable) -> np.ndarray:
    """The ``qmia`` score: -(prediction - age)^2."""
    return -_prediction_error(ft, "qmia") ** 2


def negative_log_grad_norm(ft: FeatureTable) -> np.ndarray:
    """The ``qmia:grad-norm`` score: -log of the total per-sample gradient norm over layers."""
    cols = ft.grad_norm_columns
    if not cols:
        raise InputError("qmia:grad-norm needs white-box features: the feature table has no "
                         "grad_norm:<layer> columns (run the assessment with the model's weights)")
    norms = ft.table[cols].to_numpy(dtype=np.float64)
    if not np.isfinite(norms).all():
        raise InputError("qmia:grad-norm: some gradient norms are missing or not finite")
    total = np.sqrt((norms ** 2).sum(axis=1))
    return -np.log(np.maximum(total, _LOG_FLOOR))


@dataclass(frozen=True)
class QmiaAttack:
    """A registered QMIA attack.

    Attributes:
        name: report name (DESIGN.md): ``qmia``, ``qmia:grad-norm``.
        feature_set: the signal's feature-set name (``error``, ``grad-norm``).
        threat_model: ``black-box`` or ``white-box``.
        score: ``score(ft) -> (n_scans,)`` member score (higher = member).
        describe: how the score is computed, for the entry's settings.
    """

    name: str
    feature_set: str
    threat_model: str
    score: Callable[[FeatureTable], np.ndarray]
    describe: str


QMIA_ATTACKS: dict[str, QmiaAttack] = {
    "qmia": QmiaAttack("qmia", "error", "black-box", negative_squared_error,
                       "-(prediction - age)^2"),
    "qmia:grad-norm": QmiaAttack("qmia:grad-norm", "grad-norm", "white-box", negative_log_grad_norm,
                                 "-log(sqrt(sum over layers of grad_norm^2))"),
}
"""The QMIA attacks by report name."""


def attacker_features(
    ft: FeatureTable, x_columns: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """What the attacker's regressor sees per scan: ``age`` and the manifest attributes.

    Numeric columns are used as they are (missing values stay NaN, which the regressor handles);
    other columns become category codes; a text column with more than 254 distinct values (an
    identifier, not a group) is left out.

    Args:
        ft: the feature table.
        x_columns: the columns to use; None for ``age`` and ``ft.attributes``.

    Returns:
        ``(X, categorical mask, column names used)``.

    Raises:
        InputError: a named column is missing, or ``age`` is missing.
    """
    cols = list(dict.fromkeys(x_columns if x_columns is not None else ["age", *ft.attributes]))
    missing = [c for c in cols if c not in ft.table.columns]
    if missing or not cols:
        raise InputError(f"qmia: the feature table lacks the attacker feature column(s) {', '.join(missing) or '(none named)'}")
    parts, cat, used = [], [], []
    for c in cols:
        series = ft.table[c]
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            parts.append(series.to_numpy(dtype=np.float64))
            cat.append(False)
        else:
            codes, uniques = pd.factorize(series, sort=True)
            if len(uniques) > _MAX_CATEGORIES:
                logger.info("qmia: attribute %s has %d distinct values; left out", c, len(uniques))
                continue
            parts.append(np.where(codes < 0, np.nan, codes).astype(np.float64))
            cat.append(True)
        used.append(c)
    if not parts:
        raise InputError("qmia: none of the attacker feature columns is usable")
    return np.column_stack(parts), np.asarray(cat, dtype=bool), used


def _error_entry(attack: QmiaAttack | None, name: str, message: str) -> dict:
    return error_entry(name, message, feature_set=attack.feature_set if attack else "error",
                       threat_model=attack.threat_model if attack else None, classifier="qmia", family="quantile",
                       n_references=None)


def qmia_entry(
    ft: FeatureTable,
    name: str,
    *,
    seed: int = 0,
    n_boot: int = M.N_BOOTSTRAP,
    age_bins: Sequence[float] | None = None,
    alpha_grid: Sequence[float] = DEFAULT_ALPHAS,
    folds: int = 5,
    x_columns: Sequence[str] | None = None,
) -> tuple[dict, list[dict]]:
    """One QMIA attack's report entry and per-scan exposure (raises on bad input).

    Raises:
        InputError: an unknown attack name, a missing column (prediction, age, gradient norms),
            too few non-members (fewer than ``2 * folds``).
    """
    if name not in QMIA_ATTACKS:
        raise InputError(f"unknown quantile attack '{name}' (known: {', '.join(QMIA_ATTACKS)})")
    attack = QMIA_ATTACKS[name]
    start = time.perf_counter()
    score = attack.score(ft)
    X, cat, used = attacker_features(ft, x_columns)
    y = ft.members
    alphas = tuple(sorted({float(a) for a in alpha_grid} | {0.5}))
    common = dict(alpha_grid=alphas, seed=seed, folds=folds, categorical=cat)
    gauss = qmia(X, score, y, variant="gaussian", **common)
    quant = qmia(X, score, y, variant="quantile", **common)
    centred = (score - gauss.thresholds[alphas.index(0.5)]) / gauss.sigma
    entry, exposure = scored_attack_entry(
        ft, name=name, feature_set=attack.feature_set, method="qmia", family="quantile",
        threat_model=attack.threat_model, score=centred, threshold=0.0, seed=seed, n_boot=n_boot,
        age_bins=age_bins, n_features=X.shape[1],
    )
    entry["calibration"] = quant.calibration
    entry["calibration_gaussian"] = gauss.calibration
    entry["qmia"] = {
        "score": attack.describe,
        "regressor_features": used,
        "folds": int(folds),
        "conformal": True,
        "member_scoring": gauss.member_scoring,
        "roc_score": "(score - predicted non-member median) / predicted spread (gaussian variant)",
        "pred_rule": "member when the score exceeds its own predicted non-member median (gaussian, alpha 0.5)",
        "n_nonmembers_fitted": int((y == 0).sum()),
    }
    entry["duration_s"] = round(time.perf_counter() - start, 3)
    return entry, exposure


def run_qmia_attacks(
    ft: FeatureTable,
    names: Sequence[str] = tuple(QMIA_ATTACKS),
    *,
    seed: int = 0,
    n_boot: int = M.N_BOOTSTRAP,
    age_bins: Sequence[float] | None = None,
    alpha_grid: Sequence[float] = DEFAULT_ALPHAS,
    folds: int = 5,
    x_columns: Sequence[str] | None = None,
    exposure: dict[str, list[dict]] | None = None,
) -> list[dict]:
    """The report entries of the named QMIA attacks, in order.

    An attack that cannot run (no gradient norms, too few non-members, no prediction column) is
    recorded with ``status`` ``error`` and the reason, never dropped, as by
    :func:`worker.engine.attacks.runner.run_attacks`.

    Args:
        ft: the per-scan feature table.
        names: attack names (:data:`QMIA_ATTACKS`).
        seed: seeds the folds, the regressors and the bootstrap.
        n_boot: bootstrap resamples of the metrics' intervals.
        age_bins: age-bin edges of ``by_age_bin``; None for decades.
        alpha_grid: the calibration check's alphas (0.5 is always added: the ``pred`` rule).
        folds: cross-fitting folds.
        x_columns: the regressor's columns; None for ``age`` and the manifest attributes.
        exposure: when given, filled with attack name -> per-scan exposure.

    Raises:
        InputError: an unknown attack name.
    """
    unknown = [n for n in names if n not in QMIA_ATTACKS]
    if unknown:
        raise InputError(f"unknown quantile attack(s) {', '.join(unknown)} (known: {', '.join(QMIA_ATTACKS)})")
    entries = []
    for name in names:
        try:
            entry, scans = qmia_entry(ft, name, seed=seed, n_boot=n_boot, age_bins=age_bins,
                                      alpha_grid=alpha_grid, folds=folds, x_columns=x_columns)
            if exposure is not None:
                exposure[name] = scans
        except InputError as exc:
            logger.warning("attack %s failed: %s", name, exc)
            entry = _error_entry(QMIA_ATTACKS[name], name, str(exc))
        entries.append(entry)
    return entries


__all__ = [
    "QMIA_ATTACKS", "QmiaAttack", "attacker_features", "negative_log_grad_norm", "negative_squared_error",
    "qmia_entry", "run_qmia_attacks",
]
