"""USDC receipts against a real anvil: a credited deposit writes its receipt in the crediting transaction (the
chain's name, the transaction hash and the explorer link), once however often the listener confirms; a reorg deeper
than the confirmations writes a notice."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from chain.devchain import DevWallet, LocalToken, mine, reorg
from chain.rpc import ChainRpc
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.ledger import repository as ledger_repo
from services.ledger.accounts import update_email
from services.outbox import repository as outbox_repo
from services.outbox import service as outbox_service
from services.outbox.mailer import SmtpMailer
from services.outbox.tasks import deliver
from tests.outbox.smtp_server import TestSmtpServer

from .conftest import Rail
from .support import send_transfer

EXPLORER = "https://explorer.example/tx/{tx_hash}"


def _messages(rail: Rail) -> list[Any]:
    with unit_of_work(rail.engine) as session:
        table = outbox_repo.messages
        rows = list(session.execute(select(table).order_by(table.c.id)).all())
        # Receipts are rendered when first sent: rendered here as the worker would.
        return outbox_service.render_receipts(session, rows, rail.settings)


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
    assert f'<a href="https://explorer.example/tx/{deposit.tx_hash}" rel="noreferrer">' in message.body_html


def test_the_usdc_receipt_received_over_smtp_carries_every_field(rail: Rail, rpc: ChainRpc, token: LocalToken) -> None:
    account_id, address = rail.customer()
    with unit_of_work(rail.engine) as session:
        update_email(session, account_id, email="holder@example.test", verified=False)  # unverified: mailed too
    smtp = TestSmtpServer().start()
    settings = rail.settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "smtp_security": "none",
            "support_email": "help@creditrail.test",
            "public_base_url": "https://pay.example",
            "receipt_link_secret": SecretStr("receipt-links-usdc-0123456789abcdef0123456"),
        }
    )
    outbox_service.configure(settings)
    try:
        send_transfer(token, address, 7_500_000)
        mine(rpc, rail.chain.confirmations)
        rail.settle(rpc)
        assert deliver(rail.engine, settings, SmtpMailer(settings), utcnow(), 10) == 1
    finally:
        outbox_service.configure(None)
        smtp.stop()
    [deposit] = rail.deposits(account_id)
    [row] = _messages(rail)
    [received] = smtp.received
    assert received.recipients == ["holder@example.test"]
    assert received.message_id == row.message_id
    body = received.message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    with unit_of_work(rail.engine) as session:
        lot = ledger_repo.get_lot(session, deposit.lot_id)
    assert lot is not None
    number = f"CR-{lot.credited_at.year}-{lot.id:08d}"
    assert received.message["Subject"] == f"Your receipt {number}: 750 credits"
    for expected in (
        f"Receipt:          {number}",
        f"Date:             {lot.credited_at:%Y-%m-%d %H:%M} UTC",
        "Paid:             7.50 USDC on anvil",
        f"Chain:            anvil ({rail.chain.chain_id})",
        f"Transaction:      {deposit.tx_hash}",
        f"Explorer:         https://explorer.example/tx/{deposit.tx_hash}",
        "Credits:          750",
        f"Credits expire:   {lot.expires_at:%Y-%m-%d}",
        "New balance:      750 credits",
        f"View or print this receipt: https://pay.example/receipts/{number}?sig=",
        "Questions? Email help@creditrail.test",
    ):
        assert expected in text, text
    html = received.message.get_body(("html",))
    assert html is not None
    assert f'<a href="https://explorer.example/tx/{deposit.tx_hash}" rel="noreferrer">' in html.get_content()


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
