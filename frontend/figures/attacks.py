"""Attack results: ROC curves, accuracy per feature set, per age bin and per attribute."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import _data as D
from ._registry import register_figure
from ._style import (
    CHANCE_COLOR,
    CLASSIFIER_DASHES,
    CLASSIFIER_PATTERNS,
    FAILED_COLOR,
    THREAT_COLORS,
    THREAT_LABELS,
    FigureUnavailable,
    apply_style,
    esc,
    feature_set_color,
    finite,
    new_figure,
    pct,
    text_px,
)

LOW_FPRS = ((0.001, "tpr_at_fpr_0.001", "0.1%"), (0.01, "tpr_at_fpr_0.01", "1%"))
LOG_FLOOR = 1e-3
ROC_LEGEND_FONT = 11
TICK_FONT = 13  # the template's font size


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


def _count(value: Any) -> Any:
    return value if value is not None else "n/a"


def _floats(values: Any) -> np.ndarray:
    """A float array from a JSON list where nulls (undefined points) become NaN."""
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _value_label(value: Any) -> str:
    """An attribute value as shown on an axis (escaped; missing values named)."""
    return "(missing)" if value is None else esc(value)


def _bin_key(entry: dict) -> float:
    """Sort key of an age bin: its lower edge; an open lower bin ("<40") comes first."""
    low, high = finite(entry.get("low")), finite(entry.get("high"))
    if low is not None:
        return low
    return (high - 1e6) if high is not None else float("inf")


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


def _styles(report: dict) -> tuple[dict[str, str], dict[str, int]]:
    """Colour per feature set and index per classifier, stable across figures."""
    others = [fs for fs in D.feature_set_order(report) if fs not in D.FEATURE_SET_ORDER]
    colors = {fs: feature_set_color(fs, others.index(fs) if fs in others else 0)
              for fs in D.feature_set_order(report)}
    classifiers = {c: i for i, c in enumerate(D.classifier_order(report))}
    return colors, classifiers


def _label(attack: dict) -> str:
    return f"{esc(attack.get('feature_set', '?'))} · {esc(attack.get('classifier', '?'))}"


def _fmt_pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}%"


def _metric_hover(attack: dict) -> str:
    acc = D.metric(attack, "accuracy")
    auc = D.metric(attack, "auc")
    lines = [
        f"<b>{_label(attack)}</b> ({esc(D.threat_model(attack))})",
        f"AUC {auc:.3f}" if auc is not None else "AUC n/a",
        f"accuracy {_fmt_pct(pct(acc))}",
    ]
    return "<br>".join(lines)


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
    colors, classifiers = _styles(report)
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
        name = f"{_label(attack)}, AUC {auc:.2f}" if auc is not None else f"{_label(attack)}, AUC n/a"
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
                    f"<b>{_label(attack)}</b><br>false alarms %{{x:.2%}} of "
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
                    f"<b>{_label(attack)}</b><br>at {label} false alarms: finds "
                    f"{100 * value:.1f}% of members"
                )
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=ys,
                    mode="markers",
                    marker=dict(color=color, size=9, symbol="circle", line=dict(color="white", width=1)),
                    name=f"{_label(attack)} at 0.1% / 1% FPR",
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


def _chance_line(fig: go.Figure, **where: Any) -> None:
    fig.add_hline(
        y=50,
        line=dict(color=CHANCE_COLOR, dash="dash", width=1.5),
        annotation_text="chance (50%)",
        annotation_position="bottom right",
        annotation_font=dict(size=11, color="#57606a"),
        **where,
    )


def _accuracy_range(values: list[float]) -> list[float]:
    vals = [v for v in values if v is not None]
    lo = min([45.0] + [v - 5 for v in vals])
    hi = max([60.0] + [v + 5 for v in vals])
    return [max(0.0, lo), min(100.0, hi)]


@register_figure(
    "accuracy_by_age",
    title="Attack accuracy by age group",
    caption=(
        "How often the strongest attack guesses membership correctly, separately for scans in "
        "each age group. The dashed line at 50% is a coin toss. Age groups well above the line "
        "are more exposed. The grey bars give the number of scans tested in each group: groups "
        "with few scans give less reliable numbers."
    ),
)
def accuracy_by_age(
    report: dict, features: pd.DataFrame | None = None, attacks: Any = "strongest"
) -> go.Figure:
    """Accuracy per age bin of the strongest attack (or ``attacks="all"`` / names)."""
    selected = D.select_attacks(report, attacks, require="by_age_bin")
    if not selected:
        raise FigureUnavailable("no per-age-group results in this report")
    colors, classifiers = _styles(report)
    bins: dict[str, float] = {}
    for attack in selected:
        for b in attack.get("by_age_bin") or []:
            bins.setdefault(str(b.get("bin")), _bin_key(b))
    order = sorted(bins, key=lambda k: bins[k])
    labels = [esc(b) for b in order]

    fig = make_subplots(specs=[[{"secondary_y": True}]])
    first = selected[0]
    n_by_bin = {str(b.get("bin")): b.get("n") for b in first.get("by_age_bin") or []}
    fig.add_trace(
        go.Bar(
            x=labels,
            y=[n_by_bin.get(b) or 0 for b in order],
            name="Scans tested (right axis)",
            marker=dict(color="rgba(140,149,159,0.28)"),
            hovertemplate="age %{x} years: %{y} scans tested<extra></extra>",
        ),
        secondary_y=True,
    )
    all_acc: list[float] = []
    for i, attack in enumerate(selected):
        by = {str(b.get("bin")): b for b in attack.get("by_age_bin") or []}
        ys, custom = [], []
        for b in order:
            entry = by.get(b) or {}
            acc = pct(entry.get("accuracy"))
            ys.append(acc)
            custom.append([_count(entry.get("n")), _count(entry.get("n_members"))])
            if acc is not None:
                all_acc.append(acc)
        fs = str(attack.get("feature_set"))
        fig.add_trace(
            go.Scatter(
                x=labels,
                y=ys,
                mode="lines+markers",
                name=_label(attack) + (" (strongest)" if i == 0 and attacks in (None, "strongest") else ""),
                line=dict(color=colors[fs] if fs in colors else feature_set_color(fs, i), width=2.5 if i == 0 else 1.5,
                          dash=CLASSIFIER_DASHES[i % len(CLASSIFIER_DASHES)]),
                marker=dict(size=9 if i == 0 else 6),
                customdata=custom,
                connectgaps=False,
                hovertemplate=(
                    f"<b>{_label(attack)}</b><br>age %{{x}} years<br>accuracy %{{y:.1f}}%"
                    "<br>n = %{customdata[0]} test predictions (%{customdata[1]} of members)"
                    "<extra></extra>"
                ),
            ),
            secondary_y=False,
        )
    _chance_line(fig)
    apply_style(
        fig,
        title=dict(text="Attack accuracy by age group"),
        height=420,
        hovermode="closest",
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1),
        margin=dict(t=90),
        bargap=0.3,
    )
    fig.update_xaxes(title_text="Age group (years)", type="category", categoryorder="array",
                     categoryarray=labels)
    fig.update_yaxes(title_text="Attack accuracy (%)", range=_accuracy_range(all_acc), secondary_y=False)
    fig.update_yaxes(title_text="Scans tested (n)", showgrid=False, rangemode="tozero",
                     tickmode="auto", nticks=5, tickformat=",d", secondary_y=True)
    return fig


@register_figure(
    "accuracy_by_attribute",
    title="Attack accuracy by subgroup",
    caption=(
        "How often the strongest attack guesses membership correctly within each subgroup "
        "recorded in the scan list (for example sex or acquisition site). The dashed line at "
        "50% is a coin toss. A subgroup well above the others is more exposed than the cohort "
        "as a whole; hover a bar for the number of scans behind it."
    ),
)
def accuracy_by_attribute(
    report: dict,
    features: pd.DataFrame | None = None,
    attacks: Any = "strongest",
    attribute: str | None = None,
) -> go.Figure:
    """Accuracy per value of each manifest attribute (one panel per attribute)."""
    selected = D.select_attacks(report, attacks, require="by_attribute")
    if not selected:
        raise FigureUnavailable("no per-subgroup results in this report")
    attributes: list[str] = []
    for attack in selected:
        for name, entries in (attack.get("by_attribute") or {}).items():
            if entries and name not in attributes:
                attributes.append(str(name))
    if attribute is not None:
        if attribute not in attributes:
            raise FigureUnavailable(
                f"no results for attribute {attribute!r}; available: {', '.join(attributes)}"
            )
        attributes = [attribute]
    if not attributes:
        raise FigureUnavailable("no per-subgroup results in this report")
    colors, classifiers = _styles(report)
    cols = min(len(attributes), 3)
    rows = math.ceil(len(attributes) / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        shared_yaxes=True,
        horizontal_spacing=0.05,
        vertical_spacing=0.18 if rows > 1 else 0.1,
    )
    all_acc: list[float] = []
    for j, attr in enumerate(attributes):
        r, c = divmod(j, cols)
        for i, attack in enumerate(selected):
            entries = (attack.get("by_attribute") or {}).get(attr) or []
            xs = [_value_label(e.get("value")) for e in entries]
            ys = [pct(e.get("accuracy")) for e in entries]
            all_acc += [y for y in ys if y is not None]
            fs = str(attack.get("feature_set"))
            fig.add_trace(
                go.Bar(
                    x=xs,
                    y=ys,
                    name=_label(attack),
                    legendgroup=f"attack-{i}",
                    showlegend=j == 0,
                    marker=dict(
                        color=colors[fs] if fs in colors else feature_set_color(fs, i),
                        pattern=dict(
                            shape=CLASSIFIER_PATTERNS[classifiers.get(str(attack.get("classifier")), 0) % len(CLASSIFIER_PATTERNS)],
                            fillmode="overlay",
                            fgcolor="rgba(0,0,0,0.55)",
                            solidity=0.3,
                        ),
                    ),
                    customdata=[[_count(e.get("n")), _count(e.get("n_members"))] for e in entries],
                    text=[f"{y:.0f}%" if y is not None else "n/a" for y in ys],
                    textposition="outside",
                    cliponaxis=False,
                    hovertemplate=(
                        f"<b>{_label(attack)}</b><br>{esc(attr)} = %{{x}}<br>accuracy %{{y:.1f}}%"
                        "<br>n = %{customdata[0]} test predictions (%{customdata[1]} of members)"
                        "<extra></extra>"
                    ),
                ),
                row=r + 1,
                col=c + 1,
            )
        fig.update_xaxes(title_text=esc(attr), type="category", row=r + 1, col=c + 1)
    _chance_line(fig, row="all", col="all")
    apply_style(
        fig,
        title=dict(text="Attack accuracy by subgroup"),
        height=120 + 330 * rows,
        barmode="group",
        legend=dict(orientation="h", yanchor="bottom", y=1.04, xanchor="right", x=1),
        margin=dict(t=100),
    )
    yr = _accuracy_range(all_acc)
    yr[1] = min(100.0, yr[1] + 4)
    fig.update_yaxes(range=yr)
    for r in range(rows):
        fig.update_yaxes(title_text="Attack accuracy (%)", row=r + 1, col=1)
    return fig


@register_figure(
    "accuracy_bars",
    title="Attack accuracy per feature set",
    caption=(
        "Accuracy of every attack: the share of scans whose membership it guesses correctly. "
        "Bars start at the dashed 50% line (a coin toss): the taller the bar, the more the "
        "model leaks. Orange bars use only the model's predictions (what anyone who can query "
        "the model sees); green bars use its internals (gradients, activations), available to "
        "whoever receives the model file. Whiskers show the 95% confidence interval over "
        "repeated attacks. Crosses mark attacks that failed to run (see the table)."
    ),
)
def accuracy_bars(report: dict, features: pd.DataFrame | None = None, metric: str = "accuracy") -> go.Figure:
    """Attack accuracy per feature set (x) and classifier (groups), with 95% CI whiskers.

    Bars are drawn from the 50% chance level; black-box and white-box attacks get different
    colours, classifiers different hatching.
    """
    if metric not in ("accuracy", "balanced_accuracy", "auc"):
        raise ValueError("metric must be 'accuracy', 'balanced_accuracy' or 'auc'")
    all_attacks = D.attacks(report)
    if not all_attacks:
        raise FigureUnavailable("no attacks in this report")
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
                        pattern=dict(
                            shape=CLASSIFIER_PATTERNS[ci % len(CLASSIFIER_PATTERNS)],
                            fillmode="overlay",
                            fgcolor="rgba(0,0,0,0.55)",
                            solidity=0.3,
                        ),
                        line=dict(color="rgba(0,0,0,0.35)", width=1),
                    ),
                    error_y=dict(type="data", symmetric=False, array=plus, arrayminus=minus,
                                 color="#24292f", thickness=1.2, width=4),
                    hovertext=[
                        f"<b>{_label(a)}</b> ({tm})<br>{esc(metric)} {m:.1f}% ± {c[0]} (std)"
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
                    f"<b>{_label(a)}</b> failed:<br>{esc(str(a.get('error') or 'unknown error')[:300])}"
                    for a in failed
                ],
                hoverinfo="text",
            )
        )
    if not fig.data:
        raise FigureUnavailable("no attack produced a result")
    _chance_line(fig)
    label = "AUC (×100)" if auc_like else esc(metric.replace("_", " "))
    tick_lines = max((x.count("<br>") + 1 for x in x_labels.values()), default=1)
    fig.update_layout(
        title=dict(text=f"Attack {label} per feature set"),
        barmode="group",
        height=480,
        bargap=0.25,
        legend=dict(orientation="h", x=0, xanchor="left", y=1.02, yanchor="bottom",
                    groupclick="toggleitem"),
        # room for the wrapped tick labels and the axis title (see roc_curves)
        margin=dict(t=150, b=math.ceil(36 + 1.3 * TICK_FONT * tick_lines)),
    )
    fig.update_xaxes(
        title_text="Feature set (what the attacker uses)",
        type="category",
        categoryorder="array",
        categoryarray=[x_labels[f] for f in feature_sets],
        tickangle=0,
    )
    fig.update_yaxes(title_text=f"Attack {label} (%)", range=_accuracy_range(all_vals))
    return fig
