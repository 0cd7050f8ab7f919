"""The exported report: one self-contained HTML file that opens offline.

plotly.js is inlined once, the CSS is inlined, figures are embedded as JSON and drawn by a
small script at the end; nothing is fetched from the network. Every string from the report or
the feature table (scan IDs, file names, attribute values, error messages) is escaped by
Jinja2's autoescape; figure JSON is embedded in ``<script type="application/json">`` with
``<``, ``>`` and ``&`` written as JSON unicode escapes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from .federated_view import build_federated_context, federated_figures
from .figures import FIGURE_INFO, FigureUnavailable, build_figure, top_exposed
from .figures import _data as D
from .figures._style import (
    BLACK_BOX_COLOR,
    MEMBER_COLOR,
    NONMEMBER_COLOR,
    WHITE_BOX_COLOR,
    finite,
)

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
TEMPLATE_DIR = _HERE / "templates"
STATIC_DIR = _HERE / "static"

#: Gupta et al. (MIDL 2021), centralised attack accuracy (%), for context in the table.
PAPER_ACCURACY = {
    "3D-CNN": {
        "activation": "56.63",
        "error": "59.90 ± 0.01",
        "grad-norm": "72.60 ± 0.45",
        "grad:first_conv": "71.01 ± 0.64",
        "grad:output": "76.65 ± 0.44",
        "grad:last_conv": "76.96 ± 0.57",
        "prediction+label": "76.45 ± 0.20",
        "prediction+label+grad:last_conv+grad:output": "78.05 ± 0.47",
    },
    "2D-slice-mean": {
        "error": "74.06 ± 0.00",
        "grad-norm": "78.34 ± 0.17",
        "grad:first_conv": "80.52 ± 0.40",
        "grad:output": "82.16 ± 0.29",
        "grad:last_conv": "82.89 ± 0.83",
        "prediction+label": "81.70 ± 0.29",
        "prediction+label+grad:last_conv+grad:output": "83.04 ± 0.50",
    },
}

LEVEL_TEXT = {
    "low": "Low risk",
    "medium": "Medium risk",
    "high": "High risk",
}
SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2, "info": 3}
METRIC_LABELS = {
    "auc": "AUC",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "tpr_at_fpr_0.001": "TPR at 0.1% FPR",
    "tpr_at_fpr_0.01": "TPR at 1% FPR",
}
TOP_EXPOSED = 20


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


@lru_cache(maxsize=1)
def template_env() -> Environment:
    """The Jinja2 environment of every BrainMIA template (report and dashboard pages)."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["wbr"] = _wbr
    return env


def _wbr(value: Any) -> Markup:
    """Escape, then allow line breaks after "+" and "/" in long attack names."""
    text = str(escape(value))
    return Markup(text.replace("+", "+<wbr>").replace("/", "/<wbr>"))


def _css() -> str:
    return (STATIC_DIR / "report.css").read_text(encoding="utf-8")


def script_json(obj_json: str) -> Markup:
    """JSON text made safe inside a <script> element (no "</script>", no "<!--")."""
    safe = (
        obj_json.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )
    return Markup(safe)


# --------------------------------------------------------------------------- formatting


def _num(value: Any, fmt: str = ".2f", na: str = "n/a") -> str:
    f = finite(value)
    return na if f is None else format(f, fmt)


def _pct(value: Any, digits: int = 1, na: str = "n/a") -> str:
    f = finite(value)
    return na if f is None else f"{100 * f:.{digits}f}%"


def _duration(seconds: Any) -> str:
    s = finite(seconds)
    if s is None:
        return "n/a"
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{int(m)} min {int(s)} s"
    h, m = divmod(m, 60)
    return f"{int(h)} h {int(m)} min"


def _setting_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "(none)"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_setting_value(v)}" for k, v in value.items()) or "(none)"
    if value is None:
        return "(not set)"
    return str(value)


def _metric_cell(attack: dict, name: str, *, digits: int = 2, ci_digits: int = 1) -> dict:
    """``{"main": "76.45 ± 0.20", "ci": "95% CI 75.9-77.0", "na": bool}`` in %."""
    mean = D.metric(attack, name)
    if mean is None:
        return {"main": "n/a", "ci": "", "na": True}
    std = D.metric(attack, name, "std")
    lo, hi = D.metric(attack, name, "ci_low"), D.metric(attack, name, "ci_high")
    main = f"{100 * mean:.{digits}f}" + (f" ± {100 * std:.{digits}f}" if std is not None else "")
    ci = (f"95% CI {100 * lo:.{ci_digits}f}–{100 * hi:.{ci_digits}f}"
          if lo is not None and hi is not None else "")
    return {"main": main, "ci": ci, "na": False}


def _auc_cell(attack: dict) -> dict:
    mean = D.metric(attack, "auc")
    if mean is None:
        return {"main": "n/a", "ci": "", "na": True}
    std = D.metric(attack, "auc", "std")
    lo, hi = D.metric(attack, "auc", "ci_low"), D.metric(attack, "auc", "ci_high")
    return {
        "main": f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else ""),
        "ci": f"95% CI {lo:.3f}–{hi:.3f}" if lo is not None and hi is not None else "",
        "na": False,
    }


# --------------------------------------------------------------------------- view model


@dataclass
class FigureBlock:
    name: str
    title: str
    caption: str
    alt: str
    dom_id: str = ""
    data: Markup | None = None
    unavailable: str | None = None
    extra: dict = field(default_factory=dict)


class _FigureMaker:
    """Builds figures for the report, turning missing data into a message, never an error."""

    def __init__(self, report: dict, features: pd.DataFrame | None, grad_message: str):
        self.report = report
        self.features = features
        self.grad_message = grad_message
        self.count = 0

    def __call__(self, name: str, alt: str = "", title: str | None = None,
                 caption: str | None = None, **kwargs: Any) -> FigureBlock:
        info = FIGURE_INFO[name]
        self.count += 1
        block = FigureBlock(
            name=name,
            title=title or info.title,
            caption=caption or info.caption,
            alt=alt or info.title,
            dom_id=f"fig-{self.count}-{name.replace('_', '-')}",
        )
        try:
            fig: go.Figure = build_figure(name, self.report, self.features, **kwargs)
        except FigureUnavailable as exc:
            message = str(exc)
            message = message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")
            if name.startswith("grad_norm"):
                message = self.grad_message
            block.unavailable = message
            return block
        except Exception as exc:  # a broken figure must not sink the whole report
            log.exception("figure %s could not be drawn", name)
            block.unavailable = f"This figure could not be drawn ({type(exc).__name__}: {exc})."
            return block
        # The page shows the title as a heading; drop the one inside the plot.
        top = fig.layout.margin.t
        fig.update_layout(title_text="", margin_t=max(30, (top if top is not None else 60) - 40))
        block.data = script_json(pio.to_json(fig, validate=False))
        return block


def _accuracy_table(report: dict) -> dict:
    feature_sets = D.feature_set_order(report)
    classifiers = D.classifier_order(report)
    by_key: dict[tuple[str, str], dict] = {}
    for a in D.attacks(report):
        by_key.setdefault((str(a.get("feature_set")), str(a.get("classifier"))), a)
    strongest = D.strongest_attack(report)
    arch = D.part(report, "provenance", "model").get("architecture")
    paper_col = "2D-slice-mean" if arch == "brain_age_slice_mean" else "3D-CNN"
    paper = PAPER_ACCURACY[paper_col]
    rows = []
    for fs in feature_sets:
        threat = next(
            (D.threat_model(a) for a in D.attacks(report) if str(a.get("feature_set")) == fs),
            D.feature_set_threat_model(fs),
        )
        cells = []
        for clf in classifiers:
            a = by_key.get((fs, clf))
            if a is None:
                cells.append({"status": "missing"})
            elif not D.is_ok(a):
                cells.append({"status": "error", "error": str(a.get("error") or "unknown error"),
                              "name": D.attack_name(a)})
            else:
                cell = _metric_cell(a, "accuracy")
                cell.update(status="ok", strongest=a is strongest, name=D.attack_name(a))
                cells.append(cell)
        rows.append({
            "feature_set": fs,
            "description": D.FEATURE_SET_DESCRIPTIONS.get(fs, ""),
            "threat": threat,
            "paper": paper.get(fs, "–"),
            "cells": cells,
        })
    return {"classifiers": classifiers, "rows": rows, "paper_column": paper_col}


def _metrics_rows(report: dict) -> list[dict]:
    fs_index = {f: i for i, f in enumerate(D.feature_set_order(report))}
    clf_index = {c: i for i, c in enumerate(D.classifier_order(report))}
    attacks = sorted(
        D.attacks(report),
        key=lambda a: (fs_index.get(str(a.get("feature_set")), 99),
                       clf_index.get(str(a.get("classifier")), 99)),
    )
    strongest = D.strongest_attack(report)
    rows = []
    for a in attacks:
        row = {
            "name": D.attack_name(a),
            "feature_set": str(a.get("feature_set", "")),
            "classifier": str(a.get("classifier", "")),
            "threat": D.threat_model(a),
            "ok": D.is_ok(a),
            "error": str(a.get("error") or "unknown error"),
            "strongest": a is strongest,
            "n_test": a.get("n_test") if a.get("n_test") is not None else "n/a",
            "repeats": a.get("repeats") if a.get("repeats") is not None else "n/a",
        }
        if row["ok"]:
            row.update(
                auc=_auc_cell(a),
                tpr001=_metric_cell(a, "tpr_at_fpr_0.001", digits=2, ci_digits=2),
                tpr01=_metric_cell(a, "tpr_at_fpr_0.01", digits=2, ci_digits=1),
                balanced=_metric_cell(a, "balanced_accuracy", digits=1),
            )
        rows.append(row)
    return rows


def _verdict(report: dict) -> dict:
    v = D.part(report, "verdict")
    level = str(v.get("level") or "").lower()
    if level not in LEVEL_TEXT:
        level = "unknown"
    passed = v.get("passed")
    findings = []
    for f in v.get("findings") or []:
        if not isinstance(f, dict):
            continue
        sev = str(f.get("severity") or "info").lower()
        metric = f.get("metric")
        detail = []
        if f.get("attack"):
            detail.append(f"attack {f['attack']}")
        if metric:
            label = METRIC_LABELS.get(str(metric), str(metric))
            value, thr = finite(f.get("value")), finite(f.get("threshold"))
            if value is not None:
                detail.append(f"{label} value used by the policy {value:.3g}"
                              + (f", threshold {thr:.3g}" if thr is not None else ""))
        elif finite(f.get("value")) is not None:
            thr = finite(f.get("threshold"))
            detail.append(f"value {finite(f.get('value')):.3g}"
                          + (f", threshold {thr:.3g}" if thr is not None else ""))
        findings.append({
            "severity": sev if sev in SEVERITY_ORDER else "info",
            "message": str(f.get("message") or ""),
            "recommendation": str(f.get("recommendation") or ""),
            "detail": "; ".join(detail),
        })
    findings.sort(key=lambda f: SEVERITY_ORDER[f["severity"]])
    policy = D.part(v, "policy")
    by_threat = D.part(v, "levels_by_threat_model")
    threat_levels = [
        {"threat": tm, "label": label, "level": str(by_threat[tm]).lower(),
         "level_text": LEVEL_TEXT.get(str(by_threat[tm]).lower(), str(by_threat[tm]))}
        for tm, label in (("black-box", "Someone who can only query the model (black-box)"),
                          ("white-box", "Someone who holds the model file (white-box)"))
        if isinstance(by_threat, dict) and by_threat.get(tm)
    ]
    return {
        "threat_levels": threat_levels,
        "incomplete": bool(v.get("incomplete")),
        "level": level,
        "level_text": LEVEL_TEXT.get(level, "Risk level unknown"),
        "passed": passed,
        "passed_text": "Passed the policy" if passed is True else
                       "Failed the policy" if passed is False else "Policy result unknown",
        "summary": str(v.get("summary") or ""),
        "strongest": v.get("strongest_attack"),
        "findings": findings,
        "policy": [(str(k), _setting_value(val)) for k, val in policy.items()]
        if isinstance(policy, dict) else [],
    }


def _glance(report: dict) -> list[dict]:
    """A few headline numbers with a plain-language reading."""
    cards = []
    strongest = D.strongest_attack(report)
    if strongest is not None:
        acc = D.metric(strongest, "accuracy")
        auc = D.metric(strongest, "auc")
        tpr = D.metric(strongest, "tpr_at_fpr_0.01")
        cards.append({
            "label": "Strongest attack accuracy",
            "value": _pct(acc),
            "note": "share of scans whose membership it guesses right; a coin toss gets 50%",
        })
        cards.append({
            "label": "Strongest attack AUC",
            "value": _num(auc, ".2f"),
            "note": "0.5 = cannot tell members apart, 1.0 = always can",
        })
        cards.append({
            "label": "Members found at 1% false alarms",
            "value": _pct(tpr),
            "note": "training scans identified while wrongly accusing only 1 in 100 others",
        })
    u = D.part(report, "utility")
    if finite(u.get("mae_members")) is not None and finite(u.get("mae_nonmembers")) is not None:
        cards.append({
            "label": "Model error, training vs unseen scans",
            "value": f"{float(u['mae_members']):.1f} vs {float(u['mae_nonmembers']):.1f} years",
            "note": "a large gap means the model memorised its training scans",
        })
    return cards


def _provenance(report: dict) -> dict:
    p = D.part(report, "provenance")
    model, manifest = D.part(p, "model"), D.part(p, "manifest")
    meta = D.part(model, "metadata")
    model_rows = [
        ("File", model.get("path")),
        ("Format", model.get("format")),
        ("Architecture", model.get("architecture") or "(custom / not declared)"),
        ("SHA-256", model.get("sha256")),
    ] + [(f"Metadata: {k}", _setting_value(v)) for k, v in meta.items()]
    manifest_rows = [
        ("File", manifest.get("path")),
        ("SHA-256", manifest.get("sha256")),
        ("Scans", manifest.get("n_scans")),
        ("Members (training scans)", manifest.get("n_members")),
        ("Non-members (unseen scans)", manifest.get("n_nonmembers")),
    ]
    request = D.part(p, "request")
    run_rows = ([
        ("Assessment", request.get("assessment_id")),
        ("Requested by", request.get("requested_by")
         + (f" ({request['organisation']})" if request.get("organisation") else "")),
        ("Requested", request.get("requested_at")),
    ] if request.get("requested_by") else []) + [
        ("BrainMIA version", p.get("package_version")),
        ("Report schema", report.get("schema_version")),
        ("Created", p.get("created_at")),
        ("Duration", _duration(p.get("duration_s"))),
        ("Host", p.get("host")),
    ] + ([("Python", p.get("python"))] if p.get("python") else [])
    settings_rows = [(str(k), _setting_value(v)) for k, v in D.settings(report).items()]

    def clean(rows):
        return [(k, "n/a" if v is None or v == "" else str(v)) for k, v in rows]

    return {
        "model": clean(model_rows),
        "manifest": clean(manifest_rows),
        "run": clean(run_rows),
        "settings": clean(settings_rows),
    }


def _is_white_box(report: dict, features: pd.DataFrame | None) -> bool:
    return bool(D.grad_norm_columns(features)) or any(
        D.threat_model(a) == "white-box" for a in D.attacks(report)
    )


def _most_separable_layer(features: pd.DataFrame | None) -> str | None:
    best, best_sep = None, -1.0
    for col in D.grad_norm_columns(features):
        try:
            m, n = D.split_members(features, col)
        except FigureUnavailable:
            continue
        sep = D.separability(m, n)
        if sep is not None and sep > best_sep:
            best, best_sep = col, sep
    return best


def _alt_error(features: pd.DataFrame | None) -> str:
    try:
        m, n = D.split_members(features, "error")
    except FigureUnavailable:
        return "Prediction error distributions"
    if m.size == 0 or n.size == 0:
        return "Prediction error distributions"
    return (
        "Distributions of prediction error. Members: median "
        f"{float(pd.Series(m).median()):.1f} years, mean absolute error "
        f"{float(abs(pd.Series(m)).mean()):.1f} years. Non-members: median "
        f"{float(pd.Series(n).median()):.1f} years, mean absolute error "
        f"{float(abs(pd.Series(n)).mean()):.1f} years."
    )


def _grad_layers(fig: _FigureMaker, features: pd.DataFrame | None, best: str | None) -> list[dict]:
    """One gradient-magnitude figure per layer for the layer selector; the most revealing first shown."""
    layers = []
    for column in D.grad_norm_columns(features):
        label = column[len(D.GRAD_NORM_PREFIX):]
        block = fig(
            "grad_norm_distribution",
            layer=column,
            title=f"Gradient magnitude, layer {label}" + (" (the most revealing)" if column == best else ""),
            alt=f"Distributions of gradient magnitude at layer {label}, members against non-members.",
        )
        layers.append({"column": column, "label": label, "best": column == best,
                       "selected": column == best, "block": block})
    if layers and not any(layer["selected"] for layer in layers):
        layers[0]["selected"] = True
    return layers


def build_context(report: D.ReportLike, features: pd.DataFrame | None = None) -> dict:
    """The template's view of a report (a dict or a typed ``Report``): pre-formatted strings, no raw metric access."""
    report = D.as_dict(report)
    white_box = _is_white_box(report, features)
    if not D.grad_norm_columns(features) and not white_box:
        grad_message = "Not available (black-box assessment): gradients need the model's internals."
    elif features is None:
        grad_message = "Not available: the per-scan feature table was not provided."
    else:
        grad_message = "Not available: the per-scan feature table has no gradient-magnitude columns."
    fig = _FigureMaker(report, features, grad_message)
    strongest = D.strongest_attack(report)
    best_auc = D.metric(strongest, "auc") if strongest else None
    u = D.part(report, "utility")
    best_layer = _most_separable_layer(features)

    figures = {
        "accuracy_bars": fig("accuracy_bars", title="The same accuracies as a chart", alt=(
            "Bar chart of attack accuracy per feature set and classifier; the table above holds "
            "the same numbers.")),
        "error_distribution": fig("error_distribution", alt=_alt_error(features)),
        "grad_norm_layers": fig("grad_norm_layers", alt=(
            "Small panels, one per layer, each comparing the gradient magnitude of members and "
            "non-members.")),
        "roc": fig("roc_curves", alt=(
            "ROC curves of all attacks"
            + (f"; the strongest has AUC {best_auc:.2f}" if best_auc is not None else "")
            + ". The AUC and TPR table holds the same numbers.")),
        "roc_log": fig("roc_curves_log", alt=(
            "The same ROC curves on log-log axes, with the true positive rate at 0.1% and 1% "
            "false positive rate marked.")),
        "by_age": fig("accuracy_by_age", alt=(
            "Accuracy of the strongest attack in each age group, with the number of scans per "
            "group.")),
        "by_attribute": fig("accuracy_by_attribute", alt=(
            "Accuracy of the strongest attack within each subgroup of the scan list.")),
        "utility": fig("utility", alt=(
            f"Mean absolute error: {_num(u.get('mae_members'))} years on training scans, "
            f"{_num(u.get('mae_nonmembers'))} years on unseen scans.")),
    }
    federated = build_federated_context(report)
    grad_layers = _grad_layers(fig, features, best_layer)
    figures["grad_norm_best"] = next((layer["block"] for layer in grad_layers if layer["selected"]), None)
    prov = _provenance(report)
    model_path = str(D.part(report, "provenance", "model").get("path") or "")
    model_name = model_path.replace("\\", "/").rsplit("/", 1)[-1] if model_path else ""
    exposure_attack = D.part(report, "exposure").get("attack")
    schema = str(report.get("schema_version") or "")
    return {
        "title": "BrainMIA membership-inference report" + (f": {model_name}" if model_name else ""),
        "model_name": model_name,
        "created_at": str(D.part(report, "provenance").get("created_at") or ""),
        "schema_warning": bool(schema) and not schema.startswith("1."),
        "schema_version": schema,
        "verdict": _verdict(report),
        "glance": _glance(report),
        "accuracy_table": _accuracy_table(report),
        "metrics_rows": _metrics_rows(report),
        "n_errored": sum(1 for a in D.attacks(report) if not D.is_ok(a)),
        "figures": figures,
        "grad_message": grad_message,
        "has_grad": bool(D.grad_norm_columns(features)),
        "grad_layers": grad_layers,
        "federated": federated,
        "federated_figures": federated_figures(fig) if federated else {},
        "exposure": top_exposed(report, TOP_EXPOSED, members_only=True),
        "exposure_attack": str(exposure_attack) if exposure_attack else "",
        "top_n": TOP_EXPOSED,
        "provenance": prov,
        "colors": {
            "member": MEMBER_COLOR,
            "nonmember": NONMEMBER_COLOR,
            "black_box": BLACK_BOX_COLOR,
            "white_box": WHITE_BOX_COLOR,
        },
        "fmt_score": lambda s: _num(s, ".3f"),
    }


def render_report_html(report: D.ReportLike, features: pd.DataFrame | None = None) -> str:
    """Render the whole report as one self-contained HTML document (opens offline).

    Args:
        report: the report dict (report.json contract, schema 1.x) or a typed
            :class:`~worker.engine.report_model.Report`.
        features: the per-scan feature table (scan_id, member, age, prediction, error,
            grad_norm:<path>..., attributes), or None; sections that need it then say that
            the data is not available.
    """
    context = build_context(report, features)
    template = template_env().get_template("report.html.j2")
    return template.render(
        **context,
        css=Markup(_css()),
        plotly_js=Markup(_plotly_js()),
        plotly_config=plotly_config(),
    )


def plotly_config() -> Markup:
    """The Plotly config of every drawn figure, as JSON safe inside a <script> element."""
    return script_json(json.dumps({
        "displaylogo": False,
        "responsive": True,
        "modeBarButtonsToRemove": ["select2d", "lasso2d", "sendDataToCloud"],
        "toImageButtonOptions": {"format": "png", "scale": 2},
    }))


def write_report_html(report: D.ReportLike, features: pd.DataFrame | None, path: str | Path) -> Path:
    """Render and write the report to ``path`` (UTF-8); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report_html(report, features), encoding="utf-8")
    return path


__all__ = [
    "PAPER_ACCURACY", "build_context", "plotly_config", "render_report_html", "script_json", "template_env",
    "write_report_html",
]

