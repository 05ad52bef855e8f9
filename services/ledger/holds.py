"""Holds for tool calls: reserve credits on specific lots, then capture up to the reserved amount or release.

A hold reserves, it does not move credits: the ledger changes only when it is captured. A capture of a live hold
never fails for lack of credits (the lots' reserved credits cannot be spent, expired or clawed back by anything
else). A reserved part of a lot that expired while held expires as soon as the hold resolves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from services.core.clock import utcnow
from services.core.errors import InvalidRequest
from services.core.metrics import ledger_operation
from services.core.settings import get_settings
from services.ledger import pg_fastpath
from services.ledger import repository as repo
from services.ledger.budgets import charge_budgets, refund_hold_budgets
from services.ledger.common import (
    check_same_request,
    fingerprint,
    lock_customer,
    movement_row,
    require_amount,
    split_reservation,
)
from services.ledger.errors import CaptureExceedsHold, HoldExpired, HoldNotActive, HoldNotFound
from services.ledger.models import HoldStatus, MovementKind, TransactionKind
from services.ledger.spending import plan_draw
from services.ledger.system_accounts import SystemAccount


@dataclass(frozen=True, slots=True)
class HoldView:
    id: int
    account_id: int
    amount_credits: int
    captured_credits: int
    status: str
    project: str | None
    description: str | None
    created_at: datetime
    expires_at: datetime
    resolved_at: datetime | None
    capture_transaction_id: int | None
    replayed: bool = False


def _view(row: Any, *, replayed: bool = False) -> HoldView:
    return HoldView(
        id=row.id,
        account_id=row.account_id,
        amount_credits=row.amount_credits,
        captured_credits=row.captured_credits,
        status=row.status,
        project=row.project,
        description=row.description,
        created_at=row.created_at,
        expires_at=row.expires_at,
        resolved_at=row.resolved_at,
        capture_transaction_id=row.capture_transaction_id,
        replayed=replayed,
    )


@ledger_operation("hold")
def create_hold(
    session: Session,
    *,
    account_id: int,
    amount_credits: int,
    idempotency_key: str,
    ttl_seconds: int | None = None,
    api_key_id: int | None = None,
    project: str | None = None,
    description: str | None = None,
    now: datetime | None = None,
) -> HoldView:
    """Reserve ``amount_credits`` on the soonest-expiring lots, counted against the budgets that apply."""
    require_amount(amount_credits)
    settings = get_settings()
    ttl = settings.hold_default_ttl_seconds if ttl_seconds is None else ttl_seconds
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= settings.hold_max_ttl_seconds:
        raise InvalidRequest(f"ttl_seconds must be between 1 and {settings.hold_max_ttl_seconds}", field="ttl_seconds")
    if not idempotency_key:
        raise InvalidRequest("an idempotency key is required", field="idempotency_key")
    now = now or utcnow()
    request_hash = fingerprint(
        credits=amount_credits, ttl=ttl, project=project, description=description, api_key=api_key_id
    )
    expires_at = now + timedelta(seconds=ttl)
    if (pg := pg_fastpath.driver_of(session)) is not None:
        row, replayed = pg_fastpath.create_hold(
            pg,
            account_id=account_id,
            amount_credits=amount_credits,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            now=now,
            expires_at=expires_at,
            api_key_id=api_key_id,
            project=project,
            description=description,
        )
        return _view(row, replayed=replayed)
    locked = lock_customer(session, account_id)
    existing = repo.find_hold_by_key(session, account_id, idempotency_key)
    if existing is not None:
        check_same_request(existing.request_hash, request_hash, idempotency_key)
        return _view(existing, replayed=True)

    draws = plan_draw(session, locked, amount_credits, now)
    charged = charge_budgets(
        session, locked, api_key_id=api_key_id, project=project, amount_credits=amount_credits, now=now
    )
    hold_id = repo.insert_hold(
        session,
        {
            "account_id": account_id,
            "api_key_id": api_key_id,
            "project": project,
            "idempotency_key": idempotency_key,
            "request_hash": request_hash,
            "amount_credits": amount_credits,
            "captured_credits": 0,
            "status": HoldStatus.ACTIVE,
            "description": description,
            "created_at": now,
            "expires_at": expires_at,
        },
    )
    repo.change_reserved(session, draws)
    repo.insert_allocations(
        session,
        [
            {"hold_id": hold_id, "lot_id": lot_id, "position": position, "amount_credits": credits}
            for position, (lot_id, credits) in enumerate(draws)
        ],
    )
    repo.insert_hold_budget_charges(
        session,
        [
            {
                "hold_id": hold_id,
                "budget_id": budget_id,
                "period_start": start,
                "amount_credits": amount_credits,
            }
            for budget_id, start in charged
        ],
    )
    return _view(repo.get_hold(session, hold_id))


def get_hold(session: Session, *, account_id: int | None, hold_id: int) -> HoldView:
    """The hold, if it belongs to ``account_id`` (None: any account, for admins and jobs)."""
    row = repo.get_hold(session, hold_id)
    if row is None or (account_id is not None and row.account_id != account_id):
        raise _not_found(hold_id)
    return _view(row)


def _not_found(hold_id: int) -> HoldNotFound:
    return HoldNotFound(f"hold {hold_id} not found", hold_id=hold_id)


def _locked_active_hold(session: Session, account_id: int | None, hold_id: int, now: datetime) -> tuple[Any, Any]:
    """The hold's row, read under its account's lock, if it is still active; with what ``_resolve`` settles (on
    PostgreSQL, the hold with its allocations)."""
    hold: Any
    if (pg := pg_fastpath.driver_of(session)) is not None:
        hold = pg_fastpath.lock_hold(pg, account_id=account_id, hold_id=hold_id)
        if hold is None:
            raise _not_found(hold_id)
        row = hold.row
    else:
        owner = get_hold(session, account_id=account_id, hold_id=hold_id).account_id
        lock_customer(session, owner)
        hold = row = repo.get_hold(session, hold_id)  # read again under the lock
    if row.status != HoldStatus.ACTIVE:
        raise HoldNotActive(f"hold {hold_id} is already {row.status}", hold_id=hold_id, status=row.status)
    if row.expires_at <= now:
        raise HoldExpired(f"hold {hold_id} expired at {row.expires_at.isoformat()}", hold_id=hold_id)
    return row, hold


def _resolve(session: Session, hold: Any, capture_credits: int, now: datetime, status: str) -> Any:
    """Settle a hold from ``_locked_active_hold``; returns its row as resolved."""
    if isinstance(hold, pg_fastpath.LockedHold):
        pg = pg_fastpath.driver_of(session)
        assert pg is not None
        return pg_fastpath.settle_hold(pg, hold, capture_credits, now, status)
    _settle(session, hold, capture_credits, now, status)
    return repo.get_hold(session, hold.id)


@ledger_operation("capture")
def capture_hold(
    session: Session,
    *,
    account_id: int | None,
    hold_id: int,
    amount_credits: int,
    now: datetime | None = None,
) -> HoldView:
    """Charge ``amount_credits`` (at most the hold) from the reserved lots; the rest is released."""
    require_amount(amount_credits)
    now = now or utcnow()
    row, hold = _locked_active_hold(session, account_id, hold_id, now)
    if amount_credits > row.amount_credits:
        raise CaptureExceedsHold(
            f"capture of {amount_credits} credits exceeds the hold's {row.amount_credits}",
            hold_id=hold_id,
            hold_credits=row.amount_credits,
            requested_credits=amount_credits,
        )
    return _view(_resolve(session, hold, amount_credits, now, HoldStatus.CAPTURED))


@ledger_operation("release")
def release_hold(session: Session, *, account_id: int | None, hold_id: int, now: datetime | None = None) -> HoldView:
    """Release the whole hold: nothing is charged."""
    now = now or utcnow()
    _row, hold = _locked_active_hold(session, account_id, hold_id, now)
    return _view(_resolve(session, hold, 0, now, HoldStatus.RELEASED))


def expire_holds(session: Session, *, now: datetime | None = None, limit: int = 500) -> int:
    """Release holds past their time to live (the scheduler's job); returns how many it released."""
    return sweep_expired_holds(session, now=now, limit=limit)[1]


@ledger_operation("hold_expiry")
def sweep_expired_holds(session: Session, *, now: datetime | None = None, limit: int = 500) -> tuple[int, int]:
    """One batch of the hold-expiry sweep: (holds examined, holds released). A hold captured or released while
    the batch waited for its lock is examined but left alone; a full batch means there may be more to examine."""
    now = now or utcnow()
    due = repo.expired_active_holds(session, now, limit)
    repo.lock_accounts(session, (row.account_id for row in due))
    released = 0
    for candidate in due:
        row = repo.get_hold(session, candidate.id)  # read again under the lock
        if row.status == HoldStatus.ACTIVE and row.expires_at <= now:
            _settle(session, row, 0, now, HoldStatus.EXPIRED)
            released += 1
    return len(due), released


def _settle(session: Session, hold: Any, capture_credits: int, now: datetime, status: str) -> None:
    """Resolve a locked, active hold: draw ``capture_credits`` from its lots in order, un-reserve everything,
    expire at once what it frees on lots that have expired, and give unused budget back."""
    allocations = repo.hold_allocations(session, hold.id)
    draws, expiring = split_reservation(
        ((a.lot_id, a.amount_credits, a.expires_at) for a in allocations), capture_credits, now
    )
    repo.change_reserved(session, [(a.lot_id, -a.amount_credits) for a in allocations])

    capture_txn_id: int | None = None
    moves: list[dict[str, Any]] = []
    if capture_credits:
        capture_txn_id = repo.insert_transaction(
            session,
            kind=TransactionKind.CAPTURE,
            idempotency_key=f"capture:{hold.id}",
            account_id=hold.account_id,
            created_at=now,
            legs=[(hold.account_id, -capture_credits), (SystemAccount.REVENUE_USAGE, capture_credits)],
            description=hold.description,
            details={"hold_id": hold.id, "project": hold.project},
        )
        repo.change_remaining(session, draws)
        moves += [
            movement_row(lot_id, capture_txn_id, MovementKind.CAPTURE, -take, now, hold.id) for lot_id, take in draws
        ]
    if expiring:
        expired_total = sum(credits for _, credits in expiring)
        expiry_txn_id = repo.insert_transaction(
            session,
            kind=TransactionKind.EXPIRY,
            idempotency_key=f"expiry:hold:{hold.id}",
            account_id=hold.account_id,
            created_at=now,
            legs=[(hold.account_id, -expired_total), (SystemAccount.BREAKAGE, expired_total)],
            details={"hold_id": hold.id, "lots": [lot_id for lot_id, _ in expiring]},
        )
        repo.expire_from_lots(session, expiring)
        moves += [
            movement_row(lot_id, expiry_txn_id, MovementKind.EXPIRY, -credits, now, hold.id)
            for lot_id, credits in expiring
        ]
    repo.insert_movements(session, moves)
    refund_hold_budgets(session, hold.id, hold.amount_credits - capture_credits)
    repo.update_hold(
        session,
        hold.id,
        status=status,
        captured_credits=capture_credits,
        resolved_at=now,
        capture_transaction_id=capture_txn_id,
    )
