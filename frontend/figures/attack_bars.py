"""Attack accuracy per feature set and classifier as bars from the chance level, failed attacks marked."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from . import _data as D
from ._attack_style import accuracy_range, attack_label, chance_line, classifier_pattern
from ._registry import register_figure
from ._style import FAILED_COLOR, THREAT_COLORS, THREAT_LABELS, FigureUnavailable, esc, new_figure, pct

TICK_FONT = 13  # the template's font size


def _wrap_label(label: str, width: int = 16) -> str:
    """Break a long feature-set label after "+" so axis ticks stay horizontal."""
    if len(label) <= width:
        return label
    lines, current = [], ""
    for part in label.replace("+", "+\0").split("\0"):
        if current and len(current) + len(part) > width:
            lines.append(current)
            current = part
        else:
            current += part
    lines.append(current)
    return "<br>".join(lines)


@register_figure(
    "accuracy_bars",
    title="Attack accuracy per feature set",
    caption=(
        "Accuracy of every classifier attack: the share of scans whose membership it guesses correctly. "
        "Bars start at the dashed 50% line (a coin toss): the taller the bar, the more the "
        "model leaks. Orange bars use only the model's predictions (what anyone who can query "
        "the model sees); green bars use its internals (gradients, activations), available to "
        "whoever receives the model file. Whiskers show the 95% confidence interval over "
        "repeated attacks. Crosses mark attacks that failed to run (see the table)."
    ),
)
def accuracy_bars(report: dict, features: pd.DataFrame | None = None, metric: str = "accuracy") -> go.Figure:
    """Attack accuracy per feature set (x) and classifier (groups), with 95% CI whiskers, of the
    classifier attacks (the reference-model and quantile attacks have their own table).

    Bars are drawn from the 50% chance level; black-box and white-box attacks get different
    colours, classifiers different hatching.
    """
    if metric not in ("accuracy", "balanced_accuracy", "auc"):
        raise ValueError("metric must be 'accuracy', 'balanced_accuracy' or 'auc'")
    report = D.paper_view(report)  # the paper's classifier attacks, as the table above the chart
    all_attacks = D.attacks(report)
    if not all_attacks:
        raise FigureUnavailable("no classifier attacks in this report")
    feature_sets = D.feature_set_order(report)
    classifiers = D.classifier_order(report)
    x_labels = {fs: _wrap_label(esc(fs)) for fs in feature_sets}
    auc_like = metric == "auc"
    chance = 50.0
    fig = new_figure()
    all_vals: list[float] = []
    for tm in ("black-box", "white-box"):
        for ci, clf in enumerate(classifiers):
            rows = [
                a
                for a in all_attacks
                if D.is_ok(a) and D.threat_model(a) == tm and str(a.get("classifier")) == clf
            ]
            rows = [a for a in rows if D.metric(a, metric) is not None]
            if not rows:
                continue
            rows.sort(key=lambda a: feature_sets.index(str(a.get("feature_set"))))
            mean = [pct(D.metric(a, metric)) for a in rows]
            low = [pct(D.metric(a, metric, "ci_low")) for a in rows]
            high = [pct(D.metric(a, metric, "ci_high")) for a in rows]
            std = [pct(D.metric(a, metric, "std")) for a in rows]
            plus = [(h - m) if h is not None else (s or 0.0) for m, h, s in zip(mean, high, std)]
            minus = [(m - lo) if lo is not None else (s or 0.0) for m, lo, s in zip(mean, low, std)]
            all_vals += [m + p for m, p in zip(mean, plus)] + [m - q for m, q in zip(mean, minus)]
            custom = [
                [
                    f"{s:.1f}" if s is not None else "n/a",
                    f"{lo:.1f}" if lo is not None else "n/a",
                    f"{h:.1f}" if h is not None else "n/a",
                    a.get("repeats") if a.get("repeats") is not None else "n/a",
                    a.get("n_test") if a.get("n_test") is not None else "n/a",
                ]
                for a, s, lo, h in zip(rows, std, low, high)
            ]
            fig.add_trace(
                go.Bar(
                    x=[x_labels[str(a.get("feature_set"))] for a in rows],
                    y=[m - chance for m in mean],
                    base=chance,
                    name=esc(clf),
                    offsetgroup=esc(clf),
                    legendgroup=tm,
                    legendgrouptitle=dict(text=THREAT_LABELS[tm]),
                    marker=dict(
                        color=THREAT_COLORS[tm],
                        pattern=classifier_pattern(ci),
                        line=dict(color="rgba(0,0,0,0.35)", width=1),
                    ),
                    error_y=dict(type="data", symmetric=False, array=plus, arrayminus=minus,
                                 color="#24292f", thickness=1.2, width=4),
                    hovertext=[
                        f"<b>{attack_label(a)}</b> ({tm})<br>{esc(metric)} {m:.1f}% ± {c[0]} (std)"
                        f"<br>95% CI {c[1]} to {c[2]}%<br>{c[3]} repeats, {c[4]} test scans"
                        for a, m, c in zip(rows, mean, custom)
                    ],
                    hoverinfo="text",
                )
            )
    failed = [a for a in all_attacks if not D.is_ok(a)]
    if failed:
        fig.add_trace(
            go.Scatter(
                x=[x_labels.get(str(a.get("feature_set")), esc(a.get("feature_set"))) for a in failed],
                y=[chance] * len(failed),
                mode="markers",
                marker=dict(symbol="x-thin", size=14, line=dict(color=FAILED_COLOR, width=2.5),
                            color=FAILED_COLOR),
                name="Attack failed (see table)",
                hovertext=[
                    f"<b>{attack_label(a)}</b> failed:<br>{esc(str(a.get('error') or 'unknown error')[:300])}"
                    for a in failed
                ],
                hoverinfo="text",
            )
        )
    if not fig.data:
        raise FigureUnavailable("no attack produced a result")
    chance_line(fig)
    label = "AUC (×100)" if auc_like else esc(metric.replace("_", " "))
    tick_lines = max((x.count("<br>") + 1 for x in x_labels.values()), default=1)
    fig.update_layout(
        title=dict(text=f"Attack {label} per feature set"),
        barmode="group",
        height=480,
        bargap=0.25,
        legend=dict(orientation="h", x=0, xanchor="left", y=1.02, yanchor="bottom",
                    groupclick="toggleitem"),
        # room for the wrapped tick labels and the axis title (see roc.roc_curves)
        margin=dict(t=150, b=math.ceil(36 + 1.3 * TICK_FONT * tick_lines)),
    )
    fig.update_xaxes(
        title_text="Feature set (what the attacker uses)",
        type="category",
        categoryorder="array",
        categoryarray=[x_labels[f] for f in feature_sets],
        tickangle=0,
    )
    fig.update_yaxes(title_text=f"Attack {label} (%)", range=accuracy_range(all_vals))
    return fig
