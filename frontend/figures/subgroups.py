"""Attack accuracy within subgroups of the scans: per age bin and per manifest attribute."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import _data as D
from ._attack_style import accuracy_range, attack_color, attack_label, chance_line, classifier_pattern, styles
from ._registry import register_figure
from ._style import CLASSIFIER_DASHES, FigureUnavailable, apply_style, esc, finite, pct


def _count(value: Any) -> Any:
    """A count for hover text ("n/a" when missing)."""
    return value if value is not None else "n/a"


def _value_label(value: Any) -> str:
    """An attribute value as shown on an axis (escaped; missing values named)."""
    return "(missing)" if value is None else esc(value)


def _bin_key(entry: dict) -> float:
    """Sort key of an age bin: its lower edge; an open lower bin ("<40") comes first."""
    low, high = finite(entry.get("low")), finite(entry.get("high"))
    if low is not None:
        return low
    return (high - 1e6) if high is not None else float("inf")


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
    colors, classifiers = styles(report)
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
        fig.add_trace(
            go.Scatter(
                x=labels,
                y=ys,
                mode="lines+markers",
                name=attack_label(attack) + (" (strongest)" if i == 0 and attacks in (None, "strongest") else ""),
                line=dict(color=attack_color(attack, colors, i), width=2.5 if i == 0 else 1.5,
                          dash=CLASSIFIER_DASHES[i % len(CLASSIFIER_DASHES)]),
                marker=dict(size=9 if i == 0 else 6),
                customdata=custom,
                connectgaps=False,
                hovertemplate=(
                    f"<b>{attack_label(attack)}</b><br>age %{{x}} years<br>accuracy %{{y:.1f}}%"
                    "<br>n = %{customdata[0]} test predictions (%{customdata[1]} of members)"
                    "<extra></extra>"
                ),
            ),
            secondary_y=False,
        )
    chance_line(fig)
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
    fig.update_yaxes(title_text="Attack accuracy (%)", range=accuracy_range(all_acc), secondary_y=False)
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
    colors, classifiers = styles(report)
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
            fig.add_trace(
                go.Bar(
                    x=xs,
                    y=ys,
                    name=attack_label(attack),
                    legendgroup=f"attack-{i}",
                    showlegend=j == 0,
                    marker=dict(
                        color=attack_color(attack, colors, i),
                        pattern=classifier_pattern(classifiers.get(str(attack.get("classifier")), 0)),
                    ),
                    customdata=[[_count(e.get("n")), _count(e.get("n_members"))] for e in entries],
                    text=[f"{y:.0f}%" if y is not None else "n/a" for y in ys],
                    textposition="outside",
                    cliponaxis=False,
                    hovertemplate=(
                        f"<b>{attack_label(attack)}</b><br>{esc(attr)} = %{{x}}<br>accuracy %{{y:.1f}}%"
                        "<br>n = %{customdata[0]} test predictions (%{customdata[1]} of members)"
                        "<extra></extra>"
                    ),
                ),
                row=r + 1,
                col=c + 1,
            )
        fig.update_xaxes(title_text=esc(attr), type="category", row=r + 1, col=c + 1)
    chance_line(fig, row="all", col="all")
    apply_style(
        fig,
        title=dict(text="Attack accuracy by subgroup"),
        height=120 + 330 * rows,
        barmode="group",
        legend=dict(orientation="h", yanchor="bottom", y=1.04, xanchor="right", x=1),
        margin=dict(t=100),
    )
    yr = accuracy_range(all_acc)
    yr[1] = min(100.0, yr[1] + 4)
    fig.update_yaxes(range=yr)
    for r in range(rows):
        fig.update_yaxes(title_text="Attack accuracy (%)", row=r + 1, col=1)
    return fig


