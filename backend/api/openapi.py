"""How the OpenAPI document names and types things, for the clients generated from it.

Operation ids are the route's tag and function name (the FastAPI full-stack template's rule),
in kebab case, with the tag's noun left out of the name: ``upload_model`` under ``models`` is
``models-upload``, ``report_json`` under ``assessments`` is ``assessments-report-json``. A
generator turns them into ``models_upload`` and ``assessments_report_json``, free of URLs.

Downloads are typed by their media type (``application/pdf`` as ``format: binary``, CSV and
HTML as text), and every error answer has the one error body (:class:`ErrorResponse`).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi.routing import APIRoute

from .errors import ErrorResponse

INTERNAL_ERROR: dict[int | str, dict[str, Any]] = {
    500: {"model": ErrorResponse, "description": "Unexpected server error (code `internal_error`)"},
    503: {"model": ErrorResponse, "description": "The database is unreachable for now (code `database_unavailable`, "
                                                 "with `Retry-After`): nothing was changed, try again"},
}
"""Declared on every operation (the app's last-resort handler answers 500, :mod:`backend.outage` 503)."""


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]


def operation_id(route: APIRoute) -> str:
    """``<tag>-<function name without the tag's noun>`` in kebab case (``scan-sets-upload``).

    A route without a tag (the dashboard's pages, outside the document) keeps its name.
    """
    name = _words(route.name)
    if not route.tags:
        return "-".join(name)
    tag = _words(str(route.tags[0]))
    noun = {tuple(tag), tuple(tag[:-1] + [tag[-1].removesuffix("s")])}
    for size in sorted({len(n) for n in noun}, reverse=True):
        for start in range(len(name) - size + 1):
            if tuple(name[start:start + size]) in noun and len(name) > size:
                name = name[:start] + name[start + size:]
                break
    return "-".join(tag + name)


def binary_response(media_type: str, description: str) -> dict[str, Any]:
    """A 200 answer of a binary file (``type: string, format: binary``) of ``media_type``."""
    return {"description": description, "content": {media_type: {"schema": {"type": "string", "format": "binary"}}}}


def text_response(media_type: str, description: str) -> dict[str, Any]:
    """A 200 answer of a text file (CSV, HTML) of ``media_type``."""
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}
