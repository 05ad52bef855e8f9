"""Working the exceptions queue: each action adds to history (a new ledger transaction, or a note) and closes the
exception once; the wrong action for an exception, or a second close, is refused and changes nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from services.core.db import unit_of_work
from services.core.errors import InvalidRequest
from services.finance.actions import ActionNotApplicable, resolve
from services.finance.matching import reconcile_card, reconcile_usdc
from services.ledger.accounts import create_customer_account
from services.ledger.balance import get_balance
from services.ledger.invariants import check_invariants
from services.ledger.repository import lots, transactions
from services.review.errors import FinanceExceptionClosed
from services.review.schemas import ExceptionOut
from services.review.service import list_exceptions
from tests.finance.mirror_support import (
    CHAIN_ID,
    MIN_DEPOSIT_USDC_UNITS,
    PERIOD_END,
    PERIOD_START,
    at,
    balance_txn,
    card_lot,
    checkout_session,
    deposit_address,
    transfer,
)

LATER = PERIOD_END + timedelta(days=1)


def _exceptions(engine: Engine) -> dict[str, ExceptionOut]:
    with unit_of_work(engine) as s:
        return {e.kind.removeprefix("reconciliation_"): e for e in list_exceptions(s, "open")}


def _card_case(engine: Engine) -> tuple[int, int]:
    with unit_of_work(engine) as s:
        bob = create_customer_account(s, name="bob")
        balance_txn(s, "txn_lost", amount_cents=2_500, created=at(11), charge_id="ch_lost", payment_intent_id="pi_lost")
        checkout_session(s, "cs_lost", payment_intent_id="pi_lost", amount_cents=2_500, account_id=bob, created=at(11))
        ghost = card_lot(s, bob, "cs_ghost", credits=1_000, cost_cents=1_000, credited=at(12))
    with unit_of_work(engine) as s:
        reconcile_card(s, period_start=PERIOD_START, period_end=PERIOD_END, cutoff=LATER, now=LATER)
    return bob, ghost


def test_minting_a_missing_payment_credits_it_once(engine: Engine) -> None:
    bob, _ = _card_case(engine)
    missing = _exceptions(engine)["missing_in_ledger"]
    with unit_of_work(engine) as s:
        closed = resolve(s, missing.id, action="mint", reason="webhook lost", resolved_by="finance:7", now=LATER)
    assert (closed.status, closed.action, closed.resolved_by) == ("resolved", "mint", "finance:7")
    assert closed.transaction_id is not None
    with unit_of_work(engine) as s:
        lot = s.execute(select(lots).where(lots.c.external_ref == "cs_lost")).one()
        assert (lot.account_id, lot.credits, lot.cost_basis_cents, lot.rail) == (bob, 2_500, 2_500, "card")
        assert get_balance(s, bob, now=LATER).available_credits == 3_500
        # Resolving again is refused and mints nothing more.
        with pytest.raises(FinanceExceptionClosed):
            resolve(s, missing.id, action="mint", reason="again", resolved_by="finance:7", now=LATER)
    with unit_of_work(engine) as s:
        assert get_balance(s, bob, now=LATER).available_credits == 3_500
        assert check_invariants(s) == []
    # The next run finds it matched.
    with unit_of_work(engine) as s:
        run = reconcile_card(s, period_start=PERIOD_START, period_end=PERIOD_END, cutoff=LATER, now=LATER)
    assert run.missing_in_ledger == 0


def test_clawing_back_a_lot_with_no_payment(engine: Engine) -> None:
    bob, ghost = _card_case(engine)
    missing = _exceptions(engine)["missing_externally"]
    with unit_of_work(engine) as s, pytest.raises(ActionNotApplicable):
        resolve(s, missing.id, action="mint", reason="wrong action", resolved_by="finance:7", now=LATER)
    with unit_of_work(engine) as s:
        closed = resolve(s, missing.id, action="clawback", reason="no such payment", resolved_by="finance:7", now=LATER)
        assert closed.action == "clawback"
        txn = s.execute(select(transactions).where(transactions.c.id == closed.transaction_id)).one()
        assert txn.kind == "clawback"
        assert txn.details["lot_id"] == ghost
        assert get_balance(s, bob, now=LATER).available_credits == 0
        assert check_invariants(s) == []


def test_ignore_and_note_write_nothing_to_the_ledger(engine: Engine) -> None:
    _card_case(engine)
    found = _exceptions(engine)
    with unit_of_work(engine) as s:
        before = len(s.execute(select(transactions.c.id)).all())
        ignored = resolve(
            s, found["missing_in_ledger"].id, action="ignore", reason="test payment", resolved_by="finance:7"
        )
        noted = resolve(
            s, found["missing_externally"].id, action="note", reason="refunded at Stripe", resolved_by="finance:7"
        )
        assert (ignored.status, ignored.transaction_id) == ("ignored", None)
        assert (noted.status, noted.action, noted.resolution) == ("resolved", "note", "refunded at Stripe")
        assert len(s.execute(select(transactions.c.id)).all()) == before


@pytest.mark.parametrize(("action", "reason"), [("burn", "why not"), ("ignore", "  ")])
def test_bad_actions_are_refused(engine: Engine, action: str, reason: str) -> None:
    _card_case(engine)
    missing = _exceptions(engine)["missing_in_ledger"]
    with unit_of_work(engine) as s, pytest.raises(InvalidRequest):
        resolve(s, missing.id, action=action, reason=reason, resolved_by="finance:7")
    assert _exceptions(engine)["missing_in_ledger"].status == "open"


def test_minting_a_missing_transfer_uses_the_chains_reference(engine: Engine) -> None:
    address = "0x" + "33" * 20
    with unit_of_work(engine) as s:
        carol = create_customer_account(s, name="carol")
        deposit_address(s, carol, address)
        lost = transfer(s, 3, block=150, amount_usdc_units=2_500_000, to_address=address)
    with unit_of_work(engine) as s:
        reconcile_usdc(
            s,
            chain_id=CHAIN_ID,
            blocks=(100, 200),
            period_start=PERIOD_START,
            period_end=PERIOD_END,
            min_deposit_usdc_units=MIN_DEPOSIT_USDC_UNITS,
            now=LATER,
        )
    missing = _exceptions(engine)["missing_in_ledger"]
    assert missing.account_id == carol
    with unit_of_work(engine) as s:
        resolve(s, missing.id, action="mint", reason="listener was down", resolved_by="finance:7", now=LATER)
        lot = s.execute(select(lots).where(lots.c.external_ref == lost.reference)).one()
        assert (lot.rail, lot.credits, lot.cost_basis_usdc_units) == ("usdc", 250, 2_500_000)
        assert check_invariants(s) == []
