"""The events the rails emit, one function each: what the event carries and its dedupe key, decided here once.

Each is called in the transaction of the change, beside the receipt or notice the same change writes, and keyed by
the same ids (the lot minted, the ledger transaction that took credits back), so that whatever is retried, and
whichever way a change is reached (a webhook delivered twice, the sync job), one change makes one event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlmodel import Session

from services.events.models import EventType
from services.events.service import record_event
from services.outbox.receipts import receipt_number


class DepositTransfer(NamedTuple):
    """The USDC deposit an event is about: its account, and the Transfer log that made it."""

    account_id: int
    deposit_id: int
    chain_id: int
    tx_hash: str
    log_index: int

    @classmethod
    def of(cls, deposit: Any) -> DepositTransfer:
        """From a deposit's row."""
        return cls(deposit.account_id, deposit.id, deposit.chain_id, deposit.tx_hash, deposit.log_index)

    def transfer_data(self) -> dict[str, Any]:
        return {"chain_id": self.chain_id, "tx_hash": self.tx_hash, "log_index": self.log_index}


def purchase_completed_key(lot_id: int) -> str:
    return f"{EventType.PURCHASE_COMPLETED}:lot:{lot_id}"


def deposit_credited_key(lot_id: int) -> str:
    return f"{EventType.DEPOSIT_CREDITED}:lot:{lot_id}"


def refund_clawed_back_key(transaction_id: int) -> str:
    return f"{EventType.REFUND_CLAWED_BACK}:txn:{transaction_id}"


def dispute_reinstated_key(transaction_id: int) -> str:
    return f"{EventType.DISPUTE_REINSTATED}:txn:{transaction_id}"


def deposit_reversed_key(transaction_id: int) -> str:
    return f"{EventType.DEPOSIT_REVERSED}:txn:{transaction_id}"


def record_purchase_completed(
    session: Session,
    *,
    account_id: int,
    purchase_id: int,
    kind: str,
    pack: str,
    lot_id: int,
    amount_credits: int,
    amount_usd_cents: int,
    now: datetime,
) -> bool:
    """A card purchase (a pack bought on Checkout, or an auto-recharge) minted ``lot_id``."""
    return record_event(
        session,
        event_type=EventType.PURCHASE_COMPLETED,
        account_id=account_id,
        data={
            "purchase_id": purchase_id,
            "kind": kind,
            "pack": pack,
            "rail": "card",
            "lot_id": lot_id,
            "amount_credits": amount_credits,
            "amount_usd_cents": amount_usd_cents,
            "receipt_number": receipt_number(lot_id, now),
        },
        dedupe_key=purchase_completed_key(lot_id),
        now=now,
    )


def record_deposit_credited(
    session: Session,
    deposit: DepositTransfer,
    *,
    usdc_units: int,
    lot_id: int,
    amount_credits: int,
    now: datetime,
) -> bool:
    """A confirmed USDC deposit minted ``lot_id`` (``usdc_units``: the transfer's amount, in USDC base units)."""
    return record_event(
        session,
        event_type=EventType.DEPOSIT_CREDITED,
        account_id=deposit.account_id,
        data={
            "deposit_id": deposit.deposit_id,
            "rail": "usdc",
            **deposit.transfer_data(),
            # As text: a transfer's amount may be beyond what a JSON number holds exactly.
            "usdc_units": str(usdc_units),
            "lot_id": lot_id,
            "amount_credits": amount_credits,
            "receipt_number": receipt_number(lot_id, now),
        },
        dedupe_key=deposit_credited_key(lot_id),
        now=now,
    )


def record_refund_clawed_back(
    session: Session,
    *,
    account_id: int,
    purchase_id: int,
    lot_id: int,
    kind: str,
    transaction_id: int,
    amount_credits: int,
    amount_usd_cents: int,
    reason: str,
    now: datetime,
) -> bool:
    """A card refund or dispute (``kind``) took ``amount_credits`` back from ``lot_id`` by ``transaction_id``."""
    return record_event(
        session,
        event_type=EventType.REFUND_CLAWED_BACK,
        account_id=account_id,
        data={
            "purchase_id": purchase_id,
            "lot_id": lot_id,
            "kind": kind,
            "transaction_id": transaction_id,
            "amount_credits": amount_credits,
            "amount_usd_cents": amount_usd_cents,
            "reason": reason,
        },
        dedupe_key=refund_clawed_back_key(transaction_id),
        now=now,
    )


def record_dispute_reinstated(
    session: Session,
    *,
    account_id: int,
    purchase_id: int,
    lot_id: int,
    dispute_id: str,
    status: str,
    transaction_id: int,
    amount_credits: int,
    now: datetime,
) -> bool:
    """A dispute ended in the purchase's favour (``status``: won, ...): the ``amount_credits`` clawed back for it
    were given back to ``lot_id`` by ``transaction_id``."""
    return record_event(
        session,
        event_type=EventType.DISPUTE_REINSTATED,
        account_id=account_id,
        data={
            "purchase_id": purchase_id,
            "lot_id": lot_id,
            "dispute_id": dispute_id,
            "status": status,
            "transaction_id": transaction_id,
            "amount_credits": amount_credits,
        },
        dedupe_key=dispute_reinstated_key(transaction_id),
        now=now,
    )


def record_deposit_reversed(
    session: Session,
    deposit: DepositTransfer,
    *,
    lot_id: int,
    transaction_id: int,
    amount_credits: int,
    now: datetime,
) -> bool:
    """A credited deposit's block left the chain (a reorg deeper than its confirmations): ``amount_credits`` were
    taken back from ``lot_id`` by ``transaction_id``."""
    return record_event(
        session,
        event_type=EventType.DEPOSIT_REVERSED,
        account_id=deposit.account_id,
        data={
            "deposit_id": deposit.deposit_id,
            **deposit.transfer_data(),
            "lot_id": lot_id,
            "transaction_id": transaction_id,
            "amount_credits": amount_credits,
        },
        dedupe_key=deposit_reversed_key(transaction_id),
        now=now,
    )
