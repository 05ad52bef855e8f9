"""The USDC rail's events for the platform, against a real anvil: ``deposit.credited`` in the crediting
transaction (once, however often the listener confirms), and ``deposit.reversed`` when a reorg deeper than the
confirmations takes the credits back."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from chain.devchain import DevWallet, LocalToken, mine, reorg
from chain.rpc import ChainRpc
from services.core.db import unit_of_work
from services.events import repository as events_repo

from .conftest import Rail
from .support import send_transfer


def _events(rail: Rail) -> list[Any]:
    with unit_of_work(rail.engine) as session:
        table = events_repo.events
        return list(session.execute(select(table).order_by(table.c.id)).all())


def test_a_credited_deposit_records_one_event(make_rail: Any, rpc: ChainRpc, token: LocalToken) -> None:
    rail: Rail = make_rail()
    account_id, address = rail.customer()
    send_transfer(token, address, 25_000_000)
    mine(rpc, rail.chain.confirmations)
    rail.settle(rpc)
    mine(rpc, 2)
    rail.settle(rpc)  # confirming again records nothing more
    [deposit] = rail.deposits(account_id)
    [event] = _events(rail)
    assert (event.type, event.account_id, event.dedupe_key) == (
        "deposit.credited",
        account_id,
        f"deposit.credited:lot:{deposit.lot_id}",
    )
    assert event.data == {
        "deposit_id": deposit.id,
        "rail": "usdc",
        "chain_id": rail.chain.chain_id,
        "tx_hash": deposit.tx_hash,
        "log_index": deposit.log_index,
        "usdc_units": "25000000",
        "lot_id": deposit.lot_id,
        "amount_credits": 2_500,
        "receipt_number": event.data["receipt_number"],
    }
    assert event.data["receipt_number"].endswith(f"-{deposit.lot_id:08d}")


def test_a_deep_reorg_after_crediting_records_a_reversal(
    make_rail: Any, rpc: ChainRpc, token: LocalToken, wallet: DevWallet
) -> None:
    rail: Rail = make_rail()
    account_id, address = rail.customer()
    send_transfer(token, address, 12_000_000)
    mine(rpc, rail.chain.confirmations)
    rail.settle(rpc)
    reorg(rpc, rail.chain.confirmations + 1, [])
    wallet.sync_nonce()
    mine(rpc, 1)
    rail.settle(rpc)
    mine(rpc, 2)
    rail.settle(rpc)
    credited, reversed_ = _events(rail)
    assert (credited.type, reversed_.type, reversed_.account_id) == ("deposit.credited", "deposit.reversed", account_id)
    assert (reversed_.data["lot_id"], reversed_.data["amount_credits"]) == (credited.data["lot_id"], 1_200)
    assert reversed_.data["tx_hash"] == credited.data["tx_hash"]
    assert reversed_.dedupe_key == f"deposit.reversed:txn:{reversed_.data['transaction_id']}"
