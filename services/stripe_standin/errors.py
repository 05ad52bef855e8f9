"""The stand-in's errors: :class:`StripeApiError` is an error as Stripe answers it (its own shape, for the SDK);
:class:`StandinRefused` is creditrail's, raised when the stand-in is asked to start outside development."""

from __future__ import annotations

from typing import Any

from services.core.errors import CreditrailError


class StandinRefused(CreditrailError):
    code = "stripe_standin_refused"
    status_code = 409


class StripeApiError(Exception):
    """An error as Stripe answers it: ``{"error": {"type", "code", "message", "decline_code", ...}}``."""

    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        *,
        code: str | None = None,
        decline_code: str | None = None,
        param: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.code = code
        self.decline_code = decline_code
        self.param = param
        self.extra = extra

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.kind, "message": self.message}
        for name, value in (("code", self.code), ("decline_code", self.decline_code), ("param", self.param)):
            if value is not None:
                error[name] = value
        if self.code:
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        return {"error": error | self.extra}


def invalid(message: str, *, param: str | None = None, code: str | None = None, status: int = 400) -> StripeApiError:
    return StripeApiError(status, "invalid_request_error", message, code=code, param=param)


def missing(kind: str, object_id: str, param: str | None = None) -> StripeApiError:
    return StripeApiError(
        404 if param is None else 400,
        "invalid_request_error",
        f"No such {kind}: '{object_id}'",
        code="resource_missing",
        param=param or "id",
    )
