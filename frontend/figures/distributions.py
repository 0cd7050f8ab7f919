"""Per-scan distributions, members against non-members: prediction error and gradient magnitude.

Histograms are pre-binned here (shared bin edges, probability density) so that a figure's JSON
holds a few dozen numbers per group whatever the number of scans.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import _data as D
from ._registry import register_figure
from ._style import (
    CHANCE_COLOR,
    MEMBER_COLOR,
    MEMBER_GROUP,
    MEMBER_LABEL,
    NONMEMBER_COLOR,
    NONMEMBER_GROUP,
    NONMEMBER_LABEL,
    FigureUnavailable,
    apply_style,
    esc,
    rgba,
    text_px,
)

_GROUPS = (
    (MEMBER_GROUP, "Members", MEMBER_LABEL, MEMBER_COLOR),
    (NONMEMBER_GROUP, "Non-members", NONMEMBER_LABEL, NONMEMBER_COLOR),
)


def _density_trace(
    values: np.ndarray,
    edges: np.ndarray,
    *,
    group: str,
    short: str,
    label: str,
    color: str,
    x_edges: np.ndarray,
    range_fmt: str,
    unit: str,
    showlegend: bool = True,
) -> go.Scatter:
    """A filled step curve of the probability density of ``values`` over ``edges``.

    ``edges`` are in the binning space (e.g. log10), ``x_edges`` the same edges as plotted.
    """
    counts, _ = np.histogram(values, bins=edges)
    widths = np.diff(edges)
    n = max(int(values.size), 1)
    density = counts / (n * widths)
    y = np.append(density, density[-1]).round(6)
    lo = np.append(x_edges[:-1], x_edges[-2])
    hi = np.append(x_edges[1:], x_edges[-1])
    cnt = np.append(counts, counts[-1])
    share = 100.0 * cnt / n
    custom = np.column_stack([lo, hi, cnt, share])
    return go.Scatter(
        x=x_edges,
        y=y,
        mode="lines",
        line=dict(shape="hv", color=color, width=2),
        fill="tozeroy",
        fillcolor=rgba(color, 0.22),
        name=f"{label}, n={values.size}",
        legendgroup=group,
        showlegend=showlegend,
        customdata=custom,
        hovertemplate=(
            f"<b>{short}</b>: %{{customdata[2]:d}} scans (%{{customdata[3]:.1f}}%) "
            f"between %{{customdata[0]:{range_fmt}}} and %{{customdata[1]:{range_fmt}}}{unit}"
            "<br>density %{y:.3g}<extra></extra>"
        ),
    )


def _box_trace(values: np.ndarray, *, group: str, short: str, color: str) -> go.Box:
    """A precomputed box (quartiles, 5th-95th percentile whiskers): a few numbers per group."""
    p5, q1, med, q3, p95 = np.percentile(values, [5, 25, 50, 75, 95])
    mean = float(np.mean(values))
    return go.Box(
        y=[short],
        q1=[q1],
        median=[med],
        q3=[q3],
        lowerfence=[p5],
        upperfence=[p95],
        mean=[mean],
        orientation="h",
        marker_color=color,
        line=dict(color=color, width=2),
        fillcolor=rgba(color, 0.22),
        name=short,
        legendgroup=group,
        showlegend=False,
        hoverinfo="skip",
    )


def _box_hover(values: np.ndarray, *, short: str, color: str, fmt: str, unit: str, group: str) -> go.Scatter:
    """An invisible marker at the median carrying a readable summary on hover."""
    p5, q1, med, q3, p95 = np.percentile(values, [5, 25, 50, 75, 95])
    text = (
        f"<b>{short}</b> (n={values.size})<br>median {med:{fmt}}{unit}<br>"
        f"middle half: {q1:{fmt}} to {q3:{fmt}}{unit}<br>"
        f"90% of scans: {p5:{fmt}} to {p95:{fmt}}{unit}"
    )
    return go.Scatter(
        x=[med],
        y=[short],
        mode="markers",
        marker=dict(color=color, size=9, symbol="line-ns", line=dict(width=0)),
        opacity=0.01,
        name=short,
        legendgroup=group,
        showlegend=False,
        hovertext=[text],
        hoverinfo="text",
    )


def _distribution_figure(
    members: np.ndarray,
    nonmembers: np.ndarray,
    *,
    log: bool,
    x_title: str,
    y_title: str,
    title: str,
    unit: str,
    fmt: str,
    reference_x: float | None = None,
    reference_label: str = "",
) -> go.Figure:
    if members.size == 0 and nonmembers.size == 0:
        raise FigureUnavailable("no per-scan values to plot")
    if log:
        members = members[members > 0]
        nonmembers = nonmembers[nonmembers > 0]
        if members.size == 0 and nonmembers.size == 0:
            raise FigureUnavailable("no positive values to plot on a log scale")
        bm, bn = np.log10(members), np.log10(nonmembers)
    else:
        bm, bn = members, nonmembers
    edges = D.common_edges(bm, bn)
    x_edges = 10.0**edges if log else edges

    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.2, 0.8], vertical_spacing=0.03
    )
    samples = {MEMBER_GROUP: (members, bm), NONMEMBER_GROUP: (nonmembers, bn)}
    for group, short, label, color in _GROUPS:
        raw, binned = samples[group]
        if raw.size == 0:
            continue
        fig.add_trace(
            _box_trace(raw, group=group, short=short, color=color),
            row=1,
            col=1,
        )
        fig.add_trace(
            _box_hover(raw, short=short, color=color, fmt=fmt, unit=unit, group=group),
            row=1,
            col=1,
        )
        fig.add_trace(
            _density_trace(
                binned,
                edges,
                group=group,
                short=short,
                label=label,
                color=color,
                x_edges=x_edges,
                range_fmt=fmt,
                unit=unit,
            ),
            row=2,
            col=1,
        )
    if reference_x is not None:
        fig.add_vline(
            x=reference_x,
            line=dict(color=CHANCE_COLOR, dash="dot", width=1),
            annotation_text=reference_label,
            annotation_position="top right",
            annotation_font=dict(size=11, color="#57606a"),
            row=2,
            col=1,
        )
    apply_style(
        fig,
        title=dict(text=title),
        height=460,
        hovermode="closest",
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1),
        # room for the box plot's group names up front: a margin Plotly has to widen itself
        # (automargin) makes it draw the whole figure twice
        margin=dict(t=90, l=max(70, math.ceil(max(text_px(g[1], 13) for g in _GROUPS) + 38))),
    )
    axis_type = "log" if log else "linear"
    fig.update_xaxes(type=axis_type, row=1, col=1, showticklabels=False, ticks="")
    fig.update_xaxes(type=axis_type, title_text=x_title, row=2, col=1)
    fig.update_yaxes(title_text=y_title, rangemode="tozero", row=2, col=1)
    fig.update_yaxes(title_text="", showgrid=False, autorange="reversed", row=1, col=1)
    return fig


@register_figure(
    "error_distribution",
    title="Prediction error: members vs non-members",
    needs_features=True,
    caption=(
        "How far the model's predicted age is from the true age, for the scans it was trained "
        "on (red) and for scans it never saw (blue). Each curve is scaled so its area is 1, so "
        "groups of different sizes compare fairly; the boxes above mark the median and the "
        "middle half of each group. If the red and blue distributions differ - typically the "
        "red one narrower and closer to zero - the model behaves differently on its training "
        "scans, and that difference is what the attacks exploit."
    ),
)
def error_distribution(report: dict, features: pd.DataFrame | None = None) -> go.Figure:
    """Distribution of ``error`` (prediction - age, years), members vs non-members."""
    members, nonmembers = D.split_members(features, "error")
    return _distribution_figure(
        members,
        nonmembers,
        log=False,
        title="Prediction error, members vs non-members",
        x_title="Prediction error: predicted minus true age (years)",
        y_title="Probability density (per year)",
        unit=" y",
        fmt=".1f",
        reference_x=0.0,
        reference_label="perfect prediction",
    )


def _layer_label(column: str) -> str:
    return column[len(D.GRAD_NORM_PREFIX):] if column.startswith(D.GRAD_NORM_PREFIX) else column


@register_figure(
    "grad_norm_distribution",
    title="Gradient magnitude of one layer: members vs non-members",
    needs_features=True,
    caption=(
        "The size of the model's training signal (gradient) for each scan at one layer, on a "
        "logarithmic scale. A model has already learned its training scans, so their gradients "
        "tend to be smaller. If the red (members) and blue (non-members) curves are shifted "
        "apart, someone with access to the model's internals can tell training scans from "
        "others."
    ),
)
def grad_norm_distribution(
    report: dict, features: pd.DataFrame | None = None, layer: str | None = None
) -> go.Figure:
    """Distribution of one ``grad_norm:<path>`` column (log10 x), members vs non-members.

    Args:
        layer: module path or full column name; default the first layer in model order.
    """
    column = D.resolve_grad_norm_column(features, layer)
    members, nonmembers = D.split_members(features, column)
    sep = D.separability(members, nonmembers)
    label = esc(_layer_label(column))
    sep_text = f" (separability AUC {sep:.2f})" if sep is not None else ""
    return _distribution_figure(
        members,
        nonmembers,
        log=True,
        title=f"Gradient magnitude, layer <b>{label}</b>{sep_text}",
        x_title="Gradient magnitude (L2 norm of the per-scan loss gradient, log scale)",
        y_title="Probability density (per log10 unit)",
        unit="",
        fmt=".3g",
    )


@register_figure(
    "grad_norm_layers",
    title="Gradient magnitude per layer: members vs non-members",
    needs_features=True,
    caption=(
        "The same comparison as above for every layer of the model, one small panel per "
        "layer (logarithmic scale). The number in each panel title is the separability of that "
        "layer alone: 0.5 means members and non-members look identical, 1.0 means they are "
        "perfectly separated. Layers whose red and blue curves are furthest apart leak the "
        "most."
    ),
)
def grad_norm_layers(
    report: dict,
    features: pd.DataFrame | None = None,
    layers: list[str] | None = None,
    cols: int = 3,
) -> go.Figure:
    """Small multiples of the gradient-magnitude distribution, one panel per layer."""
    if layers:
        columns = [D.resolve_grad_norm_column(features, layer) for layer in layers]
    else:
        columns = D.grad_norm_columns(features)
    if not columns:
        raise FigureUnavailable("not available (black-box assessment)")
    cols = max(1, min(int(cols), len(columns)))
    rows = math.ceil(len(columns) / cols)
    panels = []
    for column in columns:
        members, nonmembers = D.split_members(features, column)
        members, nonmembers = members[members > 0], nonmembers[nonmembers > 0]
        sep = D.separability(members, nonmembers)
        title = esc(_layer_label(column))
        if sep is not None:
            title += f"<br><span style='font-size:11px'>separability {sep:.2f}</span>"
        panels.append((members, nonmembers, title))
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[p[2] for p in panels],
        horizontal_spacing=0.06,
        vertical_spacing=min(0.5 / max(rows, 1), 0.35 / max(rows - 1, 1)) if rows > 1 else 0.1,
    )
    for i, (members, nonmembers, _) in enumerate(panels):
        r, c = divmod(i, cols)
        if members.size == 0 and nonmembers.size == 0:
            continue
        bm, bn = np.log10(members), np.log10(nonmembers)
        edges = D.common_edges(bm, bn, max_bins=40)
        for group, short, label, color in _GROUPS:
            binned = bm if group == MEMBER_GROUP else bn
            if binned.size == 0:
                continue
            fig.add_trace(
                _density_trace(
                    binned,
                    edges,
                    group=group,
                    short=short,
                    label=label if i == 0 else short,
                    color=color,
                    x_edges=10.0**edges,
                    range_fmt=".3g",
                    unit="",
                    showlegend=i == 0,
                ),
                row=r + 1,
                col=c + 1,
            )
    apply_style(
        fig,
        title=dict(text="Gradient magnitude per layer, members vs non-members"),
        height=110 + 240 * rows,
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1,
                    yref="container"),
        margin=dict(t=110),
    )
    fig.update_annotations(font_size=12)
    fig.update_xaxes(type="log")
    fig.update_yaxes(rangemode="tozero")
    for i in range(len(panels)):
        r, c = divmod(i, cols)
        last_in_col = i + cols >= len(panels)
        if last_in_col:
            fig.update_xaxes(title_text="gradient magnitude (log)", row=r + 1, col=c + 1)
        if c == 0:
            fig.update_yaxes(title_text="density", row=r + 1, col=c + 1)
    return fig
