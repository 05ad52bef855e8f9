"""The customer's purchase history over HTTP: card purchases and USDC deposits in one list, newest first."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from services.api.deps import CustomerKey, SessionDep
from services.card.purchases import history as card_history
from services.card.schemas import HistoryItemOut, HistoryPage
from services.ledger.history import merge
from services.usdc.history import deposit_history

router = APIRouter(prefix="/v1", tags=["purchases"])

# Includes every item at the cursor's instant; the merge then keeps only those older than the cursor itself.
_WHOLE_INSTANT = 2**63 - 1


@router.get("/purchases")
def purchase_history(
    session: SessionDep,
    principal: CustomerKey,
    before: AwareDatetime | None = None,
    before_rail: Literal["card", "usdc"] | None = None,
    before_id: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> HistoryPage:
    """Every purchase of the account on every rail, newest first: rail, amount paid, credits, status, times and the
    lot minted. Page back with the previous page's ``next_before``, ``next_before_rail`` and ``next_before_id``."""
    assert principal.account_id is not None
    account_id = principal.account_id

    def rail_cursor(rail: str) -> int | None:
        if before is None:
            return None
        return before_id if before_rail == rail and before_id is not None else _WHOLE_INSTANT

    card = card_history(session, account_id, limit=limit + 1, before=before, before_id=rail_cursor("card"))
    usdc = deposit_history(session, account_id, limit=limit + 1, before=before, before_id=rail_cursor("usdc"))
    items = merge([card, usdc], limit=2 * limit + 2)
    if before is not None:
        cursor = (before, before_rail or "~", before_id or _WHOLE_INSTANT)
        items = [item for item in items if item.order_key < cursor]
    data = [HistoryItemOut(**asdict(item)) for item in items[:limit]]
    full = len(data) == limit
    return HistoryPage(
        data=data,
        next_before=data[-1].created_at if full else None,
        next_before_rail=data[-1].rail if full else None,
        next_before_id=data[-1].id if full else None,
    )
