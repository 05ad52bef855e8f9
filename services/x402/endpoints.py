"""Buying credits over x402: ``POST /v1/x402/credits``. No key: the payment proves itself, and the wallet that pays
is the buyer (and, unless another is named, the beneficiary).

Without a payment the answer is a 402 with the offer in ``PAYMENT-REQUIRED`` (x402 v2) and in the body (v1's shape,
for v1 clients; ``?x402_version=1`` leaves the v2 header out, for clients that would otherwise prefer it). With a
payment (``PAYMENT-SIGNATURE``, v2, or ``X-PAYMENT``, v1) it is a 200 with ``PAYMENT-RESPONSE`` (v1:
``X-PAYMENT-RESPONSE``) and the lot and balance, or a 402 whose ``code`` says why the payment was refused.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from x402.http.constants import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    X_PAYMENT_HEADER,
    X_PAYMENT_RESPONSE_HEADER,
)
from x402.http.utils import encode_payment_required_header, encode_payment_response_header

from chain.errors import ChainRpcError
from services.api.deps import EngineDep, SettingsDep
from services.core.settings import Settings
from services.x402.errors import ChainUnavailable, X402Off
from services.x402.flows.purchase import OfferAnswer, X402Rail, build_rail, purchase
from services.x402.schemas import X402PurchaseIn
from services.x402.service import PurchaseRequest

router = APIRouter(prefix="/v1/x402", tags=["x402"])

EXPOSED_HEADERS = ", ".join((PAYMENT_REQUIRED_HEADER, PAYMENT_RESPONSE_HEADER, X_PAYMENT_RESPONSE_HEADER))
_rail_lock = threading.Lock()


def app_rail(app: Any, settings: Settings) -> X402Rail | None:
    """The app's x402 rail, built from its settings on first use (a test may set ``app.state.x402_rail``); None
    when x402 is off."""
    rail: X402Rail | None = getattr(app.state, "x402_rail", None)
    if rail is None and not getattr(app.state, "x402_off", False):
        with _rail_lock:
            rail = getattr(app.state, "x402_rail", None) or build_rail(settings)
            if rail is not None:
                app.state.x402_rail = rail
            else:
                app.state.x402_off = True  # settings do not change while the process runs
    return rail


def rail_of(request: Request, settings: Settings) -> X402Rail:
    """The app's x402 rail; a 409 ``x402_not_configured`` when x402 is off."""
    rail = app_rail(request.app, settings)
    if rail is None:
        raise X402Off(
            "x402 is off: configure the USDC rail and a facilitator "
            "(CREDITRAIL_X402_FACILITATOR_URL or CREDITRAIL_X402_RELAYER_KEY)"
        )
    return rail


@router.post("/credits", status_code=200)
def buy_credits(
    body: X402PurchaseIn,
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    x402_version: Annotated[int, Query(ge=1, le=2)] = 2,
    payment_signature: Annotated[str | None, Header(alias=PAYMENT_SIGNATURE_HEADER)] = None,
    x_payment: Annotated[str | None, Header(alias=X_PAYMENT_HEADER)] = None,
) -> JSONResponse:
    """Offer (402), or settle the payment sent with the request and mint the credits (200)."""
    rail = rail_of(request, settings)
    header: tuple[str, str] | None = None
    if payment_signature:
        header = (PAYMENT_SIGNATURE_HEADER, payment_signature)
    elif x_payment:
        header = (X_PAYMENT_HEADER, x_payment)
    purchase_request = PurchaseRequest(
        credits=body.credits,
        wallet_address=body.wallet_address,
        beneficiary_wallet=body.beneficiary_wallet,
        beneficiary_account_id=body.beneficiary_account_id,
    )
    try:
        answer = purchase(engine, rail, purchase_request, payment_header=header, resource=str(request.url))
    except ChainRpcError as exc:
        raise ChainUnavailable("a chain's node did not answer; send the same request again", method=exc.method) from exc
    if isinstance(answer, OfferAnswer):
        headers = {"Access-Control-Expose-Headers": EXPOSED_HEADERS}
        if x402_version == 2 and not (header is not None and header[0] == X_PAYMENT_HEADER):
            headers[PAYMENT_REQUIRED_HEADER] = encode_payment_required_header(answer.payment_required())
        return JSONResponse(status_code=402, content=answer.v1_body(), headers=headers)
    response_header = PAYMENT_RESPONSE_HEADER if answer.version == 2 else X_PAYMENT_RESPONSE_HEADER
    return JSONResponse(
        status_code=200,
        content=answer.body,
        headers={
            response_header: encode_payment_response_header(answer.settle_response),
            "Access-Control-Expose-Headers": EXPOSED_HEADERS,
        },
    )
