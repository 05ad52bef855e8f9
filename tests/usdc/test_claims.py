"""Claims of a transfer by its transaction hash (``POST /v1/x402/credits/claims``) on anvil, on both databases: 202
before the confirmations, 200 after, once between claims and the listener, and clear refusals of anything else."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from chain.addresses import checksum
from chain.devchain import DevWallet, LocalToken, mine, reorg
from chain.node import free_port
from chain.rpc import ChainRpc
from services.card.repository import card_label_of_purchase
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.settings import ChainSettings
from services.finance.reports import period_report
from services.outbox.receipts import receipt_for_lot
from services.review.service import list_exceptions
from services.usdc.addresses import ensure_deposit_address
from services.usdc.flows.observe import observe_transaction

from .conftest import CHAIN_ID, Rail, chain_settings_for, rail_settings
from .support import send_reverting_transfer, send_transfer
from .test_endpoints import client_for, customer_with_key

CLAIMS = "/v1/x402/credits/claims"


@dataclass
class ClaimsApi:
    client: TestClient
    rail: Rail

    def claim(self, tx_hash: str, chain_id: int = CHAIN_ID) -> Any:
        return self.client.post(CLAIMS, json={"chain_id": chain_id, "tx_hash": tx_hash})


@pytest.fixture
def claims(engine: Engine, rpc: ChainRpc, token: LocalToken) -> Iterator[ClaimsApi]:
    mine(rpc, 8)
    rail = Rail(engine, rail_settings(engine, chain_settings_for(rpc, token, confirmations=3)))
    with client_for(rail.settings, engine) as client:
        yield ClaimsApi(client, rail)


def _error(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_a_claim_waits_for_the_confirmations_then_credits_and_a_second_claim_is_refused(
    claims: ClaimsApi, rpc: ChainRpc, token: LocalToken
) -> None:
    rail = claims.rail
    account_id, address = rail.customer()
    signed, block = send_transfer(token, address, 25_000_000)

    early = claims.claim(signed.tx_hash.upper().replace("0X", "0x"))
    assert early.status_code == 202, early.text
    body = early.json()
    assert (body["status"], body["chain_id"], body["tx_hash"], body["block_number"]) == (
        "pending",
        CHAIN_ID,
        signed.tx_hash,
        block,
    )
    [deposit] = body["deposits"]
    assert deposit["to_address"] == checksum(address)
    assert (deposit["status"], deposit["confirmations_to_come"], deposit["credits"], deposit["lot_id"]) == (
        "pending",
        3,
        2500,
        None,
    )
    assert rail.balance(account_id).total_credits == 0

    mine(rpc, 3)
    done = claims.claim(signed.tx_hash)
    assert done.status_code == 200, done.text
    body = done.json()
    [deposit] = body["deposits"]
    assert (body["status"], deposit["status"], deposit["credited_now"], deposit["via"]) == (
        "credited",
        "credited",
        True,
        "claim",
    )
    assert deposit["lot_id"] is not None
    assert rail.balance(account_id).total_credits == 2500

    again = claims.claim(signed.tx_hash)
    assert _error(again) == (409, "already_credited")
    assert again.json()["error"]["details"]["lots"] == [
        {"deposit_id": deposit["deposit_id"], "lot_id": deposit["lot_id"], "credits": 2500}
    ]
    rail.settle(rpc)
    assert len(rail.deposits()) == 1
    assert rail.balance(account_id).total_credits == 2500
    rail.assert_invariants()


def test_the_listener_first_then_a_claim_is_refused_as_already_credited(
    claims: ClaimsApi, rpc: ChainRpc, token: LocalToken
) -> None:
    rail = claims.rail
    account_id, address = rail.customer()
    signed, _ = send_transfer(token, address, 4_000_000)
    mine(rpc, 3)
    rail.settle(rpc)
    assert _error(claims.claim(signed.tx_hash)) == (409, "already_credited")
    assert rail.balance(account_id).total_credits == 400
    [row] = rail.deposits(account_id)
    assert row.via == "listener"
    rail.assert_invariants()


def test_claims_racing_the_listener_mint_once(
    claims: ClaimsApi, rpc: ChainRpc, token: LocalToken, backend: str
) -> None:
    rail = claims.rail
    account_id, address = rail.customer()
    signed, _ = send_transfer(token, address, 6_000_000)
    mine(rpc, 3)

    start = threading.Barrier(4)
    answers: list[int] = []
    errors: list[BaseException] = []

    def run(step: Callable[[], Any]) -> None:
        try:
            start.wait(timeout=30)
            step()
        except BaseException as exc:  # reported below
            errors.append(exc)

    def claim() -> None:
        answers.append(claims.claim(signed.tx_hash).status_code)

    steps: list[Callable[[], Any]] = [
        claim,
        claim,
        lambda: rail.settle(rpc),  # one poller (the job's lock makes sure of it), and a confirmation pass
        lambda: rail.confirm(rpc),
    ]
    threads = [threading.Thread(target=run, args=(step,)) for step in steps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(answers) in ([200, 409], [409, 409])
    rail.settle(rpc)
    [row] = rail.deposits(account_id)
    assert row.status == "credited"
    assert rail.balance(account_id).total_credits == 600
    rail.assert_invariants()


def test_what_is_not_a_deposit_of_ours_is_refused_with_its_code_and_nothing_recorded(
    claims: ClaimsApi, rpc: ChainRpc, token: LocalToken, other_token: LocalToken
) -> None:
    rail = claims.rail
    _, address = rail.customer()
    stranger = "0x" + "5" * 40
    for receipt in (other_token.transfer(address, 5_000_000), token.transfer(stranger, 5_000_000)):
        assert _error(claims.claim(receipt["transactionHash"])) == (422, "not_a_deposit")
    assert _error(claims.claim(send_reverting_transfer(token, address))) == (422, "transaction_reverted")
    assert _error(claims.claim("0x" + "cd" * 32)) == (404, "transaction_not_found")
    assert _error(claims.claim("0x" + "cd" * 32, chain_id=CHAIN_ID + 99)) == (422, "unknown_chain")
    for bad in ("0x1234", "cd" * 32, "0x" + "z" * 64, "0x" + "cd" * 33):
        assert _error(claims.claim(bad)) == (400, "invalid_tx_hash")
    assert claims.client.post(CLAIMS, json={"chain_id": "one", "tx_hash": "0x" + "cd" * 32}).status_code == 422
    assert rail.deposits() == []


def test_a_node_out_of_reach_is_a_502_naming_the_chain_not_its_url(engine: Engine, token: LocalToken) -> None:
    dead = f"http://127.0.0.1:{free_port()}/secret-key"
    chain = ChainSettings(chain_id=CHAIN_ID, rpc_url=dead, usdc_address=token.address, confirmations=3, start_block=0)
    with client_for(rail_settings(engine, chain), engine) as client:
        answer = client.post(CLAIMS, json={"chain_id": CHAIN_ID, "tx_hash": "0x" + "cd" * 32})
    assert _error(answer) == (502, "upstream_unavailable")
    assert "secret-key" not in answer.text
    assert str(CHAIN_ID) in answer.text


def test_a_reorg_dropping_a_claimed_and_credited_transfer_is_clawed_back(
    claims: ClaimsApi, rpc: ChainRpc, token: LocalToken, wallet: DevWallet
) -> None:
    rail = claims.rail
    account_id, address = rail.customer()
    rail.poll_until_caught_up(rpc)
    signed, _ = send_transfer(token, address, 3_000_000)
    mine(rpc, 3)
    assert claims.claim(signed.tx_hash).status_code == 200
    assert rail.balance(account_id).total_credits == 300

    reorg(rpc, 4, [])  # deeper than the confirmations: the claimed transfer is gone
    wallet.sync_nonce()
    mine(rpc, 2)
    rail.settle(rpc)
    [row] = rail.deposits(account_id)
    assert (row.status, row.deep_reorgs) == ("orphaned", 1)
    assert rail.balance(account_id).total_credits == 0
    with unit_of_work(rail.engine) as session:
        assert [e.kind for e in list_exceptions(session)] == ["deep_reorg"]
    assert _error(claims.claim(signed.tx_hash)) == (404, "transaction_not_found")
    rail.assert_invariants()


def test_an_x402_purchase_is_labelled_so_in_deposits_history_receipt_and_finance_report(
    claims: ClaimsApi, rpc: ChainRpc, token: LocalToken
) -> None:
    rail = claims.rail
    account_id, headers = customer_with_key(rail.engine, "agent")
    with unit_of_work(rail.engine) as session:
        address = ensure_deposit_address(session, rail.settings, account_id=account_id, chain_id=CHAIN_ID).address
    before = utcnow()
    paid, _ = send_transfer(token, address.lower(), 5_000_000)
    [deposit] = observe_transaction(rail.engine, rail.chain, rpc, paid.tx_hash, now=utcnow(), credit_now=True).deposits
    claimed, _ = send_transfer(token, address.lower(), 2_000_000)
    mine(rpc, 3)
    assert claims.claim(claimed.tx_hash).status_code == 200

    listed = claims.client.get("/v1/usdc/deposits", headers=headers).json()["data"]
    assert sorted(d["via"] for d in listed) == ["claim", "x402"]
    history = claims.client.get("/v1/purchases", headers=headers).json()["data"]
    assert [(p["details"]["via"], p["details"]["label"]) for p in history] == [
        ("claim", "USDC"),
        ("x402", "USDC via x402"),
    ]
    with unit_of_work(rail.engine) as session:
        assert deposit.lot_id is not None
        receipt = receipt_for_lot(session, rail.settings, deposit.lot_id, card_of_purchase=card_label_of_purchase)
        assert receipt is not None
        assert receipt.paid.endswith("via x402")
        report = period_report(session, rail="usdc", period_start=before, period_end=utcnow() + timedelta(minutes=1))
    assert report.x402 is not None
    assert (report.x402.purchases, report.x402.paid_usdc_units, report.x402.credits_minted) == (1, 5_000_000, 500)
    assert report.ledger.credits_minted == 700
    assert report.as_dict()["x402"] == {"purchases": 1, "paid_usdc_units": 5_000_000, "credits_minted": 500}
    rail.assert_invariants()
