from datetime import datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from services.core.db import unit_of_work
from services.core.errors import IdempotencyKeyReused, InvalidRequest
from services.core.settings import get_settings
from services.ledger import repository as repo
from services.ledger.errors import (
    CaptureExceedsHold,
    HoldExpired,
    HoldNotActive,
    HoldNotFound,
    InsufficientCredits,
    InvalidAmount,
)
from services.ledger.expiry import expire_lots
from services.ledger.holds import HoldView, capture_hold, create_hold, expire_holds, get_hold, release_hold
from services.ledger.models import HoldStatus, MovementKind, TransactionKind
from services.ledger.spending import SpendResult, spend
from services.ledger.system_accounts import SystemAccount
from tests.ledger.support import (
    T0,
    bad_amounts,
    balance_of,
    entries_of,
    grant_credits,
    hold_row,
    ledger_balance,
    lot_row,
    mint_card,
    movements_of,
    new_account,
    refusals,
    snapshot,
    transactions_of_kind,
    violations,
)


def hold(
    engine: Engine,
    account_id: int,
    amount_credits: int,
    key: str = "call-1",
    now: datetime = T0,
    ttl_seconds: int | None = 300,
    project: str | None = None,
) -> HoldView:
    with unit_of_work(engine) as session:
        return create_hold(
            session,
            account_id=account_id,
            amount_credits=amount_credits,
            idempotency_key=key,
            ttl_seconds=ttl_seconds,
            now=now,
            project=project,
        )


def capture(
    engine: Engine, hold_id: int, amount_credits: int, now: datetime = T0, account_id: int | None = None
) -> HoldView:
    with unit_of_work(engine) as session:
        return capture_hold(session, account_id=account_id, hold_id=hold_id, amount_credits=amount_credits, now=now)


def release(engine: Engine, hold_id: int, now: datetime = T0, account_id: int | None = None) -> HoldView:
    with unit_of_work(engine) as session:
        return release_hold(session, account_id=account_id, hold_id=hold_id, now=now)


def resolve(engine: Engine, action: str, hold_id: int, now: datetime) -> HoldView:
    """Capture 10 credits of the hold, or release it."""
    if action == "capture":
        return capture(engine, hold_id, 10, now=now)
    return release(engine, hold_id, now=now)


def expire(engine: Engine, now: datetime) -> int:
    with unit_of_work(engine) as session:
        return expire_holds(session, now=now)


def spend_credits(engine: Engine, account_id: int, amount_credits: int, key: str, now: datetime = T0) -> SpendResult:
    with unit_of_work(engine) as session:
        return spend(session, account_id=account_id, amount_credits=amount_credits, idempotency_key=key, now=now)


def allocations_of(engine: Engine, hold_id: int) -> list[tuple[int, int]]:
    with unit_of_work(engine) as session:
        return [(row.lot_id, row.amount_credits) for row in repo.hold_allocations(session, hold_id)]


def test_hold_reserves_credits_on_the_soonest_expiring_lots_without_moving_them(engine):
    account_id = new_account(engine)
    sooner = grant_credits(engine, account_id, 30, expires_at=T0 + timedelta(days=3))
    later = mint_card(engine, account_id, 100)

    held = hold(engine, account_id, 50)

    assert held.status == HoldStatus.ACTIVE
    assert held.expires_at == T0 + timedelta(seconds=300)
    assert allocations_of(engine, held.id) == [(sooner.lot_id, 30), (later.lot_id, 20)]
    assert (lot_row(engine, sooner.lot_id).reserved_credits, lot_row(engine, later.lot_id).reserved_credits) == (30, 20)
    balance = balance_of(engine, account_id)
    assert (balance.available_credits, balance.reserved_credits, balance.total_credits) == (80, 50, 130)
    assert ledger_balance(engine, account_id) == 130
    assert violations(engine) == []


def test_hold_uses_the_default_time_to_live(engine):
    account_id = new_account(engine)
    mint_card(engine, account_id, 100)

    held = hold(engine, account_id, 10, ttl_seconds=None)

    assert held.expires_at == T0 + timedelta(seconds=get_settings().hold_default_ttl_seconds)


@pytest.mark.parametrize("capture_credits", [1, 40, 99, 100])
def test_capture_charges_up_to_the_hold_and_releases_the_rest(engine, capture_credits):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 150)
    held = hold(engine, account_id, 100)

    captured = capture(engine, held.id, capture_credits, now=T0 + timedelta(seconds=10))

    assert captured.status == HoldStatus.CAPTURED
    assert captured.captured_credits == capture_credits
    assert captured.resolved_at == T0 + timedelta(seconds=10)
    row = lot_row(engine, lot.lot_id)
    assert (row.remaining_credits, row.reserved_credits) == (150 - capture_credits, 0)
    assert captured.capture_transaction_id is not None
    assert entries_of(engine, captured.capture_transaction_id) == {
        account_id: -capture_credits,
        SystemAccount.REVENUE_USAGE: capture_credits,
    }
    assert movements_of(engine, captured.capture_transaction_id) == [
        (lot.lot_id, MovementKind.CAPTURE, -capture_credits)
    ]
    assert balance_of(engine, account_id).available_credits == 150 - capture_credits
    assert violations(engine) == []


def test_capture_draws_the_hold_lots_in_their_reserved_order(engine):
    account_id = new_account(engine)
    sooner = grant_credits(engine, account_id, 30, expires_at=T0 + timedelta(days=3))
    later = mint_card(engine, account_id, 100)
    held = hold(engine, account_id, 80)

    captured = capture(engine, held.id, 45)

    assert captured.capture_transaction_id is not None
    assert movements_of(engine, captured.capture_transaction_id) == [
        (sooner.lot_id, MovementKind.CAPTURE, -30),
        (later.lot_id, MovementKind.CAPTURE, -15),
    ]
    assert lot_row(engine, later.lot_id).remaining_credits == 85
    assert ledger_balance(engine, account_id) == 85
    assert violations(engine) == []


def test_release_charges_nothing_and_frees_the_reservation(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    held = hold(engine, account_id, 70)

    released = release(engine, held.id)

    assert released.status == HoldStatus.RELEASED
    assert (released.captured_credits, released.capture_transaction_id) == (0, None)
    row = lot_row(engine, lot.lot_id)
    assert (row.remaining_credits, row.reserved_credits) == (100, 0)
    assert transactions_of_kind(engine, TransactionKind.CAPTURE) == []
    assert balance_of(engine, account_id).available_credits == 100
    assert violations(engine) == []


def test_capture_above_the_hold_is_refused_and_writes_nothing(engine):
    account_id = new_account(engine)
    mint_card(engine, account_id, 500)
    held = hold(engine, account_id, 100)
    before = snapshot(engine)

    with pytest.raises(CaptureExceedsHold) as refused:
        capture(engine, held.id, 101)

    assert refused.value.code == "capture_exceeds_hold"
    assert snapshot(engine) == before
    assert hold_row(engine, held.id).status == HoldStatus.ACTIVE


@pytest.mark.parametrize("resolution", ["captured", "released", "expired"])
@pytest.mark.parametrize("action", ["capture", "release"])
def test_a_resolved_hold_can_be_neither_captured_nor_released(engine, resolution, action):
    account_id = new_account(engine)
    mint_card(engine, account_id, 100)
    held = hold(engine, account_id, 50, ttl_seconds=60)
    later = T0 + timedelta(seconds=30)
    if resolution == "captured":
        capture(engine, held.id, 20, now=later)
    elif resolution == "released":
        release(engine, held.id, now=later)
    else:
        assert expire(engine, T0 + timedelta(seconds=60)) == 1
    before = snapshot(engine)

    with pytest.raises(HoldNotActive):
        resolve(engine, action, held.id, now=later)

    assert snapshot(engine) == before


@pytest.mark.parametrize("action", ["capture", "release"])
def test_a_hold_past_its_time_to_live_can_be_neither_captured_nor_released(engine, action):
    account_id = new_account(engine)
    mint_card(engine, account_id, 100)
    held = hold(engine, account_id, 50, ttl_seconds=60)
    before = snapshot(engine)

    with pytest.raises(HoldExpired):
        resolve(engine, action, held.id, now=T0 + timedelta(seconds=60))

    assert snapshot(engine) == before


def test_capture_just_before_the_time_to_live_succeeds(engine):
    account_id = new_account(engine)
    mint_card(engine, account_id, 100)
    held = hold(engine, account_id, 50, ttl_seconds=60)

    captured = capture(engine, held.id, 50, now=T0 + timedelta(seconds=59, microseconds=999_999))

    assert captured.status == HoldStatus.CAPTURED


def test_expire_holds_releases_only_the_holds_past_their_time_to_live(engine):
    account_id = new_account(engine)
    lot = mint_card(engine, account_id, 100)
    short = hold(engine, account_id, 30, key="short", ttl_seconds=60)
    long = hold(engine, account_id, 20, key="long", ttl_seconds=600)

    assert expire(engine, T0 + timedelta(seconds=59)) == 0
    assert expire(engine, T0 + timedelta(seconds=60)) == 1
    assert expire(engine, T0 + timedelta(seconds=61)) == 0

    expired = hold_row(engine, short.id)
    assert (expired.status, expired.captured_credits) == (HoldStatus.EXPIRED, 0)
    assert expired.resolved_at == T0 + timedelta(seconds=60)
    assert hold_row(engine, long.id).status == HoldStatus.ACTIVE
    row = lot_row(engine, lot.lot_id)
    assert (row.remaining_credits, row.reserved_credits) == (100, 20)
    assert ledger_balance(engine, account_id) == 100
    assert violations(engine) == []


def test_expire_holds_works_through_several_accounts_in_batches(engine):
    accounts = [new_account(engine, f"customer {n}") for n in range(3)]
    for account_id in accounts:
        mint_card(engine, account_id, 100)
        hold(engine, account_id, 10, key="a", ttl_seconds=60)
        hold(engine, account_id, 10, key="b", ttl_seconds=60)

    with unit_of_work(engine) as session:
        first_batch = expire_holds(session, now=T0 + timedelta(minutes=5), limit=4)
    rest = expire(engine, T0 + timedelta(minutes=5))

    assert (first_batch, rest) == (4, 2)
    assert all(balance_of(engine, account_id).reserved_credits == 0 for account_id in accounts)
    assert violations(engine) == []


def test_reserved_credits_cannot_be_spent_by_anything_else(engine):
    account_id = new_account(engine)
    mint_card(engine, account_id, 100)
    hold(engine, account_id, 70)

    with pytest.raises(InsufficientCredits):
        spend_credits(engine, account_id, 31, key="too-much")
    with pytest.raises(InsufficientCredits):
        hold(engine, account_id, 31, key="another-call")
    spend_credits(engine, account_id, 30, key="the-rest")

    assert balance_of(engine, account_id).available_credits == 0
    assert ledger_balance(engine, account_id) == 70


def test_capture_of_a_live_hold_never_fails_for_lack_of_credits_after_other_spends(engine):
    account_id = new_account(engine)
    mint_card(engine, account_id, 100)
    held = hold(engine, account_id, 60, ttl_seconds=600)
    spend_credits(engine, account_id, 25, key="other-1", now=T0 + timedelta(seconds=1))
    spend_credits(engine, account_id, 15, key="other-2", now=T0 + timedelta(seconds=2))

    captured = capture(engine, held.id, 60, now=T0 + timedelta(seconds=3))

    assert captured.captured_credits == 60
    assert ledger_balance(engine, account_id) == 0
    assert violations(engine) == []


def test_hold_retried_with_the_same_key_and_request_replays_without_writing(engine):
    account_id = new_account(engine)
    mint_card(engine, account_id, 100)
    first = hold(engine, account_id, 40, project="alpha")
    before = snapshot(engine)

    again = hold(engine, account_id, 40, project="alpha", now=T0 + timedelta(seconds=5))

    assert again.replayed is True
    assert first.replayed is False
    assert again.id == first.id
    assert again.expires_at == first.expires_at
    assert snapshot(engine) == before


def test_hold_key_reused_for_another_request_is_refused(engine):
    account_id = new_account(engine)
    mint_card(engine, account_id, 100)
    hold(engine, account_id, 40)
    before = snapshot(engine)

    with pytest.raises(IdempotencyKeyReused):
        hold(engine, account_id, 41)
    with pytest.raises(IdempotencyKeyReused):
        hold(engine, account_id, 40, ttl_seconds=301)

    assert snapshot(engine) == before


def test_hold_of_more_than_is_available_is_refused_and_writes_nothing(engine):
    account_id = new_account(engine)
    mint_card(engine, account_id, 100)
    before = snapshot(engine)

    with pytest.raises(InsufficientCredits):
        hold(engine, account_id, 101)

    assert snapshot(engine) == before


def test_hold_refuses_an_invalid_amount_and_writes_nothing(engine):
    account_id = new_account(engine)
    mint_card(engine, account_id, 100)

    outcomes = refusals(engine, lambda amount: hold(engine, account_id, amount), bad_amounts())

    assert outcomes == dict.fromkeys(outcomes, InvalidAmount.code)


def test_capture_refuses_an_invalid_amount_and_writes_nothing(engine):
    account_id = new_account(engine)
    mint_card(engine, account_id, 100)
    held = hold(engine, account_id, 50)

    outcomes = refusals(engine, lambda amount: capture(engine, held.id, amount), bad_amounts())

    assert outcomes == dict.fromkeys(outcomes, InvalidAmount.code)
    assert hold_row(engine, held.id).status == HoldStatus.ACTIVE


def test_hold_refuses_an_invalid_time_to_live(engine):
    account_id = new_account(engine)
    mint_card(engine, account_id, 100)
    bad_ttls = [0, -1, True, 1.5, "60", get_settings().hold_max_ttl_seconds + 1]

    outcomes = refusals(engine, lambda ttl: hold(engine, account_id, 10, ttl_seconds=ttl), bad_ttls)

    assert outcomes == dict.fromkeys(outcomes, InvalidRequest.code)


def test_a_hold_is_not_found_through_another_account(engine):
    owner, stranger = new_account(engine, "owner"), new_account(engine, "stranger")
    mint_card(engine, owner, 100)
    held = hold(engine, owner, 50)

    with pytest.raises(HoldNotFound), unit_of_work(engine) as session:
        get_hold(session, account_id=stranger, hold_id=held.id)
    with pytest.raises(HoldNotFound):
        capture(engine, held.id, 10, account_id=stranger)
    with pytest.raises(HoldNotFound):
        release(engine, held.id, account_id=stranger)

    assert capture(engine, held.id, 10, account_id=owner).captured_credits == 10


# --- a lot that expires while reserved --------------------------------------------------------------------


@pytest.fixture
def reserved_expiring_lot(engine):
    """A lot of 100 credits expiring at T0 + 1 day, 60 of them reserved by a hold made an hour before and living
    two hours; the expiry job has run at the lot's expiry."""
    account_id = new_account(engine)
    lot_expires_at = T0 + timedelta(days=1)
    lot = grant_credits(engine, account_id, 100, expires_at=lot_expires_at)
    held = hold(engine, account_id, 60, now=lot_expires_at - timedelta(hours=1), ttl_seconds=7_200)
    with unit_of_work(engine) as session:
        batch = expire_lots(session, now=lot_expires_at)
    return account_id, lot.lot_id, held, lot_expires_at, batch


def test_expiry_job_expires_only_the_unreserved_part_of_a_reserved_lot(engine, reserved_expiring_lot):
    account_id, lot_id, _, _, batch = reserved_expiring_lot

    assert (batch.lots_expired, batch.credits_expired) == (1, 40)
    row = lot_row(engine, lot_id)
    assert (row.remaining_credits, row.reserved_credits, row.expired_credits) == (60, 60, 40)
    assert ledger_balance(engine, account_id) == 60
    assert ledger_balance(engine, SystemAccount.BREAKAGE) == 40
    assert violations(engine) == []


def test_expiry_job_leaves_a_fully_reserved_expired_lot_alone(engine, reserved_expiring_lot):
    _, lot_id, _, lot_expires_at, _ = reserved_expiring_lot

    with unit_of_work(engine) as session:
        again = expire_lots(session, now=lot_expires_at + timedelta(minutes=10))

    assert again.lots_expired == 0
    assert lot_row(engine, lot_id).remaining_credits == 60


def test_capture_on_an_expired_lot_spends_the_captured_part_and_expires_the_rest_at_once(engine, reserved_expiring_lot):
    account_id, lot_id, held, lot_expires_at, _ = reserved_expiring_lot

    captured = capture(engine, held.id, 25, now=lot_expires_at + timedelta(minutes=30))

    row = lot_row(engine, lot_id)
    assert (row.remaining_credits, row.reserved_credits, row.expired_credits) == (0, 0, 75)
    assert captured.capture_transaction_id is not None
    assert entries_of(engine, captured.capture_transaction_id) == {account_id: -25, SystemAccount.REVENUE_USAGE: 25}
    hold_expiry = transactions_of_kind(engine, TransactionKind.EXPIRY)[-1]
    assert entries_of(engine, hold_expiry.id) == {account_id: -35, SystemAccount.BREAKAGE: 35}
    assert movements_of(engine, hold_expiry.id) == [(lot_id, MovementKind.EXPIRY, -35)]
    assert ledger_balance(engine, account_id) == 0
    assert ledger_balance(engine, SystemAccount.BREAKAGE) == 75
    assert violations(engine) == []


@pytest.mark.parametrize("resolution", ["release", "expire_holds"])
def test_releasing_a_hold_on_an_expired_lot_expires_the_whole_reservation(engine, reserved_expiring_lot, resolution):
    account_id, lot_id, held, lot_expires_at, _ = reserved_expiring_lot

    if resolution == "release":
        release(engine, held.id, now=lot_expires_at + timedelta(minutes=30))
    else:
        assert expire(engine, held.expires_at) == 1

    row = lot_row(engine, lot_id)
    assert (row.remaining_credits, row.reserved_credits, row.expired_credits) == (0, 0, 100)
    assert ledger_balance(engine, account_id) == 0
    assert ledger_balance(engine, SystemAccount.BREAKAGE) == 100
    assert violations(engine) == []


def test_a_hold_resolving_before_the_expiry_job_runs_expires_only_its_own_part(engine):
    account_id = new_account(engine)
    lot_expires_at = T0 + timedelta(days=1)
    lot = grant_credits(engine, account_id, 100, expires_at=lot_expires_at)
    held = hold(engine, account_id, 60, now=lot_expires_at - timedelta(hours=1), ttl_seconds=7_200)

    capture(engine, held.id, 10, now=lot_expires_at + timedelta(minutes=1))
    row = lot_row(engine, lot.lot_id)
    assert (row.remaining_credits, row.expired_credits) == (40, 50)
    with unit_of_work(engine) as session:
        batch = expire_lots(session, now=lot_expires_at + timedelta(minutes=2))

    assert batch.credits_expired == 40
    row = lot_row(engine, lot.lot_id)
    assert (row.remaining_credits, row.reserved_credits, row.expired_credits) == (0, 0, 90)
    assert ledger_balance(engine, account_id) == 0
    assert violations(engine) == []


def test_credits_of_an_expired_lot_cannot_be_reserved(engine):
    account_id = new_account(engine)
    grant_credits(engine, account_id, 100, expires_at=T0 + timedelta(days=1))

    with pytest.raises(InsufficientCredits):
        hold(engine, account_id, 1, now=T0 + timedelta(days=1))
