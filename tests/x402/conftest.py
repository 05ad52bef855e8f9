"""Buying credits over x402 against a real anvil with the EIP-3009 test token, on both databases: the app served by
uvicorn in a thread, the built-in facilitator relaying from an anvil development account (gas only), payers that
are fresh keys holding test USDC and no ether."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from eth_account import Account
from eth_account.signers.local import LocalAccount
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.engine import Engine

from chain.devchain import LocalToken, dev_account
from chain.node import AnvilNode, free_port
from chain.rpc import ChainRpc
from services.app.app import create_app
from services.core.db import table_of, unit_of_work
from services.core.settings import Settings
from services.ledger.balance import get_balance
from services.ledger.invariants import check_invariants
from services.ledger.models import Lot
from services.usdc.models import UsdcDeposit
from services.x402.facilitators import Facilitator
from services.x402.flows.purchase import X402Rail, build_rail
from services.x402.models import X402Payment
from tests.chain.conftest import ensure_node_modules
from tests.usdc.conftest import (
    CHAIN_ID,
    OwnChain,
    Rail,
    chain_settings_for,
    make_rail,
    other_token,
    own_chain,
    rail_settings,
    rpc,
    start_own_chain,
    token,
    wallet,
)

__all__ = [
    "CHAIN_ID",
    "make_rail",
    "other_token",
    "own_chain",
    "rpc",
    "token",
    "wallet",
]

RELAYER = dev_account(7)
PAYER_FUNDS_UNITS = 1_000 * 10**6  # 1,000 test USDC
CREDITS = 500
AMOUNT_UNITS = 5 * 10**6


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilNode]:
    """The x402 tests' own node: other tests move the shared node's clock ahead (exact block timestamps), while an
    authorization's validBefore is the client's wall clock plus the offer's timeout."""
    ensure_node_modules()
    with AnvilNode(chain_id=CHAIN_ID, slots_in_an_epoch=1) as node:
        yield node


def x402_settings(settings: Settings, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "x402_relayer_key": SecretStr(RELAYER.key.hex()),
        "x402_settle_wait_seconds": 15.0,
        "x402_resolve_after_seconds": 0.5,
    }
    values.update(overrides)
    return settings.model_copy(update=values)


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@dataclass
class Shop:
    """The app selling credits over x402 on one chain, served over HTTP."""

    engine: Engine
    settings: Settings
    url: str
    rpc: ChainRpc
    token: LocalToken
    app: Any
    rail: X402Rail
    payers: list[LocalAccount] = field(default_factory=list)

    @property
    def chain_id(self) -> int:
        return self.settings.usdc_chains[0].chain_id

    @property
    def credits_url(self) -> str:
        return f"{self.url}/v1/x402/credits"

    def payer(self, funds_units: int = PAYER_FUNDS_UNITS) -> LocalAccount:
        """A fresh key holding ``funds_units`` of the token and no ether."""
        account: LocalAccount = Account.create()
        if funds_units:
            self.token.transfer(account.address, funds_units)
        self.payers.append(account)
        return account

    def payments(self) -> list[Any]:
        table = table_of(X402Payment)
        with unit_of_work(self.engine) as session:
            return list(session.execute(select(table).order_by(table.c.id)).all())

    def lots(self, account_id: int | None = None) -> list[Any]:
        table = table_of(Lot)
        stmt = select(table).order_by(table.c.id)
        if account_id is not None:
            stmt = stmt.where(table.c.account_id == account_id)
        with unit_of_work(self.engine) as session:
            return list(session.execute(stmt).all())

    def deposits(self) -> list[Any]:
        table = table_of(UsdcDeposit)
        with unit_of_work(self.engine) as session:
            return list(session.execute(select(table).order_by(table.c.id)).all())

    def available(self, account_id: int) -> int:
        with unit_of_work(self.engine) as session:
            return get_balance(session, account_id).available_credits

    def assert_invariants(self) -> None:
        with unit_of_work(self.engine) as session:
            assert check_invariants(session) == []

    def offer(self, body: dict[str, Any], **params: Any) -> httpx.Response:
        response = httpx.post(self.credits_url, json=body, params=params, timeout=30)
        assert response.status_code == 402, response.text
        return response


@contextmanager
def serve(settings: Settings, engine: Engine, rail: X402Rail | None = None) -> Iterator[tuple[str, Any, X402Rail]]:
    rail = rail or build_rail(settings)
    assert rail is not None
    app = create_app(settings, engine=engine)
    app.state.x402_rail = rail
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="creditrail-x402", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "the API to start")
        assert server.started, "the API did not start"
        yield f"http://127.0.0.1:{port}", app, rail
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def make_shop(engine: Engine, make_rail: Any, rpc: ChainRpc, token: LocalToken) -> Iterator[Callable[..., Shop]]:
    """``make_shop(**x402 settings)``: the app on the session's anvil and token, 3 confirmations."""
    stack: list[Any] = []

    def build(wrap: Callable[[Facilitator], Facilitator] | None = None, **overrides: Any) -> Shop:
        usdc: Rail = make_rail()
        settings = x402_settings(usdc.settings, **overrides)
        rail = build_rail(settings)
        assert rail is not None
        if wrap is not None:
            rail.facilitator = wrap(rail.facilitator)
        context = serve(settings, engine, rail)
        url, app, built = context.__enter__()
        stack.append(context)
        return Shop(engine, settings, url, rpc, token, app, built)

    yield build
    for context in reversed(stack):
        context.__exit__(None, None, None)


@pytest.fixture
def shop(make_shop: Callable[..., Shop]) -> Shop:
    return make_shop()


@pytest.fixture(scope="session")
def legacy_chain() -> Iterator[OwnChain]:
    """An anvil carrying base-sepolia's chain id (84532), for the x402 client's v1 scheme."""
    own = start_own_chain(84532)
    yield own
    own.rpc.close()
    own.node.close()


@pytest.fixture
def legacy_shop(engine: Engine, legacy_chain: OwnChain) -> Iterator[Shop]:
    chain = chain_settings_for(legacy_chain.rpc, legacy_chain.token, name="base-sepolia (local)")
    settings = x402_settings(rail_settings(engine, chain))
    with serve(settings, engine) as (url, app, rail):
        yield Shop(engine, settings, url, legacy_chain.rpc, legacy_chain.token, app, rail)


@pytest.fixture
def own_shop(engine: Engine, own_chain: OwnChain) -> Iterator[Shop]:
    """The app on an anvil of the test's own (chain id 31338), for tests that move the chain's clock."""
    chain = chain_settings_for(own_chain.rpc, own_chain.token, name="own")
    settings = x402_settings(rail_settings(engine, chain))
    with serve(settings, engine) as (url, app, rail):
        yield Shop(engine, settings, url, own_chain.rpc, own_chain.token, app, rail)
