"""Query helpers shared by the paginated lists of the API, the pages and the audit log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

T = TypeVar("T")


def page(
    session: Session, table: type[T], conditions: Sequence[Any], order_by: Sequence[Any], limit: int, offset: int
) -> tuple[list[T], int]:
    """One page of ``table`` rows matching ``conditions``, and how many match in all."""
    total = session.scalar(select(func.count()).select_from(table).where(*conditions)) or 0
    rows = session.scalars(select(table).where(*conditions).order_by(*order_by).limit(limit).offset(offset)).all()
    return list(rows), int(total)


def equal_to(table: Any, **values: Any) -> list[Any]:
    """``table.<column> == value`` for every given value that is set (None and "" are skipped)."""
    return [getattr(table, column) == value for column, value in values.items() if value not in (None, "")]
