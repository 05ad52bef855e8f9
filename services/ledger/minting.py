"""Minting: every credit enters the ledger here, as a lot with its provenance.

A mint is idempotent by its external reference: (rail, external_ref) is unique on lots, and the journal
transaction's idempotency key is derived from it. When the account owes credits after a clawback, the new lot
repays that debt first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session

from services.core.clock import add_calendar_months, utcnow
from services.core.errors import IdempotencyKeyReused, InvalidRequest
from services.core.metrics import ledger_operation
from services.core.settings import get_settings
from services.ledger import repository as repo
from services.ledger.common import fingerprint, require_amount
from services.ledger.models import MovementKind, Rail, TransactionKind
from services.ledger.plans import MintRequest, plan_mint, replay_of, require_customer
from services.ledger.store import store_for
from services.ledger.system_accounts import SystemAccount


@dataclass(frozen=True, slots=True)
class MintResult:
    lot_id: int
    transaction_id: int
    amount_credits: int
    debt_repaid_credits: int
    expires_at: datetime
    # True when this call found the mint already done and changed nothing.
    replayed: bool


def lot_expiry(credited_at: datetime) -> datetime:
    return add_calendar_months(credited_at, get_settings().lot_validity_months)


@ledger_operation("mint")
def mint(
    session: Session,
    *,
    account_id: int,
    amount_credits: int,
    rail: str,
    external_ref: str,
    funding_account_id: int,
    cost_basis_cents: int | None = None,
    cost_basis_usdc_units: int | None = None,
    credited_at: datetime | None = None,
    expires_at: datetime | None = None,
    promotional: bool = False,
    kind: str = TransactionKind.MINT,
    description: str | None = None,
    details: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    request_fields: dict[str, Any] | None = None,
) -> MintResult:
    """Create a lot of ``amount_credits`` on the account, funded by ``funding_account_id``; at most once per
    (rail, external_ref).

    The journal transaction's idempotency key is ``mint:<rail>:<external_ref>`` unless ``idempotency_key`` names
    another (a key space shared with other operations); ``request_fields`` are what else the caller asked for (a
    reason, an expiry), so that the same key with another of them is refused rather than replayed."""
    require_amount(amount_credits)
    if not external_ref:
        raise InvalidRequest("a mint needs an external reference")
    now = credited_at or utcnow()
    expiry = expires_at or lot_expiry(now)
    if expiry <= now:
        raise InvalidRequest("a lot must expire after it is credited", expires_at=expiry.isoformat())
    key = idempotency_key or f"mint:{rail}:{external_ref}"
    # Without request fields the fingerprint is what it always was, so that the payments' mints replay as before.
    request_hash = fingerprint(
        account=account_id, credits=amount_credits, rail=rail, ref=external_ref, **(request_fields or {})
    )
    request = MintRequest(
        account_id=account_id,
        amount_credits=amount_credits,
        idempotency_key=key,
        request_hash=request_hash,
        kind=kind,
        funding_account_id=funding_account_id,
        rail=rail,
        external_ref=external_ref,
        cost_basis_cents=cost_basis_cents,
        cost_basis_usdc_units=cost_basis_usdc_units,
        promotional=promotional,
        credited_at=now,
        expires_at=expiry,
        description=description,
        details=details,
    )
    store = store_for(session)
    state = store.lock_for_mint(request)
    require_customer(account_id, state.kind)
    if (existing := replay_of(state.existing, request_hash, key)) is not None:
        assert existing.transaction_id is not None
        return _replayed_mint(session, rail, external_ref, existing.transaction_id)
    plan = plan_mint(request, state.debt_credits)
    lot_id, transaction_id = store.write_mint(plan)
    return MintResult(lot_id, transaction_id, amount_credits, plan.repaid_credits, expiry, replayed=False)


def _replayed_mint(session: Session, rail: str, external_ref: str, transaction_id: int) -> MintResult:
    lot = repo.find_lot_by_ref(session, rail, external_ref)
    if lot is None or lot.mint_transaction_id != transaction_id:
        raise IdempotencyKeyReused("this reference was already used by another transaction", external_ref=external_ref)
    repaid = -repo.movement_total(session, transaction_id, MovementKind.DEBT_REPAYMENT)
    return MintResult(lot.id, transaction_id, lot.credits, repaid, lot.expires_at, replayed=True)


@ledger_operation("grant")
def grant(
    session: Session,
    *,
    account_id: int,
    amount_credits: int,
    idempotency_key: str,
    expires_at: datetime | None = None,
    reason: str | None = None,
    now: datetime | None = None,
) -> MintResult:
    """A promotional grant: a lot marked promotional, funded by the promotions account, with its own expiry.
    The same key with another amount, expiry or reason is refused (409), never answered with the first grant."""
    asked: dict[str, Any] = {}
    if expires_at is not None:
        asked["expires_at"] = expires_at.astimezone(UTC).isoformat()
    if reason is not None:
        asked["reason"] = reason
    return mint(
        session,
        account_id=account_id,
        amount_credits=amount_credits,
        rail=Rail.GRANT,
        external_ref=f"{account_id}:{idempotency_key}",
        funding_account_id=SystemAccount.PROMOTIONS,
        credited_at=now,
        expires_at=expires_at,
        promotional=True,
        kind=TransactionKind.GRANT,
        description=reason,
        details={"reason": reason} if reason else None,
        request_fields=asked,
    )


@ledger_operation("credit")
def credit_adjustment(
    session: Session,
    *,
    account_id: int,
    amount_credits: int,
    idempotency_key: str,
    reason: str,
    actor: str,
    now: datetime | None = None,
) -> MintResult:
    """An admin's positive correction: a new (non-promotional) lot funded by the adjustments account.

    Its idempotency key lives in one space with the negative corrections' (``adjustment_key``), so a key used for
    +13 cannot also apply -13; the reason is part of the request."""
    if not reason.strip():
        raise InvalidRequest("an adjustment needs a reason")
    return mint(
        session,
        account_id=account_id,
        amount_credits=amount_credits,
        rail=Rail.ADJUSTMENT,
        external_ref=f"{account_id}:{idempotency_key}",
        funding_account_id=SystemAccount.ADJUSTMENTS,
        credited_at=now,
        kind=TransactionKind.ADJUSTMENT,
        description=reason,
        details={"reason": reason, "actor": actor},
        idempotency_key=adjustment_key(account_id, idempotency_key),
        request_fields={"reason": reason},
    )


def adjustment_key(account_id: int, idempotency_key: str) -> str:
    """The journal's idempotency key of an admin adjustment, either sign."""
    return f"adjustment:{account_id}:{idempotency_key}"
