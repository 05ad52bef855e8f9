"""Receipts over HTTP: ``GET /v1/receipts/{receipt_number}``, the customer's own receipt as a printable page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse

from services.api.deps import CustomerOrSession, SessionDep
from services.core.db import utc
from services.outbox.errors import ReceiptNotFound
from services.outbox.receipts import lot_of_receipt_number, receipt_for_lot, receipt_html

router = APIRouter(prefix="/v1", tags=["receipts"])

ReceiptNumber = Annotated[str, Path(min_length=1, max_length=40)]


@router.get("/receipts/{receipt_number}", response_class=HTMLResponse)
def get_receipt(
    receipt_number: ReceiptNumber, request: Request, session: SessionDep, principal: CustomerOrSession
) -> str:
    """The receipt of one of the account's card purchases or USDC deposits, as HTML with a print style; another
    account's receipt is not found (404), the same as one that does not exist."""
    named = lot_of_receipt_number(receipt_number)
    receipt = receipt_for_lot(session, request.app.state.settings, named[1]) if named is not None else None
    if (
        named is None
        or receipt is None
        or receipt.account_id != principal.account_id
        or utc(receipt.credited_at).year != named[0]
    ):
        raise ReceiptNotFound("no such receipt", receipt_number=receipt_number)
    return receipt_html(receipt, page=True)
