"""Two assessments side by side: the view the compare page renders.

Differences are highlighted when they are larger than chance variation: an attack's change
counts when the two 95% confidence intervals do not overlap. Lower attack accuracy / AUC and a
smaller train-test error gap mean less leakage ("better").
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.io as pio

from .figures import _data as D
from .figures import build_figure
from .figures._style import FigureUnavailable, finite
from .figures.compare import comparison_accuracy
from .report_view.figure_blocks import script_json
from .report_view.verdict import LEVEL_TEXT

#: Severity of each verdict level, for the direction of a change (inconclusive between low and medium).
LEVEL_RANK = {"low": 0, "inconclusive": 1, "medium": 2, "high": 3}


def _interval(attack: dict | None, metric: str) -> tuple[float | None, float | None, float | None]:
    if attack is None:
        return None, None, None
    return D.metric(attack, metric), D.metric(attack, metric, "ci_low"), D.metric(attack, metric, "ci_high")


def _change(a: dict | None, b: dict | None, metric: str) -> dict[str, Any]:
    """B minus A of one metric, and whether the CIs separate (a real change)."""
    ma, la, ha = _interval(a, metric)
    mb, lb, hb = _interval(b, metric)
    if ma is None or mb is None:
        return {"delta": None, "text": "–", "direction": "none", "significant": False}
    delta = mb - ma
    significant = None not in (la, ha, lb, hb) and (lb > ha or hb < la)  # type: ignore[operator]
    scale, unit = (1.0, "") if metric == "auc" else (100.0, " pp")
    text = f"{delta * scale:+.{3 if metric == 'auc' else 1}f}{unit}"
    direction = "worse" if delta > 0 else "better" if delta < 0 else "same"
    return {"delta": delta, "text": text, "direction": direction if significant else "same",
            "significant": significant}


def _cell(attack: dict | None, metric: str) -> str:
    mean, lo, hi = _interval(attack, metric)
    if mean is None:
        return "n/a" if attack is not None else "–"
    if metric == "auc":
        return f"{mean:.3f}" + (f" ({lo:.3f}–{hi:.3f})" if lo is not None and hi is not None else "")
    return f"{100 * mean:.1f}%" + (f" ({100 * lo:.1f}–{100 * hi:.1f})" if lo is not None and hi is not None else "")


def _attack_rows(report_a: dict, report_b: dict) -> list[dict[str, Any]]:
    from .figures.compare import _attack_order

    by_a = {D.attack_name(x): x for x in D.attacks(report_a)}
    by_b = {D.attack_name(x): x for x in D.attacks(report_b)}
    rows = []
    for name in _attack_order(report_a, report_b):
        a, b = by_a.get(name), by_b.get(name)
        a_ok, b_ok = a if a is not None and D.is_ok(a) else None, b if b is not None and D.is_ok(b) else None
        rows.append({
            "name": name,
            "threat": D.threat_model(a or b or {}),
            "a_acc": _cell(a_ok, "accuracy") if a is None or a_ok is not None else "failed",
            "b_acc": _cell(b_ok, "accuracy") if b is None or b_ok is not None else "failed",
            "acc": _change(a_ok, b_ok, "accuracy"),
            "a_auc": _cell(a_ok, "auc") if a is None or a_ok is not None else "failed",
            "b_auc": _cell(b_ok, "auc") if b is None or b_ok is not None else "failed",
            "auc": _change(a_ok, b_ok, "auc"),
        })
    return rows


def _side(report: dict, label: str) -> dict[str, Any]:
    v = D.part(report, "verdict")
    level = str(v.get("level") or "").lower()
    strongest = D.strongest_attack(report)
    u = D.part(report, "utility")
    mae_m, mae_n = finite(u.get("mae_members")), finite(u.get("mae_nonmembers"))
    prov = D.part(report, "provenance")
    return {
        "label": label,
        "level": level if level in LEVEL_TEXT else "unknown",
        "level_text": LEVEL_TEXT.get(level, "Risk level unknown"),
        "passed": v.get("passed"),
        "summary": str(v.get("summary") or ""),
        "strongest": D.attack_name(strongest) if strongest else "–",
        "strongest_attack": strongest,
        "strongest_acc": D.metric(strongest, "accuracy") if strongest else None,
        "strongest_auc": D.metric(strongest, "auc") if strongest else None,
        "mae_members": mae_m,
        "mae_nonmembers": mae_n,
        "gap": (mae_n - mae_m) if mae_m is not None and mae_n is not None else None,
        "epsilon": finite(D.part(v, "epsilon").get("epsilon")),
        "epsilon_ceiling": finite(D.part(v, "epsilon").get("ceiling")),
        "model_sha256": str(D.part(prov, "model").get("sha256") or "n/a"),
        "manifest_sha256": str(D.part(prov, "manifest").get("sha256") or "n/a"),
        "created_at": str(prov.get("created_at") or "n/a"),
        "version": str(prov.get("package_version") or "n/a"),
    }


def _headline(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Key numbers of both sides with the direction of the change (lower is better)."""
    def row(label: str, key: str, fmt: str, scale: float = 1.0, unit: str = "", metric: str | None = None) -> dict[str, Any]:
        """One measure; highlighted (better / worse) only when the strongest attacks' 95% CIs
        separate (``metric``), plain otherwise."""
        va, vb = a[key], b[key]
        text = lambda v: "n/a" if v is None else f"{v * scale:{fmt}}{unit}"  # noqa: E731
        significant = metric is not None and _change(a["strongest_attack"], b["strongest_attack"], metric)["significant"]
        direction = "none"
        if va is not None and vb is not None and significant:
            direction = "worse" if vb > va else "better" if vb < va else "same"
        delta = "–" if va is None or vb is None else f"{(vb - va) * scale:+{fmt}}{unit}"
        return {"label": label, "a": text(va), "b": text(vb), "delta": delta, "direction": direction}

    level_dir = "none"
    if a["level"] in LEVEL_RANK and b["level"] in LEVEL_RANK:
        diff = LEVEL_RANK[b["level"]] - LEVEL_RANK[a["level"]]
        level_dir = "worse" if diff > 0 else "better" if diff < 0 else "same"
    return [
        {"label": "Risk level", "a": a["level_text"], "b": b["level_text"], "delta": "", "direction": level_dir},
        row("Strongest attack accuracy", "strongest_acc", ".1f", 100, "%", metric="accuracy"),
        row("Strongest attack AUC", "strongest_auc", ".3f", metric="auc"),
        row("Error gap, unseen minus training scans (years)", "gap", ".2f"),
        _epsilon_row(a, b),
        {**row("Model error on unseen scans (MAE, years)", "mae_nonmembers", ".2f"), "direction": "info"},
    ]


def _epsilon_row(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The empirical epsilon lower bounds with their ceilings (plain: each bound has its own confidence)."""
    def text(side: dict[str, Any]) -> str:
        if side["epsilon"] is None:
            return "n/a"
        ceiling = "" if side["epsilon_ceiling"] is None else f" (at most {side['epsilon_ceiling']:.2f} measurable)"
        return f">= {side['epsilon']:.2f}{ceiling}"

    delta = "–" if a["epsilon"] is None or b["epsilon"] is None else f"{b['epsilon'] - a['epsilon']:+.2f}"
    return {"label": "Empirical epsilon (lower bound)", "a": text(a), "b": text(b), "delta": delta, "direction": "info"}


def _figure(build: Any) -> dict[str, Any]:
    try:
        fig = build()
    except FigureUnavailable as exc:
        return {"data": None, "unavailable": str(exc)}
    fig.update_layout(title_text="")
    return {"data": script_json(pio.to_json(fig, validate=False)), "unavailable": None}


def build_comparison(
    report_a: D.ReportLike, report_b: D.ReportLike, features_a: pd.DataFrame | None,
    features_b: pd.DataFrame | None, label_a: str = "A", label_b: str = "B",
) -> dict[str, Any]:
    """The compare page's context: both verdicts, headline changes, per-attack changes, figures.

    The reports are dicts (report.json) or typed :class:`~worker.engine.report_model.Report`;
    each side's strongest attack is the verdict's (:func:`worker.engine.report_model.strongest_attack`).
    """
    report_a, report_b = D.as_dict(report_a), D.as_dict(report_b)
    a, b = _side(report_a, label_a), _side(report_b, label_b)
    rows = _attack_rows(report_a, report_b)
    return {
        "a": a,
        "b": b,
        "headline": _headline(a, b),
        "rows": rows,
        "n_significant": sum(1 for r in rows if r["acc"]["significant"] or r["auc"]["significant"]),
        "same_manifest": a["manifest_sha256"] == b["manifest_sha256"] and a["manifest_sha256"] != "n/a",
        "figures": {
            "accuracy": _figure(lambda: comparison_accuracy(report_a, report_b, label_a, label_b)),
            "auc": _figure(lambda: comparison_accuracy(report_a, report_b, label_a, label_b, metric="auc")),
            "error_a": _figure(lambda: build_figure("error_distribution", report_a, features_a)),
            "error_b": _figure(lambda: build_figure("error_distribution", report_b, features_b)),
        },
    }
