"""The one definition of "the strongest attack" and of an attack's threat model.

The verdict (:mod:`worker.engine.verdict`), the report page, the figures, the comparison and
the command line all rank attacks with :func:`ranked_attacks`, so they name the same attack:

1. completed attacks only (``status`` ``"ok"``, with metrics);
2. highest lower bound of the AUC's 95% interval (``metrics.auc.ci_low``) first;
3. ties by the lower bound of the TPR at 1% FPR, then by the mean AUC, then by name;
4. a missing (None) value ranks after every value.

The functions take a report dict (as loaded from report.json; they then return its attack
dicts, and tolerate missing keys), a typed :class:`~worker.engine.report_model.Report` (they
then return its :class:`~worker.engine.report_model.Attack` objects), or a sequence of attack
entries of either kind. Standard library only; :mod:`worker.engine.report_model` re-exports
everything here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import InputError
from .feature_names import threat_model as _feature_set_threat_model

__all__ = [
    "THREAT_MODELS", "attack_threat_model", "feature_set_threat_model", "is_completed", "rank_key",
    "ranked_attacks", "strongest_attack",
]

THREAT_MODELS: tuple[str, ...] = ("black-box", "white-box")
TPR_METRIC = "tpr_at_fpr_0.01"
"""The low-FPR metric of the ranking (and of the policy)."""


def _field(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _metric(attack: Any, name: str, key: str) -> float | None:
    if isinstance(attack, Mapping):
        metrics = attack.get("metrics")
        summary = metrics.get(name) if isinstance(metrics, Mapping) else None
        return _number(summary.get(key)) if isinstance(summary, Mapping) else None
    getter = getattr(attack, "metric", None)
    return _number(getter(name, key)) if callable(getter) else None


def _name(attack: Any) -> str:
    name = _field(attack, "name")
    return str(name) if name else f"{_field(attack, 'feature_set')}/{_field(attack, 'classifier')}"


def is_completed(attack: Any) -> bool:
    """Whether an attack entry ran: ``status`` ``"ok"`` and some metrics."""
    if _field(attack, "status") != "ok":
        return False
    metrics = _field(attack, "metrics")
    if isinstance(metrics, Mapping):
        return bool(metrics)
    dumped = getattr(metrics, "model_fields_set", None)
    return bool(dumped) if dumped is not None else metrics is not None


def rank_key(attack: Any) -> tuple:
    """Sort key of the ranking, strongest first (ascending sort; see the module docstring)."""

    def desc(value: float | None) -> tuple[int, float]:
        return (1, 0.0) if value is None else (0, -value)

    return (
        desc(_metric(attack, "auc", "ci_low")),
        desc(_metric(attack, TPR_METRIC, "ci_low")),
        desc(_metric(attack, "auc", "mean")),
        _name(attack),
    )


def _entries(report: Any) -> list[Any]:
    if isinstance(report, Mapping):
        items = report.get("attacks") or []
        return [a for a in items if isinstance(a, Mapping)] if isinstance(items, Sequence) else []
    attacks = getattr(report, "attacks", None)
    if attacks is not None:
        return list(attacks)
    if isinstance(report, Sequence) and not isinstance(report, (str, bytes)):
        return list(report)
    raise TypeError(f"expected a report or a list of attacks, got {type(report).__name__}")


def ranked_attacks(report: Any) -> list[Any]:
    """The completed attacks of ``report``, strongest first.

    Args:
        report: a report dict, a :class:`~worker.engine.report_model.Report`, or a sequence of
            attack entries (dicts or typed attacks).

    Returns:
        The report's own attack entries (dicts for a dict, typed attacks for a ``Report``);
        failed attacks are left out.
    """
    return sorted((a for a in _entries(report) if is_completed(a)), key=rank_key)


def strongest_attack(report: Any) -> Any | None:
    """The strongest completed attack (``ranked_attacks(report)[0]``), or None when none completed."""
    ranked = ranked_attacks(report)
    return ranked[0] if ranked else None


def feature_set_threat_model(name: Any) -> str:
    """``"black-box"`` when every component of the feature set needs only predictions, else ``"white-box"``.

    The rule of :func:`worker.engine.feature_names.threat_model`. A name it cannot parse (unknown
    component, empty, not a string) is ``"white-box"``: by that rule a feature set is black-box
    only when each component is known to need nothing but predictions and true ages.
    """
    try:
        return _feature_set_threat_model(name)
    except InputError:
        return "white-box"


def attack_threat_model(attack: Any) -> str:
    """An attack's threat model: its ``threat_model`` as the engine wrote it, else derived from
    its ``feature_set`` (:func:`feature_set_threat_model`)."""
    written = str(_field(attack, "threat_model") or "").lower()
    if written in THREAT_MODELS:
        return written
    return feature_set_threat_model(_field(attack, "feature_set"))
