"""Query parameters shared by every paginated list (the queries are :mod:`backend.db.paging`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from ..db.paging import equal_to, page

__all__ = ["MAX_OFFSET", "Limit", "Offset", "equal_to", "page"]

MAX_OFFSET = 1_000_000_000
"""Largest accepted offset (keeps it inside a 32-bit database integer)."""

Limit = Annotated[int, Query(ge=1, le=200, description="Page size")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip")]
