"""USDC deposits in the purchase history's rail-neutral shape."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from services.core.money import usdc_units_to_credits
from services.ledger.history import HistoryItem, usdc_purchase_label
from services.ledger.models import Rail
from services.usdc import repository as repo
from services.usdc.crediting import deposit_reference
from services.usdc.models import DepositStatus


def confirmations_so_far(status: str, block_number: int, head_block: int | None) -> int:
    """Blocks on top of the deposit's block at the listener's last poll (what the chain's ``confirmations`` counts:
    a deposit is credited once this reaches it); 0 for an orphaned deposit."""
    if head_block is None or status == DepositStatus.ORPHANED:
        return 0
    return max(0, head_block - block_number)


class ChainHeads:
    """The head each chain's listener last saw, read once per chain per request."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._heads: dict[int, int | None] = {}

    def confirmations(self, row: Any) -> int:
        if row.chain_id not in self._heads:
            cursor = repo.get_cursor(self.session, row.chain_id)
            self._heads[row.chain_id] = None if cursor is None else cursor.head_block
        return confirmations_so_far(row.status, row.block_number, self._heads[row.chain_id])


def deposit_history(
    session: Session, account_id: int, *, limit: int, before: datetime | None = None, before_id: int | None = None
) -> list[HistoryItem]:
    """The account's deposits, newest first: pending ones with their confirmations so far, then credited."""
    heads = ChainHeads(session)
    items = []
    for row in repo.account_deposits(session, account_id, limit, before=before, before_id=before_id):
        pending = row.status in (DepositStatus.OBSERVED, DepositStatus.CONFIRMED)
        items.append(
            HistoryItem(
                rail=Rail.USDC,
                id=row.id,
                reference=deposit_reference(row.chain_id, row.tx_hash, row.log_index),
                amount_cents=None,
                amount_usdc_units=row.amount_usdc_units,
                # Until it is credited: what the deposit alone is worth (a carried remainder may add to it).
                credits=row.credits_minted
                if row.credits_minted is not None
                else usdc_units_to_credits(row.amount_usdc_units)[0],
                status="pending" if pending else row.status,
                created_at=row.observed_at,
                completed_at=row.credited_at,
                lot_id=row.lot_id,
                refunded_cents=None,
                failure_code=None,
                failure_message=None,
                details={
                    "chain_id": row.chain_id,
                    "block_number": row.block_number,
                    "confirmations": heads.confirmations(row),
                    "via": row.via,
                    "label": usdc_purchase_label(row.via),
                },
            )
        )
    return items
