"""Colours, labels and the chance line shared by the attack-result figures."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from . import _data as D
from ._style import CHANCE_COLOR, CLASSIFIER_PATTERNS, METHOD_COLORS, METHOD_PALETTE, esc, feature_set_color

#: Short family names of the ROC legends (the tables' badges say the same).
FAMILY_SHORT = {"classifier": "classifier", "reference": "reference", "quantile": "quantile"}


def styles(report: dict) -> tuple[dict[str, str], dict[str, int]]:
    """Colour per feature set and index per classifier, stable across figures."""
    others = [fs for fs in D.feature_set_order(report) if fs not in D.FEATURE_SET_ORDER]
    colors = {fs: feature_set_color(fs, others.index(fs) if fs in others else 0)
              for fs in D.feature_set_order(report)}
    classifiers = {c: i for i, c in enumerate(D.classifier_order(report))}
    return colors, classifiers


def attack_label(attack: dict) -> str:
    """``"feature set · classifier"`` for the paper's attacks, the attack's name (``lira-online``) for
    reference-model and quantile attacks; escaped for Plotly text."""
    if D.family(attack) != "classifier":
        return esc(D.attack_name(attack))
    return f"{esc(attack.get('feature_set', '?'))} · {esc(attack.get('classifier', '?'))}"


def legend_label(attack: dict) -> tuple[str, str]:
    """:func:`attack_label` and the attack's family and threat model: ``("lira-online", "reference, black-box")``."""
    return attack_label(attack), f"{FAMILY_SHORT[D.family(attack)]}, {D.threat_model(attack)}"


def attack_color(attack: dict, colors: dict[str, str], index: int = 0) -> str:
    """The line / bar colour of an attack: its feature set's for the paper's attacks, its method's
    for reference-model and quantile attacks (``colors`` from :func:`styles`)."""
    if D.family(attack) != "classifier":
        method = str(attack.get("classifier") or D.attack_name(attack).split(":")[0])
        return METHOD_COLORS.get(method) or METHOD_PALETTE[index % len(METHOD_PALETTE)]
    fs = str(attack.get("feature_set"))
    return colors[fs] if fs in colors else feature_set_color(fs, index)


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
