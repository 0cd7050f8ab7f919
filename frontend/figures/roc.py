"""ROC curves of the attacks, on linear axes and on log-log axes (the low false-alarm region)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from . import _data as D
from ._attack_style import attack_label, styles
from ._registry import register_figure
from ._style import CHANCE_COLOR, CLASSIFIER_DASHES, FigureUnavailable, feature_set_color, new_figure, text_px

LOW_FPRS = ((0.001, "tpr_at_fpr_0.001", "0.1%"), (0.01, "tpr_at_fpr_0.01", "1%"))
LOG_FLOOR = 1e-3
ROC_LEGEND_FONT = 11


def _legend_width(labels: list[str], size: float, cap: int = 480) -> int:
    """Right margin (px) holding a vertical legend of ``labels`` (line symbol, text, padding);
    at most ``cap``: a wider legend is left to Plotly's automargin."""
    return min(cap, math.ceil(max((text_px(label, size) for label in labels), default=0.0) + 56))


def _thin_roc(fpr: np.ndarray, tpr: np.ndarray, max_points: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points of a (sorted) ROC curve, so long curves stay light.

    Long curves are resampled on a grid that is dense both at low FPR (log-spaced) and
    across the range (linear); the extreme points are kept.
    """
    if fpr.size <= max_points:
        return fpr, tpr
    grid = np.unique(np.r_[0.0, np.logspace(-4, 0, max_points // 2), np.linspace(0, 1, max_points // 2)])
    grid = grid[(grid >= fpr[0]) & (grid <= fpr[-1])]
    # For vertical steps (repeated FPR) take the upper TPR, as ROC interpolation does.
    uniq, idx = np.unique(fpr[::-1], return_index=True)
    upper = tpr[::-1][idx]
    return grid, np.interp(grid, uniq, upper)


def _floats(values: Any) -> np.ndarray:
    """A float array from a JSON list where nulls (undefined points) become NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


@register_figure(
    "roc_curves",
    title="ROC curves of the attacks",
    caption=(
        "Each line is one attack. It shows, as the attacker accepts more false alarms "
        "(non-members wrongly flagged, left to right), how many true members it finds (bottom "
        "to top). The grey diagonal is guessing at random. The further a line bends towards the "
        "top-left corner, the better the attack; the area under it (AUC, in the legend, sorted "
        "from the strongest) is 0.5 for guessing and 1.0 for a perfect attack. One line per "
        "feature set is drawn (its best classifier); the others are greyed out in the legend - "
        "click an entry to show or hide it."
    ),
)
def roc_curves(
    report: dict,
    features: pd.DataFrame | None = None,
    log: bool = False,
    show: str | int = "best",
    mark_low_fpr: bool | None = None,
) -> go.Figure:
    """Mean ROC curve of every successful attack, legend strongest first (the verdict's ranking).

    Args:
        log: log-log axes from 1e-3, to read the low false-positive region.
        show: which curves start visible; the others are listed in the legend, hidden until
            clicked. ``"best"``: the best classifier of each feature set; ``"all"``; or an
            int N: the N strongest attacks.
        mark_low_fpr: mark TPR at 0.1% and 1% FPR (default: on the log-log variant).
    """
    if mark_low_fpr is None:
        mark_low_fpr = bool(log)
    colors, classifiers = styles(report)
    candidates = [  # strongest first (the verdict's ranking)
        a
        for a in D.ranked(report)
        if isinstance(a.get("roc"), dict) and a["roc"].get("fpr") and a["roc"].get("tpr")
    ]
    if not candidates:
        raise FigureUnavailable("no ROC curve available (no successful attack)")
    # Within a feature set, the best classifier is drawn solid, the next ones dashed, dotted...
    rank_in_set: dict[int, int] = {}
    seen_sets: dict[str, int] = {}
    for i, a in enumerate(candidates):
        fs = str(a.get("feature_set"))
        rank_in_set[i] = seen_sets.get(fs, 0)
        seen_sets[fs] = rank_in_set[i] + 1
    if isinstance(show, str) and show.strip().isdigit():
        show = int(show)
    if show == "all":
        shown = set(range(len(candidates)))
    elif show == "best":
        best: dict[str, int] = {}
        for i, a in enumerate(candidates):
            best.setdefault(str(a.get("feature_set")), i)
        shown = set(best.values())
    elif isinstance(show, int) and not isinstance(show, bool):
        shown = set(range(min(show, len(candidates))))
    else:
        raise ValueError("show must be 'best', 'all' or an int")

    fig = new_figure()
    lo = LOG_FLOOR if log else 0.0
    grid = np.logspace(-3, 0, 50) if log else np.linspace(0, 1, 2)
    fig.add_trace(
        go.Scatter(
            x=grid,
            y=grid,
            mode="lines",
            line=dict(color=CHANCE_COLOR, dash="dash", width=1.5),
            name="Chance (random guessing), AUC 0.5",
            hoverinfo="skip",
        )
    )
    for rank, attack in enumerate(candidates):
        fpr = _floats(attack["roc"]["fpr"])
        tpr = _floats(attack["roc"]["tpr"])
        if fpr.size != tpr.size:
            continue
        ok = np.isfinite(fpr) & np.isfinite(tpr)
        fpr, tpr = fpr[ok], tpr[ok]
        if fpr.size == 0:
            continue
        order = np.lexsort((tpr, fpr))
        fpr, tpr = fpr[order], tpr[order]
        fpr_line, tpr_line = _thin_roc(fpr, tpr)
        if log:
            # Points below the axis floor are clipped just outside it, so each line enters
            # the plot at the right place instead of vanishing.
            fpr_plot = np.clip(fpr_line, LOG_FLOOR / 10, 1.0)
            tpr_plot = np.clip(tpr_line, LOG_FLOOR / 10, 1.0)
        else:
            fpr_plot, tpr_plot = fpr_line, tpr_line
        fs = str(attack.get("feature_set"))
        color = colors[fs] if fs in colors else feature_set_color(fs, rank)
        dash = CLASSIFIER_DASHES[rank_in_set[rank] % len(CLASSIFIER_DASHES)]
        auc = D.metric(attack, "auc")
        name = f"{attack_label(attack)}, AUC {auc:.2f}" if auc is not None else f"{attack_label(attack)}, AUC n/a"
        visible: Any = True if rank in shown else "legendonly"
        group = f"attack-{rank}"
        fig.add_trace(
            go.Scatter(
                x=fpr_plot.round(6),
                y=tpr_plot.round(6),
                mode="lines",
                line=dict(color=color, dash=dash, width=3 if rank == 0 else 2),
                name=name,
                legendgroup=group,
                visible=visible,
                hovertemplate=(
                    f"<b>{attack_label(attack)}</b><br>false alarms %{{x:.2%}} of "
                    "non-members<br>members found %{y:.1%}<extra></extra>"
                ),
            )
        )
        if mark_low_fpr:
            xs, ys, texts = [], [], []
            for target, key, label in LOW_FPRS:
                value = D.metric(attack, key)
                if value is None:
                    value = float(np.interp(target, fpr, tpr))
                xs.append(target)
                ys.append(max(value, LOG_FLOOR) if log else value)
                texts.append(
                    f"<b>{attack_label(attack)}</b><br>at {label} false alarms: finds "
                    f"{100 * value:.1f}% of members"
                )
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="markers",
                    marker=dict(color=color, size=9, symbol="circle", line=dict(color="white", width=1)),
                    name=f"{attack_label(attack)} at 0.1% / 1% FPR",
                    legendgroup=group,
                    showlegend=False,
                    visible=visible,
                    hovertext=texts,
                    hoverinfo="text",
                )
            )
    if mark_low_fpr:
        for target, _, label in LOW_FPRS:
            fig.add_vline(x=target, line=dict(color="#8c959f", dash="dot", width=1))
            # Annotations on a log axis take log10 coordinates (add_vline gets this wrong).
            fig.add_annotation(
                x=math.log10(target) if log else target,
                y=1,
                yref="paper",
                text=f"{label} FPR",
                showarrow=False,
                xanchor="left",
                yanchor="top",
                xshift=3,
                font=dict(size=11, color="#57606a"),
            )
    # The log axes start just below 1e-3 so the markers at 0.1% FPR are not cut in half.
    axis = dict(type="log", range=[math.log10(LOG_FLOOR) - 0.08, 0.02]) if log else dict(range=[lo - 0.01, 1.01])
    title = "ROC curves (log-log: the low false-alarm region)" if log else "ROC curves of the attacks"
    legend_title = "Attack (feature set · classifier),<br>strongest first; click to show/hide"
    legend_text = [str(t.name) for t in fig.data if t.showlegend is not False] + legend_title.split("<br>")
    fig.update_layout(
        title=dict(text=title),
        height=max(560, 190 + 20 * (len(candidates) + 1)),
        hovermode="closest",
        # Room for the axes and the legend up front: a margin Plotly has to widen itself
        # (automargin) makes it draw the whole figure twice.
        margin=dict(l=80, r=_legend_width(legend_text, ROC_LEGEND_FONT)),
        legend=dict(
            title=dict(text=legend_title),
            orientation="v",
            x=1.02,
            xanchor="left",
            y=1,
            yanchor="top",
            font=dict(size=ROC_LEGEND_FONT),
            tracegroupgap=1,  # one legend group per attack; keep them tight
        ),
    )
    fig.update_xaxes(
        title_text="False positive rate: share of non-members flagged as members"
        + (" (log scale)" if log else ""),
        **axis,
    )
    y_axis = dict(axis)
    fig.update_yaxes(
        title_text="True positive rate: share of members found" + (" (log scale)" if log else ""),
        **y_axis,
    )
    if log:
        ticks = [0.001, 0.01, 0.1, 1]
        fig.update_xaxes(tickvals=ticks, ticktext=["0.1%", "1%", "10%", "100%"])
        fig.update_yaxes(tickvals=ticks, ticktext=["0.1%", "1%", "10%", "100%"])
    else:
        fig.update_xaxes(tickformat=".0%")
        fig.update_yaxes(tickformat=".0%")
    return fig


@register_figure(
    "roc_curves_log",
    title="ROC curves, log-log (low false-alarm region)",
    caption=(
        "The same curves on logarithmic axes, zoomed on the region that matters for privacy: "
        "how many members an attacker can identify while almost never accusing a non-member. "
        "Dots mark the share of members found at 0.1% and 1% false alarms. A line above the "
        "grey diagonal at the left edge means some individuals can be confidently identified "
        "as training scans, even if the overall accuracy looks modest."
    ),
)
def roc_curves_log(
    report: dict,
    features: pd.DataFrame | None = None,
    show: str | int = "best",
    mark_low_fpr: bool = True,
) -> go.Figure:
    """:func:`roc_curves` with ``log=True``."""
    return roc_curves(report, features, log=True, show=show, mark_low_fpr=mark_low_fpr)

