"""Holds and charges paid for over x402 in one retry: ASGI middleware the app installs inside the request guard (so the
caller is authenticated and its principal is in the scope).

- A hold or charge refused for lack of credits (402 ``insufficient_credits``, whose details give the
  ``shortfall_credits``) gets a ``PAYMENT-REQUIRED`` header (x402 v2): the smallest pack covering the shortfall, paid
  to the account's deposit address, on every configured chain whose token supports EIP-3009. The body is the
  ledger's, unchanged.
- The same request sent again with a payment (``PAYMENT-SIGNATURE``, or v1's ``X-PAYMENT``) is settled and its pack
  minted for the caller's account before the operation runs (services.x402.flows.topup), outside the operation's unit
  of work; the operation then runs under its own Idempotency-Key and its answer carries ``PAYMENT-RESPONSE``. A payment
  refused (another amount than offered, a failed settlement ...) is a 402 with its reason's code and a fresh offer, and
  the operation does not run. The same payment sent again gets its first settlement (one mint), and the operation's
  Idempotency-Key its first result.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from x402.http.constants import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    X_PAYMENT_HEADER,
    X_PAYMENT_RESPONSE_HEADER,
)
from x402.http.utils import encode_payment_required_header, encode_payment_response_header

from chain.errors import ChainRpcError
from services.api.deps import PRINCIPAL_SCOPE_KEY, get_idempotency_key
from services.api.errors import database_unavailable_response, error_body
from services.core.clock import utcnow
from services.core.db import is_database_unavailable
from services.core.errors import CreditrailError
from services.ledger.errors import InsufficientCredits
from services.ledger.schemas import ChargeIn, HoldIn
from services.x402.endpoints import EXPOSED_HEADERS, app_rail
from services.x402.errors import ChainUnavailable
from services.x402.flows.purchase import OfferAnswer, X402Rail
from services.x402.flows.topup import pay_for_operation, topup_offer

log = logging.getLogger("creditrail.x402")

# The operations that draw credits, and what each takes: a hold and a charge.
OPERATIONS: dict[str, type[HoldIn] | type[ChargeIn]] = {"/v1/holds": HoldIn, "/v1/charges": ChargeIn}

Header = tuple[bytes, bytes]


def _header(name: str, value: str) -> Header:
    return name.lower().encode("latin-1"), value.encode("latin-1")


class X402TopUp:
    """Pure ASGI middleware; see the module's docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in OPERATIONS:
            await self.app(scope, receive, send)
            return
        account_id = getattr(scope.get(PRINCIPAL_SCOPE_KEY), "account_id", None)
        app = scope["app"]
        rail = getattr(app.state, "x402_rail", None)
        if rail is None and account_id is not None:
            rail = await run_in_threadpool(app_rail, app, app.state.settings)
        if account_id is None or rail is None:
            await self.app(scope, receive, send)
            return
        resource = str(Request(scope).url)
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        payment_header = None
        if headers.get(PAYMENT_SIGNATURE_HEADER.lower()):
            payment_header = (PAYMENT_SIGNATURE_HEADER, headers[PAYMENT_SIGNATURE_HEADER.lower()])
        elif headers.get(X_PAYMENT_HEADER.lower()):
            payment_header = (X_PAYMENT_HEADER, headers[X_PAYMENT_HEADER.lower()])
        offering = _Offering(app, rail, account_id, resource)
        if payment_header is None:
            await self.app(scope, receive, offering.send_to(send, []))
            return

        body, receive = await _buffered(receive)
        amount_credits = _operation_credits(scope["path"], body, headers)
        if amount_credits is None:
            # Not a hold or charge the endpoint will accept: it says why, and nothing is settled.
            await self.app(scope, receive, send)
            return
        try:
            answer = await run_in_threadpool(
                pay_for_operation,
                app.state.engine,
                rail,
                account_id,
                amount_credits,
                payment_header=payment_header,
                resource=resource,
            )
        except ChainRpcError as exc:
            error = ChainUnavailable("a chain's node did not answer; send the same request again", method=exc.method)
            await _error_response(error.status_code, error.code, error.message, error.details)(scope, receive, send)
            return
        except CreditrailError as exc:
            await _error_response(exc.status_code, exc.code, exc.message, exc.details)(scope, receive, send)
            return
        except DBAPIError as exc:
            if not is_database_unavailable(exc):
                raise
            await database_unavailable_response(scope["method"], scope["path"], exc)(scope, receive, send)
            return
        if isinstance(answer, OfferAnswer):
            await _refusal(answer)(scope, receive, send)
            return
        extra: list[Header] = []
        if answer is not None:
            name = PAYMENT_RESPONSE_HEADER if answer.version == 2 else X_PAYMENT_RESPONSE_HEADER
            extra = [
                _header(name, encode_payment_response_header(answer.settle_response)),
                _header("Access-Control-Expose-Headers", EXPOSED_HEADERS),
            ]
        await self.app(scope, receive, offering.send_to(send, extra))


class _Offering:
    """Adds the offer to a 402 ``insufficient_credits`` answer (and ``extra`` headers to any answer)."""

    def __init__(self, app: Any, rail: X402Rail, account_id: int, resource: str) -> None:
        # The application, whose state holds the engine.
        self.app = app
        self.rail = rail
        self.account_id = account_id
        self.resource = resource

    def send_to(self, send: Send, extra: list[Header]) -> Send:
        held: Message | None = None
        chunks: list[bytes] = []

        async def sending(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
                if message["status"] == InsufficientCredits.status_code:
                    held = message  # the body decides whether an offer goes with it
                    return
            elif message["type"] == "http.response.body" and held is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = b"".join(chunks)
                await send(await self._with_offer(held, body))
                held = None
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        return sending

    async def _with_offer(self, start: Message, body: bytes) -> Message:
        shortfall = _shortfall_credits(body)
        if shortfall is None:
            return start
        try:
            answer = await run_in_threadpool(
                topup_offer,
                self.app.state.engine,
                self.rail,
                self.account_id,
                shortfall,
                resource=self.resource,
                now=utcnow(),
            )
        except (ChainRpcError, CreditrailError, DBAPIError) as exc:
            # The 402 stands without an offer: the account can still buy credits another way.
            log.warning("x402: no offer for a shortfall of %s credits: %s", shortfall, exc)
            return start
        if answer is None:
            return start
        headers = [name_value for name_value in start["headers"] if name_value[0] != b"access-control-expose-headers"]
        headers += [
            _header(PAYMENT_REQUIRED_HEADER, encode_payment_required_header(answer.payment_required())),
            _header("Access-Control-Expose-Headers", EXPOSED_HEADERS),
        ]
        return {**start, "headers": headers}


def _refusal(answer: OfferAnswer) -> JSONResponse:
    """A 402 for a payment refused: its reason's code, and the offer as it stands now."""
    refused = answer.refused
    code, message, details = "payment_required", "payment required", {}
    if refused is not None:
        code, message, details = refused.reason, refused.message, dict(refused.details)
    details.update(credits=answer.credits, amount_usdc_units=answer.amount_usdc_units)
    response = _error_response(402, code, message, details)
    response.headers[PAYMENT_REQUIRED_HEADER] = encode_payment_required_header(answer.payment_required())
    response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    return response


def _error_response(status: int, code: str, message: str, details: dict[str, Any]) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _operation_credits(path: str, body: bytes, headers: dict[str, str]) -> int | None:
    """The credits the hold or charge asks for, when the endpoint will accept the request as sent (its body and
    its Idempotency-Key); else None, and the endpoint says what is wrong."""
    try:
        get_idempotency_key(headers.get("idempotency-key"))
        operation = OPERATIONS[path].model_validate_json(body)
    except (CreditrailError, ValidationError):
        return None
    return operation.amount_credits


def _shortfall_credits(body: bytes) -> int | None:
    """The credits short, from a 402 ``insufficient_credits`` body (None for any other answer)."""
    parsed = _json_object(body)
    error = None if parsed is None else parsed.get("error")
    if not isinstance(error, dict) or error.get("code") != InsufficientCredits.code:
        return None
    details = error.get("details")
    shortfall = details.get("shortfall_credits") if isinstance(details, dict) else None
    return shortfall if type(shortfall) is int and shortfall > 0 else None


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The request's body (the guard has read it already, so this does not wait on the client) and a ``receive``
    that hands it over again."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replayed
