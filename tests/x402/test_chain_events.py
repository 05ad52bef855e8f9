"""The settlement's transfer is an ordinary deposit: the listener and the settlement mint it once between them, in
either order; a reorg that drops it takes the credits back; an external facilitator by URL settles it as well."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from eth_account.signers.local import LocalAccount

from chain.addresses import checksum
from chain.devchain import mine, reorg
from chain.rpc import ChainRpc
from services.x402.facilitators import BuiltinFacilitator, Settlement
from tests.usdc.conftest import Rail
from tests.x402.conftest import CHAIN_ID, CREDITS, RELAYER, Shop
from tests.x402.facilitator_server import serve_facilitator
from tests.x402.support import buy_with_official_client, decode, official_client
from tests.x402.test_settlement import HookedFacilitator


def _buy(shop: Shop, payer: LocalAccount, credits: int = CREDITS) -> Any:
    client = official_client(payer, network=f"eip155:{shop.chain_id}", asset=checksum(shop.token.address))
    response = buy_with_official_client(client, shop.credits_url, {"credits": credits, "wallet_address": payer.address})
    assert response.status_code == 200, response.text
    return response


def test_the_listener_running_beside_the_settlements_mints_each_transfer_once(shop: Shop) -> None:
    listener = Rail(shop.engine, shop.settings)
    stop = threading.Event()
    errors: list[BaseException] = []

    def listen() -> None:
        try:
            while not stop.is_set():
                listener.settle(shop.rpc)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    try:
        payer = shop.payer()
        answers = [_buy(shop, payer, credits) for credits in (500, 1_000, 1_500)]
        mine(shop.rpc, 4)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert errors == []
    listener.settle(shop.rpc)
    deposits = shop.deposits()
    assert len(deposits) == 3
    assert len(shop.lots()) == 3
    assert {d.via for d in deposits} == {"x402"}
    assert {d.lot_id for d in deposits} == {p.lot_id for p in shop.payments()}
    account_id = answers[0].json()["account_id"]
    assert shop.available(account_id) == 3_000
    shop.assert_invariants()


def test_a_transfer_the_listener_credited_first_is_not_minted_again(make_shop: Callable[..., Shop]) -> None:
    holder: dict[str, Any] = {}

    def listener_first(settlement: Settlement) -> Settlement:
        shop: Shop = holder["shop"]
        mine(shop.rpc, 4)
        Rail(shop.engine, shop.settings).settle(shop.rpc)
        holder["lots_before"] = len(shop.lots())
        return settlement

    shop = holder["shop"] = make_shop(wrap=lambda inner: HookedFacilitator(inner, report=listener_first))
    payer = shop.payer()
    response = _buy(shop, payer)
    assert holder["lots_before"] == 1  # the listener minted it
    [lot] = shop.lots()
    assert response.json()["lot"]["id"] == lot.id
    [deposit] = shop.deposits()
    assert deposit.via == "x402"  # who recorded it first, marked as an x402 purchase all the same
    assert shop.available(response.json()["account_id"]) == CREDITS
    shop.assert_invariants()


def test_a_reorg_that_drops_the_settlement_takes_the_credits_back(shop: Shop) -> None:
    listener = Rail(shop.engine, shop.settings)
    payer = shop.payer()
    response = _buy(shop, payer)
    account_id = response.json()["account_id"]
    assert shop.available(account_id) == CREDITS
    tx_hash = decode(response.headers["PAYMENT-RESPONSE"])["transaction"]
    block = int(shop.rpc.request("eth_getTransactionReceipt", [tx_hash])["blockNumber"], 16)
    listener.settle(shop.rpc)  # the listener has seen the block
    head = shop.rpc.block_number()
    reorg(shop.rpc, head - block + 1)
    assert shop.rpc.request("eth_getTransactionReceipt", [tx_hash]) is None
    mine(shop.rpc, 2)
    listener.settle(shop.rpc)
    assert shop.available(account_id) == 0
    shop.assert_invariants()


def test_an_external_facilitator_by_url_settles_the_purchase(make_shop: Callable[..., Shop], rpc: ChainRpc) -> None:
    builtin = BuiltinFacilitator({CHAIN_ID: rpc}, RELAYER.key.hex())
    with serve_facilitator(builtin) as (url, calls):
        shop = make_shop(x402_facilitator_url=url)
        assert shop.rail.facilitator.name == "external"
        payer = shop.payer()
        response = _buy(shop, payer)
        assert response.json()["lot"]["credits"] == CREDITS
        assert calls.count("verify") == 1
        assert calls.count("settle") == 1
        assert [p.status for p in shop.payments()] == ["settled"]
    shop.assert_invariants()
