"""The stand-in's HTTP API: the Stripe endpoints creditrail calls, answered as Stripe answers them.

Requests are authenticated by the secret key as a Bearer token (the keys the stand-in was started with); POST
parameters come form-encoded in the body, GET parameters in the query string, nested the way the SDK nests them.
A POST with an ``Idempotency-Key`` is answered once: the same key and parameters get the same answer (marked
``Idempotent-Replayed: true``), the same key with other parameters an ``idempotency_error``. Errors have Stripe's
shape and status: 401 for a missing or wrong key, 400 for bad parameters, 402 for a declined card, 404 for an
unknown object or URL.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from services.stripe_standin.errors import StripeApiError, invalid
from services.stripe_standin.forms import FormError, decode
from services.stripe_standin.page import router as page_router
from services.stripe_standin.store import Store

MAX_BODY_BYTES = 256 * 1024


def _answer(status: int, body: dict[str, Any], request: Request, *, replayed: bool = False) -> JSONResponse:
    headers = {"Request-Id": f"req_{secrets.token_hex(7)}"}
    version = request.headers.get("Stripe-Version")
    if version:
        headers["Stripe-Version"] = version
    key = request.headers.get("Idempotency-Key")
    if key:
        headers["Idempotency-Key"] = key
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(body, status_code=status, headers=headers)


def _error(exc: StripeApiError, request: Request) -> JSONResponse:
    return _answer(exc.status, exc.body(), request)


def _authenticate(request: Request, keys: Sequence[str]) -> StripeApiError | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return StripeApiError(
            401,
            "invalid_request_error",
            "You did not provide an API key. You need to provide your API key in the Authorization header, using "
            "Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
        )
    if not any(hmac.compare_digest(token.encode(), key.encode()) for key in keys):
        shown = f"{token[:8]}{'*' * 8}{token[-4:]}" if len(token) > 12 else "****"
        return StripeApiError(401, "invalid_request_error", f"Invalid API Key provided: {shown}")
    return None


async def _params(request: Request) -> dict[str, Any]:
    if request.method == "GET":
        return decode(request.url.query)
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise invalid("The request body is too large.", status=413)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid("The request body is not UTF-8.") from exc
    return decode(text)


def create_api_router(store: Store, secret_keys: Sequence[str]) -> APIRouter:
    router = APIRouter()
    keys = tuple(secret_keys)

    async def handle(
        request: Request, action: Callable[[dict[str, Any]], dict[str, Any]], *, idempotent: bool = False
    ) -> JSONResponse:
        refused = _authenticate(request, keys)
        if refused is not None:
            return _error(refused, request)
        try:
            params = await _params(request)
        except StripeApiError as exc:
            return _error(exc, request)
        except FormError as exc:
            return _error(invalid(str(exc)), request)
        if idempotent:
            key = request.headers.get("Idempotency-Key") or None
            status, body, replayed = store.idempotent(
                key, f"{request.method} {request.url.path}", params, lambda: action(params)
            )
            return _answer(status, body, request, replayed=replayed)
        try:
            return _answer(200, action(params), request)
        except StripeApiError as exc:
            return _error(exc, request)

    def base_url(request: Request) -> str:
        return str(request.base_url)

    @router.post("/v1/customers")
    async def create_customer(request: Request) -> JSONResponse:
        return await handle(request, store.create_customer, idempotent=True)

    @router.get("/v1/customers/{customer_id}")
    async def get_customer(request: Request, customer_id: str) -> JSONResponse:
        return await handle(request, lambda p: store.retrieve("customer", customer_id, p))

    @router.post("/v1/checkout/sessions")
    async def create_session(request: Request) -> JSONResponse:
        root = base_url(request)
        return await handle(request, lambda p: store.create_checkout_session(p, root), idempotent=True)

    @router.get("/v1/checkout/sessions")
    async def list_sessions(request: Request) -> JSONResponse:
        return await handle(request, store.list_checkout_sessions)

    @router.get("/v1/checkout/sessions/{session_id}")
    async def get_session(request: Request, session_id: str) -> JSONResponse:
        return await handle(request, lambda p: store.retrieve("checkout.session", session_id, p))

    @router.post("/v1/checkout/sessions/{session_id}/expire")
    async def expire_session(request: Request, session_id: str) -> JSONResponse:
        return await handle(request, lambda _p: store.expire_session(session_id), idempotent=True)

    @router.post("/v1/payment_intents")
    async def create_intent(request: Request) -> JSONResponse:
        return await handle(request, store.create_payment_intent, idempotent=True)

    @router.get("/v1/payment_intents/{intent_id}")
    async def get_intent(request: Request, intent_id: str) -> JSONResponse:
        return await handle(request, lambda p: store.retrieve("payment_intent", intent_id, p))

    @router.get("/v1/payment_methods/{method_id}")
    async def get_method(request: Request, method_id: str) -> JSONResponse:
        return await handle(request, lambda p: store.retrieve("payment_method", method_id, p))

    @router.get("/v1/charges/{charge_id}")
    async def get_charge(request: Request, charge_id: str) -> JSONResponse:
        return await handle(request, lambda p: store.retrieve("charge", charge_id, p))

    @router.get("/v1/balance_transactions")
    async def list_balance_transactions(request: Request) -> JSONResponse:
        return await handle(request, store.list_balance_transactions)

    @router.get("/v1/balance_transactions/{transaction_id}")
    async def get_balance_transaction(request: Request, transaction_id: str) -> JSONResponse:
        return await handle(request, lambda p: store.retrieve("balance_transaction", transaction_id, p))

    @router.get("/v1/events")
    async def list_events(request: Request) -> JSONResponse:
        return await handle(request, store.list_events)

    @router.get("/v1/events/{event_id}")
    async def get_event(request: Request, event_id: str) -> JSONResponse:
        return await handle(request, lambda _p: store.retrieve_event(event_id))

    @router.api_route("/v1/{rest:path}", methods=["GET", "POST", "DELETE"])
    async def unknown(request: Request, rest: str) -> JSONResponse:
        refused = _authenticate(request, keys)
        if refused is not None:
            return _error(refused, request)
        error = invalid(
            f"Unrecognized request URL ({request.method}: /v1/{rest}). This local stand-in for Stripe answers only "
            "the calls creditrail makes.",
            status=404,
        )
        return _error(error, request)

    return router


def create_standin_app(store: Store, secret_keys: Sequence[str]) -> FastAPI:
    """The stand-in as one ASGI app: the API under /v1 and the checkout page under /c/pay."""
    app = FastAPI(title="creditrail's local stand-in for Stripe", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    app.include_router(create_api_router(store, secret_keys))
    app.include_router(page_router)
    return app
