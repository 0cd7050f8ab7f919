"""Run attack specs over repeated balanced splits and collect JSON-ready results."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..errors import BrainMIAError, InputError
from ..features.table import FeatureTable
from .. import metrics as M
from .entries import error_entry
from .feature_sets import (
    attack_score,
    available_feature_sets,
    feature_matrix,
    has_attack_score,
    parse_feature_set,
    threat_model,
)
from .registry import available_attacks, get_attack
from .splits import Split, balanced_splits

logger = logging.getLogger(__name__)

DEFAULT_CLASSIFIERS: tuple[str, ...] = ("threshold", "logistic", "mlp")
"""Classifiers of the default attacks; ``threshold`` only where the set has a 1-D score."""


class AttackCancelled(BrainMIAError):
    """Raised by :func:`run_attacks` when ``should_stop()`` returns True between attacks."""


@dataclass(frozen=True)
class AttackSpec:
    """One attack: a feature set and a registered classifier.

    Attributes:
        feature_set: e.g. ``"grad:output"`` (see :mod:`.feature_sets`).
        classifier: a registered classifier name (``threshold``, ``logistic``, ``mlp``,
            ``gbt``).
    """

    feature_set: str
    classifier: str

    @property
    def name(self) -> str:
        """``"<feature_set>/<classifier>"``."""
        return f"{self.feature_set}/{self.classifier}"


@dataclass
class AttackRunResult:
    """The results of :func:`run_attacks`, JSON-ready.

    Attributes:
        attacks: one dict per spec, in spec order (the report.json attack entries).
        exposure: attack name -> per-scan ``{"scan_id", "member", "score", "n_tested"}``.
        splits: the repeated splits used by every attack (row indices).
    """

    attacks: list[dict] = field(default_factory=list)
    exposure: dict[str, list[dict]] = field(default_factory=dict)
    splits: list[Split] = field(default_factory=list)


def default_attack_specs(
    ft: FeatureTable,
    classifiers: Sequence[str] | None = None,
    *,
    feature_sets: Sequence[str] | None = None,
) -> list[AttackSpec]:
    """Attacks for the feature sets of an assessment.

    Per feature set, each of ``classifiers`` (default ``threshold``, ``logistic``, ``mlp``);
    univariate classifiers (``threshold``) only for sets with a natural 1-D score
    (``error``, ``grad-norm``, ``grad:<layer>``).

    Args:
        ft: the feature table.
        classifiers: classifier names; None for :data:`DEFAULT_CLASSIFIERS`.
        feature_sets: feature-set names; None for every default set that ``ft`` supports.
            Named sets are kept even when ``ft`` lacks their features, so that the run
            records them as errors instead of silently skipping what the user asked for.

    Raises:
        InputError: an unknown classifier or a malformed feature-set name.
    """
    names = list(classifiers) if classifiers else list(DEFAULT_CLASSIFIERS)
    classes = {name: get_attack(name) for name in names}
    if feature_sets:
        sets = list(dict.fromkeys(feature_sets))
        for fs in sets:
            parse_feature_set(fs)
    else:
        sets = available_feature_sets(ft)
    specs = []
    for fs in sets:
        for name in names:
            if classes[name].univariate and not has_attack_score(fs):
                continue
            specs.append(AttackSpec(fs, name))
    return specs


def _error_entry(spec: AttackSpec, message: str, **known: object) -> dict:
    try:
        tm = threat_model(spec.feature_set)
    except InputError:
        tm = None
    return error_entry(spec.name, message, feature_set=spec.feature_set, threat_model=tm, classifier=spec.classifier,
                       **known)


def _run_one(
    ft: FeatureTable,
    spec: AttackSpec,
    splits: Sequence[Split],
    X: np.ndarray,
    age_bins: Sequence[float] | None,
    n_boot: int,
) -> tuple[dict, list[dict]]:
    cls = get_attack(spec.classifier)
    y = ft.members
    outcomes: list[M.RepeatOutcome] = []
    for split in splits:
        clf = cls()
        clf.fit(X[split.train], y[split.train], seed=split.seed)
        score = np.asarray(clf.score(X[split.test]), dtype=np.float64).ravel()
        if score.shape[0] != len(split.test) or not np.isfinite(score).all():
            raise RuntimeError(f"classifier '{spec.classifier}' returned non-finite scores")
        pred = np.asarray(clf.predict(X[split.test])).astype(int).ravel()
        outcomes.append(M.RepeatOutcome(split.test, y[split.test], score, pred, split.seed))
    rows = np.concatenate([o.test for o in outcomes])
    correct = np.concatenate([o.correct for o in outcomes])
    ages = ft.table["age"].to_numpy(dtype=np.float64)[rows]
    entry = {
        "name": spec.name,
        "feature_set": spec.feature_set,
        "threat_model": threat_model(spec.feature_set),
        "classifier": spec.classifier,
        "status": "ok",
        "error": None,
        "n_features": int(X.shape[1]),
        "n_train": int(len(splits[0].train)),
        "n_test": int(len(splits[0].test)),
        "repeats": len(splits),
        "metrics": M.attack_metrics(outcomes, n_boot=n_boot),
        "roc": M.mean_roc(outcomes),
        "by_age_bin": M.accuracy_by_age_bin(ages, correct, y[rows], age_bins),
        "by_attribute": M.accuracy_by_attribute(ft.table, ft.attributes, rows, correct),
    }
    return entry, M.exposure(ft.table["scan_id"].tolist(), y, outcomes)


def run_attacks(
    ft: FeatureTable,
    specs: Sequence[AttackSpec],
    *,
    repeats: int = 5,
    train_size: int | None = None,
    seed: int = 0,
    age_bins: Sequence[float] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    n_boot: int = M.N_BOOTSTRAP,
) -> AttackRunResult:
    """Run each attack over the same ``repeats`` balanced splits (see :func:`balanced_splits`).

    An attack that raises (missing feature, classifier failure) is recorded with
    ``status="error"`` and the message, never dropped.

    Args:
        ft: the per-scan feature table.
        specs: the attacks to run, e.g. :func:`default_attack_specs`.
        repeats: number of repeats (split seed ``seed + r``).
        train_size: members (= non-members) in each attacker-training set; default half of
            the smaller group.
        seed: base seed.
        age_bins: edges of the age bins of ``by_age_bin``; default decades.
        progress: called as ``progress(done, total, attack name)`` after each attack.
        should_stop: checked before each attack; when it returns True the run stops.
        n_boot: bootstrap resamples per repeat for the confidence intervals.

    Raises:
        InputError: too few scans for the splits, bad ``train_size`` / ``repeats``.
        AttackCancelled: ``should_stop()`` returned True.
    """
    splits = balanced_splits(ft.members, repeats=repeats, train_size=train_size, seed=seed)
    result = AttackRunResult(splits=splits)
    matrices: dict[str, np.ndarray] = {}
    total = len(specs)
    for done, spec in enumerate(specs):
        if should_stop is not None and should_stop():
            raise AttackCancelled(f"cancelled after {done} of {total} attacks")
        start = time.perf_counter()
        try:
            parse_feature_set(spec.feature_set)
            cls = get_attack(spec.classifier)
            key = f"score:{spec.feature_set}" if cls.univariate else spec.feature_set
            if key not in matrices:
                matrices.clear()  # keep one (possibly large) matrix in memory at a time
                matrices[key] = (attack_score(ft, spec.feature_set)[:, None] if cls.univariate
                                 else feature_matrix(ft, spec.feature_set))
            entry, scans = _run_one(ft, spec, splits, matrices[key], age_bins, n_boot)
            result.exposure[spec.name] = scans
        except Exception as exc:  # noqa: BLE001 - recorded as a finding, never dropped
            message = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            logger.warning("attack %s failed: %s", spec.name, message,
                           exc_info=not isinstance(exc, InputError))
            entry = _error_entry(spec, message)
        entry["duration_s"] = round(time.perf_counter() - start, 3)
        result.attacks.append(entry)
        if progress is not None:
            progress(done + 1, total, spec.name)
    return result


__all__ = [
    "AttackCancelled", "AttackRunResult", "AttackSpec", "DEFAULT_CLASSIFIERS",
    "available_attacks", "default_attack_specs", "run_attacks",
]
