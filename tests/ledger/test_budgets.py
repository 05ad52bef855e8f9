import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from services.apikeys.service import ApiKeys
from services.core.db import unit_of_work
from services.core.errors import InvalidRequest
from services.ledger.budgets import BudgetView, create_budget, delete_budget, get_budget, list_budgets, update_budget
from services.ledger.errors import BudgetExceeded, BudgetNameTaken, InsufficientCredits, InvalidAmount
from services.ledger.holds import HoldView, capture_hold, create_hold, expire_holds, release_hold
from services.ledger.spending import SpendResult, spend
from tests.ledger.support import (
    T0,
    bad_amounts,
    ledger_balance,
    mint_card,
    new_account,
    new_api_key,
    refusals,
    snapshot,
    violations,
)


def budget(
    engine: Engine,
    account_id: int,
    limit_credits: int,
    period: str = "day",
    scope: str = "project",
    scope_ref: str = "alpha",
    name: str | None = None,
    now: datetime = T0,
) -> BudgetView:
    with unit_of_work(engine) as session:
        return create_budget(
            session,
            ApiKeys(),
            account_id=account_id,
            name=name or f"{scope}:{scope_ref}:{period}",
            scope=scope,
            scope_ref=scope_ref,
            period=period,
            limit_credits=limit_credits,
            now=now,
        )


def used(engine: Engine, account_id: int, budget_id: int, now: datetime) -> int:
    with unit_of_work(engine) as session:
        return get_budget(session, account_id, budget_id, now).used_credits


def spend_credits(
    engine: Engine,
    account_id: int,
    amount_credits: int,
    now: datetime = T0,
    project: str | None = "alpha",
    api_key_id: int | None = None,
) -> SpendResult:
    with unit_of_work(engine) as session:
        return spend(
            session,
            account_id=account_id,
            amount_credits=amount_credits,
            idempotency_key=uuid.uuid4().hex,
            project=project,
            api_key_id=api_key_id,
            now=now,
        )


def hold(
    engine: Engine,
    account_id: int,
    amount_credits: int,
    key: str,
    now: datetime = T0,
    project: str | None = "alpha",
    ttl_seconds: int = 300,
    api_key_id: int | None = None,
) -> HoldView:
    with unit_of_work(engine) as session:
        return create_hold(
            session,
            account_id=account_id,
            amount_credits=amount_credits,
            idempotency_key=key,
            ttl_seconds=ttl_seconds,
            project=project,
            api_key_id=api_key_id,
            now=now,
        )


@pytest.fixture
def funded_account(engine):
    account_id = new_account(engine)
    mint_card(engine, account_id, 100_000, at=datetime(2024, 12, 1, tzinfo=UTC))
    return account_id


# (period, when the first spend happens, the last instant of that period, the first instant of the next one)
PERIODS = [
    pytest.param(
        "day",
        datetime(2025, 6, 11, 0, 0, tzinfo=UTC),
        datetime(2025, 6, 11, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2025, 6, 12, 0, 0, tzinfo=UTC),
        id="day-utc-midnight",
    ),
    pytest.param(
        "week",
        datetime(2025, 6, 9, 0, 0, tzinfo=UTC),  # a Monday
        datetime(2025, 6, 15, 23, 59, 59, 999999, tzinfo=UTC),  # the Sunday after
        datetime(2025, 6, 16, 0, 0, tzinfo=UTC),  # the next Monday
        id="week-monday",
    ),
    pytest.param(
        "month",
        datetime(2025, 1, 1, 0, 0, tzinfo=UTC),
        datetime(2025, 1, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2025, 2, 1, 0, 0, tzinfo=UTC),
        id="month-calendar",
    ),
]


@pytest.mark.parametrize(("period", "first_spend_at", "period_ends_at", "next_period_at"), PERIODS)
def test_budget_caps_spending_within_its_period_and_renews_at_the_boundary(
    engine, funded_account, period, first_spend_at, period_ends_at, next_period_at
):
    created = budget(engine, funded_account, 100, period=period, now=first_spend_at)
    spend_credits(engine, funded_account, 60, now=first_spend_at)
    spend_credits(engine, funded_account, 40, now=period_ends_at)

    with pytest.raises(BudgetExceeded):
        spend_credits(engine, funded_account, 1, now=period_ends_at)
    spend_credits(engine, funded_account, 100, now=next_period_at)

    assert used(engine, funded_account, created.id, period_ends_at) == 100
    assert used(engine, funded_account, created.id, next_period_at) == 100
    with pytest.raises(BudgetExceeded):
        spend_credits(engine, funded_account, 1, now=next_period_at)


def test_week_budget_period_starts_on_the_monday_even_across_a_month_boundary(engine, funded_account):
    created = budget(engine, funded_account, 100, period="week")
    spend_credits(engine, funded_account, 100, now=datetime(2025, 5, 26, 9, 0, tzinfo=UTC))  # Monday

    with pytest.raises(BudgetExceeded):
        spend_credits(engine, funded_account, 1, now=datetime(2025, 6, 1, 9, 0, tzinfo=UTC))  # Sunday, new month

    with unit_of_work(engine) as session:
        view = get_budget(session, funded_account, created.id, datetime(2025, 6, 1, 9, 0, tzinfo=UTC))
    assert view.period_start == datetime(2025, 5, 26, tzinfo=UTC)


def test_total_budget_never_renews(engine, funded_account):
    budget(engine, funded_account, 100, period="total")
    spend_credits(engine, funded_account, 100, now=T0)

    with pytest.raises(BudgetExceeded):
        spend_credits(engine, funded_account, 1, now=T0 + timedelta(days=300))


def test_spend_over_budget_raises_budget_exceeded_and_writes_nothing(engine, funded_account):
    created = budget(engine, funded_account, 100)
    spend_credits(engine, funded_account, 70)
    before = snapshot(engine)

    with pytest.raises(BudgetExceeded) as refused:
        spend_credits(engine, funded_account, 31)

    assert refused.value.code == "budget_exceeded"
    assert refused.value.status_code == 402
    assert refused.value.details["budget_id"] == created.id
    assert (refused.value.details["used_credits"], refused.value.details["limit_credits"]) == (70, 100)
    assert snapshot(engine) == before


def test_hold_over_budget_raises_budget_exceeded_and_writes_nothing(engine, funded_account):
    budget(engine, funded_account, 100)
    before = snapshot(engine)

    with pytest.raises(BudgetExceeded):
        hold(engine, funded_account, 101, key="too-big")

    assert snapshot(engine) == before


def test_one_budget_over_its_limit_refuses_even_when_another_would_allow(engine, funded_account):
    key_id = new_api_key(engine, funded_account)
    roomy = budget(engine, funded_account, 1_000, scope="api_key", scope_ref=str(key_id))
    tight = budget(engine, funded_account, 50, scope="project", scope_ref="alpha")
    before = snapshot(engine)

    with pytest.raises(BudgetExceeded) as refused:
        spend_credits(engine, funded_account, 51, api_key_id=key_id, project="alpha")

    assert refused.value.details["budget_id"] == tight.id
    assert snapshot(engine) == before
    spend_credits(engine, funded_account, 50, api_key_id=key_id, project="alpha")
    assert used(engine, funded_account, roomy.id, T0) == 50
    assert used(engine, funded_account, tight.id, T0) == 50


def test_project_budget_counts_only_that_project(engine, funded_account):
    created = budget(engine, funded_account, 100, scope="project", scope_ref="alpha")

    spend_credits(engine, funded_account, 500, project="beta")
    spend_credits(engine, funded_account, 500, project=None)
    spend_credits(engine, funded_account, 100, project="alpha")

    assert used(engine, funded_account, created.id, T0) == 100
    with pytest.raises(BudgetExceeded):
        spend_credits(engine, funded_account, 1, project="alpha")


def test_api_key_budget_counts_only_that_key(engine, funded_account):
    key_id = new_api_key(engine, funded_account)
    other_key_id = new_api_key(engine, funded_account)
    created = budget(engine, funded_account, 100, scope="api_key", scope_ref=str(key_id))

    spend_credits(engine, funded_account, 500, api_key_id=other_key_id, project=None)
    spend_credits(engine, funded_account, 500, api_key_id=None, project=None)
    spend_credits(engine, funded_account, 100, api_key_id=key_id, project=None)

    assert used(engine, funded_account, created.id, T0) == 100
    with pytest.raises(BudgetExceeded):
        spend_credits(engine, funded_account, 1, api_key_id=key_id, project=None)
    with pytest.raises(BudgetExceeded):
        hold(engine, funded_account, 1, key="keyed-call", api_key_id=key_id, project=None)


def test_an_account_wide_budget_caps_every_key_and_project_together(engine, funded_account):
    key_id = new_api_key(engine, funded_account)
    created = budget(engine, funded_account, 1_000, period="month", scope="account", scope_ref="*")
    assert (created.scope, created.scope_ref) == ("account", "*")

    spend_credits(engine, funded_account, 300, project="alpha")
    spend_credits(engine, funded_account, 300, project="beta")
    spend_credits(engine, funded_account, 300, api_key_id=key_id, project=None)
    hold(engine, funded_account, 100, key="last-call", api_key_id=key_id, project=None)

    assert used(engine, funded_account, created.id, T0) == 1_000
    with pytest.raises(BudgetExceeded):
        spend_credits(engine, funded_account, 1, project="gamma")
    with pytest.raises(BudgetExceeded):
        hold(engine, funded_account, 1, key="one-more", api_key_id=key_id, project=None)
    with pytest.raises(InvalidRequest):
        budget(engine, funded_account, 1, period="month", scope="account", scope_ref="search", name="named")
    # A new month starts afresh.
    next_month = datetime(2025, 2, 1, tzinfo=UTC)
    spend_credits(engine, funded_account, 1_000, now=next_month, project="gamma")
    assert used(engine, funded_account, created.id, next_month) == 1_000


def test_api_key_budget_must_name_a_key_of_the_account(engine, funded_account):
    stranger = new_account(engine, "stranger")
    strangers_key_id = new_api_key(engine, stranger)
    before = snapshot(engine)

    for scope_ref in (str(strangers_key_id), "999999", "not-a-number"):
        with pytest.raises(InvalidRequest):
            budget(engine, funded_account, 100, scope="api_key", scope_ref=scope_ref)

    assert snapshot(engine) == before


@pytest.mark.parametrize(("scope", "period"), [("team", "day"), ("project", "fortnight")])
def test_budget_with_an_unknown_scope_or_period_is_refused(engine, funded_account, scope, period):
    with pytest.raises(InvalidRequest):
        budget(engine, funded_account, 100, scope=scope, period=period, scope_ref="alpha")


def test_hold_counts_in_full_until_it_is_captured_then_gives_back_the_unused_part(engine, funded_account):
    created = budget(engine, funded_account, 100)
    held = hold(engine, funded_account, 80, key="call")
    assert used(engine, funded_account, created.id, T0) == 80

    with pytest.raises(BudgetExceeded):
        spend_credits(engine, funded_account, 21)
    with unit_of_work(engine) as session:
        capture_hold(session, account_id=funded_account, hold_id=held.id, amount_credits=30, now=T0)

    assert used(engine, funded_account, created.id, T0) == 30
    spend_credits(engine, funded_account, 70)
    assert used(engine, funded_account, created.id, T0) == 100


def test_released_hold_gives_back_all_of_its_budget(engine, funded_account):
    created = budget(engine, funded_account, 100)
    held = hold(engine, funded_account, 80, key="call")

    with unit_of_work(engine) as session:
        release_hold(session, account_id=funded_account, hold_id=held.id, now=T0)

    assert used(engine, funded_account, created.id, T0) == 0


def test_expired_hold_gives_back_all_of_its_budget(engine, funded_account):
    created = budget(engine, funded_account, 100)
    hold(engine, funded_account, 80, key="call", ttl_seconds=60)

    with unit_of_work(engine) as session:
        assert expire_holds(session, now=T0 + timedelta(seconds=60)) == 1

    assert used(engine, funded_account, created.id, T0) == 0


def test_hold_gives_back_to_the_period_it_was_counted_in(engine, funded_account):
    created = budget(engine, funded_account, 100, period="day")
    late_evening = datetime(2025, 6, 11, 23, 58, tzinfo=UTC)
    next_morning = datetime(2025, 6, 12, 0, 1, tzinfo=UTC)
    held = hold(engine, funded_account, 80, key="midnight-call", now=late_evening)

    with unit_of_work(engine) as session:
        capture_hold(session, account_id=funded_account, hold_id=held.id, amount_credits=10, now=next_morning)

    assert used(engine, funded_account, created.id, late_evening) == 10
    assert used(engine, funded_account, created.id, next_morning) == 0


def test_budget_caps_spending_but_does_not_reserve_credits(engine):
    account_id = new_account(engine)
    mint_card(engine, account_id, 100)
    budget(engine, account_id, 1_000)

    with pytest.raises(InsufficientCredits):
        spend_credits(engine, account_id, 101)
    spend_credits(engine, account_id, 100, project="beta")

    assert ledger_balance(engine, account_id) == 0


def test_zero_limit_budget_refuses_every_spend(engine, funded_account):
    budget(engine, funded_account, 0)

    with pytest.raises(BudgetExceeded):
        spend_credits(engine, funded_account, 1)


def test_budget_refuses_an_invalid_limit_and_writes_nothing(engine, funded_account):
    outcomes = refusals(engine, lambda limit: budget(engine, funded_account, limit), bad_amounts(allow_zero=True))

    assert outcomes == dict.fromkeys(outcomes, InvalidAmount.code)


def test_deleted_budget_stops_applying(engine, funded_account):
    created = budget(engine, funded_account, 10)

    with unit_of_work(engine) as session:
        delete_budget(session, account_id=funded_account, budget_id=created.id, now=T0)
    spend_credits(engine, funded_account, 500)

    with unit_of_work(engine) as session:
        assert list_budgets(session, funded_account, T0) == []


def test_raised_limit_applies_to_the_current_period(engine, funded_account):
    created = budget(engine, funded_account, 100)
    spend_credits(engine, funded_account, 100)

    with unit_of_work(engine) as session:
        update_budget(session, account_id=funded_account, budget_id=created.id, limit_credits=150, now=T0)
    spend_credits(engine, funded_account, 50)

    with pytest.raises(BudgetExceeded):
        spend_credits(engine, funded_account, 1)


def test_budget_names_are_unique_per_account(engine, funded_account):
    budget(engine, funded_account, 100, name="daily")

    with pytest.raises(BudgetNameTaken):
        budget(engine, funded_account, 200, name="daily", scope_ref="beta")


def test_budget_usage_leaves_the_ledger_consistent(engine, funded_account):
    budget(engine, funded_account, 1_000)
    held = hold(engine, funded_account, 300, key="call")
    spend_credits(engine, funded_account, 200)
    with unit_of_work(engine) as session:
        capture_hold(session, account_id=funded_account, hold_id=held.id, amount_credits=150, now=T0)

    assert ledger_balance(engine, funded_account) == 100_000 - 350
    assert violations(engine) == []
