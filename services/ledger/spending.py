"""Spending: one-shot charges and debit adjustments, drawn from the soonest-expiring lots first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from services.core.clock import utcnow
from services.core.errors import InvalidRequest
from services.core.metrics import ledger_operation
from services.ledger import repository as repo
from services.ledger.common import fingerprint, require_amount
from services.ledger.minting import adjustment_key
from services.ledger.models import MovementKind, TransactionKind
from services.ledger.plans import DrawRequest, plan_draw, replay_of, require_customer
from services.ledger.store import store_for
from services.ledger.system_accounts import SystemAccount


@dataclass(frozen=True, slots=True)
class SpendResult:
    transaction_id: int
    amount_credits: int
    # (lot id, credits) drawn, in draw-down order.
    draws: list[tuple[int, int]]
    created_at: datetime
    replayed: bool


def _replayed(session: Session, transaction_id: int, amount_credits: int) -> SpendResult:
    txn = repo.get_transaction(session, transaction_id)
    assert txn is not None  # found by its idempotency key, in this transaction
    draws = [(m.lot_id, -m.amount_credits) for m in repo.transaction_movements(session, transaction_id)]
    return SpendResult(transaction_id, amount_credits, draws, txn.created_at, replayed=True)


@ledger_operation("spend")
def spend(
    session: Session,
    *,
    account_id: int,
    amount_credits: int,
    idempotency_key: str,
    api_key_id: int | None = None,
    project: str | None = None,
    description: str | None = None,
    now: datetime | None = None,
) -> SpendResult:
    """Charge ``amount_credits`` at once (no hold). Idempotent by ``idempotency_key`` within the account."""
    require_amount(amount_credits)
    if not idempotency_key:
        raise InvalidRequest("an idempotency key is required", field="idempotency_key")
    request = DrawRequest(
        account_id=account_id,
        amount_credits=amount_credits,
        idempotency_key=f"spend:{account_id}:{idempotency_key}",
        request_hash=fingerprint(credits=amount_credits, project=project, description=description, api_key=api_key_id),
        kind=TransactionKind.SPEND,
        movement_kind=MovementKind.SPEND,
        counter_account_id=SystemAccount.REVENUE_USAGE,
        now=now or utcnow(),
        description=description,
        details={"project": project, "api_key_id": api_key_id} if (project or api_key_id) else None,
        api_key_id=api_key_id,
        project=project,
    )
    return draw(session, request)


@ledger_operation("debit")
def debit_adjustment(
    session: Session,
    *,
    account_id: int,
    amount_credits: int,
    idempotency_key: str,
    reason: str,
    actor: str,
    now: datetime | None = None,
) -> SpendResult:
    """An admin's negative correction, drawn like a spend into the adjustments account (no budget counts it). Its
    key shares one space with the positive corrections' (a key used for +13 is refused for -13)."""
    require_amount(amount_credits)
    if not reason.strip():
        raise InvalidRequest("an adjustment needs a reason")
    request = DrawRequest(
        account_id=account_id,
        amount_credits=amount_credits,
        idempotency_key=adjustment_key(account_id, idempotency_key),
        request_hash=fingerprint(credits=-amount_credits, reason=reason),
        kind=TransactionKind.ADJUSTMENT,
        movement_kind=MovementKind.ADJUSTMENT,
        counter_account_id=SystemAccount.ADJUSTMENTS,
        now=now or utcnow(),
        description=reason,
        details={"reason": reason, "actor": actor},
    )
    return draw(session, request)


def draw(session: Session, req: DrawRequest) -> SpendResult:
    """Draw the request's credits from the account's soonest-expiring lots into its counter-account in one journal
    transaction (once per idempotency key), counted against the budgets that apply."""
    store = store_for(session)
    state = store.lock_for_draw(req)
    require_customer(req.account_id, state.kind)
    if (existing := replay_of(state.existing, req.request_hash, req.idempotency_key)) is not None:
        assert existing.transaction_id is not None
        return _replayed(session, existing.transaction_id, req.amount_credits)
    plan = plan_draw(req, state)
    transaction_id = store.write_draw(plan)
    return SpendResult(transaction_id, req.amount_credits, plan.draws, req.now, replayed=False)
