"""The customer's purchase history over HTTP: card purchases and USDC deposits in one list, newest first."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from services.api.deps import CustomerOrSession, SessionDep
from services.api.pages import (
    Cursor,
    InvalidCursor,
    Page,
    composite_cursor,
    id_cursor,
    page_of,
    parse_composite_cursor,
)
from services.card.purchases import history as card_history
from services.card.schemas import HistoryItemOut
from services.ledger.history import merge
from services.ledger.repository import lots
from services.outbox.links import receipt_url
from services.outbox.receipts import receipt_number
from services.usdc.history import deposit_history

router = APIRouter(prefix="/v1", tags=["purchases"])

# Includes every item at the cursor's instant; the merge then keeps only those older than the cursor itself.
_WHOLE_INSTANT = 2**63 - 1
RAILS = ("card", "usdc")


class PurchaseOut(HistoryItemOut):
    # The printable receipt's page once the purchase minted its lot: a signed link (services.outbox.links) that opens
    # without a bearer token, in a new tab or from a mail.
    receipt_url: str | None = None


PurchasePage = Page[PurchaseOut]


@router.get("/purchases")
def purchase_history(
    request: Request,
    session: SessionDep,
    principal: CustomerOrSession,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> PurchasePage:
    """Every purchase of the account on every rail, newest first: rail, amount paid, credits, status, times and the
    lot minted."""
    assert principal.account_id is not None
    account_id = principal.account_id
    before: datetime | None = None
    before_rail: str | None = None
    before_id: int | None = None
    if cursor is not None:
        before, (before_rail, raw_id) = parse_composite_cursor(cursor, 2)
        before_id = id_cursor(raw_id)
        if before_rail not in RAILS:
            raise InvalidCursor("the cursor is not one this list gave", cursor=cursor[:40])

    def rail_cursor(rail: str) -> int | None:
        if before is None:
            return None
        return before_id if before_rail == rail and before_id is not None else _WHOLE_INSTANT

    card = card_history(session, account_id, limit=limit + 1, before=before, before_id=rail_cursor("card"))
    usdc = deposit_history(session, account_id, limit=limit + 1, before=before, before_id=rail_cursor("usdc"))
    items = merge([card, usdc], limit=2 * limit + 2)
    if before is not None:
        at = (before, before_rail or "~", before_id or _WHOLE_INSTANT)
        items = [item for item in items if item.order_key < at]
    lot_ids = [item.lot_id for item in items if item.lot_id is not None]
    credited = {
        row.id: row.credited_at
        for row in (
            session.execute(select(lots.c.id, lots.c.credited_at).where(lots.c.id.in_(lot_ids))) if lot_ids else []
        )
    }
    settings = request.app.state.settings

    def link(lot_id: int | None) -> str | None:
        if lot_id is None or lot_id not in credited:
            return None
        return receipt_url(settings, account_id, receipt_number(lot_id, credited[lot_id]))

    out = [PurchaseOut(**asdict(item), receipt_url=link(item.lot_id)) for item in items]
    return page_of(out, limit, lambda item: composite_cursor(item.created_at, item.rail, item.id))
