"""Validated request field types shared by the API schemas and the services."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field


def no_nul(value: Any) -> Any:
    """Refuse NUL bytes in text, or in a list of texts (PostgreSQL cannot store them)."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL bytes")
    if isinstance(value, list):
        for item in value:
            no_nul(item)
    return value


Text = Annotated[str, AfterValidator(no_nul)]
"""Free text stored in the database."""

Id = Annotated[str, Field(max_length=64), AfterValidator(no_nul)]
"""An object id given by the client."""

GradientMethod = Literal["auto", "vmap", "loop", "hooks"]
"""How per-sample gradients are computed (:mod:`worker.engine.features.methods`: ``auto`` and the
exact methods); a setting and a request option."""
