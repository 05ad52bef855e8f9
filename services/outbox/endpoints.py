"""Receipts over HTTP, as printable pages.

- ``GET /receipts/{receipt_number}?sig=...``: the link mails and the purchase history hand out
  (services.outbox.links). It opens with a valid signature and no bearer token (a mail client, a new tab), and also
  for the owner's own key or session. Anything else (no signature, a wrong one, another account's key) is 404
  ``receipt_not_found``, the same as a receipt that does not exist: the answer never tells which.
- ``GET /v1/receipts/{receipt_number}``: the same page for the API, by the owner's key or session.
- ``GET /receipts/{receipt_number}.pdf?sig=...`` and ``GET /v1/receipts/{receipt_number}.pdf``: the same receipt as
  a PDF (services.outbox.receipt_pdf), opened the same ways; the page links to it.
- ``GET /receipts/print.js``: the page's one script, its Print button.

The page's Content-Security-Policy allows nothing but its own style (by hash) and that script (same origin); it sends
no referrer (a signed link is not passed on to the block explorer it links to) and is not cached.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlmodel import Session

from services.api.deps import CustomerOrSession, EngineDep, SessionDep, customer_if_any
from services.core.db import unit_of_work, utc
from services.core.urls import public_url
from services.outbox.errors import ReceiptNotFound
from services.outbox.links import (
    PDF_SUFFIX,
    PRINT_SCRIPT_PATH,
    RECEIPT_PAGE_PATH,
    SIGNATURE_PARAM,
    receipt_url,
    signature_valid,
)
from services.outbox.receipt_pdf import receipt_pdf
from services.outbox.receipts import PRINT_CSS_HASH, Receipt, lot_of_receipt_number, receipt_for_lot, receipt_html

router = APIRouter(prefix="/v1", tags=["receipts"])
page_router = APIRouter(tags=["pages"], include_in_schema=False)

ReceiptNumber = Annotated[str, Path(min_length=1, max_length=40)]
# Not bounded here: a signature of any length that is not the receipt's is the same 404 (the URL's own bound holds).
Signature = Annotated[str | None, Query(alias=SIGNATURE_PARAM)]

PAGE_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src '{PRINT_CSS_HASH}'; script-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, no-store",
}
PRINT_SCRIPT = "document.getElementById('print').addEventListener('click', function () { window.print(); });\n"


def _receipt(session: Session, request: Request, number: str) -> Receipt:
    """The receipt a number names, or 404 (a malformed number, no such lot, a lot that has none, the wrong year)."""
    named = lot_of_receipt_number(number)
    receipt = (
        receipt_for_lot(
            session, request.app.state.settings, named[1], card_of_purchase=request.app.state.card_of_purchase
        )
        if named is not None
        else None
    )
    if named is None or receipt is None or utc(receipt.credited_at).year != named[0]:
        raise ReceiptNotFound("no such receipt", receipt_number=number)
    return receipt


def _page(request: Request, receipt: Receipt) -> HTMLResponse:
    settings = request.app.state.settings
    script = public_url(settings, PRINT_SCRIPT_PATH)
    pdf = receipt_url(settings, receipt.account_id, receipt.number, suffix=PDF_SUFFIX)
    return HTMLResponse(receipt_html(receipt, print_script_url=script, pdf_url=pdf), headers=PAGE_HEADERS)


def _pdf(receipt: Receipt) -> Response:
    headers = {
        "Content-Disposition": f'inline; filename="{receipt.number}.pdf"',
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store",
    }
    return Response(receipt_pdf(receipt), media_type="application/pdf", headers=headers)


def _owned(request: Request, engine: EngineDep, number: str, sig: str | None) -> Receipt:
    """The receipt, when the signature is its own or the caller's key or session is its owner's (checked after the
    receipt's own unit of work has closed); otherwise not found."""
    with unit_of_work(engine) as session:
        receipt = _receipt(session, request, number)
    if not signature_valid(request.app.state.settings, receipt.account_id, receipt.number, sig):
        owner = customer_if_any(request)
        if owner is None or owner.account_id != receipt.account_id:
            raise ReceiptNotFound("no such receipt", receipt_number=number)
    return receipt


@router.get("/receipts/{receipt_number}.pdf", response_class=Response)
def get_receipt_pdf(
    receipt_number: ReceiptNumber, request: Request, session: SessionDep, principal: CustomerOrSession
) -> Response:
    """The same receipt as a PDF."""
    receipt = _receipt(session, request, receipt_number)
    if receipt.account_id != principal.account_id:
        raise ReceiptNotFound("no such receipt", receipt_number=receipt_number)
    return _pdf(receipt)


@router.get("/receipts/{receipt_number}", response_class=HTMLResponse)
def get_receipt(
    receipt_number: ReceiptNumber, request: Request, session: SessionDep, principal: CustomerOrSession
) -> HTMLResponse:
    """The receipt of one of the account's card purchases or USDC deposits, as HTML with a print style; another
    account's receipt is not found (404), the same as one that does not exist."""
    receipt = _receipt(session, request, receipt_number)
    if receipt.account_id != principal.account_id:
        raise ReceiptNotFound("no such receipt", receipt_number=receipt_number)
    return _page(request, receipt)


@page_router.get(PRINT_SCRIPT_PATH)
def print_script() -> Response:
    return Response(
        PRINT_SCRIPT,
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@page_router.get(f"{RECEIPT_PAGE_PATH}/{{receipt_number}}{PDF_SUFFIX}")
def receipt_pdf_page(
    receipt_number: ReceiptNumber, request: Request, engine: EngineDep, sig: Signature = None
) -> Response:
    """A receipt's PDF from its signed link (the page's own signature), or for its owner; otherwise not found."""
    return _pdf(_owned(request, engine, receipt_number, sig))


@page_router.get(f"{RECEIPT_PAGE_PATH}/{{receipt_number}}", response_class=HTMLResponse)
def receipt_page(
    receipt_number: ReceiptNumber, request: Request, engine: EngineDep, sig: Signature = None
) -> HTMLResponse:
    """A receipt's page from its signed link, or for its owner's key or session; otherwise not found."""
    return _page(request, _owned(request, engine, receipt_number, sig))
