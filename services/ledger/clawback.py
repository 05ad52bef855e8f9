"""Clawback and reinstatement: a refund or lost dispute takes credits back from the lot it minted.

Taken, in order: what is left of the lot unreserved; then what of it expired (reversing that breakage, as those
credits were never used); the rest was spent and becomes debt, which the next mint repays first. A won dispute
reinstates: it cancels the debt first, and puts the rest back on the lot; on a lot whose time has passed, what it
puts back expires at once, in an expiry transaction of its own (so the expiry job takes a lot's remainder once)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from services.core.clock import utcnow
from services.core.errors import Conflict
from services.core.metrics import ledger_operation
from services.ledger import repository as repo
from services.ledger.common import fingerprint, require_amount
from services.ledger.errors import LotNotFound, ReinstatementExceedsClawback
from services.ledger.plans import (
    ClawbackPlan,
    clawback_key,
    plan_clawback,
    plan_reinstatement,
    reinstatement_key,
    replay_of,
    require_customer,
)
from services.ledger.store import LedgerStore, store_for


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
    txn = repo.get_transaction(session, transaction_id)
    assert txn is not None  # found by its idempotency key, in this transaction
    details = txn.details
    return ClawbackResult(
        transaction_id,
        lot_id,
        amount_credits,
        int(details.get("from_lot_credits", 0)),
        int(details.get("from_breakage_credits", 0)),
        int(details.get("debt_credits", 0)),
        replayed=True,
    )


def _locked_lot(
    session: Session, store: LedgerStore, lot_id: int, key: str, request_hash: str
) -> tuple[Any, int, int | None]:
    """The lot read again under its account's lock, the account's debt, and the transaction to replay if the key
    was used before by the same request."""
    lot = repo.get_lot(session, lot_id)
    if lot is None:
        raise LotNotFound(f"lot {lot_id} not found", lot_id=lot_id)
    state = store.lock_account(lot.account_id, key)
    require_customer(lot.account_id, state.kind)
    existing = replay_of(state.existing, request_hash, key)
    return repo.get_lot(session, lot_id), state.debt_credits, None if existing is None else existing.transaction_id


def _result(store: LedgerStore, plan: ClawbackPlan, lot_id: int, amount_credits: int) -> ClawbackResult:
    transaction_id = store.write_clawback(plan)
    return ClawbackResult(transaction_id, lot_id, amount_credits, *plan.split, replayed=False)


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
    key, request_hash = clawback_key(idempotency_key), fingerprint(lot=lot_id, credits=amount_credits)
    store = store_for(session)
    lot, debt_credits, replay = _locked_lot(session, store, lot_id, key, request_hash)
    if replay is not None:
        return _replayed(session, replay, lot_id, amount_credits)
    if amount_credits > lot.credits - lot.clawed_back_credits:
        raise ClawbackExceedsLot(
            f"lot {lot_id} has {lot.credits - lot.clawed_back_credits} credits left to claw back",
            lot_id=lot_id,
        )
    plan = plan_clawback(lot, amount_credits, key, request_hash, reason, debt_credits, now or utcnow())
    return _result(store, plan, lot_id, amount_credits)


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
    key, request_hash = reinstatement_key(idempotency_key), fingerprint(lot=lot_id, credits=amount_credits)
    store = store_for(session)
    lot, debt_credits, replay = _locked_lot(session, store, lot_id, key, request_hash)
    if replay is not None:
        return _replayed(session, replay, lot_id, amount_credits)
    if amount_credits > lot.clawed_back_credits:
        raise ReinstatementExceedsClawback(
            f"lot {lot_id} has {lot.clawed_back_credits} clawed-back credits to reinstate", lot_id=lot_id
        )
    plan = plan_reinstatement(lot, amount_credits, key, request_hash, reason, debt_credits, now or utcnow())
    return _result(store, plan, lot_id, amount_credits)
