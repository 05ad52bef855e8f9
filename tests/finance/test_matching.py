"""Reconciliation's matching on both databases: every kind of discrepancy, on each rail, sorted as it should be;
late items matched and shown late; re-running a period is idempotent; exceptions raised once and closed when a
later run matches their item."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from services.core.db import unit_of_work
from services.finance.matching import reconcile_card, reconcile_usdc
from services.finance.models import ItemCategory
from services.finance.runs import items, list_items, usdc_rail
from services.finance.schemas import RunOut
from services.ledger.accounts import create_customer_account
from services.ledger.invariants import check_invariants
from services.review.service import list_exceptions
from tests.finance.mirror_support import (
    CHAIN_ID,
    MIN_DEPOSIT_USDC_UNITS,
    PERIOD_END,
    PERIOD_START,
    at,
    balance_txn,
    by_ref,
    card_lot,
    checkout_session,
    claw,
    deposit_address,
    transfer,
    usdc_lot,
)

NEXT_DAY_END = PERIOD_END + timedelta(days=1)


def _card_world(engine: Engine) -> dict[str, int]:
    """One period of card payments with one of every case."""
    with unit_of_work(engine) as s:
        alice = create_customer_account(s, name="alice")
        bob = create_customer_account(s, name="bob")
        # matched
        balance_txn(s, "txn_ok", amount_cents=1_000, created=at(10), charge_id="ch_ok", payment_intent_id="pi_ok")
        checkout_session(s, "cs_ok", payment_intent_id="pi_ok", amount_cents=1_000, account_id=alice, created=at(9))
        lot_ok = card_lot(s, alice, "cs_ok", credits=1_000, cost_cents=1_000, credited=at(10, 1))
        # paid at 23:59, credited just after midnight: late
        balance_txn(
            s, "txn_late", amount_cents=500, created=at(23, 59), charge_id="ch_late", payment_intent_id="pi_late"
        )
        checkout_session(s, "cs_late", payment_intent_id="pi_late", amount_cents=500, account_id=alice, created=at(23))
        card_lot(s, alice, "cs_late", credits=500, cost_cents=500, credited=at(0, 1, day=11))
        # paid, never credited
        balance_txn(s, "txn_lost", amount_cents=2_500, created=at(11), charge_id="ch_lost", payment_intent_id="pi_lost")
        checkout_session(s, "cs_lost", payment_intent_id="pi_lost", amount_cents=2_500, account_id=bob, created=at(11))
        # credited, never paid
        card_lot(s, bob, "cs_ghost", credits=5_000, cost_cents=5_000, credited=at(12))
        # paid 2,500, credited 1,000
        balance_txn(
            s, "txn_short", amount_cents=2_500, created=at(13), charge_id="ch_short", payment_intent_id="pi_short"
        )
        checkout_session(
            s, "cs_short", payment_intent_id="pi_short", amount_cents=2_500, account_id=bob, created=at(13)
        )
        card_lot(s, bob, "cs_short", credits=1_000, cost_cents=2_500, credited=at(13, 1))
        # an off-session charge (auto-recharge): the lot carries the PaymentIntent, no session
        balance_txn(s, "txn_auto", amount_cents=1_000, created=at(14), charge_id="ch_auto", payment_intent_id="pi_auto")
        lot_auto = card_lot(s, bob, "pi_auto", credits=1_000, cost_cents=1_000, credited=at(14))
        # a refund of half of the matched charge, clawed back: matched
        balance_txn(s, "txn_refund", amount_cents=-500, created=at(15), charge_id="ch_ok", type_="refund", fee_cents=0)
        claw(s, lot_ok, 500, at(15, 1), "refund-ok")
        # a refund with no clawback: missing in the ledger
        balance_txn(
            s, "txn_refund_lost", amount_cents=-300, created=at(16), charge_id="ch_auto", type_="refund", fee_cents=0
        )
        # a clawback with no refund or dispute behind it: missing externally
        balance_txn(s, "txn_kept", amount_cents=700, created=at(8), charge_id="ch_kept", payment_intent_id="pi_kept")
        lot_kept = card_lot(s, alice, "pi_kept", credits=700, cost_cents=700, credited=at(8))
        claw(s, lot_kept, 200, at(17), "no-refund")
        return {"alice": alice, "bob": bob, "lot_auto": lot_auto, "lot_kept": lot_kept}


def _run_card(engine: Engine, start: datetime = PERIOD_START, end: datetime = PERIOD_END) -> RunOut:
    with unit_of_work(engine) as s:
        return reconcile_card(s, period_start=start, period_end=end, cutoff=end + timedelta(days=3), now=NEXT_DAY_END)


def test_card_items_are_sorted_into_their_categories(engine: Engine) -> None:
    world = _card_world(engine)
    run = _run_card(engine)
    with unit_of_work(engine) as s:
        found = by_ref(list_items(s, run.id, limit=1_000))
    assert found["txn_ok"].category == ItemCategory.MATCHED
    assert not found["txn_ok"].late
    assert found["txn_late"].category == ItemCategory.MATCHED
    assert found["txn_late"].late
    assert found["txn_lost"].category == ItemCategory.MISSING_IN_LEDGER
    assert found["txn_lost"].lot_ref == "cs_lost"
    assert found["txn_lost"].expected_credits == 2_500
    ghost = next(row for row in found.values() if row.lot_ref == "cs_ghost")
    assert ghost.category == ItemCategory.MISSING_EXTERNALLY
    assert ghost.ledger_credits == 5_000
    short = found["txn_short"]
    assert (short.category, short.expected_credits, short.ledger_credits) == (
        ItemCategory.AMOUNT_MISMATCH,
        2_500,
        1_000,
    )
    assert found["txn_auto"].category == ItemCategory.MATCHED
    assert found["txn_auto"].lot_id == world["lot_auto"]
    # Refunds are matched per charge: what was given back against what was clawed back.
    assert found["ch_ok"].category == ItemCategory.MATCHED
    assert found["ch_ok"].kind == "refund"
    assert (found["ch_ok"].expected_credits, found["ch_ok"].ledger_credits) == (500, 500)
    assert found["ch_auto"].category == ItemCategory.MISSING_IN_LEDGER
    assert found["ch_kept"].category == ItemCategory.MISSING_EXTERNALLY
    assert found["ch_kept"].ledger_credits == 200
    # Matched: txn_ok, txn_late, txn_auto, txn_kept and the refund of ch_ok.
    assert (run.matched, run.missing_in_ledger, run.missing_externally, run.amount_mismatch, run.late) == (
        5,
        2,
        2,
        1,
        1,
    )
    assert run.discrepancies == 5
    with unit_of_work(engine) as s:
        raised = list_exceptions(s, "open", rail="card")
        assert check_invariants(s) == []
    assert sorted((e.kind, e.reference) for e in raised) == sorted(
        [
            ("reconciliation_missing_in_ledger", "card:txn_lost"),
            ("reconciliation_missing_externally", "card:cs_ghost"),
            ("reconciliation_amount_mismatch", "card:txn_short"),
            ("reconciliation_missing_in_ledger", "card:ch_auto#refund"),
            ("reconciliation_missing_externally", "card:ch_kept#refund"),
        ]
    )
    lost = next(e for e in raised if e.reference == "card:txn_lost")
    assert lost.account_id == world["bob"]
    assert lost.amount_cents == 2_500


def test_the_next_period_shows_the_late_credit_from_its_side(engine: Engine) -> None:
    _card_world(engine)
    run = _run_card(engine, PERIOD_END, NEXT_DAY_END)
    with unit_of_work(engine) as s:
        rows = list_items(s, run.id)
    late = [row for row in rows if row.lot_ref == "cs_late"]
    assert len(late) == 1
    assert late[0].category == ItemCategory.MATCHED
    assert late[0].late
    assert late[0].external_ref == "txn_late"


def test_rerunning_a_period_is_idempotent(engine: Engine) -> None:
    _card_world(engine)
    first = _run_card(engine)
    second = _run_card(engine)
    assert second.id == first.id
    assert second.attempts == 2
    assert (second.matched, second.discrepancies, second.late) == (first.matched, first.discrepancies, first.late)
    with unit_of_work(engine) as s:
        assert s.execute(select(func.count()).select_from(items)).scalar_one() == first.matched + first.discrepancies
        assert len(list_exceptions(s, "open")) == 5


def test_an_exception_closes_itself_when_a_later_run_matches_it(engine: Engine) -> None:
    world = _card_world(engine)
    _run_card(engine)
    with unit_of_work(engine) as s:
        # The webhook was only late: the lot appears.
        card_lot(s, world["bob"], "cs_lost", credits=2_500, cost_cents=2_500, credited=at(1, day=11))
    run = _run_card(engine)
    assert run.missing_in_ledger == 1
    assert run.late == 2
    with unit_of_work(engine) as s:
        closed = [e for e in list_exceptions(s, "resolved") if e.reference == "card:txn_lost"]
    assert len(closed) == 1
    assert closed[0].action == "rematched"
    assert closed[0].resolved_by == "reconciliation"


def test_an_empty_period_gives_an_empty_complete_run(engine: Engine) -> None:
    run = _run_card(engine)
    assert run.status == "complete"
    assert (run.matched, run.discrepancies, run.external_records, run.ledger_records) == (0, 0, 0, 0)


ALICE_ADDRESS = "0x" + "11" * 20
BOB_ADDRESS = "0x" + "22" * 20


def test_usdc_items_are_sorted_into_their_categories(engine: Engine) -> None:
    with unit_of_work(engine) as s:
        alice = create_customer_account(s, name="alice")
        bob = create_customer_account(s, name="bob")
        deposit_address(s, alice, ALICE_ADDRESS)
        deposit_address(s, bob, BOB_ADDRESS)
        ok = transfer(s, 1, block=150, amount_usdc_units=5_000_000, to_address=ALICE_ADDRESS)
        usdc_lot(s, alice, ok.reference, credits=500, credited=at(10))
        transfer(s, 2, block=151, amount_usdc_units=5_000, to_address=ALICE_ADDRESS)  # dust: carried
        lost = transfer(s, 3, block=152, amount_usdc_units=2_000_000, to_address=BOB_ADDRESS)
        reorged = f"{CHAIN_ID}:0x{4:064x}:0"
        usdc_lot(s, bob, reorged, credits=700, credited=at(11))
        # Also reorged away, but the listener caught it and clawed it back: nets to nothing on both sides.
        handled = f"{CHAIN_ID}:0x{10:064x}:0"
        handled_lot = usdc_lot(s, bob, handled, credits=300, credited=at(11, 30))
        claw(s, handled_lot, 300, at(11, 40), "deep-reorg")
        big = transfer(s, 5, block=153, amount_usdc_units=1_000_000, to_address=BOB_ADDRESS)
        usdc_lot(s, bob, big.reference, credits=300, credited=at(12))
        # Carried dust makes a lot a little bigger than its own transfer: still matched.
        carried_in = transfer(s, 6, block=154, amount_usdc_units=1_000_000, to_address=ALICE_ADDRESS)
        usdc_lot(s, alice, carried_in.reference, credits=100 + 99, credited=at(13))
        late = transfer(s, 7, block=200, amount_usdc_units=3_000_000, to_address=ALICE_ADDRESS)
        usdc_lot(s, alice, late.reference, credits=300, credited=at(0, 2, day=11))
        early = transfer(s, 8, block=90, amount_usdc_units=4_000_000, to_address=BOB_ADDRESS)
        usdc_lot(s, bob, early.reference, credits=400, credited=at(0, 3))
    with unit_of_work(engine) as s:
        run = reconcile_usdc(
            s,
            chain_id=CHAIN_ID,
            blocks=(100, 200),
            period_start=PERIOD_START,
            period_end=PERIOD_END,
            min_deposit_usdc_units=MIN_DEPOSIT_USDC_UNITS,
            now=NEXT_DAY_END,
        )
        found = by_ref(list_items(s, run.id))
        raised = list_exceptions(s, "open", rail="usdc")
    assert run.rail == usdc_rail(CHAIN_ID)
    assert found[ok.reference].category == ItemCategory.MATCHED
    dust = found[f"{CHAIN_ID}:0x{2:064x}:0"]
    assert (dust.category, dust.note, dust.account_id) == (ItemCategory.MATCHED, "carried", alice)
    assert found[lost.reference].category == ItemCategory.MISSING_IN_LEDGER
    assert found[lost.reference].account_id == bob
    assert found[lost.reference].expected_credits == 200
    caught = next(row for row in found.values() if row.lot_ref == handled)
    assert caught.category == ItemCategory.MATCHED
    assert caught.note == "clawed_back"
    gone = next(row for row in found.values() if row.lot_ref == reorged)
    assert gone.category == ItemCategory.MISSING_EXTERNALLY
    assert gone.ledger_credits == 700
    assert found[big.reference].category == ItemCategory.AMOUNT_MISMATCH
    assert found[carried_in.reference].category == ItemCategory.MATCHED
    assert found[late.reference].category == ItemCategory.MATCHED
    assert found[late.reference].late
    assert found[early.reference].category == ItemCategory.MATCHED
    assert found[early.reference].late
    assert (run.matched, run.missing_in_ledger, run.missing_externally, run.amount_mismatch, run.late) == (
        6,
        1,
        1,
        1,
        2,
    )
    assert sorted(e.kind for e in raised) == [
        "reconciliation_amount_mismatch",
        "reconciliation_missing_externally",
        "reconciliation_missing_in_ledger",
    ]


def test_a_period_with_no_blocks_only_reports_its_lots(engine: Engine) -> None:
    with unit_of_work(engine) as s:
        alice = create_customer_account(s, name="alice")
        usdc_lot(s, alice, f"{CHAIN_ID}:0x{9:064x}:0", credits=100, credited=at(10))
        # Another chain's lots are not this run's.
        usdc_lot(s, alice, f"1{CHAIN_ID}:0x{9:064x}:0", credits=100, credited=at(10))
    with unit_of_work(engine) as s:
        run = reconcile_usdc(
            s,
            chain_id=CHAIN_ID,
            blocks=None,
            period_start=PERIOD_START,
            period_end=PERIOD_END,
            min_deposit_usdc_units=MIN_DEPOSIT_USDC_UNITS,
            now=NEXT_DAY_END,
        )
    assert (run.external_records, run.ledger_records, run.missing_externally, run.matched) == (0, 1, 1, 0)
