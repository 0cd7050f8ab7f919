"""Colours, labels and the chance line shared by the attack-result figures."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from . import _data as D
from ._style import CHANCE_COLOR, CLASSIFIER_PATTERNS, esc, feature_set_color


def styles(report: dict) -> tuple[dict[str, str], dict[str, int]]:
    """Colour per feature set and index per classifier, stable across figures."""
    others = [fs for fs in D.feature_set_order(report) if fs not in D.FEATURE_SET_ORDER]
    colors = {fs: feature_set_color(fs, others.index(fs) if fs in others else 0)
              for fs in D.feature_set_order(report)}
    classifiers = {c: i for i, c in enumerate(D.classifier_order(report))}
    return colors, classifiers


def attack_label(attack: dict) -> str:
    """``"feature set · classifier"``, escaped for Plotly text."""
    return f"{esc(attack.get('feature_set', '?'))} · {esc(attack.get('classifier', '?'))}"


def classifier_pattern(index: int) -> dict[str, Any]:
    """The bar hatching of the classifier at ``index`` (cycling through the patterns)."""
    return dict(
        shape=CLASSIFIER_PATTERNS[index % len(CLASSIFIER_PATTERNS)],
        fillmode="overlay",
        fgcolor="rgba(0,0,0,0.55)",
        solidity=0.3,
    )


def chance_line(fig: go.Figure, **where: Any) -> None:
    """A dashed horizontal line at 50% accuracy (a coin toss); ``where``: row / col."""
    fig.add_hline(
        y=50,
        line=dict(color=CHANCE_COLOR, dash="dash", width=1.5),
        annotation_text="chance (50%)",
        annotation_position="bottom right",
        annotation_font=dict(size=11, color="#57606a"),
        **where,
    )


def accuracy_range(values: list[float]) -> list[float]:
    """A y range (%) holding ``values`` with 5 points to spare, at least 45 to 60."""
    vals = [v for v in values if v is not None]
    lo = min([45.0] + [v - 5 for v in vals])
    hi = max([60.0] + [v + 5 for v in vals])
    return [max(0.0, lo), min(100.0, hi)]
