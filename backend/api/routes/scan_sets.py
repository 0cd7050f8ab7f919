"""Routes of /api/v1 (being written in this session)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
