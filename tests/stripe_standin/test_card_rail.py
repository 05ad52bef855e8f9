"""creditrail's card rail against the stand-in, on both databases: a purchase paid on the checkout page and
recovered by the sync job alone (no webhook endpoint), the card saved, and auto-recharge charging that card
off-session (a card that needs authentication fails with ``authentication_required``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from services.card import auto_recharge, purchases
from services.card.flows import checkout
from services.card.flows.auto_recharge import run as run_auto_recharge
from services.card.flows.sync import sync
from services.card.packs import get_pack
from services.card.purchases import PurchaseView
from services.card.stripe_client import StripeGateway, build_stripe_client
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.settings import Settings
from services.ledger.accounts import create_customer_account
from services.ledger.balance import get_balance
from services.stripe_standin.server import StandinConfig, StripeStandin, start_standin
from services.stripe_standin.store import PayOutcome
from tests.stripe_standin.conftest import standin_settings

STANDARD_CREDITS = 1_000


@pytest.fixture
def quiet_standin() -> Iterator[StripeStandin]:
    """A stand-in with no webhook endpoint: creditrail hears of payments only through its sync job."""
    running = start_standin(StandinConfig(environment="test"))
    yield running
    running.stop()


@pytest.fixture
def rail(engine: Engine, quiet_standin: StripeStandin) -> tuple[Settings, StripeGateway]:
    settings = standin_settings(quiet_standin, database_url=str(engine.url))
    return settings, StripeGateway(build_stripe_client(settings), settings)


def _bought_with(
    engine: Engine, rail: tuple[Settings, StripeGateway], standin: StripeStandin, number: str
) -> tuple[int, PurchaseView]:
    """A customer who bought the Standard pack with ``number``, keeping the card, recovered by one sync."""
    settings, gateway = rail
    with unit_of_work(engine) as session:
        account_id = create_customer_account(session, name="acme")
    view, _replayed = checkout.start_checkout(
        engine, gateway, settings, account_id=account_id, pack=get_pack("standard"), save_card=True, idempotency_key="k"
    )
    assert view.checkout_session_id is not None
    paid = standin.store.pay_checkout(view.checkout_session_id, number=number, expiry="12/40", cvc="123")
    if paid.outcome is PayOutcome.REQUIRES_ACTION:
        paid = standin.store.authenticate_checkout(view.checkout_session_id, approve=True)
    assert paid.outcome is PayOutcome.PAID
    sync(engine, gateway, settings, utcnow())
    return account_id, view


def _available(engine: Engine, account_id: int) -> int:
    with unit_of_work(engine) as session:
        return get_balance(session, account_id).available_credits


def _recharge(engine: Engine, rail: tuple[Settings, StripeGateway], account_id: int) -> PurchaseView:
    """Turn auto-recharge on above the balance and run one pass; returns its purchase."""
    with unit_of_work(engine) as session:
        auto_recharge.configure(
            session, account_id, enabled=True, threshold_credits=5_000, pack="standard", now=utcnow()
        )
    assert run_auto_recharge(engine, rail[1], utcnow(), 50) == 1
    with unit_of_work(engine) as session:
        state = auto_recharge.get_view(session, account_id)
        assert state.last_purchase_id is not None
        return purchases.get_purchase(session, account_id, state.last_purchase_id)


def test_a_paid_checkout_is_minted_by_sync_alone_and_the_card_kept(
    engine: Engine, rail: tuple[Settings, StripeGateway], quiet_standin: StripeStandin
) -> None:
    account_id, view = _bought_with(engine, rail, quiet_standin, "4242424242424242")

    assert _available(engine, account_id) == STANDARD_CREDITS
    with unit_of_work(engine) as session:
        assert purchases.get_purchase(session, account_id, view.id).status == "completed"
        assert auto_recharge.get_view(session, account_id).has_saved_card


def test_auto_recharge_charges_the_saved_card_off_session(
    engine: Engine, rail: tuple[Settings, StripeGateway], quiet_standin: StripeStandin
) -> None:
    account_id, _view = _bought_with(engine, rail, quiet_standin, "4242424242424242")

    recharged = _recharge(engine, rail, account_id)

    assert recharged.status == "completed"
    assert _available(engine, account_id) == 2 * STANDARD_CREDITS


def test_auto_recharge_on_a_card_that_needs_authentication_fails_authentication_required(
    engine: Engine, rail: tuple[Settings, StripeGateway], quiet_standin: StripeStandin
) -> None:
    account_id, _view = _bought_with(engine, rail, quiet_standin, "4000000000003220")

    recharged = _recharge(engine, rail, account_id)

    assert recharged.status == "failed"
    assert recharged.failure_code == "authentication_required"
    assert _available(engine, account_id) == STANDARD_CREDITS
    with unit_of_work(engine) as session:
        assert auto_recharge.get_view(session, account_id).last_failure_code == "authentication_required"
