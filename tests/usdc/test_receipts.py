"""USDC receipts against a real anvil: a credited deposit writes its receipt in the crediting transaction (the
chain's name, the transaction hash and the explorer link), once however often the listener confirms; a reorg deeper
than the confirmations writes a notice."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from chain.devchain import DevWallet, LocalToken, mine, reorg
from chain.rpc import ChainRpc
from services.core.db import unit_of_work
from services.ledger.accounts import update_email
from services.outbox import repository as outbox_repo
from services.outbox import service as outbox_service

from .conftest import Rail
from .support import send_transfer

EXPLORER = "https://explorer.example/tx/{tx_hash}"


def _messages(rail: Rail) -> list[Any]:
    with unit_of_work(rail.engine) as session:
        table = outbox_repo.messages
        return list(session.execute(select(table).order_by(table.c.id)).all())


@pytest.fixture
def rail(make_rail: Any) -> Iterator[Rail]:
    built: Rail = make_rail(explorer_tx_url=EXPLORER)
    outbox_service.configure(built.settings)
    yield built
    outbox_service.configure(None)


def test_a_credited_deposit_writes_one_receipt_with_its_chain_hash_and_explorer_link(
    rail: Rail, rpc: ChainRpc, token: LocalToken
) -> None:
    account_id, address = rail.customer()
    with unit_of_work(rail.engine) as session:
        update_email(session, account_id, email="holder@example.test", verified=True)
    send_transfer(token, address, 25_000_000)
    mine(rpc, rail.chain.confirmations)
    rail.settle(rpc)
    mine(rpc, 2)
    rail.settle(rpc)  # confirming again writes nothing more
    [deposit] = rail.deposits(account_id)
    assert deposit.status == "credited"
    [message] = _messages(rail)
    assert (message.kind, message.dedupe_key, message.recipient) == (
        "receipt",
        f"receipt:lot:{deposit.lot_id}",
        "holder@example.test",
    )
    text = message.body_text
    for expected in (
        f"-{deposit.lot_id:08d}",
        "Paid:             25.00 USDC on anvil",
        f"Chain:            anvil ({rail.chain.chain_id})",
        f"Transaction:      {deposit.tx_hash}",
        f"Explorer:         https://explorer.example/tx/{deposit.tx_hash}",
        "Credits:          2,500",
        "New balance:      2,500 credits",
    ):
        assert expected in text, text
    assert f'<a href="https://explorer.example/tx/{deposit.tx_hash}">' in message.body_html


def test_a_deep_reorg_after_crediting_writes_a_notice(
    rail: Rail, rpc: ChainRpc, token: LocalToken, wallet: DevWallet
) -> None:
    account_id, address = rail.customer()
    with unit_of_work(rail.engine) as session:
        update_email(session, account_id, email="holder@example.test", verified=True)
    send_transfer(token, address, 12_000_000)
    mine(rpc, rail.chain.confirmations)
    rail.settle(rpc)
    reorg(rpc, rail.chain.confirmations + 1, [])
    wallet.sync_nonce()
    mine(rpc, 1)
    rail.settle(rpc)
    mine(rpc, 2)
    rail.settle(rpc)
    receipt, notice = _messages(rail)
    assert (receipt.kind, notice.kind) == ("receipt", "clawback_notice")
    assert "Credits taken back: 1,200" in notice.body_text
    assert "New balance: 0 credits" in notice.body_text
