"""The ``federated`` section of report.json, and the report document of a federated assessment.

One attack (a feature set, a classifier and a scope: the final round, one round, or features
spanning rounds) gives:

* ``matrix``: attacker x victim mean ``accuracy``, ``auc`` and ``tpr_at_fpr_0.01`` over the
  repeats of each pair's balanced test set (rows: attackers, columns: victims, in
  ``learners`` order; None on the diagonal and for pairs not run), with ``matrix_ci``
  (``low`` / ``high`` matrices of the 95% intervals);
* ``per_attacker``: each attacker's metrics, the mean over its victims (``values``: one per
  victim, the mean over repeats; ``std`` across victims);
* ``overall``: the mean over every attacker-victim pair (``values``: one per pair).

Every metric is that of the balanced test set of one pair and repeat, so TPR at 1% FPR is
undefined (None) unless a victim's test set holds at least 100 unseen scans.

Intervals come from the shared-scan bootstrap (:mod:`.bootstrap`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import metrics as M
from ..features.table import FeatureTable
from ..report import build_report
from .bootstrap import ScanBootstrap, summarize_group

__all__ = [
    "MATRIX_METRICS",
    "attack_entry",
    "attack_section",
    "error_entry",
    "federated_report",
    "json_ready",
    "learner_summary",
    "round_point",
]

MATRIX_METRICS: tuple[str, ...] = ("accuracy", "auc", "tpr_at_fpr_0.01")
"""Metrics of the attacker x victim matrices."""

Pair = tuple[str, str]


def attack_section(
    info: Mapping[str, Any],
    learners: Sequence[str],
    pairs: Mapping[Pair, Sequence[M.RepeatOutcome]],
    boot: ScanBootstrap,
    *,
    matrix: bool = True,
) -> dict[str, Any]:
    """The section of one attack (see the module docstring).

    Args:
        info: identification copied in first (``name``, ``scope``, ``feature_set``...).
        learners: every learner, in matrix order.
        pairs: (attacker, victim) -> the outcomes of its repeats.
        boot: the shared-scan bootstrap.
        matrix: include ``matrix``, ``matrix_ci`` and ``per_attacker`` (False: ``overall`` only).
    """
    out: dict[str, Any] = {**info, "status": "ok"}
    ordered = [(a, v) for a in learners for v in learners if (a, v) in pairs]
    if matrix:
        cells = {p: summarize_group([outs], boot, MATRIX_METRICS) for p, outs in pairs.items()}

        def grid(metric: str, key: str) -> list[list[float | None]]:
            return [[cells[(a, v)][metric][key] if (a, v) in cells else None for v in learners] for a in learners]

        out["matrix"] = {m: grid(m, "mean") for m in MATRIX_METRICS}
        out["matrix_ci"] = {m: {"low": grid(m, "ci_low"), "high": grid(m, "ci_high")} for m in MATRIX_METRICS}
        out["per_attacker"] = []
        for a in learners:
            mine = [pairs[p] for p in ordered if p[0] == a]
            if mine:
                out["per_attacker"].append({
                    "learner": a,
                    "victims": [v for (x, v) in ordered if x == a],
                    "n_test": int(np.mean([len(o.test) for outs in mine for o in outs])),
                    "metrics": summarize_group(mine, boot),
                })
    out["overall"] = summarize_group([pairs[p] for p in ordered], boot)
    return out


def attack_entry(
    section: Mapping[str, Any],
    *,
    n_features: int,
    n_train: int,
    n_test: int,
    repeats: int,
    pooled: Sequence[M.RepeatOutcome],
    features: FeatureTable,
    duration_s: float,
) -> dict[str, Any]:
    """The attack as a report.json attack entry (the contract of centralised attacks).

    ``metrics`` are the federation-wide ``overall`` summaries; ``roc``, ``by_age_bin`` and
    ``by_attribute`` pool the test predictions of every pair and repeat. Extra keys: ``scope``,
    ``round``, ``rounds``.
    """
    rows = np.concatenate([np.asarray(o.test, dtype=int) for o in pooled])
    correct = np.concatenate([o.correct for o in pooled])
    table = features.table
    members = table["member"].to_numpy(dtype=int)
    return {
        "name": section["name"],
        "feature_set": section["feature_set"],
        "threat_model": section["threat_model"],
        "classifier": section["classifier"],
        "status": "ok",
        "error": None,
        "n_features": int(n_features),
        "n_train": int(n_train),
        "n_test": int(n_test),
        "repeats": int(repeats),
        "metrics": section["overall"],
        "roc": M.mean_roc(pooled),
        "by_age_bin": M.accuracy_by_age_bin(table["age"].to_numpy(dtype=np.float64)[rows], correct, members[rows]),
        "by_attribute": M.accuracy_by_attribute(table, features.attributes, rows, correct),
        "scope": section["scope"],
        "round": section.get("round"),
        "rounds": section.get("rounds"),
        "duration_s": round(float(duration_s), 3),
    }


def error_entry(info: Mapping[str, Any], message: str) -> dict[str, Any]:
    """An attack that could not run, as a report.json attack entry (``status`` ``error``)."""
    return {
        "name": info["name"], "feature_set": info["feature_set"], "threat_model": info.get("threat_model"),
        "classifier": info["classifier"], "status": "error", "error": message,
        "n_features": None, "n_train": None, "n_test": None, "repeats": None,
        "metrics": {}, "roc": None, "by_age_bin": [], "by_attribute": {},
        "scope": info["scope"], "round": info.get("round"), "rounds": info.get("rounds"), "duration_s": None,
    }


def learner_summary(learners: Sequence[str], learner_of: np.ndarray, ages: np.ndarray) -> list[dict[str, Any]]:
    """Scans and ages of each learner (``learner`` None: the unseen scans, listed last)."""
    out = []
    for name in [*learners, None]:
        sel = np.array([x == name for x in learner_of], dtype=bool)
        a = ages[sel]
        out.append({
            "learner": name,
            "n_scans": int(sel.sum()),
            "age_mean": M.to_float(a.mean()) if a.size else None,
            "age_min": M.to_float(a.min()) if a.size else None,
            "age_max": M.to_float(a.max()) if a.size else None,
        })
    return out


def round_point(r: int, section: Mapping[str, Any], features: FeatureTable) -> dict[str, Any]:
    """One point of the per-round curve: the attack's overall metrics and the model's MAE."""
    point: dict[str, Any] = {"round": int(r), "attack": section["name"], "status": section["status"]}
    overall = section.get("overall") or {}
    for metric in MATRIX_METRICS:
        s = overall.get(metric) or {}
        point[metric] = {k: s.get(k) for k in ("mean", "ci_low", "ci_high")}
    u = M.utility(features)
    point["mae_members"], point["mae_nonmembers"] = u["mae_members"], u["mae_nonmembers"]
    return point


def federated_report(
    *,
    provenance: dict[str, Any],
    utility: dict[str, Any],
    attacks: list[dict],
    exposure: dict[str, Any],
    verdict: dict[str, Any],
    federated: dict[str, Any],
) -> dict[str, Any]:
    """The report document (:func:`worker.engine.report.build_report`) plus its ``federated`` section."""
    doc = build_report(provenance=provenance, utility=utility, attacks=attacks, exposure=exposure, verdict=verdict)
    doc["federated"] = json_ready(federated)
    return doc


def json_ready(value: Any) -> Any:
    """``value`` as strict JSON data: NaN/Inf -> None, tuples -> lists, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value
