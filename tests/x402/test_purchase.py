"""Buying credits over x402 with the official client, end to end, and what is refused before anything is written."""

from __future__ import annotations

import base64
import json

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from x402 import x402Client
from x402.http.utils import decode_payment_required_header
from x402.schemas import PaymentRequirements

from chain.addresses import checksum
from services.core.db import unit_of_work
from services.usdc.addresses import ensure_deposit_address
from tests.x402.conftest import AMOUNT_UNITS, CREDITS, Shop
from tests.x402.support import buy_with_official_client, decode, offered_requirement, official_client, sign_payment


def _client_for(shop: Shop, account: LocalAccount, *, legacy: str | None = None) -> x402Client:
    return official_client(account, network=legacy or f"eip155:{shop.chain_id}", asset=checksum(shop.token.address))


def test_the_offer_is_one_requirement_per_chain_with_the_tokens_own_domain(shop: Shop) -> None:
    wallet = Account.create().address
    response = shop.offer({"credits": CREDITS, "wallet_address": wallet})
    required = decode_payment_required_header(response.headers["PAYMENT-REQUIRED"])
    assert required.x402_version == 2
    [requirement] = required.accepts
    assert isinstance(requirement, PaymentRequirements)
    body = response.json()
    assert requirement.scheme == "exact"
    assert requirement.network == f"eip155:{shop.chain_id}"
    assert requirement.amount == str(AMOUNT_UNITS)
    assert requirement.asset == checksum(shop.token.address)
    assert requirement.max_timeout_seconds == shop.settings.x402_max_timeout_seconds
    assert requirement.extra == {"name": "Test USD Coin", "version": "2"}
    # payTo is the beneficiary account's own deposit address, the same one the USDC rail shows it.
    with unit_of_work(shop.engine) as session:
        view = ensure_deposit_address(session, shop.settings, account_id=body["account_id"], chain_id=shop.chain_id)
    assert requirement.pay_to == view.address
    assert body["code"] == "payment_required"
    assert body["x402Version"] == 1
    assert body["accepts"] == []
    # The same wallet's second offer names the same account and address.
    again = offered_requirement(shop.offer({"credits": 1_000, "wallet_address": wallet.lower()}))
    assert again.pay_to == requirement.pay_to
    assert again.amount == str(2 * AMOUNT_UNITS)
    assert shop.payments() == []
    assert shop.lots() == []


def test_credits_outside_the_steps_are_refused_with_a_suggestion(shop: Shop) -> None:
    for credits, suggested in ((750, 1_000), (100, 500), (10**7, shop.settings.card_custom_max_credits)):
        response = httpx.post(shop.credits_url, json={"credits": credits, "wallet_address": Account.create().address})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_credits"
        assert error["details"]["suggested_credits"] == suggested
    bad_wallet = httpx.post(shop.credits_url, json={"credits": 500, "wallet_address": "0x1234"})
    assert bad_wallet.status_code == 400
    assert bad_wallet.json()["error"]["code"] == "invalid_wallet_address"


def test_the_official_client_buys_credits_with_v2_headers(shop: Shop) -> None:
    payer = shop.payer()
    response = buy_with_official_client(
        _client_for(shop, payer), shop.credits_url, {"credits": CREDITS, "wallet_address": payer.address}
    )
    assert response.status_code == 200, response.text
    settled = decode(response.headers["PAYMENT-RESPONSE"])
    assert settled["success"] is True
    assert settled["network"] == f"eip155:{shop.chain_id}"
    assert settled["payer"].lower() == payer.address.lower()
    body = response.json()
    assert body["transaction"] == settled["transaction"]
    assert body["lot"]["credits"] == CREDITS
    assert body["balance"]["available_credits"] == CREDITS
    [payment] = shop.payments()
    assert payment.status == "settled"
    assert payment.lot_id == body["lot"]["id"]
    [deposit] = shop.deposits()
    assert deposit.tx_hash == settled["transaction"]
    assert deposit.lot_id == payment.lot_id
    assert shop.token.balance_units(body["pay_to"]) == AMOUNT_UNITS
    assert shop.token.balance_units(payer.address) == 1_000 * 10**6 - AMOUNT_UNITS
    assert shop.available(body["account_id"]) == CREDITS
    shop.assert_invariants()


def test_the_official_client_buys_credits_with_v1_headers(legacy_shop: Shop) -> None:
    shop = legacy_shop
    payer = shop.payer()
    client = _client_for(shop, payer, legacy="base-sepolia")
    offer = shop.offer({"credits": CREDITS, "wallet_address": payer.address}, x402_version=1)
    assert "PAYMENT-REQUIRED" not in offer.headers
    [v1] = offer.json()["accepts"]
    assert v1["network"] == "base-sepolia"
    assert v1["maxAmountRequired"] == str(AMOUNT_UNITS)
    response = buy_with_official_client(
        client, shop.credits_url, {"credits": CREDITS, "wallet_address": payer.address}, params={"x402_version": 1}
    )
    assert response.status_code == 200, response.text
    settled = decode(response.headers["X-PAYMENT-RESPONSE"])
    assert settled["success"] is True
    assert settled["network"] == "base-sepolia"
    assert response.json()["lot"]["credits"] == CREDITS
    [payment] = shop.payments()
    assert payment.x402_version == 1
    assert payment.status == "settled"
    shop.assert_invariants()


def test_a_v1_payment_may_name_its_chain_in_caip2(legacy_shop: Shop) -> None:
    shop = legacy_shop
    payer = shop.payer()
    requirement = offered_requirement(shop.offer({"credits": CREDITS, "wallet_address": payer.address}))
    header = sign_payment(payer, requirement)
    payload = decode(header)
    v1 = {"x402Version": 1, "scheme": "exact", "network": f"eip155:{shop.chain_id}", "payload": payload["payload"]}
    encoded = base64.b64encode(json.dumps(v1).encode()).decode()
    response = httpx.post(
        shop.credits_url,
        json={"credits": CREDITS, "wallet_address": payer.address},
        headers={"X-PAYMENT": encoded},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert decode(response.headers["X-PAYMENT-RESPONSE"])["network"] == f"eip155:{shop.chain_id}"


def test_a_wallet_pays_for_another_wallet_or_an_account(shop: Shop) -> None:
    payer = shop.payer()
    agent = Account.create().address
    client = _client_for(shop, payer)
    for_agent = buy_with_official_client(
        client, shop.credits_url, {"credits": CREDITS, "wallet_address": payer.address, "beneficiary_wallet": agent}
    )
    assert for_agent.status_code == 200, for_agent.text
    agent_account = for_agent.json()["account_id"]
    own_offer = shop.offer({"credits": CREDITS, "wallet_address": payer.address}).json()
    assert own_offer["account_id"] != agent_account
    assert shop.available(agent_account) == CREDITS
    assert shop.available(own_offer["account_id"]) == 0
    # By account id: the same account again, its second lot.
    for_account = buy_with_official_client(
        client,
        shop.credits_url,
        {"credits": 1_000, "wallet_address": payer.address, "beneficiary_account_id": agent_account},
    )
    assert for_account.status_code == 200, for_account.text
    assert for_account.json()["account_id"] == agent_account
    assert shop.available(agent_account) == CREDITS + 1_000
    both = httpx.post(
        shop.credits_url,
        json={
            "credits": CREDITS,
            "wallet_address": payer.address,
            "beneficiary_wallet": agent,
            "beneficiary_account_id": agent_account,
        },
    )
    assert both.status_code == 400
    assert both.json()["error"]["code"] == "invalid_beneficiary"
    shop.assert_invariants()
