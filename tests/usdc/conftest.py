"""The USDC rail against a real anvil, on both databases.

The node, the wallet and the two token contracts are the chain tests' session fixtures. Each test derives its
deposit addresses from a fresh random xpub (so no two tests share an address) and starts its listener at the head as
it finds it, so it sees only the transfers it made.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bip32 import BIP32
from sqlalchemy import select
from sqlalchemy.engine import Engine

from chain.devchain import DevWallet, LocalToken, dev_account, mine
from chain.node import AnvilNode
from chain.rpc import ChainReader, ChainRpc, RetryPolicy
from services.core.clock import utcnow
from services.core.db import table_of, unit_of_work
from services.core.settings import ChainSettings, Settings
from services.ledger.accounts import create_customer_account
from services.ledger.balance import Balance, get_balance
from services.ledger.invariants import check_invariants
from services.ledger.models import Account
from services.ledger.repository import ledger_balance
from services.usdc import repository as usdc_repo
from services.usdc.addresses import ensure_deposit_address
from services.usdc.flows.listener import PollOutcome, confirm_deposits, poll_chain
from services.usdc.models import UsdcDeposit
from tests.chain.conftest import (
    CHAIN_ID,
    TOKEN_SUPPLY_UNITS,
    anvil,
    ensure_node_modules,
    other_token,
    rpc,
    token,
    wallet,
)

__all__ = ["CHAIN_ID", "TOKEN_SUPPLY_UNITS", "anvil", "other_token", "rpc", "token", "wallet"]

accounts_table = table_of(Account)


def random_xpub() -> str:
    """A fresh account-level xpub (m/44'/60'/0') of a random seed."""
    return str(BIP32.from_seed(os.urandom(32)).get_xpub_from_path("m/44'/60'/0'"))


@dataclass
class Rail:
    """One test's USDC rail: its database, its settings (one chain or more) and helpers to drive the listener."""

    engine: Engine
    settings: Settings

    @property
    def chain(self) -> ChainSettings:
        return self.settings.usdc_chains[0]

    def chain_by_id(self, chain_id: int) -> ChainSettings:
        return next(c for c in self.settings.usdc_chains if c.chain_id == chain_id)

    def customer(self, name: str = "customer", chain_ids: tuple[int, ...] | None = None) -> tuple[int, str]:
        """A new customer account with a deposit address on each chain; returns (account id, lowercase address)."""
        with unit_of_work(self.engine) as session:
            account_id = create_customer_account(session, name=name)
            views = [
                ensure_deposit_address(session, self.settings, account_id=account_id, chain_id=chain_id)
                for chain_id in (chain_ids or tuple(c.chain_id for c in self.settings.usdc_chains))
            ]
        return account_id, views[0].address.lower()

    def poll_until_caught_up(
        self, rpc: ChainReader, chain: ChainSettings | None = None, max_polls: int = 50
    ) -> list[PollOutcome]:
        outcomes = []
        for _ in range(max_polls):
            outcome = poll_chain(self.engine, chain or self.chain, rpc, now=utcnow())
            outcomes.append(outcome)
            if outcome.caught_up:
                return outcomes
        raise AssertionError("the listener did not catch up")

    def confirm(self, rpc: ChainReader, chain: ChainSettings | None = None) -> int:
        return confirm_deposits(self.engine, chain or self.chain, rpc, now=utcnow())

    def settle(self, rpc: ChainReader, chain: ChainSettings | None = None) -> None:
        """Poll until caught up, then confirm what is deep enough."""
        self.poll_until_caught_up(rpc, chain)
        self.confirm(rpc, chain)

    def deposits(self, account_id: int | None = None) -> list[Any]:
        table = table_of(UsdcDeposit)
        stmt = select(table).order_by(table.c.block_number, table.c.log_index, table.c.id)
        if account_id is not None:
            stmt = stmt.where(table.c.account_id == account_id)
        with unit_of_work(self.engine) as session:
            return list(session.execute(stmt).all())

    def balance(self, account_id: int) -> Balance:
        with unit_of_work(self.engine) as session:
            return get_balance(session, account_id)

    def cursor(self, chain_id: int | None = None) -> Any:
        with unit_of_work(self.engine) as session:
            return usdc_repo.get_cursor(session, chain_id or self.chain.chain_id)

    def carry(self, account_id: int, chain_id: int | None = None) -> int:
        with unit_of_work(self.engine) as session:
            row = usdc_repo.deposit_address_for(session, account_id, chain_id or self.chain.chain_id)
            return int(row.carry_usdc_units)

    def system_balance(self, code: str) -> int:
        with unit_of_work(self.engine) as session:
            account_id = session.execute(select(accounts_table.c.id).where(accounts_table.c.code == code)).scalar()
            return 0 if account_id is None else ledger_balance(session, int(account_id))

    def assert_invariants(self) -> None:
        with unit_of_work(self.engine) as session:
            assert check_invariants(session) == []


def chain_settings_for(rpc: ChainRpc, token: LocalToken, *, name: str = "anvil", **overrides: Any) -> ChainSettings:
    """Settings for the chain ``rpc`` serves, starting at its current head."""
    values: dict[str, Any] = {
        "chain_id": rpc.chain_id(),
        "name": name,
        "rpc_url": rpc.url,
        "usdc_address": token.address,
        "confirmations": 3,
        "start_block": rpc.block_number(),
        "min_deposit_usdc_units": 1_000_000,
        "max_range_blocks": 64,
    }
    values.update(overrides)
    return ChainSettings(**values)


def rail_settings(engine: Engine, *chains: ChainSettings) -> Settings:
    return Settings(environment="test", database_url=str(engine.url), usdc_xpub=random_xpub(), usdc_chains=list(chains))


@pytest.fixture
def make_rail(engine: Engine, rpc: ChainRpc, token: LocalToken) -> Any:
    """``make_rail(**chain overrides)``: a rail on the session's anvil, starting at its current head."""

    def build(*extra_chains: ChainSettings, **overrides: Any) -> Rail:
        # A few blocks of the test's own first, so a reorg the test makes never reaches another test's blocks
        # (or the token's deployment).
        mine(rpc, 8)
        chain = chain_settings_for(rpc, token, **overrides)
        return Rail(engine, rail_settings(engine, chain, *extra_chains))

    return build


@pytest.fixture
def usdc(make_rail: Any) -> Rail:
    """The default rail: the session's anvil and token, 3 confirmations, 1 USDC minimum."""
    rail: Rail = make_rail()
    return rail


@dataclass
class OwnChain:
    """A node of a test's own (another chain id, or one it stops and restarts), with its wallet and token."""

    node: AnvilNode
    rpc: ChainRpc
    wallet: DevWallet
    token: LocalToken


def start_own_chain(chain_id: int, state_path: Path | None = None) -> OwnChain:
    ensure_node_modules()
    node = AnvilNode(chain_id=chain_id, slots_in_an_epoch=1, state_path=state_path).start()
    client = ChainRpc(
        node.url,
        expected_chain_id=chain_id,
        retry=RetryPolicy(max_attempts=2, backoff_initial_seconds=0.01),
        timeout_seconds=5,
    )
    own_wallet = DevWallet(client, dev_account(2))
    own_token = LocalToken.deploy(own_wallet)
    own_token.mint(own_wallet.address, TOKEN_SUPPLY_UNITS)
    return OwnChain(node, client, own_wallet, own_token)


@pytest.fixture
def own_chain(tmp_path: Path) -> Iterator[OwnChain]:
    """A second anvil (chain id 31338) keeping its chain in a state file, so it can be stopped and restarted."""
    own = start_own_chain(CHAIN_ID + 1, tmp_path / "anvil-state.json")
    yield own
    own.rpc.close()
    own.node.close()
