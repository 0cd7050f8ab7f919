"""The distributions section: prediction error and gradient magnitude, member against non-member."""

from __future__ import annotations

import pandas as pd

from ..figures import FigureUnavailable
from ..figures import _data as D
from .figure_blocks import FigureMaker


def is_white_box(report: dict, features: pd.DataFrame | None) -> bool:
    """Whether the assessment saw the model's internals (gradient columns or a white-box attack)."""
    return bool(D.grad_norm_columns(features)) or any(
        D.threat_model(a) == "white-box" for a in D.attacks(report)
    )


def grad_message(report: dict, features: pd.DataFrame | None) -> str:
    """Why the gradient-magnitude figures are unavailable, when they are."""
    if not D.grad_norm_columns(features) and not is_white_box(report, features):
        return "Not available (black-box assessment): gradients need the model's internals."
    if features is None:
        return "Not available: the per-scan feature table was not provided."
    return "Not available: the per-scan feature table has no gradient-magnitude columns."


def most_separable_layer(features: pd.DataFrame | None) -> str | None:
    """The gradient-magnitude column that best separates members from non-members (None if none)."""
    best, best_sep = None, -1.0
    for col in D.grad_norm_columns(features):
        try:
            m, n = D.split_members(features, col)
        except FigureUnavailable:
            continue
        sep = D.separability(m, n)
        if sep is not None and sep > best_sep:
            best, best_sep = col, sep
    return best


def alt_error(features: pd.DataFrame | None) -> str:
    """The text alternative of the error-distribution figure: medians and mean absolute errors."""
    try:
        m, n = D.split_members(features, "error")
    except FigureUnavailable:
        return "Prediction error distributions"
    if m.size == 0 or n.size == 0:
        return "Prediction error distributions"
    return (
        "Distributions of prediction error. Members: median "
        f"{float(pd.Series(m).median()):.1f} years, mean absolute error "
        f"{float(abs(pd.Series(m)).mean()):.1f} years. Non-members: median "
        f"{float(pd.Series(n).median()):.1f} years, mean absolute error "
        f"{float(abs(pd.Series(n)).mean()):.1f} years."
    )


def grad_layers(fig: FigureMaker, features: pd.DataFrame | None, best: str | None) -> list[dict]:
    """One gradient-magnitude figure per layer for the layer selector; the most revealing first shown."""
    layers = []
    for column in D.grad_norm_columns(features):
        label = column[len(D.GRAD_NORM_PREFIX):]
        block = fig(
            "grad_norm_distribution",
            layer=column,
            title=f"Gradient magnitude, layer {label}" + (" (the most revealing)" if column == best else ""),
            alt=f"Distributions of gradient magnitude at layer {label}, members against non-members.",
        )
        layers.append({"column": column, "label": label, "best": column == best,
                       "selected": column == best, "block": block})
    if layers and not any(layer["selected"] for layer in layers):
        layers[0]["selected"] = True
    return layers
