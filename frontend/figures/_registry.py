"""The figure registry: every builder by name, with a title and a plain-language caption."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd
import plotly.graph_objects as go

from ._data import ReportLike, as_dict
from ._style import FigureUnavailable, placeholder_figure

FigureBuilder = Callable[..., go.Figure]


@dataclass(frozen=True)
class FigureInfo:
    """What the pages need to show a figure beside it.

    Attributes:
        name: registry name (``/figures/{name}``).
        title: short heading.
        caption: plain-language explanation of what the figure shows and how to read it.
        needs_features: whether it is drawn from the per-scan feature table (otherwise from the
            report dict alone).
    """

    name: str
    title: str
    caption: str
    needs_features: bool = False


#: name -> builder; every builder is ``f(report, features=None, **kwargs) -> go.Figure``.
FIGURES: dict[str, FigureBuilder] = {}
#: name -> title, caption and data needs.
FIGURE_INFO: dict[str, FigureInfo] = {}


class UnknownFigure(KeyError, ValueError):
    """No figure of that name; the message lists the registered names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown figure"


def register_figure(
    name: str, *, title: str = "", caption: str = "", needs_features: bool = False
) -> Callable[[FigureBuilder], FigureBuilder]:
    """Register a builder under ``name`` (decorator)."""

    def decorator(func: FigureBuilder) -> FigureBuilder:
        if name in FIGURES and FIGURES[name] is not func:
            raise ValueError(f"figure {name!r} is already registered")
        FIGURES[name] = func
        FIGURE_INFO[name] = FigureInfo(
            name=name, title=title or name, caption=caption, needs_features=needs_features
        )
        return func

    return decorator


def build_figure(
    name: str,
    report: ReportLike,
    features: pd.DataFrame | None = None,
    *,
    on_unavailable: str = "raise",
    **kwargs: Any,
) -> go.Figure:
    """Build the figure registered as ``name``.

    Args:
        name: a key of :data:`FIGURES`.
        report: the report dict (report.json) or a typed :class:`~worker.engine.report_model.Report`.
        features: the per-scan feature table, or None.
        on_unavailable: ``"raise"`` re-raises :class:`FigureUnavailable` when the data is
            missing; ``"placeholder"`` returns a figure showing the reason instead.
        **kwargs: builder options (e.g. ``layer=`` or ``log=``).

    Raises:
        UnknownFigure: (a KeyError and a ValueError) for an unknown name, listing the names.
        FigureUnavailable: the data for this figure is missing (with on_unavailable="raise").
        TypeError: an option the builder does not take (the message lists the options).

    Options given as strings (e.g. from a query string) are converted to the type of the
    builder's default: "true"/"false"/"1"/"0" for booleans, digits for integers.
    """
    try:
        builder = FIGURES[name]
    except KeyError:
        raise UnknownFigure(
            f"unknown figure {name!r}; available: {', '.join(sorted(FIGURES))}"
        ) from None
    if on_unavailable not in ("raise", "placeholder"):
        raise ValueError("on_unavailable must be 'raise' or 'placeholder'")
    kwargs = _coerce_options(name, builder, kwargs)
    try:
        return builder(as_dict(report), features, **kwargs)
    except FigureUnavailable as exc:
        if on_unavailable == "placeholder":
            return placeholder_figure(str(exc), title=FIGURE_INFO[name].title)
        raise


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def figure_options(name: str) -> dict[str, Any]:
    """The options a figure takes, with their defaults (``{"log": False, ...}``)."""
    builder = FIGURES[name]
    params = list(inspect.signature(builder).parameters.values())[2:]
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _coerce_options(name: str, builder: FigureBuilder, kwargs: dict[str, Any]) -> dict[str, Any]:
    options = figure_options(name)
    accepts_any = any(
        p.kind is p.VAR_KEYWORD for p in inspect.signature(builder).parameters.values()
    )
    out = {}
    for key, value in kwargs.items():
        if key not in options and not accepts_any:
            listed = ", ".join(options) or "none"
            raise TypeError(f"figure {name!r} takes no option {key!r}; options: {listed}")
        default = options.get(key)
        if isinstance(value, str) and isinstance(default, bool):
            low = value.strip().lower()
            if low in _TRUE:
                value = True
            elif low in _FALSE:
                value = False
            else:
                raise TypeError(f"option {key!r} of figure {name!r} must be true or false")
        elif isinstance(value, str) and isinstance(default, int) and value.strip().lstrip("-").isdigit():
            value = int(value)
        out[key] = value
    return out
