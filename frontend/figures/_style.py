"""Colours, the shared Plotly template and small helpers used by every figure builder.

Colours are defined once here so that members and non-members look the same on every plot
(figures, dashboard, exported report). They come from the Okabe-Ito palette, which stays
distinguishable for the common forms of colour blindness.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

import plotly.graph_objects as go

# Members (scans the model was trained on) and non-members (scans it never saw): red and blue,
# which stay apart for the common (red-green) colour-vision deficiencies by hue and lightness.
MEMBER_COLOR = "#D62728"
NONMEMBER_COLOR = "#1F77B4"
MEMBER_LABEL = "Members (training scans)"
NONMEMBER_LABEL = "Non-members (unseen scans)"
MEMBER_GROUP = "members"
NONMEMBER_GROUP = "nonmembers"

# Threat models: what the attacker needs access to.
BLACK_BOX_COLOR = "#E69F00"  # Okabe-Ito orange
WHITE_BOX_COLOR = "#009E73"  # Okabe-Ito bluish green
THREAT_COLORS = {"black-box": BLACK_BOX_COLOR, "white-box": WHITE_BOX_COLOR}
THREAT_LABELS = {
    "black-box": "Black-box (needs only the model's predictions)",
    "white-box": "White-box (needs the model's internals)",
}

# One fixed colour per canonical feature set (Paul Tol's "muted" palette, colour-blind safe),
# so a feature set looks the same in every report; other feature sets take the spare colours.
FEATURE_SET_COLORS = {
    "activation": "#88CCEE",
    "error": "#DDCC77",
    "prediction+label": "#CC6677",
    "grad-norm": "#117733",
    "grad:first_conv": "#44AA99",
    "grad:last_conv": "#882255",
    "grad:output": "#AA4499",
    "prediction+label+grad:last_conv+grad:output": "#332288",
}
# Reference-model and quantile attacks are coloured by method (Okabe-Ito, apart from the feature-set
# colours); a method's white-box (``:grad-norm``) variant has the same colour, dotted.
METHOD_COLORS = {
    "calibrated-loss": "#56B4E9",
    "lira-offline": "#0072B2",
    "lira-online": "#D55E00",
    "rmia": "#CC79A7",
    "qmia": "#000000",
}
METHOD_PALETTE = ("#F0E442", "#7F3C8D", "#11A579", "#3969AC")
FEATURE_SET_PALETTE = ("#999933", "#6699CC", "#661100", "#888888", "#E7298A", "#1B9E77")
CLASSIFIER_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
CLASSIFIER_PATTERNS = ("", "/", ".", "x", "\\", "+", "-", "|")
CHANCE_COLOR = "#6E6E6E"
FAILED_COLOR = "#222222"

FONT_FAMILY = (
    "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
)

#: A light template: layout defaults only, so every figure's JSON stays small.
_AXIS = dict(
    showgrid=True,
    gridcolor="#e5e7eb",
    zeroline=False,
    linecolor="#6e7781",
    showline=True,
    ticks="outside",
    automargin=True,
)

TEMPLATE = go.layout.Template(
    layout=go.Layout(
        font=dict(family=FONT_FAMILY, size=13, color="#1f2328"),
        paper_bgcolor="white",
        plot_bgcolor="white",
        colorway=list(FEATURE_SET_COLORS.values()),
        hoverlabel=dict(font=dict(family=FONT_FAMILY, size=12)),
        legend=dict(bgcolor="rgba(255,255,255,0.85)", font=dict(size=12)),
        margin=dict(l=70, r=30, t=60, b=60),
        title=dict(x=0.0, xanchor="left", font=dict(size=16)),
        xaxis=_AXIS,
        yaxis=_AXIS,
    )
)


class FigureUnavailable(ValueError):
    """The report or feature table lacks the data this figure needs.

    The message is a short plain-language reason, suitable to show in place of the figure
    (e.g. "not available (black-box assessment)").
    """


def esc(value: Any) -> str:
    """Escape a user-provided string for Plotly text (labels, hover, titles).

    Plotly renders a subset of HTML in text and decodes numeric entities but only a few named
    ones (``&amp;``, ``&lt;``, ``&gt;``, not ``&quot;``), so ``&``, ``<`` and ``>`` get named
    entities and quotes numeric ones: the text displays as typed while tags such as
    ``<script>`` or ``<a href=...>`` stay inert.
    """
    return html.escape(str(value), quote=False).replace('"', "&#34;").replace("'", "&#39;")


def rgba(hex_color: str, alpha: float) -> str:
    """``#rrggbb`` -> ``rgba(r,g,b,alpha)``."""
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def finite(value: Any) -> float | None:
    """A float, or None when the value is missing or not finite."""
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def pct(value: Any) -> float | None:
    """A fraction in [0, 1] as a percentage, None stays None."""
    f = finite(value)
    return None if f is None else 100.0 * f


#: Advance widths (em) of DejaVu Sans, the widest of the usual UI fonts (Linux's system-ui):
#: margins sized with them fit the text in any of those fonts.
_CHAR_EM = {
    **dict.fromkeys("'ijlIJ", 0.29), **dict.fromkeys(" ,.·/:;\\|f-", 0.35), **dict.fromkeys("()[]t!r", 0.41),
    **dict.fromkeys("\"*_`–szc?LFk", 0.58), **dict.fromkeys("vxyPTYaoeESbdghnpqu$0123456789{}", 0.64),
    **dict.fromkeys("KAVBRXZCUHNDG&OQ", 0.79), **dict.fromkeys("w#+<=>^~×±M", 0.86), **dict.fromkeys("%mW@", 1.0),
}


def text_px(text: str, size: float) -> float:
    """Width in pixels of one line of Plotly text at font ``size`` (tags dropped, entities
    decoded); at least the width DejaVu Sans gives it, for margins that need no automargin."""
    plain = html.unescape(re.sub(r"<[^>]*>", "", text))
    return size * sum(_CHAR_EM.get(ch, 0.79) for ch in plain)


def new_figure(**layout: Any) -> go.Figure:
    """An empty figure with the BrainMIA template applied."""
    fig = go.Figure()
    fig.update_layout(template=TEMPLATE, **layout)
    return fig


def apply_style(fig: go.Figure, **layout: Any) -> go.Figure:
    """Apply the template and layout options to a figure built elsewhere (subplots)."""
    fig.update_layout(template=TEMPLATE, **layout)
    return fig


def placeholder_figure(message: str, title: str | None = None) -> go.Figure:
    """A figure with no data and a centred message, for when data is unavailable."""
    fig = new_figure(height=220)
    if title:
        fig.update_layout(title=dict(text=esc(title)))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(
        text=esc(message),
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        showarrow=False,
        font=dict(size=14, color="#57606a"),
    )
    return fig


def feature_set_color(feature_set: str, index: int = 0) -> str:
    """The colour of a feature set: fixed for the canonical ones, else the ``index``-th spare."""
    return FEATURE_SET_COLORS.get(feature_set) or FEATURE_SET_PALETTE[index % len(FEATURE_SET_PALETTE)]
