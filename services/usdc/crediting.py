"""Crediting confirmed USDC deposits, and undoing one whose block left the canonical chain after it was credited.

Amounts: 100 credits per USDC (services.core.money). The account's carry on the chain (sub-credit remainders,
and deposits below the minimum) is added to each deposit; whole credits are minted and the remainder carried again.
Nothing is rounded away: for every deposit, ``amount = credits_minted * 10,000 + carry_out - carry_in``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from services.core.errors import CreditrailError
from services.core.money import credits_to_usdc_units, usdc_units_to_credits
from services.core.settings import get_settings
from services.events.emit import DepositTransfer, record_deposit_credited, record_deposit_reversed
from services.ledger.clawback import clawback, reinstate
from services.ledger.common import lock_customer
from services.ledger.minting import mint
from services.ledger.models import Rail
from services.ledger.repository import find_lot_by_ref
from services.ledger.system_accounts import system_account_id, usdc_funding_code
from services.outbox.service import record_clawback_notice, record_receipt
from services.review.service import raise_exception, usdc_reference
from services.usdc import repository as repo
from services.usdc.errors import DepositNotCreditable
from services.usdc.models import DepositStatus, SetAsideReason

DEEP_REORG = "deep_reorg"
"""The finance exception raised when a reorg deeper than the confirmations takes away a settled deposit."""
CARRY_SHORTFALL = "carry_shortfall"
"""The finance exception raised when a re-included deposit's carried units were credited meanwhile by another."""
DEPOSIT_SET_ASIDE = "deposit_set_aside"
"""The finance exception raised when a confirmed deposit cannot be credited and is set aside."""
BIGINT_MAX = 2**63 - 1
"""The largest amount the ledger's 64-bit columns (lots, carries, finance's amounts) hold."""


@dataclass(frozen=True, slots=True)
class CreditOutcome:
    deposit_id: int
    status: str
    credits_minted: int
    carry_out_usdc_units: int
    lot_id: int | None


def funding_account(session: Session, chain_id: int) -> int:
    """The chain's USDC funding account (``funding:usdc:<chain id>``), created on the chain's first deposit."""
    return system_account_id(session, usdc_funding_code(chain_id))


def deposit_reference(chain_id: int, tx_hash: str, log_index: int) -> str:
    """The lot's external reference: the Transfer's identity on its chain."""
    return f"{chain_id}:{tx_hash}:{log_index}"


def credit_deposit(session: Session, deposit: Any, *, now: datetime, min_deposit_usdc_units: int) -> CreditOutcome:
    """Credit a deposit whose block was just checked canonical at the required depth (the caller checked, before
    this transaction). Idempotent: a deposit already credited or carried is returned as it is."""
    lock_customer(session, deposit.account_id)
    return credit_locked_deposit(
        session, repo.get_deposit(session, deposit.id), now=now, min_deposit_usdc_units=min_deposit_usdc_units
    )


def credit_locked_deposit(
    session: Session,
    current: Any,
    *,
    now: datetime,
    min_deposit_usdc_units: int,
    funding_account_id: int | None = None,
) -> CreditOutcome:
    """:func:`credit_deposit` for a caller that holds the account's lock and read ``current`` under it (a batch);
    ``funding_account_id`` saves looking up the chain's funding account for each deposit."""
    if current.status in (DepositStatus.CREDITED, DepositStatus.CARRIED):
        return CreditOutcome(
            current.id, current.status, current.credits_minted or 0, current.carry_out_usdc_units or 0, current.lot_id
        )
    if current.status == DepositStatus.ORPHANED:
        raise ValueError(f"deposit {current.id} is orphaned: its block is not canonical")
    if current.lot_id is not None:
        return _reinclude(session, current, now)

    address = repo.deposit_address_for(session, current.account_id, current.chain_id)
    carry_in = int(address.carry_usdc_units)
    reference = deposit_reference(current.chain_id, current.tx_hash, current.log_index)
    minted_by_hand = find_lot_by_ref(session, Rail.USDC, reference)
    if minted_by_hand is not None:
        # Finance minted this transfer's lot while working an exception (the listener had not credited it): the
        # deposit takes that lot as its own (a deep reorg claws it back like any other), and the carry is left as
        # it was: the only deposits for which the amount identity above does not hold, by finance's decision.
        repo.update_deposit(
            session,
            current.id,
            status=DepositStatus.CREDITED,
            confirmed_at=now,
            credited_at=now,
            carry_in_usdc_units=carry_in,
            credits_minted=int(minted_by_hand.credits),
            carry_out_usdc_units=carry_in,
            lot_id=minted_by_hand.id,
        )
        return CreditOutcome(
            current.id, DepositStatus.CREDITED, int(minted_by_hand.credits), carry_in, minted_by_hand.id
        )
    total_units = carry_in + int(current.amount_usdc_units)
    credits, remainder_units = usdc_units_to_credits(total_units)
    maximum = get_settings().max_amount_credits
    if total_units > BIGINT_MAX or credits > maximum:
        raise DepositNotCreditable(
            f"deposit {current.id} is worth {credits} credits, more than one mint may be ({maximum})",
            reason=SetAsideReason.AMOUNT_TOO_LARGE,
            deposit_id=current.id,
        )
    if total_units < min_deposit_usdc_units or credits == 0:
        repo.set_carry(session, address.id, total_units)
        repo.update_deposit(
            session,
            current.id,
            status=DepositStatus.CARRIED,
            confirmed_at=now,
            carry_in_usdc_units=carry_in,
            credits_minted=0,
            carry_out_usdc_units=total_units,
        )
        return CreditOutcome(current.id, DepositStatus.CARRIED, 0, total_units, None)

    minted = mint(
        session,
        account_id=current.account_id,
        amount_credits=credits,
        rail=Rail.USDC,
        external_ref=reference,
        funding_account_id=funding_account_id or funding_account(session, current.chain_id),
        cost_basis_usdc_units=credits_to_usdc_units(credits),
        credited_at=now,
        details={
            "chain_id": current.chain_id,
            "tx_hash": current.tx_hash,
            "log_index": current.log_index,
            "block_number": current.block_number,
            **({"via": current.via} if current.via else {}),
        },
    )
    repo.set_carry(session, address.id, remainder_units)
    repo.update_deposit(
        session,
        current.id,
        status=DepositStatus.CREDITED,
        confirmed_at=now,
        credited_at=now,
        carry_in_usdc_units=carry_in,
        credits_minted=credits,
        carry_out_usdc_units=remainder_units,
        lot_id=minted.lot_id,
    )
    # The receipt and the platform's event, in the mint's transaction (once per lot).
    if not minted.replayed:
        record_receipt(session, account_id=current.account_id, lot_id=minted.lot_id, now=now)
        record_deposit_credited(
            session,
            DepositTransfer.of(current),
            usdc_units=int(current.amount_usdc_units),
            lot_id=minted.lot_id,
            amount_credits=credits,
            now=now,
        )
    return CreditOutcome(current.id, DepositStatus.CREDITED, credits, remainder_units, minted.lot_id)


def set_aside_reason(error: CreditrailError) -> str:
    """The ``set_aside_reason`` a crediting error leaves on its deposit."""
    if isinstance(error, DepositNotCreditable):
        return error.reason
    return f"{SetAsideReason.CREDIT_REFUSED}:{error.code}"


def set_aside_deposit(session: Session, current: Any, *, reason: str, message: str, now: datetime) -> None:
    """Set a confirmed deposit aside (crediting refused it for good: see :func:`set_aside_reason`) and raise a
    finance exception about it; the caller holds the account's lock, and nothing of the refused credit was
    written. The amount goes in the exception's details in full (as text: it may be beyond a 64-bit integer)."""
    amount = int(current.amount_usdc_units)
    repo.update_deposit(
        session, current.id, status=DepositStatus.SET_ASIDE, set_aside_reason=reason[:255], confirmed_at=now
    )
    _raise_about(
        session,
        current,
        DEPOSIT_SET_ASIDE,
        amount_usdc_units=amount if amount <= BIGINT_MAX else None,
        now=now,
        details={
            "deposit_id": current.id,
            "reason": reason,
            "error": message[:500],
            "amount_usdc_units": str(amount),
            "block_number": current.block_number,
            "block_hash": current.block_hash,
        },
    )


def _raise_about(
    session: Session,
    deposit: Any,
    kind: str,
    *,
    occurrence: int = 1,
    amount_usdc_units: int | None,
    amount_credits: int | None = None,
    details: dict[str, Any],
    now: datetime,
) -> None:
    """A finance exception of ``kind`` about a deposit, referenced by its transfer (the ``occurrence``-th of that
    kind, for events that can repeat: a chain flipping between forks)."""
    raise_exception(
        session,
        rail="usdc",
        kind=kind,
        reference=usdc_reference(deposit.chain_id, deposit.tx_hash, deposit.log_index, occurrence=occurrence),
        account_id=deposit.account_id,
        amount_usdc_units=amount_usdc_units,
        amount_credits=amount_credits,
        details=details,
        now=now,
    )


def _carry_delta(deposit: Any) -> int:
    """How much this deposit added to the account's carry (negative when it used up carried units)."""
    return int(deposit.carry_out_usdc_units or 0) - int(deposit.carry_in_usdc_units or 0)


def undo_credited_deposit(session: Session, deposit: Any, *, now: datetime, reason: str) -> None:
    """A credited (or carried) deposit whose block is no longer canonical: claw its credits back, take its part out
    of the carry, mark it orphaned, and raise a finance exception (a reorg deeper than the confirmations).

    Each undo of a deposit is numbered (``deep_reorgs``), so the clawback's idempotency key and the exception's
    reference are new even when a chain flips back to a block hash seen before."""
    lock_customer(session, deposit.account_id)
    current = repo.get_deposit(session, deposit.id)
    if current.status not in (DepositStatus.CREDITED, DepositStatus.CARRIED):
        return
    undo = int(current.deep_reorgs) + 1
    address = repo.deposit_address_for(session, current.account_id, current.chain_id)
    carry_before = int(address.carry_usdc_units)
    carry_after = max(0, carry_before - _carry_delta(current))
    # Units this deposit left in the carry that a later deposit already credited: not recoverable from the carry.
    shortfall_units = max(0, _carry_delta(current) - carry_before)
    repo.set_carry(session, address.id, carry_after)
    clawed = None
    if current.lot_id is not None and current.credits_minted:
        clawed = clawback(
            session,
            lot_id=current.lot_id,
            amount_credits=current.credits_minted,
            idempotency_key=f"usdc:reorg:{current.id}:{undo}",
            reason=reason,
            now=now,
        )
        record_clawback_notice(
            session,
            lot_id=current.lot_id,
            transaction_id=clawed.transaction_id,
            amount_credits=int(current.credits_minted),
            reason="the deposit's block left the chain (a reorg)",
            now=now,
        )
        record_deposit_reversed(
            session,
            DepositTransfer.of(current),
            lot_id=current.lot_id,
            transaction_id=clawed.transaction_id,
            amount_credits=int(current.credits_minted),
            now=now,
        )
    repo.update_deposit(
        session,
        current.id,
        status=DepositStatus.ORPHANED,
        orphaned_at=now,
        deep_reorgs=undo,
        carry_reversed_usdc_units=carry_before - carry_after,
    )
    _raise_about(
        session,
        current,
        DEEP_REORG,
        occurrence=undo,
        amount_usdc_units=int(current.amount_usdc_units),
        amount_credits=int(current.credits_minted or 0),
        now=now,
        details={
            "deposit_id": current.id,
            "block_number": current.block_number,
            "block_hash": current.block_hash,
            "credits_clawed_back": current.credits_minted or 0,
            "debt_credits": clawed.debt_credits if clawed else 0,
            "carry_shortfall_usdc_units": shortfall_units,
            "reason": reason,
        },
    )


def _reinclude(session: Session, deposit: Any, now: datetime) -> CreditOutcome:
    """A deposit clawed back after a deep reorg is canonical again (re-included): reinstate what was clawed back
    onto the same lot rather than minting twice, and put back into the carry exactly what the undo took out."""
    undo = int(deposit.deep_reorgs)
    address = repo.deposit_address_for(session, deposit.account_id, deposit.chain_id)
    wanted = int(address.carry_usdc_units) + int(deposit.carry_reversed_usdc_units or 0)
    repo.set_carry(session, address.id, max(0, wanted))
    if deposit.credits_minted:
        reinstate(
            session,
            lot_id=deposit.lot_id,
            amount_credits=deposit.credits_minted,
            idempotency_key=f"usdc:reinclude:{deposit.id}:{undo}",
            reason="deposit re-included in the canonical chain",
            now=now,
        )
    repo.update_deposit(
        session,
        deposit.id,
        status=DepositStatus.CREDITED,
        confirmed_at=now,
        credited_at=now,
        carry_reversed_usdc_units=None,
    )
    if wanted < 0:
        # The undo gave carried units back that another deposit has credited since: they were credited twice.
        _raise_about(
            session,
            deposit,
            CARRY_SHORTFALL,
            occurrence=undo,
            amount_usdc_units=-wanted,
            now=now,
            details={"deposit_id": deposit.id, "carry_shortfall_usdc_units": -wanted},
        )
    return CreditOutcome(
        deposit.id,
        DepositStatus.CREDITED,
        deposit.credits_minted or 0,
        deposit.carry_out_usdc_units or 0,
        deposit.lot_id,
    )
