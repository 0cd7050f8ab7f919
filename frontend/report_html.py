"""The exported report: one self-contained HTML file that opens offline.

plotly.js is inlined once, the CSS is inlined, figures are embedded as JSON and drawn by a
small script at the end; nothing is fetched from the network. Every string from the report or
the feature table (scan IDs, file names, attribute values, error messages) is escaped by
Jinja2's autoescape; figure JSON is embedded in ``<script type="application/json">`` with
``<``, ``>`` and ``&`` written as JSON unicode escapes.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from .federated_view import build_federated_context, federated_figures
from .figures import top_exposed
from .figures import _data as D
from .figures._style import BLACK_BOX_COLOR, MEMBER_COLOR, NONMEMBER_COLOR, WHITE_BOX_COLOR
from .report_view.attack_tables import PAPER_ACCURACY, accuracy_table, metrics_rows
from .report_view.calibrated import CALIBRATION_CAPTION, calibrated_rows, calibration_view
from .report_view.distributions import alt_error, grad_layers, grad_message, most_separable_layer
from .report_view.figure_blocks import FigureBlock, FigureMaker, script_json
from .report_view.formatting import fmt_num
from .report_view.provenance import provenance_view
from .report_view.scan_quality import scan_quality_view
from .report_view.verdict import LEVEL_TEXT, glance_cards, verdict_view

#: The figure maker under its former name (kept importable for callers of this module).
_FigureMaker = FigureMaker

_HERE = Path(__file__).parent
TEMPLATE_DIR = _HERE / "templates"
STATIC_DIR = _HERE / "static"
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
    env.globals["level_text"] = LEVEL_TEXT
    return env


def _wbr(value: Any) -> Markup:
    """Escape, then allow line breaks after "+" and "/" in long attack names."""
    text = str(escape(value))
    return Markup(text.replace("+", "+<wbr>").replace("/", "/<wbr>"))


def _css() -> str:
    return (STATIC_DIR / "report.css").read_text(encoding="utf-8")



def _figures(fig: FigureMaker, report: dict, features: pd.DataFrame | None) -> dict[str, Any]:
    """The report's figure blocks outside the federated section and the layer selector."""
    strongest = D.strongest_attack(report)
    best_auc = D.metric(strongest, "auc") if strongest else None
    u = D.part(report, "utility")
    return {
        "accuracy_bars": fig("accuracy_bars", title="The same accuracies as a chart", alt=(
            "Bar chart of attack accuracy per feature set and classifier; the table above holds "
            "the same numbers.")),
        "error_distribution": fig("error_distribution", alt=alt_error(features)),
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
            f"Mean absolute error: {fmt_num(u.get('mae_members'))} years on training scans, "
            f"{fmt_num(u.get('mae_nonmembers'))} years on unseen scans.")),
    }


def build_context(report: D.ReportLike, features: pd.DataFrame | None = None) -> dict:
    """The template's view of a report (a dict or a typed ``Report``): pre-formatted strings, no raw metric access."""
    report = D.as_dict(report)
    no_grad = grad_message(report, features)
    fig = FigureMaker(report, features, no_grad)
    figures = _figures(fig, report, features)
    federated = build_federated_context(report)
    layers = grad_layers(fig, features, most_separable_layer(features))
    figures["grad_norm_best"] = next((layer["block"] for layer in layers if layer["selected"]), None)
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
        "verdict": verdict_view(report),
        "glance": glance_cards(report),
        "accuracy_table": accuracy_table(report),
        "metrics_rows": metrics_rows(report),
        "calibrated_rows": calibrated_rows(report),
        "calibration_checks": calibration_view(report),
        "calibration_caption": CALIBRATION_CAPTION,
        "n_errored": sum(1 for a in D.attacks(D.paper_view(report)) if not D.is_ok(a)),
        "figures": figures,
        "grad_message": no_grad,
        "has_grad": bool(D.grad_norm_columns(features)),
        "grad_layers": layers,
        "federated": federated,
        "federated_figures": federated_figures(fig) if federated else {},
        "exposure": top_exposed(report, TOP_EXPOSED, members_only=True),
        "exposure_attack": str(exposure_attack) if exposure_attack else "",
        "top_n": TOP_EXPOSED,
        "provenance": provenance_view(report),
        "scan_quality": scan_quality_view(report),
        "colors": {
            "member": MEMBER_COLOR,
            "nonmember": NONMEMBER_COLOR,
            "black_box": BLACK_BOX_COLOR,
            "white_box": WHITE_BOX_COLOR,
        },
        "fmt_score": lambda s: fmt_num(s, ".3f"),
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
    "LEVEL_TEXT", "PAPER_ACCURACY", "FigureBlock", "FigureMaker", "build_context", "plotly_config",
    "render_report_html", "script_json", "template_env", "write_report_html",
]
