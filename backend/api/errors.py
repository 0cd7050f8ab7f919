"""One error body for every failure: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from worker.engine.errors import InputError

from ..services.errors import ApiError, field_error, from_input_error, not_found

__all__ = ["ERROR_RESPONSES", "ApiError", "ErrorResponse", "field_error", "from_input_error",
           "install_error_handlers", "not_found"]


class ErrorDetail(BaseModel):
    """One problem: a row and/or field and what is wrong with it."""

    line: int | None = None
    field: str | None = None
    reason: str


class ErrorBody(BaseModel):
    """The error object."""

    code: str
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorBody


def _body(code: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or []}}


def install_error_handlers(app: FastAPI) -> None:
    """Make every error answer with :class:`ErrorResponse`."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(_body(exc.code, exc.message, exc.details), status_code=exc.status)

    @app.exception_handler(InputError)
    async def _input_error(_request: Request, exc: InputError) -> JSONResponse:
        err = from_input_error(exc)
        return JSONResponse(_body(err.code, err.message, err.details), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path")) or None,
             "reason": e.get("msg", "invalid")}
            for e in exc.errors()
        ]
        return JSONResponse(_body("validation_error", "the request is not valid", details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        return JSONResponse(
            _body(codes.get(exc.status_code, "http_error"), str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(_body("internal_error", f"internal error: {type(exc).__name__}"), status_code=500)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or invalid token"},
    404: {"model": ErrorResponse, "description": "Not found (or not your organisation's)"},
    422: {"model": ErrorResponse, "description": "Invalid input, with row/field details"},
}
