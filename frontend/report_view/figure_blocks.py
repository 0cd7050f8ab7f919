"""Figures as blocks the report embeds: Plotly JSON made safe for a <script>, or why it is missing."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from markupsafe import Markup

from ..figures import FIGURE_INFO, FigureUnavailable, build_figure

log = logging.getLogger(__name__)


def script_json(obj_json: str) -> Markup:
    """JSON text made safe inside a <script> element (no "</script>", no "<!--")."""
    safe = (
        obj_json.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )
    return Markup(safe)


@dataclass
class FigureBlock:
    """One figure of the report: its heading and texts, and its JSON or the reason it is unavailable."""

    name: str
    title: str
    caption: str
    alt: str
    dom_id: str = ""
    data: Markup | None = None
    unavailable: str | None = None
    extra: dict = field(default_factory=dict)


class FigureMaker:
    """Builds figures for the report, turning missing data into a message, never an error.

    Args:
        report: the report dict.
        features: the per-scan feature table, or None.
        grad_message: what the gradient-magnitude figures say when they are unavailable.
    """

    def __init__(self, report: dict, features: pd.DataFrame | None, grad_message: str):
        self.report = report
        self.features = features
        self.grad_message = grad_message
        self.count = 0

    def __call__(self, name: str, alt: str = "", title: str | None = None,
                 caption: str | None = None, **kwargs: Any) -> FigureBlock:
        """The block of figure ``name`` (its registry title and caption unless given)."""
        info = FIGURE_INFO[name]
        self.count += 1
        block = FigureBlock(
            name=name,
            title=title or info.title,
            caption=caption or info.caption,
            alt=alt or info.title,
            dom_id=f"fig-{self.count}-{name.replace('_', '-')}",
        )
        try:
            fig: go.Figure = build_figure(name, self.report, self.features, **kwargs)
        except FigureUnavailable as exc:
            message = str(exc)
            message = message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")
            if name.startswith("grad_norm"):
                message = self.grad_message
            block.unavailable = message
            return block
        except Exception as exc:  # a broken figure must not sink the whole report
            log.exception("figure %s could not be drawn", name)
            block.unavailable = f"This figure could not be drawn ({type(exc).__name__}: {exc})."
            return block
        # The page shows the title as a heading; drop the one inside the plot.
        top = fig.layout.margin.t
        fig.update_layout(title_text="", margin_t=max(30, (top if top is not None else 60) - 40))
        block.data = script_json(pio.to_json(fig, validate=False))
        return block
