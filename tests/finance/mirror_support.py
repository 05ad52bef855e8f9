"""Rows for finance's mirror written straight into its tables, and the ledger state to match them against, for the
matching, actions and API tests (the pulls that fill the mirror from Stripe and the chain have tests of their own)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session

from services.finance.matching import balance_txns, sessions, transfers
from services.ledger.clawback import clawback
from services.ledger.minting import mint
from services.ledger.system_accounts import SystemAccount, system_account_id, usdc_funding_code
from services.usdc.models import DepositAddress

PERIOD_START = datetime(2026, 11, 10, tzinfo=UTC)
PERIOD_END = datetime(2026, 11, 11, tzinfo=UTC)
CHAIN_ID = 31337
MIN_DEPOSIT_USDC_UNITS = 1_000_000


def at(hour: int, minute: int = 0, *, day: int = 10) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def balance_txn(
    session: Session,
    stripe_id: str,
    *,
    amount_cents: int,
    created: datetime,
    charge_id: str | None = None,
    payment_intent_id: str | None = None,
    type_: str = "charge",
    category: str | None = None,
    fee_cents: int | None = None,
) -> None:
    fee = fee_cents if fee_cents is not None else (amount_cents * 29 // 1000 + 30 if amount_cents > 0 else 0)
    session.execute(
        insert(balance_txns).values(
            stripe_id=stripe_id,
            type=type_,
            reporting_category=category or type_,
            source_id=charge_id,
            charge_id=charge_id,
            payment_intent_id=payment_intent_id,
            amount_cents=amount_cents,
            fee_cents=fee,
            net_cents=amount_cents - fee,
            currency="usd",
            status="available",
            stripe_created_at=created,
            raw=json.dumps({"id": stripe_id, "amount": amount_cents}),
            fetched_at=created,
        )
    )


def checkout_session(
    session: Session, stripe_id: str, *, payment_intent_id: str, amount_cents: int, account_id: int, created: datetime
) -> None:
    session.execute(
        insert(sessions).values(
            stripe_id=stripe_id,
            payment_intent_id=payment_intent_id,
            amount_total_cents=amount_cents,
            currency="usd",
            status="complete",
            payment_status="paid",
            account_ref=str(account_id),
            stripe_created_at=created,
            raw=json.dumps({"id": stripe_id}),
            fetched_at=created,
        )
    )


def card_lot(session: Session, account_id: int, ref: str, *, credits: int, cost_cents: int, credited: datetime) -> int:
    return mint(
        session,
        account_id=account_id,
        amount_credits=credits,
        rail="card",
        external_ref=ref,
        funding_account_id=SystemAccount.FUNDING_CARD,
        cost_basis_cents=cost_cents,
        credited_at=credited,
    ).lot_id


def claw(session: Session, lot_id: int, credits: int, when: datetime, key: str) -> None:
    clawback(session, lot_id=lot_id, amount_credits=credits, idempotency_key=key, reason="test", now=when)


def deposit_address(session: Session, account_id: int, address: str) -> None:
    session.execute(
        insert(DepositAddress.__table__).values(  # type: ignore[attr-defined]
            account_id=account_id,
            chain_id=CHAIN_ID,
            derivation_index=account_id,
            address=address,
            carry_usdc_units=0,
            created_at=PERIOD_START - timedelta(days=30),
        )
    )


@dataclass(frozen=True)
class Transfer:
    reference: str
    amount_usdc_units: int


def transfer(
    session: Session, tx: int, *, block: int, amount_usdc_units: int, to_address: str, log_index: int = 0
) -> Transfer:
    tx_hash = f"0x{tx:064x}"
    reference = f"{CHAIN_ID}:{tx_hash}:{log_index}"
    session.execute(
        insert(transfers).values(
            chain_id=CHAIN_ID,
            tx_hash=tx_hash,
            log_index=log_index,
            block_number=block,
            block_hash=f"0x{block:064x}",
            from_address="0x" + "ab" * 20,
            to_address=to_address,
            amount_usdc_units=amount_usdc_units,
            reference=reference,
            scanned_at=PERIOD_END,
        )
    )
    return Transfer(reference, amount_usdc_units)


def usdc_lot(session: Session, account_id: int, ref: str, *, credits: int, credited: datetime) -> int:
    return mint(
        session,
        account_id=account_id,
        amount_credits=credits,
        rail="usdc",
        external_ref=ref,
        funding_account_id=system_account_id(session, usdc_funding_code(CHAIN_ID)),
        cost_basis_usdc_units=credits * 10_000,
        credited_at=credited,
    ).lot_id


def by_ref(rows: list[Any]) -> dict[str, Any]:
    """Items by external reference (or "lot:<id>" for those without one)."""
    return {row.external_ref or f"lot:{row.lot_id}": row for row in rows}
