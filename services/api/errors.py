"""One handler renders every error as ``{"error": {"code", "message", "details"}}`` with its status."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.api.routes import allowed_methods
from services.core.db import is_database_unavailable
from services.core.errors import CreditrailError, DatabaseUnavailable

log = logging.getLogger("creditrail.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(part) for part in error.get("loc", ())], "type": error.get("type"), "msg": error.get("msg")}
        for error in exc.errors()
    ]


def database_unavailable_response(method: str, path: str, exc: DBAPIError) -> JSONResponse:
    """An outage is not a bug: one log line, no traceback, and a 503 the client retries."""
    log.warning("database unavailable on %s %s: %s", method, path, type(exc.orig).__name__)
    unavailable = DatabaseUnavailable("the database is unavailable; try again shortly")
    return JSONResponse(
        error_body(unavailable.code, unavailable.message),
        status_code=unavailable.status_code,
        headers={"Retry-After": "1"},
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CreditrailError)
    async def _domain(_: Request, exc: CreditrailError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        if any(error["type"] == "json_invalid" for error in errors):
            return JSONResponse(error_body("malformed_json", "the request body is not valid JSON"), status_code=422)
        return JSONResponse(
            error_body("invalid_request", "the request is not valid", {"errors": errors}), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
            # FastAPI's "error parsing the body" for what its JSON decoder raised other than a decode error (a
            # number too long to convert, bytes that are not text): the body is not JSON this API accepts.
            return JSONResponse(error_body("malformed_json", "the request body is not valid JSON"), status_code=422)
        headers = exc.headers
        if exc.status_code == 405:
            # Every method the path answers, not only those of the first route that matched it.
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request.app, request.url.path))}
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers)

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        if not is_database_unavailable(exc):
            return await _unexpected(request, exc)
        return database_unavailable_response(request.method, request.url.path, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal_error", "an internal error occurred"), status_code=500)
