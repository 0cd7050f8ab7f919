"""Liveness and readiness answers."""

from __future__ import annotations

from pydantic import BaseModel


class Health(BaseModel):
    """Liveness answer."""

    status: str = "ok"


class Readiness(BaseModel):
    """Readiness answer: each dependency and whether it is reachable."""

    status: str
    database: bool
    broker: bool
    mode: str
