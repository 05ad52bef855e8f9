"""Helpers for the report tests: ledger operations at explicit times, and rows of finance's external mirror."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from services.core.db import unit_of_work
from services.core.money import credits_to_usdc_units
from services.finance.pulls import begin_pull, finish_pull
from services.finance.reports import PeriodReport, balance_transactions, period_report, transfer_records
from services.ledger.clawback import ClawbackResult, clawback, reinstate
from services.ledger.expiry import ExpiryBatch, expire_lots
from services.ledger.holds import HoldView, capture_hold, create_hold
from services.ledger.minting import MintResult, credit_adjustment, mint
from services.ledger.models import Rail
from services.ledger.spending import SpendResult, debit_adjustment, spend
from services.ledger.system_accounts import system_account_id, usdc_funding_code


def at(month: int, day: int, hour: int = 12, minute: int = 0, year: int = 2025) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def key(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def report(engine: Engine, rail: str, period: tuple[datetime, datetime]) -> PeriodReport:
    with unit_of_work(engine) as session:
        return period_report(session, rail=rail, period_start=period[0], period_end=period[1])


# --- ledger operations ---------------------------------------------------------------------------------------


def mint_usdc(engine: Engine, account_id: int, amount_credits: int, *, chain_id: int, when: datetime) -> MintResult:
    """A confirmed USDC deposit on ``chain_id`` of exactly ``amount_credits``, credited at ``when``."""
    with unit_of_work(engine) as session:
        return mint(
            session,
            account_id=account_id,
            amount_credits=amount_credits,
            rail=Rail.USDC,
            external_ref=f"{chain_id}:0x{uuid.uuid4().hex}:0",
            funding_account_id=system_account_id(session, usdc_funding_code(chain_id)),
            cost_basis_usdc_units=credits_to_usdc_units(amount_credits),
            credited_at=when,
        )


def spend_at(engine: Engine, account_id: int, amount_credits: int, when: datetime) -> SpendResult:
    with unit_of_work(engine) as session:
        return spend(session, account_id=account_id, amount_credits=amount_credits, idempotency_key=key("s"), now=when)


def hold_and_capture(engine: Engine, account_id: int, hold_credits: int, capture_credits: int, when: datetime) -> None:
    with unit_of_work(engine) as session:
        held: HoldView = create_hold(
            session,
            account_id=account_id,
            amount_credits=hold_credits,
            idempotency_key=key("call"),
            ttl_seconds=60,
            now=when,
        )
    with unit_of_work(engine) as session:
        capture_hold(
            session,
            account_id=account_id,
            hold_id=held.id,
            amount_credits=capture_credits,
            now=when + timedelta(seconds=30),
        )


def expire_at(engine: Engine, when: datetime) -> ExpiryBatch:
    with unit_of_work(engine) as session:
        return expire_lots(session, now=when)


def claw(engine: Engine, lot_id: int, amount_credits: int, when: datetime) -> ClawbackResult:
    with unit_of_work(engine) as session:
        return clawback(
            session, lot_id=lot_id, amount_credits=amount_credits, idempotency_key=key("r"), reason="refund", now=when
        )


def reinstate_at(engine: Engine, lot_id: int, amount_credits: int, when: datetime) -> ClawbackResult:
    with unit_of_work(engine) as session:
        return reinstate(
            session,
            lot_id=lot_id,
            amount_credits=amount_credits,
            idempotency_key=key("won"),
            reason="dispute won",
            now=when,
        )


def adjust_down(engine: Engine, account_id: int, amount_credits: int, when: datetime) -> SpendResult:
    with unit_of_work(engine) as session:
        return debit_adjustment(
            session,
            account_id=account_id,
            amount_credits=amount_credits,
            idempotency_key=key("adj"),
            reason="correction",
            actor="finance",
            now=when,
        )


def adjust_up(engine: Engine, account_id: int, amount_credits: int, when: datetime) -> MintResult:
    with unit_of_work(engine) as session:
        return credit_adjustment(
            session,
            account_id=account_id,
            amount_credits=amount_credits,
            idempotency_key=key("adj"),
            reason="goodwill",
            actor="finance",
            now=when,
        )


# --- finance's external mirror -------------------------------------------------------------------------------


def stripe_row(
    engine: Engine,
    *,
    category: str,
    amount_cents: int,
    fee_cents: int = 0,
    when: datetime,
    type_: str | None = None,
    currency: str = "usd",
) -> None:
    """A Stripe balance transaction as finance's pull stores it (net = amount - fee)."""
    values: dict[str, Any] = {
        "stripe_id": key("txn"),
        "type": type_ or category,
        "reporting_category": category,
        "source_id": key("src"),
        "charge_id": key("ch"),
        "payment_intent_id": None,
        "amount_cents": amount_cents,
        "fee_cents": fee_cents,
        "net_cents": amount_cents - fee_cents,
        "currency": currency,
        "status": "available",
        "stripe_created_at": when,
        "raw": "{}",
        "fetched_at": when,
    }
    with unit_of_work(engine) as session:
        session.execute(insert(balance_transactions).values(**values))


def transfer_row(engine: Engine, *, chain_id: int, block_number: int, amount_usdc_units: int) -> None:
    """A USDC Transfer to a deposit address, as the chain re-scan stores it."""
    tx_hash = f"0x{uuid.uuid4().hex}{uuid.uuid4().hex}"
    values = {
        "chain_id": chain_id,
        "tx_hash": tx_hash,
        "log_index": 0,
        "block_number": block_number,
        "block_hash": f"0x{uuid.uuid4().hex}{uuid.uuid4().hex}",
        "from_address": "0x" + "1" * 40,
        "to_address": "0x" + "2" * 40,
        "amount_usdc_units": amount_usdc_units,
        "reference": f"{chain_id}:{tx_hash}:0",
        "scanned_at": at(12, 31, year=2030),
    }
    with unit_of_work(engine) as session:
        session.execute(insert(transfer_records).values(**values))


def pull(
    engine: Engine,
    source: str,
    window: tuple[datetime, datetime],
    *,
    complete: bool = True,
    details: dict[str, Any] | None = None,
) -> None:
    """A pull of ``source`` over ``window``: finished an hour after the window ended, or still running."""
    start, end = window
    with unit_of_work(engine) as session:
        state = begin_pull(session, source, start, end, now=start, details=details)
        if complete:
            finish_pull(session, state.id, now=end + timedelta(hours=1))
