"""A wallet acts for one account: its address is normalised once, and its first sight makes its account once, even
when two transactions see it at the same moment."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from services.core.db import unit_of_work
from services.ledger import repository as ledger_repo
from services.ledger.models import AccountKind
from services.wallets import repository as repo
from services.wallets.errors import InvalidWalletAddress
from services.wallets.models import LinkedVia
from services.wallets.service import account_for_wallet, normalize_wallet_address

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
CHECKSUMMED = "0x52908400098527886E0F7030069857D2E4169EE7"


def customer_accounts(engine: Engine) -> int:
    accounts = ledger_repo.accounts
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(accounts).where(accounts.c.kind == AccountKind.CUSTOMER)
            ).scalar_one()
        )


def test_an_address_is_lowercased_whatever_its_case() -> None:
    assert normalize_wallet_address(f"  {CHECKSUMMED} ") == CHECKSUMMED.lower()


@pytest.mark.parametrize(
    "text_in",
    [
        "",
        "0x",
        "52908400098527886e0f7030069857d2e4169ee7",
        "0x52908400098527886e0f7030069857d2e4169ee",
        "0xzz" + "0" * 38,
    ],
)
def test_anything_else_is_not_an_address(text_in: str) -> None:
    with pytest.raises(InvalidWalletAddress) as raised:
        normalize_wallet_address(text_in)
    assert (raised.value.code, raised.value.status_code) == ("invalid_wallet_address", 400)


def test_an_unknown_wallet_has_no_account_unless_asked_to_make_one(engine: Engine) -> None:
    with unit_of_work(engine) as session:
        assert account_for_wallet(session, CHECKSUMMED, now=NOW, create=False) is None
    assert customer_accounts(engine) == 0

    with unit_of_work(engine) as session:
        made = account_for_wallet(session, CHECKSUMMED, now=NOW, create=True, linked_via=LinkedVia.SIGN_IN)
    with unit_of_work(engine) as session:
        assert account_for_wallet(session, CHECKSUMMED.lower(), now=NOW, create=True) == made
        wallet = repo.wallet_by_address(session, CHECKSUMMED.lower())
    assert (wallet.account_id, wallet.linked_via) == (made, "sign_in")
    assert customer_accounts(engine) == 1


def test_a_failed_request_leaves_no_account_behind(engine: Engine) -> None:
    def fail_after_first_sight() -> None:
        with unit_of_work(engine) as session:
            assert account_for_wallet(session, CHECKSUMMED, now=NOW, create=True) is not None
            raise RuntimeError("the request failed after the wallet was seen")

    with pytest.raises(RuntimeError):
        fail_after_first_sight()
    assert customer_accounts(engine) == 0


def wait_until_blocked(engine: Engine, seconds: float = 30.0) -> None:
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(query).scalar_one():
                return
        threading.Event().wait(0.01)
    raise AssertionError("the second transaction never waited for the first")


def test_two_first_sights_at_once_make_one_account(pg_engine: Engine) -> None:
    """The first transaction links the wallet and stays open; the second waits on the unique address, then finds
    the first's account and leaves none of its own."""
    first_linked = threading.Event()
    release_first = threading.Event()
    answers: dict[str, int | None] = {}
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with unit_of_work(pg_engine) as session:
                answers["first"] = account_for_wallet(session, CHECKSUMMED, now=NOW, create=True)
                first_linked.set()
                assert release_first.wait(30)
        except BaseException as exc:
            errors.append(exc)
            first_linked.set()

    def second() -> None:
        try:
            with unit_of_work(pg_engine) as session:
                answers["second"] = account_for_wallet(session, CHECKSUMMED, now=NOW, create=True)
        except BaseException as exc:
            errors.append(exc)

    one = threading.Thread(target=first)
    one.start()
    assert first_linked.wait(30)
    two = threading.Thread(target=second)
    two.start()
    wait_until_blocked(pg_engine)
    release_first.set()
    one.join(30)
    two.join(30)

    assert errors == []
    assert answers["first"] is not None
    assert answers["second"] == answers["first"]
    assert customer_accounts(pg_engine) == 1
