"""Spreadsheet-safe CSV cells: the one rule against formula injection, and its inverse.

A spreadsheet runs a cell that begins with ``=``, ``+``, ``-`` or ``@`` (and, after import,
a tab or carriage return) as a formula: a scan ID ``=HYPERLINK("http://x","y")`` in a CSV a
governance officer opens becomes a live link, ``+cmd|' /C calc'!A0`` a DDE command. Following
OWASP, every CSV BrainMIA writes prefixes such a text cell with a single quote
(:func:`neutralise_cell`), which spreadsheets show as text. Numbers are left alone: a cell
that is a plain decimal number (``-3.2``, ``+1e5``) is no formula, and a numeric column
holds no text at all.

BrainMIA's own readers of those files (result pages, manifests) undo the prefix with
:func:`restore_cell`, so values read back are the values written; a value that itself began
with a quote followed by one of those characters reads back without that quote.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, TypeVar

__all__ = ["FORMULA_TRIGGERS", "neutralise_cell", "neutralise_frame", "neutralise_row", "restore_cell", "restore_frame"]

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")

T = TypeVar("T")


def _is_formula(text: str) -> bool:
    return text[:1] in FORMULA_TRIGGERS and not _NUMBER.fullmatch(text)


def neutralise_cell(value: T) -> T:
    """``value`` with a ``'`` in front when it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and _is_formula(value):
        return "'" + value  # type: ignore[return-value]
    return value


def restore_cell(value: T) -> T:
    """The inverse of :func:`neutralise_cell` (non-text and ordinary text unchanged)."""
    if isinstance(value, str) and value[:1] == "'" and _is_formula(value[1:]):
        return value[1:]  # type: ignore[return-value]
    return value


def neutralise_row(row: Iterable[Any]) -> list[Any]:
    """Every cell of a CSV row through :func:`neutralise_cell`."""
    return [neutralise_cell(cell) for cell in row]


def _text_columns(frame: Any) -> list[Any]:
    """Columns that may hold text: object and string dtypes (numeric columns never do)."""
    return [c for c in frame.columns if getattr(frame[c].dtype, "kind", "O") in "OSU"]


def _map_frame(frame: Any, fn: Any) -> Any:
    out = frame.copy()
    for column in _text_columns(out):
        out[column] = out[column].map(fn)
    out.columns = [fn(c) for c in out.columns]
    return out


def neutralise_frame(frame: Any) -> Any:
    """A copy of a DataFrame with its column names and text cells neutralised (numbers untouched)."""
    return _map_frame(frame, neutralise_cell)


def restore_frame(frame: Any) -> Any:
    """The inverse of :func:`neutralise_frame`, for a DataFrame read back from such a CSV."""
    return _map_frame(frame, restore_cell)
