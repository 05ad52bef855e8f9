"""The base of every domain error: a stable machine-readable code, a message, and its HTTP status.

Each domain declares its own subclasses; the API renders them all with one handler as
``{"error": {"code": ..., "message": ..., "details": {...}}}``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class CreditrailError(Exception):
    code: ClassVar[str] = "error"
    status_code: ClassVar[int] = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidRequest(CreditrailError):
    code = "invalid_request"
    status_code = 422


class NotFound(CreditrailError):
    code = "not_found"
    status_code = 404


class Unauthenticated(CreditrailError):
    code = "unauthenticated"
    status_code = 401


class Forbidden(CreditrailError):
    code = "forbidden"
    status_code = 403


class Conflict(CreditrailError):
    code = "conflict"
    status_code = 409


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


class DatabaseUnavailable(CreditrailError):
    """The database cannot be reached (refused, restarting, the connection dropped). What the request wrote either
    committed or was rolled back, and the client cannot tell which: it sends the same request again, with the same
    idempotency key, which is safe either way."""

    code = "database_unavailable"
    status_code = 503


class UpstreamUnavailable(CreditrailError):
    code = "upstream_unavailable"
    status_code = 502


class IdempotencyKeyRequired(InvalidRequest):
    code = "idempotency_key_required"
