"""Spending: one-shot charges and debit adjustments, drawn from the soonest-expiring lots first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from services.core.clock import utcnow
from services.core.errors import InvalidRequest
from services.core.metrics import ledger_operation
from services.ledger import pg_fastpath
from services.ledger import repository as repo
from services.ledger.budgets import charge_budgets
from services.ledger.common import (
    check_replay,
    fingerprint,
    lock_customer,
    movement_row,
    plan_draws,
    require_amount,
)
from services.ledger.minting import adjustment_key
from services.ledger.models import MovementKind, TransactionKind
from services.ledger.system_accounts import SystemAccount


@dataclass(frozen=True, slots=True)
class SpendResult:
    transaction_id: int
    amount_credits: int
    # (lot id, credits) drawn, in draw-down order.
    draws: list[tuple[int, int]]
    created_at: datetime
    replayed: bool


def plan_draw(
    session: Session, locked: repo.LockedAccount, amount_credits: int, now: datetime
) -> list[tuple[int, int]]:
    """Which lots give ``amount_credits``, soonest expiry first; the account's debt must stay covered, so a
    customer in debt can only spend what exceeds it."""
    candidates = repo.drawable_lots(session, locked.id, now, amount_credits + locked.debt_credits)
    return plan_draws(candidates, amount_credits, locked.debt_credits)


def _replayed(session: Session, transaction_id: int, amount_credits: int) -> SpendResult:
    txn = repo.get_transaction(session, transaction_id)
    draws = [(m.lot_id, -m.amount_credits) for m in repo.transaction_movements(session, transaction_id)]
    return SpendResult(transaction_id, amount_credits, draws, txn.created_at, replayed=True)


def _drawn(
    session: Session, drawn: pg_fastpath.Drawn | pg_fastpath.Replay, amount_credits: int, now: datetime
) -> SpendResult:
    if isinstance(drawn, pg_fastpath.Replay):
        return _replayed(session, drawn.transaction_id, amount_credits)
    return SpendResult(drawn.transaction_id, amount_credits, drawn.draws, now, replayed=False)


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
    return _draw_into(
        session,
        account_id=account_id,
        amount_credits=amount_credits,
        key=f"spend:{account_id}:{idempotency_key}",
        request_hash=fingerprint(credits=amount_credits, project=project, description=description, api_key=api_key_id),
        kind=TransactionKind.SPEND,
        movement_kind=MovementKind.SPEND,
        counter_account_id=SystemAccount.REVENUE_USAGE,
        description=description,
        details={"project": project, "api_key_id": api_key_id} if (project or api_key_id) else None,
        api_key_id=api_key_id,
        project=project,
        now=now or utcnow(),
    )


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
    return _draw_into(
        session,
        account_id=account_id,
        amount_credits=amount_credits,
        key=adjustment_key(account_id, idempotency_key),
        request_hash=fingerprint(credits=-amount_credits, reason=reason),
        kind=TransactionKind.ADJUSTMENT,
        movement_kind=MovementKind.ADJUSTMENT,
        counter_account_id=SystemAccount.ADJUSTMENTS,
        description=reason,
        details={"reason": reason, "actor": actor},
        api_key_id=None,
        project=None,
        now=now or utcnow(),
    )


def _draw_into(
    session: Session,
    *,
    account_id: int,
    amount_credits: int,
    key: str,
    request_hash: str,
    kind: TransactionKind,
    movement_kind: MovementKind,
    counter_account_id: int,
    description: str | None,
    details: dict[str, Any] | None,
    api_key_id: int | None,
    project: str | None,
    now: datetime,
) -> SpendResult:
    """Draw ``amount_credits`` from the account's soonest-expiring lots into ``counter_account_id`` in one journal
    transaction (once per ``key``), counted against the budgets that apply to ``api_key_id`` and ``project`` (none
    when both are None)."""
    if (pg := pg_fastpath.driver_of(session)) is not None:
        drawn = pg_fastpath.draw(
            pg,
            account_id=account_id,
            amount_credits=amount_credits,
            idempotency_key=key,
            request_hash=request_hash,
            kind=kind,
            movement_kind=movement_kind,
            counter_account_id=counter_account_id,
            now=now,
            description=description,
            details=details,
            api_key_id=api_key_id,
            project=project,
        )
        return _drawn(session, drawn, amount_credits, now)
    locked = lock_customer(session, account_id, key)
    replay_of = check_replay(locked, request_hash, key)
    if replay_of is not None:
        return _replayed(session, replay_of, amount_credits)

    draws = plan_draw(session, locked, amount_credits, now)
    charge_budgets(session, locked, api_key_id=api_key_id, project=project, amount_credits=amount_credits, now=now)
    txn_id = repo.insert_transaction(
        session,
        kind=kind,
        idempotency_key=key,
        request_hash=request_hash,
        account_id=account_id,
        created_at=now,
        legs=[(account_id, -amount_credits), (counter_account_id, amount_credits)],
        description=description,
        details=details,
    )
    repo.change_remaining(session, draws)
    repo.insert_movements(session, [movement_row(lot_id, txn_id, movement_kind, -take, now) for lot_id, take in draws])
    return SpendResult(txn_id, amount_credits, draws, now, replayed=False)
