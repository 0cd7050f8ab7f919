"""Plotly figure builders for BrainMIA reports, shared by the dashboard and the HTML export.

Every builder is a pure function ``f(report, features=None, **kwargs) -> go.Figure`` of the
report dict (report.json) and/or the per-scan feature table; it never mutates its inputs.
Builders are registered by name so the API can serve any of them::

    from frontend.figures import FIGURES, FIGURE_INFO, build_figure
    fig = build_figure("grad_norm_distribution", report, features, layer="head.output")
    fig.to_json()

A builder raises :class:`FigureUnavailable` (a ValueError) with a short plain-language reason
when the data it needs is missing (no feature table, black-box assessment, no successful
attack...); ``build_figure(..., on_unavailable="placeholder")`` returns a figure showing that
reason instead. ``FIGURE_INFO[name]`` holds the title and the plain-language caption.

Members and non-members have the same colours everywhere (:data:`MEMBER_COLOR`,
:data:`NONMEMBER_COLOR`); traces of a group carry ``legendgroup`` "members" / "nonmembers".
"""

from __future__ import annotations

from ._data import FEATURE_SET_DESCRIPTIONS, FEATURE_SET_ORDER
from ._registry import (
    FIGURE_INFO,
    FIGURES,
    FigureInfo,
    UnknownFigure,
    build_figure,
    figure_options,
    register_figure,
)
from ._style import (
    BLACK_BOX_COLOR,
    MEMBER_COLOR,
    MEMBER_GROUP,
    MEMBER_LABEL,
    NONMEMBER_COLOR,
    NONMEMBER_GROUP,
    NONMEMBER_LABEL,
    THREAT_COLORS,
    WHITE_BOX_COLOR,
    FigureUnavailable,
    placeholder_figure,
)
# Registration order (FIGURES, FIGURE_INFO) follows these imports.
from .roc import roc_curves, roc_curves_log
from .subgroups import accuracy_by_age, accuracy_by_attribute
from .attack_bars import accuracy_bars
from .distributions import error_distribution, grad_norm_distribution, grad_norm_layers
from .federated import federated_learners, federated_matrix, federated_rounds
from .summary import exposure, top_exposed, utility

__all__ = [
    "BLACK_BOX_COLOR",
    "FEATURE_SET_DESCRIPTIONS",
    "FEATURE_SET_ORDER",
    "FIGURES",
    "FIGURE_INFO",
    "FigureInfo",
    "FigureUnavailable",
    "MEMBER_COLOR",
    "MEMBER_GROUP",
    "MEMBER_LABEL",
    "NONMEMBER_COLOR",
    "NONMEMBER_GROUP",
    "NONMEMBER_LABEL",
    "THREAT_COLORS",
    "UnknownFigure",
    "WHITE_BOX_COLOR",
    "accuracy_bars",
    "accuracy_by_age",
    "accuracy_by_attribute",
    "build_figure",
    "error_distribution",
    "exposure",
    "figure_options",
    "grad_norm_distribution",
    "grad_norm_layers",
    "placeholder_figure",
    "register_figure",
    "roc_curves",
    "roc_curves_log",
    "top_exposed",
    "utility",
]
