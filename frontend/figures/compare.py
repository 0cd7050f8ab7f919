"""Figures that put two reports side by side (e.g. a model before and after a defence)."""

from __future__ import annotations

import plotly.graph_objects as go

from . import _data as D
from ._style import CHANCE_COLOR, FigureUnavailable, esc, new_figure, pct

#: Colours of the two assessments compared (distinct from the member / non-member colours).
COMPARE_COLORS = ("#333333", "#E66100")
COMPARE_SYMBOLS = ("circle", "diamond")


def _by_name(report: dict, metric: str) -> dict[str, dict]:
    return {D.attack_name(a): a for a in D.ok_attacks(report) if D.metric(a, metric) is not None}


def comparison_accuracy(
    report_a: D.ReportLike, report_b: D.ReportLike, label_a: str = "A", label_b: str = "B",
    metric: str = "accuracy",
) -> go.Figure:
    """Each attack's accuracy (or AUC) in both reports, with 95% CI whiskers, attacks as rows.

    Args:
        report_a, report_b: the two reports (dicts as in report.json, or typed ``Report``).
        label_a, label_b: legend names of the two assessments.
        metric: ``accuracy``, ``balanced_accuracy`` or ``auc``.
    """
    if metric not in ("accuracy", "balanced_accuracy", "auc"):
        raise ValueError("metric must be 'accuracy', 'balanced_accuracy' or 'auc'")
    report_a, report_b = D.as_dict(report_a), D.as_dict(report_b)
    a_rows, b_rows = _by_name(report_a, metric), _by_name(report_b, metric)
    order = [n for n in _attack_order(report_a, report_b) if n in a_rows or n in b_rows]
    if not order:
        raise FigureUnavailable("neither assessment has a completed attack")
    fig = new_figure()
    unit = "" if metric == "auc" else "%"
    scale = (lambda v: v) if metric == "auc" else pct
    for i, (label, rows) in enumerate(((label_a, a_rows), (label_b, b_rows))):
        names = [n for n in order if n in rows]
        mean = [scale(D.metric(rows[n], metric)) for n in names]
        lo = [scale(D.metric(rows[n], metric, "ci_low")) for n in names]
        hi = [scale(D.metric(rows[n], metric, "ci_high")) for n in names]
        fig.add_trace(go.Scatter(
            x=mean,
            y=[esc(n) for n in names],
            mode="markers",
            name=esc(label),
            marker=dict(color=COMPARE_COLORS[i], symbol=COMPARE_SYMBOLS[i], size=10),
            error_x=dict(
                type="data", symmetric=False, color=COMPARE_COLORS[i], thickness=1.5,
                array=[(h - m) if h is not None else 0 for m, h in zip(mean, hi)],
                arrayminus=[(m - low) if low is not None else 0 for m, low in zip(mean, lo)],
            ),
            customdata=[[f"{low:.3g}" if low is not None else "n/a", f"{h:.3g}" if h is not None else "n/a"]
                        for low, h in zip(lo, hi)],
            hovertemplate=(f"<b>{esc(label)}</b> %{{y}}<br>{metric}: %{{x:.3g}}{unit}"
                           "<br>95% CI %{customdata[0]} to %{customdata[1]}<extra></extra>"),
        ))
    chance = 0.5 if metric == "auc" else 50.0
    fig.add_vline(x=chance, line=dict(color=CHANCE_COLOR, dash="dash"), annotation_text="chance",
                  annotation_position="top")
    fig.update_layout(
        title_text=f"Attack {'AUC' if metric == 'auc' else metric.replace('_', ' ')}: {esc(label_a)} vs {esc(label_b)}",
        xaxis_title=("AUC" if metric == "auc" else "Attack accuracy (%)") + ", 95% CI",
        yaxis=dict(autorange="reversed", automargin=True, title_text="", categoryorder="array",
                   categoryarray=[esc(n) for n in order]),
        height=max(320, 28 * len(order) + 140),
        legend=dict(orientation="h", y=-0.15),
    )
    return fig


def _attack_order(report_a: dict, report_b: dict) -> list[str]:
    fs = D.feature_set_order(report_a) + [f for f in D.feature_set_order(report_b) if f not in D.feature_set_order(report_a)]
    clf = D.classifier_order(report_a) + [c for c in D.classifier_order(report_b) if c not in D.classifier_order(report_a)]
    names = {D.attack_name(a): (str(a.get("feature_set")), str(a.get("classifier")))
             for a in D.attacks(report_a) + D.attacks(report_b)}
    return sorted(names, key=lambda n: (fs.index(names[n][0]) if names[n][0] in fs else 99,
                                        clf.index(names[n][1]) if names[n][1] in clf else 99))
