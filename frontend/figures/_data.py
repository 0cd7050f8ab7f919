"""Read-only helpers over the report dict and the per-scan feature table.

Everything here tolerates missing keys and null metric values: a report is rendered even when
parts of it are absent or an attack failed. What decides anything (which attacks completed,
their ranking and the strongest, an attack's threat model) is the engine's one definition in
:mod:`worker.engine.report_model`, so the page, the figures and the verdict agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterable

import numpy as np
import pandas as pd

from worker.engine.feature_names import DEFAULT_FEATURE_SETS
from worker.engine.report_model import (
    Report,
    attack_threat_model,
    feature_set_threat_model,
    is_completed,
    ranked_attacks,
)
from worker.engine.report_model import strongest_attack as _strongest_attack

from ._style import FigureUnavailable, finite

ReportLike = Mapping[str, Any] | Report
"""What the entry points take: a report dict (as loaded from report.json) or a typed report."""

#: Feature sets in the order of the paper's table (DESIGN.md); others follow.
FEATURE_SET_ORDER = DEFAULT_FEATURE_SETS

#: Plain-language names of the canonical feature sets (for non-ML readers).
FEATURE_SET_DESCRIPTIONS = {
    "activation": "internal activations before the output layer",
    "error": "prediction error (predicted minus true age)",
    "prediction+label": "predicted age together with true age",
    "grad-norm": "gradient magnitude of every layer",
    "grad:first_conv": "gradient of the first convolution layer",
    "grad:last_conv": "gradient of the last convolution layer",
    "grad:output": "gradient of the output layer",
    "prediction+label+grad:last_conv+grad:output": (
        "predicted and true age plus last-convolution and output-layer gradients"
    ),
}

GRAD_NORM_PREFIX = "grad_norm:"

#: Attack families (an entry's ``family``; absent means ``classifier``), in the order the pages list them.
FAMILIES = ("classifier", "reference", "quantile")
FAMILY_LABELS = {"classifier": "classifier", "reference": "reference-based", "quantile": "quantile"}
FAMILY_DESCRIPTIONS = {
    "classifier": "a classifier trained on part of the scans (Gupta et al., MIDL 2021)",
    "reference": "calibrated against reference models trained the way the model was",
    "quantile": "calibrated by a quantile regressor fitted on non-members (no reference models)",
}


def _dedupe(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        if item is not None and item not in seen:
            seen[item] = None
    return list(seen)


def as_dict(report: ReportLike | None) -> dict:
    """The report as a dict: a typed :class:`Report` is dumped, a dict is returned as it is."""
    if isinstance(report, Report):
        return report.to_dict()
    return report if isinstance(report, dict) else dict(report) if isinstance(report, Mapping) else {}


def part(report: Mapping[str, Any], *keys: str) -> dict:
    """A (nested) section of the report, e.g. ``part(report, "provenance", "model")``; ``{}`` when absent."""
    value: Any = report
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value if isinstance(value, dict) else {}


def attacks(report: dict) -> list[dict]:
    """All attack entries (ok and errored)."""
    return [a for a in (report.get("attacks") or []) if isinstance(a, dict)]


def is_ok(attack: dict) -> bool:
    """Whether the attack completed (the engine's rule: ``status`` ok, with metrics)."""
    return is_completed(attack)


def ok_attacks(report: dict) -> list[dict]:
    """The completed attacks, in report order."""
    return [a for a in attacks(report) if is_ok(a)]


def family(attack: Mapping[str, Any]) -> str:
    """The attack's family: ``classifier`` (the paper's; also when absent), ``reference`` or ``quantile``."""
    value = attack.get("family") if isinstance(attack, Mapping) else None
    return value if value in FAMILIES else "classifier"


def paper_view(report: dict) -> dict:
    """The report with only the classifier attacks (the paper's), for the paper-comparison table."""
    return {**report, "attacks": [a for a in attacks(report) if family(a) == "classifier"]}


def every_scan_tested(attack: Mapping[str, Any]) -> bool:
    """Whether the attack scored every audit scan once (no scan spent on attacker training)."""
    n_train = attack.get("n_train")
    return n_train == 0 and not isinstance(n_train, bool)


def attack_name(attack: dict) -> str:
    name = attack.get("name")
    if name:
        return str(name)
    return f"{attack.get('feature_set', '?')}/{attack.get('classifier', '?')}"


def settings(report: dict) -> dict:
    """The assessment's settings (``provenance.settings``), ``{}`` when absent."""
    return part(report, "provenance", "settings")


def feature_set_order(report: dict) -> list[str]:
    """Feature sets present in the report: canonical order first, then the others in the
    order of the settings, then in order of appearance."""
    present = _dedupe(
        [str(a.get("feature_set")) for a in attacks(report) if a.get("feature_set")]
    )
    others = [f for f in _dedupe(list(settings(report).get("feature_sets") or []) + present)
              if f not in FEATURE_SET_ORDER and f in present]
    return [f for f in FEATURE_SET_ORDER if f in present] + others


def classifier_order(report: dict) -> list[str]:
    """Classifiers present in the report, in the order of the settings, then appearance."""
    present = _dedupe(
        [str(a.get("classifier")) for a in attacks(report) if a.get("classifier")]
    )
    return [c for c in _dedupe(list(settings(report).get("classifiers") or []) + present) if c in present]


def metric(attack: dict, name: str, field: str = "mean") -> float | None:
    """One field (mean, std, ci_low, ci_high) of one metric, or None."""
    m = (attack.get("metrics") or {}).get(name)
    if not isinstance(m, dict):
        return None
    return finite(m.get(field))


def threat_model(attack: dict) -> str:
    """``black-box`` or ``white-box``: the attack's own, else its feature set's (the engine's rule)."""
    return attack_threat_model(attack)


def ranked(report: dict) -> list[dict]:
    """The completed attacks, strongest first (:func:`worker.engine.report_model.ranked_attacks`)."""
    return ranked_attacks(report)


def strongest_attack(report: dict) -> dict | None:
    """The strongest completed attack (the verdict's: :func:`worker.engine.report_model.strongest_attack`)."""
    return _strongest_attack(report)


def select_attacks(report: dict, which: Any = "strongest", require: str | None = None) -> list[dict]:
    """Resolve an attack selection: ``"strongest"``, ``"all"``, one name or a list of names.

    ``require`` keeps only attacks where that key holds data (e.g. ``"by_age_bin"``); with
    "strongest", the strongest attack that has the data is used. ``"all"`` lists them
    strongest first.
    """
    order = ranked(report)
    if require:
        order = [a for a in order if a.get(require)]
    if not order:
        return []
    if which in (None, "strongest"):
        return order[:1]
    if which == "all":
        return order
    names = [which] if isinstance(which, str) else list(which)
    by_name = {attack_name(a): a for a in order}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise FigureUnavailable(f"no such attack with data: {', '.join(map(str, missing))}")
    return [by_name[n] for n in names]


def grad_norm_columns(features: pd.DataFrame | None) -> list[str]:
    if features is None:
        return []
    return [c for c in features.columns if str(c).startswith(GRAD_NORM_PREFIX)]


def resolve_grad_norm_column(features: pd.DataFrame | None, layer: str | None) -> str:
    cols = grad_norm_columns(features)
    if not cols:
        raise FigureUnavailable("not available (black-box assessment)")
    if layer is None:
        return cols[0]
    layer = str(layer)
    for candidate in (layer, GRAD_NORM_PREFIX + layer):
        if candidate in cols:
            return candidate
    raise FigureUnavailable(
        f"no gradient-magnitude column for layer {layer!r}; available: "
        + ", ".join(c[len(GRAD_NORM_PREFIX):] for c in cols)
    )


def split_members(features: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Finite values of ``column`` for members and non-members."""
    if features is None:
        raise FigureUnavailable("not available: the per-scan feature table was not provided")
    if column not in features.columns or "member" not in features.columns:
        raise FigureUnavailable(f"column {column!r} not in the per-scan feature table")
    values = pd.to_numeric(features[column], errors="coerce").to_numpy(dtype=float)
    member = pd.to_numeric(features["member"], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(values) & np.isfinite(member)
    return values[ok & (member == 1)], values[ok & (member == 0)]


def common_edges(*samples: np.ndarray, max_bins: int = 60, min_bins: int = 10) -> np.ndarray:
    """Shared histogram bin edges for several samples (Freedman-Diaconis, clamped)."""
    allv = np.concatenate([s for s in samples if s.size]) if any(s.size for s in samples) else np.array([])
    if allv.size == 0:
        return np.array([0.0, 1.0])
    lo, hi = float(np.min(allv)), float(np.max(allv))
    if hi - lo < 1e-12:
        pad = max(abs(lo) * 0.05, 0.5)
        return np.linspace(lo - pad, hi + pad, min_bins + 1)
    q75, q25 = np.percentile(allv, [75, 25])
    iqr = q75 - q25
    if iqr > 0:
        width = 2.0 * iqr / np.cbrt(allv.size)
        n = int(np.ceil((hi - lo) / width))
    else:
        n = int(np.ceil(np.sqrt(allv.size)))
    n = int(np.clip(n, min_bins, max_bins))
    return np.linspace(lo, hi, n + 1)


def separability(a: np.ndarray, b: np.ndarray) -> float | None:
    """Direction-free AUC of one feature: 0.5 = same distributions, 1 = fully separable."""
    if a.size == 0 or b.size == 0:
        return None
    ranks = pd.Series(np.concatenate([a, b])).rank().to_numpy()
    auc = (ranks[: a.size].sum() - a.size * (a.size + 1) / 2) / (a.size * b.size)
    return float(max(auc, 1.0 - auc))
