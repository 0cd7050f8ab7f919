"""The attacks beyond the paper: reference-model (LiRA, RMIA, calibrated loss) and quantile (QMIA)
attacks, their qmia calibration check, and the reference models' provenance.

These attacks score every audit scan once (nothing is spent on attacker training), so they are
shown in their own table beside the paper's accuracy table, which compares only the paper's
classifier attacks with the numbers of Gupta et al. (MIDL 2021).
"""

from __future__ import annotations

from typing import Any

from ..figures import _data as D
from ..figures._style import finite
from .attack_tables import family_fields, tested_text
from .formatting import auc_cell, metric_cell, setting_value

CALIBRATION_CAPTION = (
    "A quantile attack promises to wrongly flag only a share alpha of the scans the model never saw "
    "(its false-alarm rate, FPR). This check compares that promise with what happened on unseen "
    "scans its regressor was not fitted on: the observed FPR with its 95% interval. \"Yes\" means "
    "alpha lies inside the interval, so the attack's false-alarm rate can be trusted at that level. "
    "Greyed rows were not attainable: with this few unseen scans no threshold can be set that rare "
    "(it needs about 1 / alpha of them), so nothing was flagged there."
)

SOURCE_TEXT = {
    "trained": "trained by BrainMIA with the model's training recipe",
    "supplied": "supplied by the user, with keep.csv",
}


def _parameters(attack: dict) -> str:
    """Tuned parameters (RMIA's tau and a...) as ``"tau = 2.31, a = 0.5"``; ``""`` when none."""
    params = attack.get("parameters")
    if not isinstance(params, dict) or not params:
        return ""
    parts = []
    for key, value in params.items():
        number = finite(value)
        parts.append(f"{key} = {number:.3g}" if number is not None and not isinstance(value, bool)
                     else f"{key} = {setting_value(value)}")
    return ", ".join(parts)


def calibrated_attacks(report: dict) -> list[dict]:
    """The reference-based, then the quantile attacks (report order within each)."""
    order = {"reference": 0, "quantile": 1}
    found = [a for a in D.attacks(report) if D.family(a) in order]
    return sorted(found, key=lambda a: order[D.family(a)])


def calibrated_rows(report: dict) -> list[dict]:
    """One row per reference-model or quantile attack: family, access, references, the metrics."""
    strongest = D.strongest_attack(report)
    rows = []
    for a in calibrated_attacks(report):
        fs = str(a.get("feature_set") or "")
        row = {
            "name": D.attack_name(a),
            "method": str(a.get("classifier") or ""),
            "feature_set": fs,
            "signal": D.FEATURE_SET_DESCRIPTIONS.get(fs, fs),
            "threat": D.threat_model(a),
            "n_references": a.get("n_references"),
            "parameters": _parameters(a),
            "tested": tested_text(a),
            "ok": D.is_ok(a),
            "error": str(a.get("error") or "unknown error"),
            "strongest": a is strongest,
            **family_fields(a),
        }
        if row["ok"]:
            row.update(
                accuracy=metric_cell(a, "accuracy", digits=1),
                auc=auc_cell(a),
                tpr001=metric_cell(a, "tpr_at_fpr_0.001", digits=2, ci_digits=2),
                tpr01=metric_cell(a, "tpr_at_fpr_0.01", digits=2, ci_digits=1),
            )
        rows.append(row)
    return rows


def _rate(value: Any, digits: int = 1) -> str:
    f = finite(value)
    return "n/a" if f is None else f"{100 * f:.{digits}f}%"


def _alpha(value: Any) -> str:
    f = finite(value)
    return "n/a" if f is None else f"{100 * f:g}%"


def calibration_view(report: dict) -> list[dict]:
    """The calibration check of each quantile attack that has one: one row per alpha."""
    checks = []
    for a in D.attacks(report):
        table = a.get("calibration")
        if D.family(a) != "quantile" or not isinstance(table, list) or not table:
            continue
        rows = []
        for r in table:
            if not isinstance(r, dict):
                continue
            attainable = r.get("attainable") is not False
            calibrated = r.get("calibrated")
            rows.append({
                "alpha": _alpha(r.get("alpha")),
                "fpr": _rate(r.get("fpr")),
                "ci": f"{_rate(r.get('fpr_ci_low'))}–{_rate(r.get('fpr_ci_high'))}",
                "flagged": (f"{r['n_flagged']} of {r['n_nonmembers']}"
                            if isinstance(r.get("n_flagged"), int) and isinstance(r.get("n_nonmembers"), int) else ""),
                "tpr": _rate(r.get("tpr")),
                "attainable": attainable,
                "calibrated": calibrated is True,
                "calibrated_text": ("not attainable" if not attainable else
                                    "yes" if calibrated is True else "no" if calibrated is False else "n/a"),
            })
        if rows:
            checks.append({"name": D.attack_name(a), "threat": D.threat_model(a), "rows": rows})
    return checks


def references_rows(report: dict) -> list[tuple[str, str]]:
    """The "Reference models" provenance block as (label, text) rows; ``[]`` without references."""
    refs = D.part(report, "provenance", "references")
    if not refs:
        return []
    n_models = refs.get("n_models")
    rows: list[tuple[str, Any]] = [
        ("Reference models (K)", n_models),
        ("Source", SOURCE_TEXT.get(str(refs.get("source")), refs.get("source"))),
    ]
    recipe = refs.get("recipe")
    if isinstance(recipe, dict):
        rows += [(f"Recipe: {k}", setting_value(v)) for k, v in recipe.items()]
    rows.append(("Keep-matrix SHA-256", refs.get("keep_hash")))
    if refs.get("recipe_hash"):
        rows.append(("Recipe SHA-256", refs.get("recipe_hash")))
    if refs.get("keep_csv"):
        rows.append(("keep.csv", refs.get("keep_csv")))
    if refs.get("models"):
        rows.append(("Model files", setting_value(refs.get("models"))))
    if refs.get("reused") is not None:
        rows.append(("Reused from an earlier assessment",
                     f"{refs['reused']} of {n_models}" if n_models is not None else refs["reused"]))
    maes = [m for m in (finite(v) for v in refs.get("train_mae") or []) if m is not None]
    if maes:
        per_model = ", ".join(f"{m:.2f}" for m in maes)
        rows.append(("Mean training MAE", f"{sum(maes) / len(maes):.2f} years (per model: {per_model})"))
    if refs.get("layers"):
        rows.append(("Layers (white-box variants)", setting_value(refs.get("layers"))))
    if refs.get("seed") is not None:
        rows.append(("Keep-matrix seed", refs.get("seed")))
    return [(k, "n/a" if v is None or v == "" else str(v)) for k, v in rows]
