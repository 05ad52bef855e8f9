"""Clawback and reinstatement: a refund or lost dispute takes credits back from the lot it minted.

Taken, in order: what is left of the lot unreserved; then what of it expired (reversing that breakage, as those
credits were never used); the rest was spent and becomes debt, which the next mint repays first. A won dispute
reinstates: it cancels the debt first, and puts the rest back on the lot; on a lot whose time has passed, what it
puts back expires at once, in an expiry transaction of its own (so the expiry job takes a lot's remainder once)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from services.core.clock import utcnow
from services.core.errors import Conflict
from services.core.metrics import ledger_operation
from services.ledger import repository as repo
from services.ledger.common import check_replay, fingerprint, lock_customer, movement_row, require_amount
from services.ledger.errors import LotNotFound, ReinstatementExceedsClawback
from services.ledger.models import MovementKind, TransactionKind
from services.ledger.system_accounts import SystemAccount


class ClawbackExceedsLot(Conflict):
    code = "clawback_exceeds_lot"


@dataclass(frozen=True, slots=True)
class ClawbackResult:
    transaction_id: int
    lot_id: int
    amount_credits: int
    # Taken from (or, on reinstatement, given back to) the lot's remainder.
    from_lot_credits: int
    # Taken back from breakage (credits of the lot that had expired).
    from_breakage_credits: int
    # Booked as debt (or, on reinstatement, debt cancelled).
    debt_credits: int
    replayed: bool


def _replayed(session: Session, transaction_id: int, lot_id: int, amount_credits: int) -> ClawbackResult:
    details = repo.get_transaction(session, transaction_id).details
    return ClawbackResult(
        transaction_id,
        lot_id,
        amount_credits,
        int(details.get("from_lot_credits", 0)),
        int(details.get("from_breakage_credits", 0)),
        int(details.get("debt_credits", 0)),
        replayed=True,
    )


@ledger_operation("clawback")
def clawback(
    session: Session,
    *,
    lot_id: int,
    amount_credits: int,
    idempotency_key: str,
    reason: str,
    now: datetime | None = None,
) -> ClawbackResult:
    """Take ``amount_credits`` back from a lot: from what is left unreserved, the rest into debt."""
    require_amount(amount_credits)
    now = now or utcnow()
    lot = repo.get_lot(session, lot_id)
    if lot is None:
        raise LotNotFound(f"lot {lot_id} not found", lot_id=lot_id)
    key = f"clawback:{idempotency_key}"
    request_hash = fingerprint(lot=lot_id, credits=amount_credits)
    locked = lock_customer(session, lot.account_id, key)
    replay_of = check_replay(locked, request_hash, key)
    if replay_of is not None:
        return _replayed(session, replay_of, lot_id, amount_credits)
    lot = repo.get_lot(session, lot_id)
    if amount_credits > lot.credits - lot.clawed_back_credits:
        raise ClawbackExceedsLot(
            f"lot {lot_id} has {lot.credits - lot.clawed_back_credits} credits left to claw back",
            lot_id=lot_id,
        )
    from_lot = min(amount_credits, lot.remaining_credits - lot.reserved_credits)
    from_breakage = min(amount_credits - from_lot, lot.expired_credits)
    into_debt = amount_credits - from_lot - from_breakage
    legs = [(lot.account_id, -(from_lot + into_debt)), (SystemAccount.CLAWBACKS, amount_credits)]
    if from_breakage:
        legs.append((SystemAccount.BREAKAGE, -from_breakage))
    txn_id = repo.insert_transaction(
        session,
        kind=TransactionKind.CLAWBACK,
        idempotency_key=key,
        request_hash=request_hash,
        account_id=lot.account_id,
        created_at=now,
        legs=[(account, amount) for account, amount in legs if amount],
        description=reason,
        details={
            "lot_id": lot_id,
            "reason": reason,
            "from_lot_credits": from_lot,
            "from_breakage_credits": from_breakage,
            "debt_credits": into_debt,
        },
    )
    if from_lot:
        repo.change_remaining(session, [(lot_id, from_lot)])
        repo.insert_movements(session, [movement_row(lot_id, txn_id, MovementKind.CLAWBACK, -from_lot, now)])
    repo.update_lot(
        session,
        lot_id,
        clawed_back_credits=lot.clawed_back_credits + amount_credits,
        expired_credits=lot.expired_credits - from_breakage,
    )
    if into_debt:
        repo.set_debt(session, lot.account_id, locked.debt_credits + into_debt)
    return ClawbackResult(txn_id, lot_id, amount_credits, from_lot, from_breakage, into_debt, False)


@ledger_operation("reinstate")
def reinstate(
    session: Session,
    *,
    lot_id: int,
    amount_credits: int,
    idempotency_key: str,
    reason: str,
    now: datetime | None = None,
) -> ClawbackResult:
    """Give back clawed-back credits: first cancelling the account's debt, the rest back onto the lot (and to
    breakage at once, if the lot's time has passed)."""
    require_amount(amount_credits)
    now = now or utcnow()
    lot = repo.get_lot(session, lot_id)
    if lot is None:
        raise LotNotFound(f"lot {lot_id} not found", lot_id=lot_id)
    key = f"reinstatement:{idempotency_key}"
    request_hash = fingerprint(lot=lot_id, credits=amount_credits)
    locked = lock_customer(session, lot.account_id, key)
    replay_of = check_replay(locked, request_hash, key)
    if replay_of is not None:
        return _replayed(session, replay_of, lot_id, amount_credits)
    lot = repo.get_lot(session, lot_id)
    if amount_credits > lot.clawed_back_credits:
        raise ReinstatementExceedsClawback(
            f"lot {lot_id} has {lot.clawed_back_credits} clawed-back credits to reinstate", lot_id=lot_id
        )
    debt_cancelled = min(locked.debt_credits, amount_credits)
    to_lot = amount_credits - debt_cancelled
    txn_id = repo.insert_transaction(
        session,
        kind=TransactionKind.REINSTATEMENT,
        idempotency_key=key,
        request_hash=request_hash,
        account_id=lot.account_id,
        created_at=now,
        legs=[(SystemAccount.CLAWBACKS, -amount_credits), (lot.account_id, amount_credits)],
        description=reason,
        details={
            "lot_id": lot_id,
            "reason": reason,
            "from_lot_credits": to_lot,
            "debt_credits": debt_cancelled,
        },
    )
    if to_lot:
        repo.change_remaining(session, [(lot_id, -to_lot)])
        repo.insert_movements(session, [movement_row(lot_id, txn_id, MovementKind.REINSTATEMENT, to_lot, now)])
        if lot.expires_at <= now:
            _expire_reinstated(session, lot.account_id, lot_id, to_lot, key, txn_id, now)
    repo.update_lot(session, lot_id, clawed_back_credits=lot.clawed_back_credits - amount_credits)
    if debt_cancelled:
        repo.set_debt(session, lot.account_id, locked.debt_credits - debt_cancelled)
    return ClawbackResult(txn_id, lot_id, amount_credits, to_lot, 0, debt_cancelled, False)


def _expire_reinstated(
    session: Session, account_id: int, lot_id: int, credits: int, key: str, reinstatement_id: int, now: datetime
) -> None:
    """Credits reinstated on a lot whose time has passed go to breakage at once."""
    expiry_txn_id = repo.insert_transaction(
        session,
        kind=TransactionKind.EXPIRY,
        idempotency_key=f"expiry:{key}",
        account_id=account_id,
        created_at=now,
        legs=[(account_id, -credits), (SystemAccount.BREAKAGE, credits)],
        details={"lot_id": lot_id, "reinstatement_transaction_id": reinstatement_id},
    )
    repo.expire_from_lots(session, [(lot_id, credits)])
    repo.insert_movements(session, [movement_row(lot_id, expiry_txn_id, MovementKind.EXPIRY, -credits, now)])
