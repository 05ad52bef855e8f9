"""Holds for tool calls: reserve credits on specific lots, then capture up to the reserved amount or release.

A hold reserves, it does not move credits: the ledger changes only when it is captured. A capture of a live hold
never fails for lack of credits (the lots' reserved credits cannot be spent, expired or clawed back by anything
else). A reserved part of a lot that expired while held expires as soon as the hold resolves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session

from services.core.clock import utcnow
from services.core.errors import InvalidRequest
from services.core.metrics import ledger_operation
from services.core.settings import get_settings
from services.ledger import repository as repo
from services.ledger.common import fingerprint, require_amount
from services.ledger.core_store import hold_row
from services.ledger.errors import CaptureExceedsHold, HoldExpired, HoldNotActive, HoldNotFound
from services.ledger.models import HoldStatus
from services.ledger.plans import HoldRequest, HoldRow, LockedHold, plan_hold, plan_settle, replay_of, require_customer
from services.ledger.store import LedgerStore, store_for


@dataclass(frozen=True, slots=True)
class HoldView:
    """A hold as the API shows it: its row, and whether this call found it made before."""

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


def _view(row: HoldRow, *, replayed: bool = False) -> HoldView:
    return HoldView(*row, replayed=replayed)


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
    request = HoldRequest(
        account_id=account_id,
        amount_credits=amount_credits,
        idempotency_key=idempotency_key,
        request_hash=fingerprint(
            credits=amount_credits, ttl=ttl, project=project, description=description, api_key=api_key_id
        ),
        now=now,
        expires_at=now + timedelta(seconds=ttl),
        api_key_id=api_key_id,
        project=project,
        description=description,
    )
    store = store_for(session)
    state = store.lock_for_hold(request)
    require_customer(account_id, state.kind)
    if (existing := replay_of(state.existing, request.request_hash, idempotency_key)) is not None:
        assert existing.hold is not None
        return _view(existing.hold, replayed=True)
    return _view(store.write_hold(plan_hold(request, state)))


def get_hold(session: Session, *, account_id: int | None, hold_id: int) -> HoldView:
    """The hold, if it belongs to ``account_id`` (None: any account, for admins and jobs)."""
    row = repo.get_hold(session, hold_id)
    if row is None or (account_id is not None and row.account_id != account_id):
        raise _not_found(hold_id)
    return _view(hold_row(row))


def _not_found(hold_id: int) -> HoldNotFound:
    return HoldNotFound(f"hold {hold_id} not found", hold_id=hold_id)


def _locked_active_hold(store: LedgerStore, account_id: int | None, hold_id: int, now: datetime) -> LockedHold:
    """The hold read under its account's lock, if it is still active and within its time to live."""
    hold = store.lock_hold(account_id, hold_id)
    if hold is None:
        raise _not_found(hold_id)
    row = hold.row
    require_customer(row.account_id, hold.kind)
    if row.status != HoldStatus.ACTIVE:
        raise HoldNotActive(f"hold {hold_id} is already {row.status}", hold_id=hold_id, status=row.status)
    if row.expires_at <= now:
        raise HoldExpired(f"hold {hold_id} expired at {row.expires_at.isoformat()}", hold_id=hold_id)
    return hold


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
    store = store_for(session)
    hold = _locked_active_hold(store, account_id, hold_id, now)
    if amount_credits > hold.row.amount_credits:
        raise CaptureExceedsHold(
            f"capture of {amount_credits} credits exceeds the hold's {hold.row.amount_credits}",
            hold_id=hold_id,
            hold_credits=hold.row.amount_credits,
            requested_credits=amount_credits,
        )
    return _view(store.write_settle(plan_settle(hold, amount_credits, now, HoldStatus.CAPTURED)))


@ledger_operation("release")
def release_hold(session: Session, *, account_id: int | None, hold_id: int, now: datetime | None = None) -> HoldView:
    """Release the whole hold: nothing is charged."""
    now = now or utcnow()
    store = store_for(session)
    hold = _locked_active_hold(store, account_id, hold_id, now)
    return _view(store.write_settle(plan_settle(hold, 0, now, HoldStatus.RELEASED)))


def expire_holds(session: Session, *, now: datetime | None = None, limit: int = 500) -> int:
    """Release holds past their time to live (the scheduler's job); returns how many it released."""
    return sweep_expired_holds(session, now=now, limit=limit)[1]


@ledger_operation("hold_expiry")
def sweep_expired_holds(session: Session, *, now: datetime | None = None, limit: int = 500) -> tuple[int, int]:
    """One batch of the hold-expiry sweep: (holds examined, holds released). A hold captured or released while
    the batch waited for its lock is examined but left alone; a full batch means there may be more to examine.
    The batch locks every account it touches first, in the fixed lock order."""
    now = now or utcnow()
    store = store_for(session)
    due = repo.expired_active_holds(session, now, limit)
    repo.lock_accounts(session, (row.account_id for row in due))
    released = 0
    for candidate in due:
        hold = store.lock_hold(None, candidate.id)  # read again under the lock
        if hold is not None and hold.row.status == HoldStatus.ACTIVE and hold.row.expires_at <= now:
            store.write_settle(plan_settle(hold, 0, now, HoldStatus.EXPIRED))
            released += 1
    return len(due), released
