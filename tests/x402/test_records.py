"""An x402 purchase is an ordinary USDC deposit to finance and to the customer: the chain's reconciliation matches it,
and it gets a receipt like any purchase."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select

from chain.addresses import checksum
from services.apikeys.service import issue_key
from services.card.repository import card_label_of_purchase
from services.core.db import table_of, unit_of_work
from services.finance.flows.reconcile import reconcile_period
from services.finance.runs import list_items
from services.ledger.accounts import create_customer_account, update_email
from services.outbox.models import MessageKind, OutboxMessage
from services.outbox.receipts import receipt_for_lot
from tests.x402.conftest import CREDITS, Shop
from tests.x402.support import buy_with_official_client, decode, official_client


def test_finance_matches_the_purchase_and_the_customer_gets_a_receipt(shop: Shop) -> None:
    with unit_of_work(shop.engine) as session:
        account_id = create_customer_account(session, name="with email")
        update_email(session, account_id, email="agent-owner@example.test")
    payer = shop.payer()
    client = official_client(payer, network=f"eip155:{shop.chain_id}", asset=checksum(shop.token.address))
    body = {"credits": CREDITS, "wallet_address": payer.address, "beneficiary_account_id": account_id}
    response = buy_with_official_client(client, shop.credits_url, body)
    assert response.status_code == 200, response.text
    lot_id = response.json()["lot"]["id"]
    tx_hash = decode(response.headers["PAYMENT-RESPONSE"])["transaction"]
    receipt = shop.rpc.request("eth_getTransactionReceipt", [tx_hash])
    header = shop.rpc.block_header(int(receipt["blockNumber"], 16))
    assert header is not None
    minted_at = datetime.fromtimestamp(int(header["timestamp"], 16), UTC)
    for step in range(5):  # the block deep enough to be settled for finance, the period closed by later blocks
        shop.rpc.request("evm_mine", [int(header["timestamp"], 16) + 2 + step])

    settings = shop.settings.model_copy(update={"finance_late_window_seconds": 0})
    (run,) = reconcile_period(
        shop.engine,
        settings,
        rail=f"usdc:{shop.chain_id}",
        period_start=minted_at - timedelta(seconds=30),
        period_end=minted_at + timedelta(seconds=1),
        readers={shop.chain_id: shop.rpc},
        now=minted_at + timedelta(seconds=60),
    )
    assert (run.matched, run.missing_in_ledger, run.missing_externally, run.amount_mismatch) == (1, 0, 0, 0)
    with unit_of_work(shop.engine) as session:
        [item] = list_items(session, run.id)
        assert item.category == "matched"
        assert item.external_ref is not None
        assert item.external_ref.startswith(f"{shop.chain_id}:{tx_hash}:")
        assert receipt_for_lot(session, shop.settings, lot_id, card_of_purchase=card_label_of_purchase) is not None
        messages = table_of(OutboxMessage)
        kinds = session.execute(select(messages.c.kind).where(messages.c.lot_id == lot_id)).scalars().all()
    assert kinds == [MessageKind.RECEIPT]


def test_the_purchase_history_labels_an_x402_purchase(shop: Shop) -> None:
    payer = shop.payer()
    client = official_client(payer, network=f"eip155:{shop.chain_id}", asset=checksum(shop.token.address))
    response = buy_with_official_client(client, shop.credits_url, {"credits": CREDITS, "wallet_address": payer.address})
    assert response.status_code == 200, response.text
    account_id = response.json()["account_id"]
    with unit_of_work(shop.engine) as session:
        key = issue_key(session, role="customer", account_id=account_id).key
    history = httpx.get(f"{shop.url}/v1/purchases", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert history.status_code == 200, history.text
    [item] = history.json()["data"]
    assert item["details"]["via"] == "x402"
    assert item["details"]["label"] == "USDC via x402"
    with unit_of_work(shop.engine) as session:
        lot_id = response.json()["lot"]["id"]
        receipt = receipt_for_lot(session, shop.settings, lot_id, card_of_purchase=card_label_of_purchase)
    assert receipt is not None
    assert "x402" in str(receipt)
