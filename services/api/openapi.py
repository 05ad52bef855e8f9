"""The OpenAPI document says every error each operation can answer, with the one error body.

Most errors follow from what a route depends on, so they are derived from its dependencies rather than written per
route: an API key or a customer session (401; 403 for a role, or for a session where only keys may go), an
Idempotency-Key (declared as the required header it is; 409 when reused with another request), a body (413 over
the cap; 422), any parameter (422), a path parameter (404), the Stripe gateway (502, 504). The few errors only a
domain knows of (402 for credits and budgets, its conflicts, the network calls of reconciliation) come from
``DOMAIN_ERRORS``, one table keyed by method and path.

The format of a request signed by a wallet (the ``WalletSignature`` security scheme) is told as the app's
``SignedRequests`` describes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel

from services.api.deps import (
    AUTHENTICATING_DEPENDENCIES,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    WALLET_SIGNATURE_SCHEME,
    get_idempotency_key,
)
from services.api.principal import signed_requests_of
from services.api.routes import api_routes

IDEMPOTENCY_HEADER = "Idempotency-Key"


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class ErrorOut(BaseModel):
    """Every error the API answers: ``{"error": {"code", "message", "details"}}``."""

    error: ErrorDetail


DESCRIPTIONS = {
    400: "The request was refused (e.g. a webhook's signature, a webhook endpoint's URL or event types)",
    401: "No API key, session or wallet signature, or one that is not valid",
    402: "Not enough credits (holds and charges then carry an x402 offer), a budget exceeded, or a payment refused",
    403: (
        "The key's role may not do this, or a customer session may not (forbidden_for_session), or the signing wallet"
        " has no account yet (wallet_unknown)"
    ),
    404: "Not found",
    409: "Conflicts with the current state, or an Idempotency-Key reused with another request",
    413: "The request body is too large",
    422: "The request is not valid",
    502: "An upstream service (Stripe, a chain node) failed",
    504: "An upstream service (Stripe, a chain node) did not answer in time",
}

# Errors only the domain knows of, by (method, path).
DOMAIN_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("POST", "/v1/charges"): (400, 402, 409),
    ("POST", "/v1/x402/credits"): (400, 402, 409),
    ("POST", "/v1/holds"): (400, 402, 409),
    ("POST", "/v1/holds/{hold_id}/capture"): (409,),
    ("POST", "/v1/holds/{hold_id}/release"): (409,),
    ("POST", "/v1/budgets"): (409,),
    ("PATCH", "/v1/budgets/{budget_id}"): (409,),
    ("POST", "/v1/admin/accounts/{account_id}/adjustments"): (402,),
    ("POST", "/v1/admin/api-keys"): (404,),
    ("POST", "/v1/admin/customer-sessions"): (404,),
    ("POST", "/v1/admin/api-keys/{key_id}/revoke"): (409,),
    ("POST", "/v1/card/purchases/{purchase_id}/confirm"): (409,),
    ("PUT", "/v1/card/auto-recharge"): (409,),
    ("POST", "/v1/stripe/webhook"): (400,),
    ("POST", "/v1/admin/webhook-endpoints"): (400,),
    ("PATCH", "/v1/admin/webhook-endpoints/{endpoint_id}"): (400,),
    ("POST", "/v1/finance/exceptions/{exception_id}/resolve"): (409,),
    ("POST", "/v1/finance/reconciliations"): (409, 502, 504),
    ("GET", "/v1/usdc/deposit-address"): (404, 409),
    ("POST", "/v1/x402/credits/claims"): (400, 404, 409, 502),
    ("GET", "/metrics"): (401, 403),
    ("POST", "/v1/wallets/siwx/nonce"): (400,),
    ("POST", "/v1/wallets/siwx"): (400, 401),
    ("POST", "/v1/wallets/challenges"): (400, 409),
    ("POST", "/v1/wallets"): (400, 409),
    ("DELETE", "/v1/wallets/{wallet_address}"): (400, 404),
    ("POST", "/v1/admin/accounts/{account_id}/wallets"): (400, 409),
}


_ERROR_REF = "#/components/schemas/ErrorOut"


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for these error statuses, each with the error body (``ErrorOut``, which the document's
    components carry)."""
    content = {"application/json": {"schema": {"$ref": _ERROR_REF}}}
    return {status: {"description": DESCRIPTIONS[status], "content": content} for status in sorted(statuses)}


def json_or_csv(model: type[BaseModel] | None = None) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of an operation answering JSON (``model`` when given) or, with ``format=csv``, CSV."""
    ok: dict[str, Any] = {
        "description": "JSON, or CSV with format=csv",
        "content": {"text/csv": {"schema": {"type": "string"}}},
    }
    if model is not None:
        ok["model"] = model
    return {200: ok}


def _error_schemas() -> dict[str, Any]:
    schema = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions: dict[str, Any] = schema.pop("$defs", {})
    return {**definitions, "ErrorOut": schema}


# The errors a dependency can raise that its kind does not tell (a Stripe client's 502 and 504), declared by the
# domain that defines it (``declare_dependency_errors``), so that this kit imports no domain.
DEPENDENCY_ERRORS: dict[Callable[..., Any], tuple[int, ...]] = {}


def declare_dependency_errors(dependency: Callable[..., Any], *statuses: int) -> None:
    """Every route that depends on ``dependency`` (directly or not) can answer these statuses."""
    DEPENDENCY_ERRORS[dependency] = tuple(sorted({*DEPENDENCY_ERRORS.get(dependency, ()), *statuses}))


def _calls(dependant: Dependant) -> list[tuple[Any, Dependant]]:
    found: list[tuple[Any, Dependant]] = []
    stack = [dependant]
    while stack:
        current = stack.pop()
        found.append((current.call, current))
        stack.extend(current.dependencies)
    return found


def route_errors(route: APIRoute, method: str, path: str) -> set[int]:
    """The error statuses a route can answer, from its dependencies and ``DOMAIN_ERRORS``."""
    statuses = set(DOMAIN_ERRORS.get((method, path), ()))
    calls = _calls(route.dependant)
    authenticating = [dependant for call, dependant in calls if call in AUTHENTICATING_DEPENDENCIES]
    if authenticating:
        # 403: a role check, or a customer session where only API keys may go (and the reverse), so any route that
        # authenticates may answer it.
        statuses |= {401, 403}
    if any(call is get_idempotency_key for call, _ in calls):
        statuses |= {409, 422}
    for call, _ in calls:
        statuses |= set(DEPENDENCY_ERRORS.get(call, ()))
    flat = route.dependant
    has_parameters = any(
        dependant.path_params or dependant.query_params or dependant.header_params for _, dependant in calls
    )
    if method in ("POST", "PUT", "PATCH"):
        statuses.add(413)  # every body is capped, read by FastAPI or by the endpoint itself
    if route.body_field is not None:
        statuses |= {413, 422}
    if has_parameters:
        statuses.add(422)
    if flat.path_params:
        statuses.add(404)
    return statuses


def document_errors(app: FastAPI) -> None:
    """Add the error responses of every route to what it already declares (call once, after every router is
    included), and declare the Idempotency-Key header required where it is."""
    for entry in api_routes(app):
        route = entry.route
        for method in entry.methods:
            for status, response in error_responses(*route_errors(route, method, entry.path)).items():
                # The route's own, and the copy FastAPI serves it through when it came in an included router.
                route.responses.setdefault(status, response)
                entry.served.responses.setdefault(status, response)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(_error_schemas())
            signed_requests = signed_requests_of(app)
            wallet_scheme = schema["components"].get("securitySchemes", {}).get(WALLET_SIGNATURE_SCHEME)
            if signed_requests is not None and wallet_scheme is not None:
                wallet_scheme["description"] = signed_requests.description
            for item in schema.get("paths", {}).values():
                for operation in item.values():
                    for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                        if parameter.get("in") == "header" and parameter.get("name", "").lower() == "idempotency-key":
                            parameter["name"] = IDEMPOTENCY_HEADER
                            parameter["required"] = True
                            parameter["schema"] = {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH,
                                "pattern": "^[!-~][ -~]*$",
                            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
