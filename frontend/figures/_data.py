"""Read-only helpers over the report dict and the per-scan feature table.

Everything here tolerates missing keys and null metric values: a report is rendered even when
parts of it are absent or an attack failed.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd

from worker.engine.attacks.feature_sets import DEFAULT_FEATURE_SETS

from ._style import FigureUnavailable, finite

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


def _dedupe(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        if item is not None and item not in seen:
            seen[item] = None
    return list(seen)


def attacks(report: dict) -> list[dict]:
    """All attack entries (ok and errored)."""
    return [a for a in (report.get("attacks") or []) if isinstance(a, dict)]


def is_ok(attack: dict) -> bool:
    return attack.get("status", "ok") == "ok"


def ok_attacks(report: dict) -> list[dict]:
    return [a for a in attacks(report) if is_ok(a)]


def attack_name(attack: dict) -> str:
    name = attack.get("name")
    if name:
        return str(name)
    return f"{attack.get('feature_set', '?')}/{attack.get('classifier', '?')}"


def feature_set_order(report: dict) -> list[str]:
    """Feature sets present in the report: canonical order first, then the others in the
    order of the settings, then in order of appearance."""
    settings = (report.get("provenance") or {}).get("settings") or {}
    present = _dedupe(
        [str(a.get("feature_set")) for a in attacks(report) if a.get("feature_set")]
    )
    others = [f for f in _dedupe(list(settings.get("feature_sets") or []) + present)
              if f not in FEATURE_SET_ORDER and f in present]
    return [f for f in FEATURE_SET_ORDER if f in present] + others


def classifier_order(report: dict) -> list[str]:
    """Classifiers present in the report, in the order of the settings, then appearance."""
    settings = (report.get("provenance") or {}).get("settings") or {}
    present = _dedupe(
        [str(a.get("classifier")) for a in attacks(report) if a.get("classifier")]
    )
    return [c for c in _dedupe(list(settings.get("classifiers") or []) + present) if c in present]


def metric(attack: dict, name: str, field: str = "mean") -> float | None:
    """One field (mean, std, ci_low, ci_high) of one metric, or None."""
    m = (attack.get("metrics") or {}).get(name)
    if not isinstance(m, dict):
        return None
    return finite(m.get(field))


def threat_model(attack: dict) -> str:
    """``black-box`` or ``white-box``; inferred from the feature set when absent."""
    tm = str(attack.get("threat_model") or "").lower()
    if tm in ("black-box", "white-box"):
        return tm
    fs = str(attack.get("feature_set") or "")
    return "white-box" if fs == "activation" or "grad" in fs else "black-box"


def strength(attack: dict) -> tuple[float, float]:
    """Sort key: AUC, then accuracy (missing values rank last)."""
    auc = metric(attack, "auc")
    acc = metric(attack, "accuracy")
    return (auc if auc is not None else -1.0, acc if acc is not None else -1.0)


def strongest_attack(report: dict) -> dict | None:
    """The verdict's strongest attack when it is an ok attack, else the one with best AUC."""
    ok = ok_attacks(report)
    if not ok:
        return None
    named = (report.get("verdict") or {}).get("strongest_attack")
    for a in ok:
        if named and attack_name(a) == named:
            return a
    return max(ok, key=strength)


def select_attacks(report: dict, which: Any = "strongest", require: str | None = None) -> list[dict]:
    """Resolve an attack selection: ``"strongest"``, ``"all"``, one name or a list of names.

    ``require`` keeps only attacks where that key holds data (e.g. ``"by_age_bin"``); with
    "strongest", the strongest attack that has the data is used.
    """
    ok = ok_attacks(report)
    if require:
        ok = [a for a in ok if a.get(require)]
    if not ok:
        return []
    if which in (None, "strongest"):
        strongest = strongest_attack(report)
        if strongest is not None and strongest in ok:
            return [strongest]
        return [max(ok, key=strength)]
    if which == "all":
        return sorted(ok, key=strength, reverse=True)
    names = [which] if isinstance(which, str) else list(which)
    by_name = {attack_name(a): a for a in ok}
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
