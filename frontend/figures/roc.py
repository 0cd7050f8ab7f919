"""ROC curves of the attacks, on linear axes and on log-log axes (the low false-alarm region)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from . import _data as D
from ._attack_style import attack_color, legend_label, styles
from ._registry import register_figure
from ._style import CHANCE_COLOR, CLASSIFIER_DASHES, FigureUnavailable, new_figure, text_px

LOW_FPRS = ((0.001, "tpr_at_fpr_0.001", "0.1%"), (0.01, "tpr_at_fpr_0.01", "1%"))
LOG_FLOOR = 1e-3
ROC_LEGEND_FONT = 11
LEGEND_LINE_PX = 330
"""A legend entry wider than this (px) puts its family, access and AUC on a second line."""


def _legend_width(labels: list[str], size: float, cap: int = 480) -> int:
    """Right margin (px) holding a vertical legend of ``labels`` (line symbol, text, padding);
    at most ``cap``: a wider legend is left to Plotly's automargin."""
    lines = [line for label in labels for line in label.split("<br>")]
    return min(cap, math.ceil(max((text_px(line, size) for line in lines), default=0.0) + 56))


def _entry_name(attack: dict) -> str:
    """The legend entry: the attack, its family and access, its AUC; wrapped after the attack's
    name when one line would be wide (the legend then leaves the plot its width)."""
    auc = D.metric(attack, "auc")
    label, tags = legend_label(attack)
    tail = f"({tags}), AUC {auc:.2f}" if auc is not None else f"({tags}), AUC n/a"
    one_line = f"{label} {tail}"
    return one_line if text_px(one_line, ROC_LEGEND_FONT) <= LEGEND_LINE_PX else f"{label}<br>{tail}"


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


def _set_key(attack: dict) -> tuple[str, str]:
    """The group of an attack for "best" and line styles: its family and feature set (signal)."""
    return D.family(attack), str(attack.get("feature_set"))


def _dash(attack: dict, rank_in_set: int) -> str:
    """The paper's attacks: solid for the best classifier of a feature set, then dashed, dotted...;
    reference-model and quantile attacks (coloured by method): solid black-box, dotted white-box."""
    if D.family(attack) != "classifier":
        return "solid" if D.threat_model(attack) == "black-box" else "dot"
    return CLASSIFIER_DASHES[rank_in_set % len(CLASSIFIER_DASHES)]


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
        "from the strongest) is 0.5 for guessing and 1.0 for a perfect attack. The legend names "
        "each attack's family (classifier: trained on part of the scans, as in Gupta et al. 2021; "
        "reference: calibrated against reference models; quantile: calibrated by a quantile "
        "regressor) and the access it needs (black-box: predictions only; white-box: the model's "
        "internals). One line per feature set and family is drawn (its best attack); the others "
        "are greyed out in the legend - click an entry to show or hide it."
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
            int N: the N strongest attacks. A feature set's attacks of each family (classifier,
            reference, quantile) count as one set.
        mark_low_fpr: mark TPR at 0.1% and 1% FPR (default: on the log-log variant).
    """
    if mark_low_fpr is None:
        mark_low_fpr = bool(log)
    colors, _ = styles(report)
    candidates = [  # strongest first (the verdict's ranking)
        a
        for a in D.ranked(report)
        if isinstance(a.get("roc"), dict) and a["roc"].get("fpr") and a["roc"].get("tpr")
    ]
    if not candidates:
        raise FigureUnavailable("no ROC curve available (no successful attack)")
    # Within a feature set (and family), the best attack is drawn solid, the next ones dashed, dotted...
    rank_in_set: dict[int, int] = {}
    seen_sets: dict[tuple[str, str], int] = {}
    for i, a in enumerate(candidates):
        key = _set_key(a)
        rank_in_set[i] = seen_sets.get(key, 0)
        seen_sets[key] = rank_in_set[i] + 1
    if isinstance(show, str) and show.strip().isdigit():
        show = int(show)
    if show == "all":
        shown = set(range(len(candidates)))
    elif show == "best":
        best: dict[tuple[str, str], int] = {}
        for i, a in enumerate(candidates):
            best.setdefault(_set_key(a), i)
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
        color = attack_color(attack, colors, rank)
        dash = _dash(attack, rank_in_set[rank])
        label = "{} ({})".format(*legend_label(attack))
        name = _entry_name(attack)
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
                    f"<b>{label}</b><br>false alarms %{{x:.2%}} of "
                    "non-members<br>members found %{y:.1%}<extra></extra>"
                ),
            )
        )
        if mark_low_fpr:
            xs: list[float] = []
            ys: list[float] = []
            texts: list[str] = []
            for target, key, fpr_label in LOW_FPRS:
                value = D.metric(attack, key)
                if value is None:  # undefined: fewer than 1 / FPR non-members were tested
                    continue
                xs.append(target)
                ys.append(max(value, LOG_FLOOR) if log else value)
                texts.append(
                    f"<b>{label}</b><br>at {fpr_label} false alarms: finds "
                    f"{100 * value:.1f}% of members"
                )
            if xs:
                fig.add_trace(go.Scatter(
                    x=xs,
                    y=ys,
                    mode="markers",
                    marker=dict(color=color, size=9, symbol="circle", line=dict(color="white", width=1)),
                    name=f"{label} at 0.1% / 1% FPR",
                    legendgroup=group,
                    showlegend=False,
                    visible=visible,
                    hovertext=texts,
                    hoverinfo="text",
                ))
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
    legend_title = "Attack (family, access), strongest first;<br>click to show/hide"
    legend_text = [str(t.name) for t in fig.data if t.showlegend is not False] + legend_title.split("<br>")
    fig.update_layout(
        title=dict(text=title),
        height=max(560, 190 + 20 * (len(candidates) + 1) + 14 * sum("<br>" in n for n in legend_text)),
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
        "Dots mark the share of members found at 0.1% and 1% false alarms, where enough "
        "non-members were tested to measure it (1,000 and 100). A line above the "
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

