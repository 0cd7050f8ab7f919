"""Model utility (MAE on members vs non-members) and the most exposed subjects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from . import _data as D
from ._registry import register_figure
from ._style import (
    MEMBER_COLOR,
    MEMBER_GROUP,
    MEMBER_LABEL,
    NONMEMBER_COLOR,
    NONMEMBER_GROUP,
    NONMEMBER_LABEL,
    FigureUnavailable,
    esc,
    finite,
    new_figure,
)


@register_figure(
    "utility",
    title="Model accuracy on training vs unseen scans",
    caption=(
        "The model's average error in years (mean absolute error) on the scans it was trained "
        "on and on scans it never saw. A model that is much more accurate on its training "
        "scans has memorised them (overfitting): it will look better than it is, and it "
        "leaks membership. A small gap is what a well-generalising model shows."
    ),
)
def utility(report: dict, features: pd.DataFrame | None = None) -> go.Figure:
    """MAE on members vs non-members (bars, years), with a standard error when the per-scan
    table is available."""
    u = D.part(report, "utility")
    mae_m, mae_n = finite(u.get("mae_members")), finite(u.get("mae_nonmembers"))
    if mae_m is None and mae_n is None:
        raise FigureUnavailable("no utility figures in this report")
    se: dict[str, float | None] = {MEMBER_GROUP: None, NONMEMBER_GROUP: None}
    if features is not None and {"error", "member"} <= set(features.columns):
        members, nonmembers = D.split_members(features, "error")
        for group, vals in ((MEMBER_GROUP, members), (NONMEMBER_GROUP, nonmembers)):
            if vals.size > 1:
                se[group] = float(np.std(np.abs(vals), ddof=1) / np.sqrt(vals.size))
    fig = new_figure()
    for group, label, color, mae, n in (
        (MEMBER_GROUP, MEMBER_LABEL, MEMBER_COLOR, mae_m, u.get("n_members")),
        (NONMEMBER_GROUP, NONMEMBER_LABEL, NONMEMBER_COLOR, mae_n, u.get("n_nonmembers")),
    ):
        if mae is None:
            continue
        n_text = f"{n}" if n is not None else "n/a"
        err = se[group]
        fig.add_trace(
            go.Bar(
                x=[label],
                y=[mae],
                name=f"{label}, n={n_text}",
                legendgroup=group,
                marker=dict(color=color, line=dict(color="rgba(0,0,0,0.3)", width=1)),
                text=[f"{mae:.2f} years"],
                textposition="inside",
                insidetextanchor="end",
                textfont=dict(color="white", size=13),
                error_y=dict(type="data", array=[err], color="#24292f", thickness=1.2, width=6)
                if err is not None
                else None,
                hovertext=[
                    f"<b>{label}</b><br>mean absolute error {mae:.2f} years"
                    + (f" (± {err:.2f} standard error)" if err is not None else "")
                    + f"<br>{n_text} scans"
                ],
                hoverinfo="text",
            )
        )
    gap = finite(u.get("mae_gap"))
    if gap is None and mae_m is not None and mae_n is not None:
        gap = mae_n - mae_m
    title = "Model error on training vs unseen scans"
    if gap is not None:
        title += f" (gap {gap:+.2f} years)"
    top = max(v for v in (mae_m, mae_n) if v is not None)
    fig.update_layout(
        title=dict(text=title),
        height=380,
        bargap=0.45,
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1),
        margin=dict(t=90),
        showlegend=True,
    )
    fig.update_xaxes(title_text="Scan group")
    fig.update_yaxes(title_text="Mean absolute error (years)", range=[0, top * 1.25 + 0.1])
    return fig


def top_exposed(report: D.ReportLike, n: int = 20, members_only: bool = True) -> list[dict]:
    """The ``n`` scans with the highest attack score (members only by default), best first.

    Only ``scan_id``, ``member``, ``score`` and ``n_tested`` are kept (IDs only, nothing else
    about the subject).
    """
    scans = [s for s in D.part(D.as_dict(report), "exposure").get("scans") or [] if isinstance(s, dict)]
    if members_only:
        scans = [s for s in scans if str(s.get("member")).lower() in ("1", "true", "1.0")]
    scans = [s for s in scans if finite(s.get("score")) is not None]
    scans.sort(key=lambda s: finite(s.get("score")), reverse=True)
    return [
        {
            "scan_id": str(s.get("scan_id")),
            "member": 1 if str(s.get("member")).lower() in ("1", "true", "1.0") else 0,
            "score": finite(s.get("score")),
            "n_tested": s.get("n_tested"),
        }
        for s in scans[: max(int(n), 0)]
    ]


@register_figure(
    "exposure",
    title="Most exposed training scans",
    caption=(
        "The training scans the strongest attack is most confident about, by scan ID only. "
        "The score is the attack's estimated probability that the scan was in the training "
        "set (0.5 = no idea, 1.0 = certain). These are the subjects whose participation is "
        "easiest to reveal."
    ),
)
def exposure(
    report: dict, features: pd.DataFrame | None = None, top_n: int = 20, members_only: bool = True
) -> go.Figure:
    """Horizontal bars of the top exposed scans by attack score (scan IDs only)."""
    rows = top_exposed(report, top_n, members_only)
    if not rows:
        raise FigureUnavailable("no per-scan exposure scores in this report")
    attack = D.part(report, "exposure").get("attack")
    fig = new_figure()
    ids = [esc(r["scan_id"]) for r in rows]
    # Plotly merges equal category labels; keep each bar by making duplicates unique.
    seen: dict[str, int] = {}
    labels = []
    for i in ids:
        seen[i] = seen.get(i, 0) + 1
        labels.append(i if seen[i] == 1 else f"{i} ({seen[i]})")
    for group, label, color, flag in (
        (MEMBER_GROUP, MEMBER_LABEL, MEMBER_COLOR, 1),
        (NONMEMBER_GROUP, NONMEMBER_LABEL, NONMEMBER_COLOR, 0),
    ):
        idx = [k for k, r in enumerate(rows) if r["member"] == flag]
        if not idx:
            continue
        fig.add_trace(
            go.Bar(
                y=[labels[k] for k in idx],
                x=[rows[k]["score"] for k in idx],
                orientation="h",
                name=label,
                legendgroup=group,
                marker=dict(color=color),
                hovertext=[
                    f"<b>{labels[k]}</b><br>membership score {rows[k]['score']:.3f}"
                    f"<br>tested in {rows[k]['n_tested'] if rows[k]['n_tested'] is not None else 'n/a'} attack repeats"
                    for k in idx
                ],
                hoverinfo="text",
            )
        )
    fig.add_vline(x=0.5, line=dict(color="#6E6E6E", dash="dash", width=1.2),
                  annotation_text="0.5 = no idea", annotation_position="bottom right",
                  annotation_font=dict(size=11, color="#57606a"))
    title = f"Top {len(rows)} most exposed {'training ' if members_only else ''}scans"
    if attack:
        title += f" (attack {esc(attack)})"
    fig.update_layout(
        title=dict(text=title),
        height=140 + 22 * len(rows),
        showlegend=True,
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1),
        margin=dict(t=80),
        bargap=0.25,
    )
    fig.update_yaxes(title_text="Scan ID", type="category", categoryorder="array",
                     categoryarray=labels, autorange="reversed")
    fig.update_xaxes(title_text="Attack membership score (probability of being a training scan)",
                     range=[0, 1.02])
    return fig
