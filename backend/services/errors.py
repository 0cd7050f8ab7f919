"""The refusals of the service layer, each with the HTTP status and stable code the API answers.

Services, routes and the request plumbing raise :class:`ApiError`; the API's error handlers
(:mod:`backend.api.errors`) turn it into the one error body ``{"error": {"code", "message",
"details"}}``. It lives below the API so that services can raise it.
"""

from __future__ import annotations

from typing import Any

from worker.engine.errors import InputError, ManifestError


class ApiError(Exception):
    """An error with an HTTP status, a stable code and optional row/field details.

    Attributes:
        status: the HTTP status of the answer.
        code: stable machine-readable code (``not_found``, ``invalid_model``...).
        message: what went wrong, for people.
        details: ``{"line", "field", "reason"}`` items (each key optional but ``reason``).
    """

    def __init__(self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None):
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        super().__init__(message)


def not_found(kind: str, object_id: str) -> ApiError:
    """404 for an id that does not exist or belongs to another organisation."""
    return ApiError(404, "not_found", f"{kind} '{object_id}' not found")


def field_error(field: str, reason: str) -> ApiError:
    """422 ``validation_error`` naming one request field, as the request validation answers."""
    return ApiError(422, "validation_error", "the request is not valid", [{"field": field, "reason": reason}])


def from_input_error(exc: InputError) -> ApiError:
    """422 for bad user input, with row details for manifests."""
    if isinstance(exc, ManifestError):
        details = [{"line": e.line, "field": e.column, "reason": e.reason} for e in exc.errors]
        return ApiError(422, "invalid_manifest", f"{len(exc.errors)} bad row(s) in the manifest", details)
    return ApiError(422, "invalid_input", str(exc))
