"""A hold or charge the account cannot cover: the 402 carries an x402 offer for the pack covering the shortfall, and the
same request sent again with the payment settles, mints the pack and performs the operation, once."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount
from sqlalchemy import select
from x402 import x402Client
from x402.http.clients.httpx import x402_httpx_transport
from x402.http.utils import decode_payment_required_header
from x402.schemas import PaymentRequirements

from chain.addresses import checksum
from services.apikeys.service import issue_key
from services.core.db import table_of, unit_of_work
from services.core.money import credits_to_usdc_units
from services.ledger.accounts import create_customer_account
from services.ledger.minting import grant
from services.ledger.models import Hold, LedgerTransaction, TransactionKind
from services.usdc.addresses import ensure_deposit_address
from tests.x402.conftest import PAYER_FUNDS_UNITS, Shop
from tests.x402.support import decode, offered_requirement, official_client, sign_payment
from tests.x402.test_settlement import HookedFacilitator, _drain

GRANTED = 200
HOLD = 1_000
# The smallest pack covering 1,000 - 200 credits.
PACK = 1_000


@dataclass
class Customer:
    account_id: int
    key: str

    def headers(self, idempotency_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Idempotency-Key": idempotency_key}


def _customer(shop: Shop, credits: int = GRANTED) -> Customer:
    with unit_of_work(shop.engine) as session:
        account_id = create_customer_account(session, name="agent")
        if credits:
            grant(session, account_id=account_id, amount_credits=credits, idempotency_key=f"start-{account_id}")
        issued = issue_key(session, role="customer", account_id=account_id)
    return Customer(account_id, issued.key)


def _client(shop: Shop, payer: LocalAccount) -> x402Client:
    return official_client(payer, network=f"eip155:{shop.chain_id}", asset=checksum(shop.token.address))


def _send_with_official_client(client: x402Client, url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    async def send() -> httpx.Response:
        transport = x402_httpx_transport(client, httpx.AsyncHTTPTransport())
        async with httpx.AsyncClient(transport=transport, timeout=60) as http:
            response = await http.post(url, json=body, headers=headers)
            await response.aread()
            return response

    return asyncio.run(send())


def _holds(shop: Shop, account_id: int) -> list[Any]:
    table = table_of(Hold)
    with unit_of_work(shop.engine) as session:
        return list(session.execute(select(table).where(table.c.account_id == account_id)).all())


def _spends(shop: Shop, account_id: int) -> list[Any]:
    table = table_of(LedgerTransaction)
    stmt = select(table).where(table.c.account_id == account_id, table.c.kind == TransactionKind.SPEND)
    with unit_of_work(shop.engine) as session:
        return list(session.execute(stmt).all())


def _nothing_happened(shop: Shop, customer: Customer) -> None:
    assert shop.payments() == []
    assert shop.lots(customer.account_id)[1:] == []
    assert _holds(shop, customer.account_id) == []
    assert shop.available(customer.account_id) == GRANTED


def test_a_hold_short_of_credits_offers_the_pack_covering_the_shortfall(shop: Shop) -> None:
    customer = _customer(shop)
    response = httpx.post(
        f"{shop.url}/v1/holds", json={"amount_credits": HOLD}, headers=customer.headers("h-1"), timeout=30
    )
    assert response.status_code == 402, response.text
    error = response.json()["error"]
    assert error["code"] == "insufficient_credits"
    assert error["details"] == {"requested_credits": HOLD, "available_credits": GRANTED, "shortfall_credits": 800}
    required = decode_payment_required_header(response.headers["PAYMENT-REQUIRED"])
    assert required.x402_version == 2
    [requirement] = required.accepts
    assert isinstance(requirement, PaymentRequirements)
    assert requirement.scheme == "exact"
    assert requirement.network == f"eip155:{shop.chain_id}"
    assert requirement.amount == str(credits_to_usdc_units(PACK))
    assert requirement.asset == checksum(shop.token.address)
    assert requirement.extra == {"name": "Test USD Coin", "version": "2"}
    with unit_of_work(shop.engine) as session:
        view = ensure_deposit_address(session, shop.settings, account_id=customer.account_id, chain_id=shop.chain_id)
    assert requirement.pay_to == view.address
    # A shortfall below the smallest pack is offered the smallest pack; a charge is offered the same way.
    charge = httpx.post(
        f"{shop.url}/v1/charges", json={"amount_credits": 250}, headers=customer.headers("c-1"), timeout=30
    )
    assert charge.status_code == 402, charge.text
    assert offered_requirement(charge).amount == str(credits_to_usdc_units(500))
    # More than the largest pack covers: the 402 stands without an offer.
    huge = shop.settings.card_custom_max_credits + GRANTED + 1
    beyond = httpx.post(
        f"{shop.url}/v1/holds", json={"amount_credits": huge}, headers=customer.headers("h-2"), timeout=30
    )
    assert beyond.status_code == 402
    assert "PAYMENT-REQUIRED" not in beyond.headers
    _nothing_happened(shop, customer)


def test_the_official_client_pays_and_the_hold_is_placed_in_one_retry(shop: Shop) -> None:
    customer = _customer(shop)
    payer = shop.payer()
    response = _send_with_official_client(
        _client(shop, payer), f"{shop.url}/v1/holds", {"amount_credits": HOLD}, customer.headers("hold-1")
    )
    assert response.status_code == 201, response.text
    settled = decode(response.headers["PAYMENT-RESPONSE"])
    assert settled["success"] is True
    assert settled["network"] == f"eip155:{shop.chain_id}"
    hold = response.json()
    assert hold["amount_credits"] == HOLD
    [payment] = shop.payments()
    assert payment.status == "settled"
    assert payment.account_id == customer.account_id
    assert payment.credits == PACK
    assert payment.tx_hash == settled["transaction"]
    [_, lot] = shop.lots(customer.account_id)
    assert lot.id == payment.lot_id
    assert lot.credits == PACK
    assert [h.id for h in _holds(shop, customer.account_id)] == [hold["id"]]
    assert shop.available(customer.account_id) == GRANTED + PACK - HOLD
    assert shop.token.balance_units(payer.address) == PAYER_FUNDS_UNITS - credits_to_usdc_units(PACK)
    shop.assert_invariants()


def test_a_paid_charge_sent_again_mints_once_and_charges_once(shop: Shop) -> None:
    customer = _customer(shop)
    payer = shop.payer()
    offer = httpx.post(
        f"{shop.url}/v1/charges", json={"amount_credits": HOLD}, headers=customer.headers("charge-1"), timeout=30
    )
    assert offer.status_code == 402
    header = sign_payment(payer, offered_requirement(offer))
    headers = {**customer.headers("charge-1"), "PAYMENT-SIGNATURE": header}
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        answer = httpx.post(f"{shop.url}/v1/charges", json={"amount_credits": HOLD}, headers=headers, timeout=60)
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=send) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    later = httpx.post(f"{shop.url}/v1/charges", json={"amount_credits": HOLD}, headers=headers, timeout=60)
    answers.append(later)
    assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
    assert len({a.json()["transaction_id"] for a in answers}) == 1
    transactions = {
        decode(a.headers["PAYMENT-RESPONSE"])["transaction"] for a in answers if "PAYMENT-RESPONSE" in a.headers
    }
    [payment] = shop.payments()
    assert transactions == {payment.tx_hash}
    assert later.headers["Idempotent-Replayed"] == "true"
    assert len(shop.lots(customer.account_id)) == 2
    assert len(_spends(shop, customer.account_id)) == 1
    assert shop.available(customer.account_id) == GRANTED + PACK - HOLD
    assert shop.token.balance_units(payer.address) == PAYER_FUNDS_UNITS - credits_to_usdc_units(PACK)
    shop.assert_invariants()


def test_a_payment_for_another_amount_than_offered_is_refused_and_the_hold_not_placed(shop: Shop) -> None:
    customer = _customer(shop)
    payer = shop.payer()
    offer = httpx.post(
        f"{shop.url}/v1/holds", json={"amount_credits": HOLD}, headers=customer.headers("hold-2"), timeout=30
    )
    requirement = offered_requirement(offer)
    for amount in (credits_to_usdc_units(500), credits_to_usdc_units(PACK) - 1, credits_to_usdc_units(1_500)):
        header = sign_payment(payer, requirement, amount=str(amount))
        response = httpx.post(
            f"{shop.url}/v1/holds",
            json={"amount_credits": HOLD},
            headers={**customer.headers("hold-2"), "PAYMENT-SIGNATURE": header},
            timeout=30,
        )
        assert response.status_code == 402, response.text
        error = response.json()["error"]
        assert error["code"] == "wrong_amount"
        assert error["details"]["credits"] == PACK
        assert offered_requirement(response).amount == str(credits_to_usdc_units(PACK))
    _nothing_happened(shop, customer)
    assert shop.token.balance_units(payer.address) == PAYER_FUNDS_UNITS


def test_a_settlement_that_fails_mints_nothing_and_places_no_hold(make_shop: Callable[..., Shop]) -> None:
    holder: dict[str, Any] = {}
    shop = make_shop(
        wrap=lambda inner: HookedFacilitator(inner, before=lambda _: _drain(holder["shop"], holder["payer"]))
    )
    holder["shop"] = shop
    customer = _customer(shop)
    payer = holder["payer"] = shop.payer()
    response = _send_with_official_client(
        _client(shop, payer), f"{shop.url}/v1/holds", {"amount_credits": HOLD}, customer.headers("hold-3")
    )
    assert response.status_code == 402, response.text
    assert response.json()["error"]["code"] == "insufficient_balance"
    assert "PAYMENT-REQUIRED" in response.headers
    [payment] = shop.payments()
    assert payment.status == "failed"
    assert payment.lot_id is None
    assert shop.lots(customer.account_id)[1:] == []
    assert _holds(shop, customer.account_id) == []
    assert shop.available(customer.account_id) == GRANTED
    shop.assert_invariants()


def test_a_payment_sent_when_nothing_is_short_is_not_settled(shop: Shop) -> None:
    customer = _customer(shop, credits=2_000)
    payer = shop.payer()
    short = _customer(shop)
    offer = httpx.post(f"{shop.url}/v1/holds", json={"amount_credits": HOLD}, headers=short.headers("h"), timeout=30)
    header = sign_payment(payer, offered_requirement(offer))
    response = httpx.post(
        f"{shop.url}/v1/holds",
        json={"amount_credits": HOLD},
        headers={**customer.headers("hold-4"), "PAYMENT-SIGNATURE": header},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    assert "PAYMENT-RESPONSE" not in response.headers
    assert shop.payments() == []
    assert shop.available(customer.account_id) == 2_000 - HOLD


def test_a_payment_sent_with_a_request_the_endpoint_refuses_is_not_settled(shop: Shop) -> None:
    customer = _customer(shop)
    payer = shop.payer()
    offer = httpx.post(
        f"{shop.url}/v1/holds", json={"amount_credits": HOLD}, headers=customer.headers("hold-5"), timeout=30
    )
    header = sign_payment(payer, offered_requirement(offer))
    no_key = httpx.post(
        f"{shop.url}/v1/holds",
        json={"amount_credits": HOLD},
        headers={"Authorization": f"Bearer {customer.key}", "PAYMENT-SIGNATURE": header},
        timeout=30,
    )
    assert no_key.status_code == 422, no_key.text
    assert no_key.json()["error"]["code"] == "idempotency_key_required"
    bad_body = httpx.post(
        f"{shop.url}/v1/holds",
        json={"amount_credits": HOLD, "ttl_seconds": -1},
        headers={**customer.headers("hold-5"), "PAYMENT-SIGNATURE": header},
        timeout=30,
    )
    assert bad_body.status_code == 422, bad_body.text
    garbage = httpx.post(
        f"{shop.url}/v1/holds",
        json={"amount_credits": HOLD},
        headers={**customer.headers("hold-5"), "PAYMENT-SIGNATURE": "not a payment"},
        timeout=30,
    )
    assert garbage.status_code == 400, garbage.text
    assert garbage.json()["error"]["code"] == "invalid_payment_header"
    _nothing_happened(shop, customer)
    assert shop.token.balance_units(payer.address) == PAYER_FUNDS_UNITS


def test_a_v1_payment_pays_for_a_hold_too(shop: Shop) -> None:
    customer = _customer(shop)
    payer = shop.payer()
    offer = httpx.post(
        f"{shop.url}/v1/holds", json={"amount_credits": HOLD}, headers=customer.headers("hold-6"), timeout=30
    )
    signed = decode(sign_payment(payer, offered_requirement(offer)))
    v1 = {"x402Version": 1, "scheme": "exact", "network": f"eip155:{shop.chain_id}", "payload": signed["payload"]}
    response = httpx.post(
        f"{shop.url}/v1/holds",
        json={"amount_credits": HOLD},
        headers={**customer.headers("hold-6"), "X-PAYMENT": base64.b64encode(json.dumps(v1).encode()).decode()},
        timeout=60,
    )
    assert response.status_code == 201, response.text
    assert decode(response.headers["X-PAYMENT-RESPONSE"])["success"] is True
    assert "PAYMENT-RESPONSE" not in response.headers
    [payment] = shop.payments()
    assert (payment.status, payment.credits, payment.x402_version) == ("settled", PACK, 1)
    assert len(_holds(shop, customer.account_id)) == 1
    assert shop.available(customer.account_id) == GRANTED + PACK - HOLD
    shop.assert_invariants()
