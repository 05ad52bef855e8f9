"""Purchase history: every rail's purchases in one rail-neutral shape, merged newest first.

Each rail turns its own records into ``HistoryItem`` (card purchases, USDC deposits); ``merge`` pages through them
together with one cursor: the ``created_at`` of the last item seen, with its rail and id to break ties.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class HistoryItem:
    rail: str
    id: int
    reference: str | None
    amount_cents: int | None
    amount_usdc_units: int | None
    credits: int
    status: str
    created_at: datetime
    completed_at: datetime | None
    lot_id: int | None
    refunded_cents: int | None
    failure_code: str | None
    failure_message: str | None
    details: dict[str, Any]

    @property
    def order_key(self) -> tuple[datetime, str, int]:
        return (self.created_at, self.rail, self.id)


VIA_X402 = "x402"
"""How a USDC purchase paid over x402 (settled by us, or claimed by its transaction) is marked: the deposit's
``via``, and the ``via`` of its lot's details when it was so marked at crediting."""


def usdc_purchase_label(via: str | None) -> str:
    """How people see a USDC purchase: "USDC", or "USDC via x402" (history, receipts, the credits page, reports)."""
    return "USDC via x402" if via == VIA_X402 else "USDC"


def merge(sources: Iterable[list[HistoryItem]], *, limit: int) -> list[HistoryItem]:
    """The newest ``limit`` items of every source (each already newest first)."""
    return list(heapq.merge(*sources, key=lambda item: item.order_key, reverse=True))[:limit]
