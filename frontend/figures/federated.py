"""Federated assessments: who can attack whom, leakage over the rounds, and who holds what data.

The figures read the ``federated`` section of report.json (:mod:`worker.engine.federated.report`):
``matrix`` / ``matrix_ci`` (attacker x victim), ``per_round`` and ``learner_summary``; the
per-learner ages come from the feature table's ``learner`` and ``age`` columns when it is given.
Each raises :class:`FigureUnavailable` for a report without a federated section.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ._registry import register_figure
from ._style import (
    CHANCE_COLOR,
    MEMBER_COLOR,
    MEMBER_GROUP,
    NONMEMBER_COLOR,
    NONMEMBER_GROUP,
    FigureUnavailable,
    apply_style,
    esc,
    finite,
    new_figure,
    rgba,
)

__all__ = ["MATRIX_METRICS", "federated_learners", "federated_matrix", "federated_rounds", "federated_section"]

#: metric -> (label, chance level, shown as a percentage)
MATRIX_METRICS: dict[str, tuple[str, float, bool]] = {
    "accuracy": ("Attack accuracy", 0.5, True),
    "auc": ("Attack AUC", 0.5, False),
    "tpr_at_fpr_0.01": ("TPR at 1% FPR", 0.01, True),
}
UNSEEN_NAME = "unseen scans"
LEARNER_LABEL = "Learners' training scans (members)"
UNSEEN_LABEL = "Unseen scans (non-members)"


def federated_section(report: dict) -> dict:
    """The ``federated`` section of a report.

    Raises:
        FigureUnavailable: a centralised report (no federated section).
    """
    section = report.get("federated") if isinstance(report, dict) else None
    if not isinstance(section, dict):
        raise FigureUnavailable("not available (not a federated assessment)")
    return section


def _check_metric(metric: str) -> tuple[str, float, bool]:
    if metric not in MATRIX_METRICS:
        raise ValueError(f"unknown metric {metric!r}; options: {', '.join(MATRIX_METRICS)}")
    return MATRIX_METRICS[metric]


def _fmt(value: float | None, as_pct: bool) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.1f}%" if as_pct else f"{value:.3f}"


def _grid(rows: Any, n: int) -> list[list[float | None]]:
    """An n x n grid of finite floats or None, from a JSON matrix (missing cells None)."""
    rows = rows if isinstance(rows, list) else []
    out = []
    for i in range(n):
        line = rows[i] if i < len(rows) and isinstance(rows[i], list) else []
        out.append([finite(line[j]) if j < len(line) else None for j in range(n)])
    return out


def _attack_matrix(section: dict, attack: str | None) -> tuple[str, dict, dict]:
    """(attack name, matrix, matrix_ci) of the section's attack or of the named one."""
    if attack is None or attack == section.get("attack"):
        if not section.get("matrix"):
            raise FigureUnavailable("no attack of this federated assessment completed")
        return str(section.get("attack")), section["matrix"], section.get("matrix_ci") or {}
    for group in ("final_round", "trajectory"):
        for entry in (section.get(group) or {}).get("attacks") or []:
            if isinstance(entry, dict) and entry.get("name") == attack:
                if entry.get("status") != "ok" or not entry.get("matrix"):
                    raise FigureUnavailable(f"attack {attack} did not complete")
                return attack, entry["matrix"], entry.get("matrix_ci") or {}
    raise ValueError(f"no attack {attack!r} with an attacker x victim matrix in this report")


@register_figure(
    "federated_matrix",
    title="Which learner can attack which: attacker x victim",
    caption=(
        "Each row is a learner of the federation acting as the attacker: it holds every round's "
        "community model and its own training scans. Each column is another learner whose "
        "training scans it tries to recognise among unseen scans. A cell is the attack's "
        "accuracy on that victim's scans (50% is a coin toss); darker red means more leakage. "
        "The diagonal is empty: a learner never attacks its own scans. Hover a cell for its 95% "
        "confidence interval."
    ),
)
def federated_matrix(
    report: dict, features: pd.DataFrame | None = None, metric: str = "accuracy", attack: str | None = None
) -> go.Figure:
    """Heatmap of ``metric`` (accuracy, auc or tpr_at_fpr_0.01) per attacker (rows) and victim (columns)."""
    label, chance, as_pct = _check_metric(metric)
    section = federated_section(report)
    learners = [str(x) for x in section.get("learners") or []]
    if not learners:
        raise FigureUnavailable("no learners in this federated report")
    name, matrix, ci = _attack_matrix(section, attack)
    n = len(learners)
    z = _grid(matrix.get(metric), n)
    if all(v is None for row in z for v in row):
        if metric == "tpr_at_fpr_0.01":
            raise FigureUnavailable(
                "TPR at 1% FPR is undefined here: each victim's test set holds fewer than 100 unseen scans")
        raise FigureUnavailable(f"no {label.lower()} in this report's attacker x victim matrix")
    low = _grid((ci.get(metric) or {}).get("low"), n)
    high = _grid((ci.get(metric) or {}).get("high"), n)
    names = [esc(x) for x in learners]
    hover = [
        [
            ("" if i == j else f"attacker <b>{names[i]}</b> &#8594; victim <b>{names[j]}</b><br>"
             f"{label.lower()} {_fmt(z[i][j], as_pct)}"
             + (f"<br>95% CI {_fmt(low[i][j], as_pct)} to {_fmt(high[i][j], as_pct)}"
                if low[i][j] is not None and high[i][j] is not None else ""))
            for j in range(n)
        ]
        for i in range(n)
    ]
    text = [["" if v is None else (f"{100 * v:.0f}" if as_pct else f"{v:.2f}") for v in row] for row in z]
    values = [v for row in z for v in row if v is not None]
    top = max(max(values), chance + (0.5 if metric != "tpr_at_fpr_0.01" else 0.2))
    bottom = min(min(values), chance - (top - chance)) if metric != "tpr_at_fpr_0.01" else 0.0
    scale = [[0.0, rgba(NONMEMBER_COLOR, 0.85)], [0.5, "#f7f7f7"], [1.0, MEMBER_COLOR]] \
        if metric != "tpr_at_fpr_0.01" else [[0.0, "#f7f7f7"], [1.0, MEMBER_COLOR]]
    fig = new_figure()
    fig.add_trace(
        go.Heatmap(
            z=z, x=names, y=names, text=text, texttemplate="%{text}", textfont=dict(size=12),
            hovertext=hover, hoverinfo="text", hoverongaps=False, colorscale=scale,
            zmin=bottom, zmax=top, xgap=2, ygap=2,
            colorbar=dict(title=dict(text=label + (" (%)" if as_pct else "")), tickformat=".0%" if as_pct else ".2f"),
            name=label,
        )
    )
    fig.update_layout(
        title=dict(text=f"{label}, attacker x victim ({esc(name)})"),
        height=max(360, 120 + 42 * n),
        margin=dict(l=110, t=70, b=100),
    )
    fig.update_xaxes(title_text="Victim learner (whose training scans are attacked)", side="bottom",
                     showgrid=False, type="category", tickangle=-30)
    fig.update_yaxes(title_text="Attacking learner", autorange="reversed", showgrid=False, type="category")
    return fig


@register_figure(
    "federated_rounds",
    title="Attack accuracy over the federation rounds",
    caption=(
        "How well the attack recognises other learners' training scans with the community model "
        "of each round alone, averaged over every attacker-victim pair, with its 95% confidence "
        "band; 50% is a coin toss. Leakage usually grows as the model fits the learners' data. "
        "The final round, the model a federation releases, is marked. The dotted lines give the "
        "model's error on training and unseen scans at each round."
    ),
)
def federated_rounds(
    report: dict, features: pd.DataFrame | None = None, metric: str = "accuracy", show_mae: bool = True
) -> go.Figure:
    """``metric`` of the per-round attack against the round, with its CI band; final round marked."""
    label, chance, as_pct = _check_metric(metric)
    section = federated_section(report)
    points = sorted(
        (p for p in section.get("per_round") or [] if isinstance(p, dict) and p.get("status") == "ok"),
        key=lambda p: int(p.get("round") or 0),
    )
    rows = []
    for p in points:
        s = p.get(metric) or {}
        rows.append((int(p.get("round") or 0), finite(s.get("mean")), finite(s.get("ci_low")), finite(s.get("ci_high")),
                     finite(p.get("mae_members")), finite(p.get("mae_nonmembers"))))
    rows = [r for r in rows if r[1] is not None]
    if not rows:
        raise FigureUnavailable("no per-round attack results in this report")
    rounds = [r[0] for r in rows]
    mean = [r[1] for r in rows]
    lo = [r[2] if r[2] is not None else r[1] for r in rows]
    hi = [r[3] if r[3] is not None else r[1] for r in rows]
    attack = esc(re.sub(r"^round-\d+/", "", str(points[0].get("attack") or "")))
    scale = 100.0 if as_pct else 1.0
    mae = show_mae and any(r[4] is not None for r in rows)
    fig = make_subplots(specs=[[{"secondary_y": True}]]) if mae else new_figure()
    line = dict(color=MEMBER_COLOR, width=2.4)
    fig.add_trace(go.Scatter(x=rounds + rounds[::-1], y=[scale * v for v in hi] + [scale * v for v in lo[::-1]],
                             fill="toself", fillcolor=rgba(MEMBER_COLOR, 0.15), line=dict(width=0),
                             hoverinfo="skip", name="95% confidence band", showlegend=True))
    fig.add_trace(go.Scatter(
        x=rounds, y=[scale * v for v in mean], mode="lines+markers", line=line, marker=dict(size=6),
        name=f"{label} ({attack})",
        hovertext=[f"round {r}<br>{label.lower()} {_fmt(m, as_pct)}<br>95% CI {_fmt(a, as_pct)} to {_fmt(b, as_pct)}"
                   for r, m, a, b in zip(rounds, mean, lo, hi)],
        hoverinfo="text",
    ))
    final = int(section.get("rounds") or rounds[-1])
    if rounds[-1] == final:
        fig.add_trace(go.Scatter(
            x=[final], y=[scale * mean[-1]], mode="markers+text", text=[f"final round {final}"],
            textposition="top left", marker=dict(symbol="star", size=16, color=MEMBER_COLOR, line=dict(color="#24292f", width=1)),
            name=f"Final round ({final})", hoverinfo="text",
            hovertext=[f"final round {final}: {label.lower()} {_fmt(mean[-1], as_pct)} "
                       f"(95% CI {_fmt(lo[-1], as_pct)} to {_fmt(hi[-1], as_pct)})"],
        ))
    fig.add_hline(y=scale * chance, line=dict(color=CHANCE_COLOR, dash="dash", width=1.2),
                  annotation_text="chance", annotation_position="bottom right",
                  annotation_font=dict(size=11, color="#57606a"))
    if mae:
        for idx, color, group, name in ((4, MEMBER_COLOR, MEMBER_GROUP, "Model error on training scans"),
                                        (5, NONMEMBER_COLOR, NONMEMBER_GROUP, "Model error on unseen scans")):
            fig.add_trace(go.Scatter(
                x=rounds, y=[r[idx] for r in rows], mode="lines", line=dict(color=color, dash="dot", width=1.5),
                name=name, legendgroup=group, hovertemplate="round %{x}<br>mean absolute error %{y:.2f} years<extra></extra>",
            ), secondary_y=True)
        fig.update_yaxes(title_text="Model mean absolute error (years)", secondary_y=True, showgrid=False,
                         rangemode="tozero", tickformat=".1f")
    apply_style(fig, title=dict(text=f"{label} per round ({attack})"), height=460,
                legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0), margin=dict(t=60, b=130))
    fig.update_xaxes(title_text="Federation round")
    top = max(hi + [chance]) * scale
    fig.update_yaxes(title_text=label + (" (%)" if as_pct else ""),
                     range=[0, max(100.0 if as_pct else 1.0, top) * 1.02] if metric != "tpr_at_fpr_0.01" else None,
                     **({"secondary_y": False} if mae else {}))
    return fig


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() in ("", "nan", "None")


def _ages_by_learner(features: pd.DataFrame | None) -> dict[str | None, np.ndarray] | None:
    """Ages per learner (None: the unseen scans) from the feature table's columns, or None."""
    if features is None or not {"learner", "age"} <= set(features.columns):
        return None
    ages = pd.to_numeric(features["age"], errors="coerce").to_numpy(dtype=float)
    keys = [None if _is_missing(v) else str(v) for v in features["learner"].tolist()]
    out: dict[str | None, list[float]] = {}
    for key, age in zip(keys, ages):
        if np.isfinite(age):
            out.setdefault(key, []).append(float(age))
    return {k: np.asarray(v) for k, v in out.items()}


@register_figure(
    "federated_learners",
    title="The learners' data: scans and ages",
    caption=(
        "How many training scans each learner of the federation holds (left) and how old their "
        "subjects are (right), beside the unseen scans that no learner trained on. Learners with "
        "few scans or a narrow age range (non-IID data) are often the easiest to attack: the "
        "model fits their data closely."
    ),
)
def federated_learners(report: dict, features: pd.DataFrame | None = None) -> go.Figure:
    """Scans per learner (bars) and the age distribution per learner (boxes, or ranges without features)."""
    section = federated_section(report)
    summary = [s for s in section.get("learner_summary") or [] if isinstance(s, dict)]
    if not summary:
        raise FigureUnavailable("no per-learner data summary in this report")
    names = [UNSEEN_NAME if s.get("learner") is None else esc(s.get("learner")) for s in summary]
    colors = [NONMEMBER_COLOR if s.get("learner") is None else MEMBER_COLOR for s in summary]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[0.35, 0.65], horizontal_spacing=0.04,
                        subplot_titles=("Scans", "Age (years)"))
    for is_unseen, label, color, group in ((False, LEARNER_LABEL, MEMBER_COLOR, MEMBER_GROUP),
                                           (True, UNSEEN_LABEL, NONMEMBER_COLOR, NONMEMBER_GROUP)):
        idx = [k for k, s in enumerate(summary) if (s.get("learner") is None) == is_unseen]
        if not idx:
            continue
        fig.add_trace(go.Bar(
            y=[names[k] for k in idx], x=[int(summary[k].get("n_scans") or 0) for k in idx], orientation="h",
            marker=dict(color=color), name=label, legendgroup=group,
            text=[str(int(summary[k].get("n_scans") or 0)) for k in idx], textposition="auto",
            hovertext=[f"<b>{names[k]}</b><br>{int(summary[k].get('n_scans') or 0)} scans" for k in idx],
            hoverinfo="text",
        ), row=1, col=1)
    by_learner = _ages_by_learner(features)
    if by_learner:
        for k, s in enumerate(summary):
            key = None if s.get("learner") is None else str(s.get("learner"))
            ages = by_learner.get(key, np.empty(0))
            if ages.size == 0:
                continue
            fig.add_trace(go.Box(
                x=ages, y=[names[k]] * ages.size, orientation="h", name=names[k], boxpoints="all", jitter=0.3,
                pointpos=0, marker=dict(color=colors[k], size=4), line=dict(color=colors[k]),
                fillcolor=rgba(colors[k], 0.25), showlegend=False,
                legendgroup=NONMEMBER_GROUP if s.get("learner") is None else MEMBER_GROUP,
                hovertemplate=f"<b>{names[k]}</b><br>age %{{x:.1f}} years<extra></extra>",
            ), row=1, col=2)
    else:
        for k, s in enumerate(summary):
            lo, hi, mean = finite(s.get("age_min")), finite(s.get("age_max")), finite(s.get("age_mean"))
            if lo is None or hi is None:
                continue
            fig.add_trace(go.Scatter(
                x=[lo, hi], y=[names[k], names[k]], mode="lines", line=dict(color=colors[k], width=8),
                opacity=0.45, showlegend=False, hoverinfo="text",
                hovertext=f"<b>{names[k]}</b><br>ages {lo:.1f} to {hi:.1f} years",
            ), row=1, col=2)
            if mean is not None:
                fig.add_trace(go.Scatter(
                    x=[mean], y=[names[k]], mode="markers", marker=dict(color=colors[k], size=10, symbol="line-ns",
                                                                          line=dict(width=3, color=colors[k])),
                    showlegend=False, hoverinfo="text", hovertext=f"<b>{names[k]}</b><br>mean age {mean:.1f} years",
                ), row=1, col=2)
    n_learners = sum(1 for s in summary if s.get("learner") is not None)
    apply_style(fig, title=dict(text=f"Data of the {n_learners} learners and the unseen scans"),
                height=max(320, 110 + 34 * len(summary)), barmode="overlay",
                legend=dict(orientation="h", yanchor="bottom", y=1.06, xanchor="right", x=1), margin=dict(t=110, l=110))
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=names, autorange="reversed")
    fig.update_yaxes(title_text="Learner", row=1, col=1)
    fig.update_xaxes(title_text="Number of scans", rangemode="tozero", row=1, col=1)
    fig.update_xaxes(title_text="Age (years)", row=1, col=2)
    return fig
