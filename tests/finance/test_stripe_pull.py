"""The Stripe pull mirrors a window's balance transactions and Checkout Sessions page by page, once each, resuming
where a failure stopped it and never fetching a complete window again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from services.card.errors import StripeTimeout, StripeUnavailable
from services.core.errors import InvalidRequest
from services.finance.flows.stripe_pull import (
    CHECKOUT_SESSIONS_SOURCE,
    SESSION_LEAD,
    MalformedStripeRecord,
    balance_transaction_values,
    pull_stripe,
)
from services.finance.models import PullStatus
from tests.card.conftest import Card, make_card
from tests.card.stripe_fake import DISPUTE_FEE_CENTS, card_fee_cents
from tests.finance.stripe_support import (
    AFTER,
    BALANCE_TRANSACTIONS_PATH,
    DURING,
    SESSIONS_PATH,
    WINDOW_END,
    WINDOW_START,
    StripeMirror,
    TransactionWatch,
    stripe_mirror,
    unix,
)


@pytest.fixture
def mirror(engine: Engine) -> Iterator[StripeMirror]:
    yield from stripe_mirror(engine)


@pytest.fixture
def card(engine: Engine) -> Iterator[Card]:
    yield from make_card(engine)


def _page_ends(mirror: StripeMirror) -> list[str | None]:
    """The ``starting_after`` of each balance-transaction list request, in order."""
    return [r.params.get("starting_after") for r in mirror.listed(BALANCE_TRANSACTIONS_PATH)]


# --- paging ------------------------------------------------------------------------------------------------------


def test_many_pages_are_read_to_the_end_and_each_record_is_stored_once(mirror: StripeMirror) -> None:
    made = mirror.stripe.add_balance_transactions(1_050, created=unix(DURING))

    result = mirror.pull()

    assert (result.balance_transactions.pages, result.balance_transactions.records) == (11, 1_050)
    assert result.balance_transactions.finished
    assert not result.resumed
    rows = mirror.transactions()
    assert len(rows) == mirror.distinct_transactions() == 1_050
    assert {row.stripe_id for row in rows} == {t["id"] for t in made}
    # Each page starts after the last record of the one before (Stripe lists newest first).
    newest_first = sorted((t["id"] for t in made), reverse=True)
    assert _page_ends(mirror) == [None, *newest_first[99:1_000:100]]
    state = mirror.pull_state()
    assert state is not None
    assert state.complete
    assert (state.status, state.pages, state.records, state.cursor) == ("complete", 11, 1_050, newest_first[-1])


def test_the_lists_ask_for_the_window_with_sources_expanded_a_hundred_at_a_time(mirror: StripeMirror) -> None:
    mirror.stripe.add_balance_transactions(3)

    mirror.pull()

    [transactions] = mirror.listed(BALANCE_TRANSACTIONS_PATH)
    assert transactions.params == {
        "created[gte]": str(unix(WINDOW_START)),
        "created[lt]": str(unix(WINDOW_END)),
        "expand": ["data.source"],
        "limit": "100",
    }
    [sessions] = mirror.listed(SESSIONS_PATH)
    assert sessions.params == {
        "created[gte]": str(unix(WINDOW_START - SESSION_LEAD)),
        "created[lt]": str(unix(WINDOW_END)),
        "limit": "100",
    }


def test_only_records_created_within_the_window_are_pulled(mirror: StripeMirror) -> None:
    before = mirror.stripe.add_balance_transactions(1, created=unix(WINDOW_START) - 1)
    first = mirror.stripe.add_balance_transactions(1, created=unix(WINDOW_START))
    last = mirror.stripe.add_balance_transactions(1, created=unix(WINDOW_END) - 1)
    at_end = mirror.stripe.add_balance_transactions(1, created=unix(WINDOW_END))

    mirror.pull()

    stored = [row.stripe_id for row in mirror.transactions()]
    assert stored == [first[0]["id"], last[0]["id"]]
    assert before[0]["id"] not in stored
    assert at_end[0]["id"] not in stored


def test_sessions_are_pulled_from_two_days_before_the_window(card: Card, engine: Engine) -> None:
    mirror = StripeMirror(engine, card.stripe, card.gateway)
    customer = card.customer()
    created = {}
    for key, moment in [
        ("too_early", WINDOW_START - SESSION_LEAD - timedelta(seconds=1)),
        ("day_before", WINDOW_START - timedelta(days=1)),
        ("during", DURING),
        ("after", WINDOW_END),
    ]:
        card.stripe.now = unix(moment)
        created[key] = card.bought(customer, key)["checkout_session_id"]

    mirror.pull()

    assert [row.stripe_id for row in mirror.sessions()] == [created["day_before"], created["during"]]


def test_a_pull_that_stops_at_max_pages_goes_on_from_there_next_time(mirror: StripeMirror) -> None:
    mirror.stripe.add_balance_transactions(250)

    first = mirror.pull(max_pages=2)
    assert (first.balance_transactions.pages, first.balance_transactions.finished) == (2, False)
    state = mirror.pull_state()
    assert state is not None
    assert state.status == PullStatus.RUNNING

    second = mirror.pull(max_pages=2)

    assert second.balance_transactions.resumed_after == state.cursor
    assert (second.balance_transactions.pages, second.balance_transactions.finished) == (1, True)
    assert len(mirror.transactions()) == mirror.distinct_transactions() == 250


# --- complete, failed, and windows still open ---------------------------------------------------------------------


def test_a_complete_pull_is_not_fetched_again(mirror: StripeMirror) -> None:
    mirror.stripe.add_balance_transactions(150)
    mirror.pull()
    sent = len(mirror.stripe.requests)

    again = mirror.pull(now=AFTER + timedelta(days=3))

    assert len(mirror.stripe.requests) == sent
    assert again.balance_transactions.skipped
    assert again.checkout_sessions.skipped
    assert (again.pages, again.records) == (0, 0)
    assert again.balance_transactions.total_records == 150


def test_a_failure_part_way_keeps_the_stored_pages_and_the_next_pull_resumes(mirror: StripeMirror) -> None:
    made = mirror.stripe.add_balance_transactions(1_050)
    newest_first = sorted((t["id"] for t in made), reverse=True)
    # Three pages come back; the fourth fails on the first try and on the client's retry.
    mirror.stripe.fail("GET", BALANCE_TRANSACTIONS_PATH, "500", times=2, after=3)

    with pytest.raises(StripeUnavailable):
        mirror.pull()

    failed = mirror.pull_state()
    assert failed is not None
    assert (failed.status, failed.pages, failed.records) == ("failed", 3, 300)
    assert failed.cursor == newest_first[299]
    assert failed.last_error is not None
    assert failed.last_error.startswith("stripe_unavailable:")
    assert {row.stripe_id for row in mirror.transactions()} == set(newest_first[:300])
    assert mirror.sessions_pull() is None
    asked_before = len(mirror.listed(BALANCE_TRANSACTIONS_PATH))

    resumed = mirror.pull()

    assert _page_ends(mirror)[asked_before] == newest_first[299]
    assert resumed.resumed
    assert resumed.balance_transactions.resumed_after == newest_first[299]
    assert (resumed.balance_transactions.pages, resumed.balance_transactions.records) == (8, 750)
    assert len(mirror.transactions()) == mirror.distinct_transactions() == 1_050
    done = mirror.pull_state()
    assert done is not None
    assert done.complete
    assert (done.pages, done.records, done.last_error) == (11, 1_050, None)
    sessions = mirror.sessions_pull()
    assert sessions is not None
    assert sessions.complete


def test_a_timeout_on_the_first_page_fails_the_pull_with_nothing_stored(mirror: StripeMirror) -> None:
    mirror.stripe.add_balance_transactions(5)
    mirror.stripe.fail("GET", BALANCE_TRANSACTIONS_PATH, "timeout", times=2)

    with pytest.raises(StripeTimeout):
        mirror.pull()

    failed = mirror.pull_state()
    assert failed is not None
    assert (failed.status, failed.cursor, failed.pages) == ("failed", None, 0)
    assert mirror.transactions() == []
    assert mirror.pull().balance_transactions.records == 5


def test_a_failing_sessions_list_leaves_the_transactions_pull_complete(mirror: StripeMirror) -> None:
    mirror.stripe.add_balance_transactions(5)
    mirror.stripe.fail("GET", SESSIONS_PATH, "500", times=2)

    with pytest.raises(StripeUnavailable):
        mirror.pull()

    transactions, sessions = mirror.pull_state(), mirror.sessions_pull()
    assert transactions is not None
    assert transactions.complete
    assert sessions is not None
    assert sessions.status == PullStatus.FAILED
    again = mirror.pull()
    assert again.balance_transactions.skipped
    assert again.checkout_sessions.finished


def test_a_record_the_mirror_cannot_hold_fails_the_pull(mirror: StripeMirror) -> None:
    [made] = mirror.stripe.add_balance_transactions(1)
    mirror.stripe.balance_transactions[made["id"]]["fee"] = None

    with pytest.raises(MalformedStripeRecord):
        mirror.pull()

    failed = mirror.pull_state()
    assert failed is not None
    assert failed.status == PullStatus.FAILED
    assert failed.last_error is not None
    assert "integer fee" in failed.last_error
    assert mirror.transactions() == []


def test_a_window_that_had_not_ended_is_fetched_again_and_the_latest_record_wins(mirror: StripeMirror) -> None:
    [early] = mirror.stripe.add_balance_transactions(1)
    first = mirror.pull(now=DURING)
    assert first.balance_transactions.records == 1
    state = mirror.pull_state()
    assert state is not None
    assert state.status == PullStatus.COMPLETE
    assert not state.complete

    # Later the same day: another payment, and the first one's funds became available.
    mirror.stripe.now = unix(DURING) + 3_600
    [later] = mirror.stripe.add_balance_transactions(1)
    mirror.stripe.balance_transactions[early["id"]]["status"] = "available"
    again = mirror.pull(now=WINDOW_END + timedelta(minutes=5))

    assert not again.balance_transactions.skipped
    assert again.balance_transactions.resumed_after is None
    assert _page_ends(mirror) == [None, None]
    assert again.balance_transactions.records == 2
    assert [row.stripe_id for row in mirror.transactions()] == [early["id"], later["id"]]
    stored = mirror.transaction(early["id"])
    assert stored.status == "available"
    assert json.loads(stored.raw)["status"] == "available"
    final = mirror.pull_state()
    assert final is not None
    assert final.complete
    assert (final.pages, final.records) == (1, 2)
    assert mirror.pull(now=AFTER + timedelta(days=1)).balance_transactions.skipped


def test_no_database_transaction_is_open_while_stripe_is_asked(mirror: StripeMirror, engine: Engine) -> None:
    mirror.stripe.add_balance_transactions(250)
    watch = TransactionWatch(engine)
    open_during_calls: list[int] = []
    gateway = mirror.gateway
    list_transactions, list_sessions = gateway.list_balance_transactions, gateway.list_checkout_sessions

    def watched(call: Any) -> Any:
        def inner(**kwargs: Any) -> Any:
            open_during_calls.append(watch.open)
            return call(**kwargs)

        return inner

    gateway.list_balance_transactions = watched(list_transactions)  # type: ignore[method-assign]
    gateway.list_checkout_sessions = watched(list_sessions)  # type: ignore[method-assign]
    try:
        mirror.pull()
    finally:
        watch.close()

    assert open_during_calls == [0, 0, 0, 0]


@pytest.mark.parametrize(
    ("start", "end"),
    [(datetime(2026, 3, 1), datetime(2026, 3, 2)), (WINDOW_END, WINDOW_START), (WINDOW_START, WINDOW_START)],
)
def test_a_window_must_be_timezone_aware_and_end_after_it_starts(mirror: StripeMirror, start: Any, end: Any) -> None:
    with pytest.raises(InvalidRequest):
        pull_stripe(mirror.engine, mirror.gateway, window_start=start, window_end=end)
    assert mirror.stripe.requests == []


# --- what each row says ------------------------------------------------------------------------------------------


def test_charges_refunds_disputes_and_reversals_are_mirrored_with_their_charge_and_payment_intent(
    card: Card, engine: Engine
) -> None:
    fake = card.stripe
    fake.now = unix(DURING)
    customer = card.customer()
    purchase = card.bought(customer)
    session = card.complete(purchase)
    charge = card.stripe.charge_of(session["id"])
    intent_id = session["payment_intent"]
    fake.now += 60
    refunded = fake.refund(charge["id"], 400)
    refund_id = refunded["refunds"]["data"][-1]["id"]
    fake.now += 60
    dispute = fake.dispute(charge["id"], amount_cents=600)
    fake.now += 60
    fake.close_dispute(dispute["id"], "won")
    fake.now += 60
    stray = fake.payment_without_purchase(2_500)
    mirror = StripeMirror(engine, fake, card.gateway)

    result = mirror.pull()

    assert result.balance_transactions.records == 5
    assert result.checkout_sessions.records == 1
    rows = mirror.transactions()
    summary = [
        (
            r.type,
            r.reporting_category,
            r.source_id,
            r.charge_id,
            r.payment_intent_id,
            r.amount_cents,
            r.fee_cents,
            r.net_cents,
        )
        for r in rows
    ]
    fee = card_fee_cents(1_000)
    assert fee == 59
    stray_charge = fake.charges[stray["source"]]
    assert summary == [
        ("charge", "charge", charge["id"], charge["id"], intent_id, 1_000, fee, 1_000 - fee),
        ("refund", "refund", refund_id, charge["id"], intent_id, -400, 0, -400),
        ("adjustment", "dispute", dispute["id"], charge["id"], intent_id, -600, DISPUTE_FEE_CENTS, -2_100),
        ("adjustment", "dispute_reversal", dispute["id"], charge["id"], intent_id, 600, 0, 600),
        (
            "charge",
            "charge",
            stray_charge["id"],
            stray_charge["id"],
            stray_charge["payment_intent"],
            2_500,
            card_fee_cents(2_500),
            2_500 - card_fee_cents(2_500),
        ),
    ]
    assert all(r.currency == "usd" for r in rows)
    assert [r.status for r in rows] == ["pending", "available", "available", "available", "pending"]
    assert rows[0].stripe_created_at == datetime.fromtimestamp(unix(DURING), UTC)
    raw = json.loads(rows[0].raw)
    assert raw["id"] == charge["balance_transaction"]
    assert raw["source"]["object"] == "charge"
    assert raw["source"]["payment_intent"] == intent_id
    assert all(r.fetched_at == AFTER for r in rows)

    [mirrored] = mirror.sessions()
    assert (
        mirrored.stripe_id,
        mirrored.payment_intent_id,
        mirrored.amount_total_cents,
        mirrored.currency,
        mirrored.status,
        mirrored.payment_status,
        mirrored.account_ref,
    ) == (session["id"], intent_id, 1_000, "usd", "complete", "paid", str(customer.account_id))
    assert json.loads(mirrored.raw)["metadata"]["creditrail_purchase_id"] == str(purchase["id"])
    sessions_state = mirror.pull_state(CHECKOUT_SESSIONS_SOURCE)
    assert sessions_state is not None
    assert sessions_state.details["created_gte"] == unix(WINDOW_START - SESSION_LEAD)


def test_an_inquiry_moves_no_money_and_a_lost_dispute_is_not_reversed(card: Card, engine: Engine) -> None:
    fake = card.stripe
    fake.now = unix(DURING)
    session = card.complete(card.bought(card.customer()))
    charge = card.stripe.charge_of(session["id"])
    inquiry = fake.dispute(charge["id"], status="warning_needs_response")
    lost = fake.dispute(charge["id"], amount_cents=300)
    fake.close_dispute(inquiry["id"], "warning_closed")
    fake.close_dispute(lost["id"], "lost")

    StripeMirror(engine, fake, card.gateway).pull()

    categories = [r.reporting_category for r in StripeMirror(engine, fake, card.gateway).transactions()]
    assert sorted(categories) == ["charge", "dispute"]


@pytest.mark.parametrize(
    ("source", "charge_id"),
    [
        ("ch_1", "ch_1"),
        ("py_1", "py_1"),
        ("re_1", None),
        ({"id": "re_1", "object": "refund", "charge": "ch_9"}, "ch_9"),
    ],
)
def test_an_unexpanded_source_still_names_a_charge_it_is(source: Any, charge_id: str | None) -> None:
    listed = {
        "id": "txn_1",
        "type": "charge",
        "reporting_category": "charge",
        "amount": 100,
        "fee": 33,
        "net": 67,
        "currency": "USD",
        "status": "available",
        "created": unix(WINDOW_START),
        "source": source,
    }

    values = balance_transaction_values(listed, AFTER)

    assert values["charge_id"] == charge_id
    assert values["source_id"] == (source if isinstance(source, str) else source["id"])
    assert values["currency"] == "usd"
    assert values["stripe_created_at"] == WINDOW_START
    assert values["payment_intent_id"] is None
