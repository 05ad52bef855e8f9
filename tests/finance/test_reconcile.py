"""Reconciling a period end to end: the card rail through the API with the offline Stripe (a pull that fails half
way, then a re-run that completes), and a USDC chain re-scanned on a real anvil (a transfer the listener never
credited is found, minted by finance, and the listener then takes that lot as the deposit's: credited once)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from chain.devchain import LocalToken
from chain.rpc import ChainRpc
from services.core.db import unit_of_work
from services.finance.actions import resolve
from services.finance.flows.reconcile import reconcile_period
from services.finance.reports import period_report
from services.finance.runs import list_items
from services.ledger.invariants import check_invariants
from services.ledger.repository import lots
from services.review.service import list_exceptions
from services.usdc.flows.observe import observe_transaction
from tests.card.conftest import Card
from tests.finance.chain_support import ChainTime, anvil, make_rail, own_chain, rpc, token, wallet
from tests.usdc.conftest import Rail

__all__ = ["anvil", "make_rail", "own_chain", "rpc", "token", "wallet"]


def test_reconciling_the_card_rail_on_demand(card: Card) -> None:
    customer = card.customer()
    purchase = card.bought(customer)
    card.complete(purchase)
    orphan = card.stripe.payment_without_purchase(1_500)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    body = {"rail": "card", "period_start": today.isoformat(), "period_end": (today + timedelta(days=1)).isoformat()}
    finance = card.key("finance")

    # Stripe fails while the balance transactions are listed (the SDK's one retry included): the run fails
    # cleanly, with the error, and nothing is half done.
    card.stripe.fail("GET", "/v1/balance_transactions", "500", times=2)
    failed = card.client.post("/v1/finance/reconciliations", json=body, headers=finance)
    assert failed.status_code == 502, failed.text
    runs = card.client.get("/v1/finance/reconciliations", headers=finance).json()["data"]
    assert [(run["status"], run["matched"]) for run in runs] == [("failed", 0)]
    assert runs[0]["last_error"]

    done = card.client.post("/v1/finance/reconciliations", json=body, headers=finance)
    assert done.status_code == 200, done.text
    (run,) = done.json()["data"]
    assert (run["status"], run["attempts"], run["matched"], run["missing_in_ledger"], run["missing_externally"]) == (
        "complete",
        2,
        1,
        1,
        0,
    )
    with unit_of_work(card.engine) as s:
        missing = [item for item in list_items(s, run["id"]) if item.category == "missing_in_ledger"]
        (raised,) = list_exceptions(s, "open", rail="card")
    assert [item.external_ref for item in missing] == [orphan["id"]]
    assert (raised.amount_cents, raised.reference) == (1_500, f"card:{orphan['id']}")
    report = card.client.get("/v1/finance/reports", params={**body, "rail": "card"}, headers=finance).json()
    assert report["external_complete"] is False, "today has not ended: Stripe may still add to it"
    assert report["external"]["card"]["gross_cents"] == 1_000 + 1_500

    # Running it again changes nothing and raises nothing twice.
    again = card.client.post("/v1/finance/reconciliations", json=body, headers=finance).json()["data"]
    assert (again[0]["id"], again[0]["matched"], again[0]["missing_in_ledger"]) == (run["id"], 1, 1)
    with unit_of_work(card.engine) as s:
        assert len(list_exceptions(s, "open")) == 1


def test_reconciling_a_chain_finds_a_transfer_never_credited(
    make_rail: object, rpc: ChainRpc, token: LocalToken
) -> None:
    rail: Rail = make_rail(confirmations=0)  # type: ignore[operator]
    chain_id = rail.chain.chain_id
    alice_id, alice = rail.customer("alice")
    clock = ChainTime(rpc)
    credited = clock.send(token, alice, 5_000_000, 10)
    rail.settle(rpc)
    lost = clock.send(token, alice, 2_000_000, 20)  # the listener is not run again before the reconciliation
    clock.mine(100)
    settings = rail.settings.model_copy(update={"finance_late_window_seconds": 0})
    (run,) = reconcile_period(
        rail.engine,
        settings,
        rail=f"usdc:{chain_id}",
        period_start=clock.at(0),
        period_end=clock.at(60),
        readers={chain_id: rpc},
        now=clock.at(200),
    )
    assert (run.external_records, run.missing_in_ledger, run.amount_mismatch) == (2, 1, 0)
    with unit_of_work(rail.engine) as s:
        found = {item.external_ref: item for item in list_items(s, run.id)}
        (raised,) = list_exceptions(s, "open", rail="usdc")
    assert found[credited.reference].category == "matched"
    assert found[lost.reference].category == "missing_in_ledger"
    assert raised.account_id == alice_id
    # The period's report reads the same re-scanned transfers.
    with unit_of_work(rail.engine) as s:
        report = period_report(s, rail=f"usdc:{chain_id}", period_start=clock.at(0), period_end=clock.at(60))
    assert report.usdc is not None
    assert (report.usdc.transfers, report.usdc.gross_usdc_units, report.external_complete) == (2, 7_000_000, True)

    with unit_of_work(rail.engine) as s:
        resolve(s, raised.id, action="mint", reason="listener was behind", resolved_by="finance")
    rail.settle(rpc)  # the listener now sees the transfer: it takes finance's lot, mints nothing more
    with unit_of_work(rail.engine) as s:
        assert s.execute(select(func.count()).where(lots.c.external_ref == lost.reference)).scalar_one() == 1
        assert check_invariants(s) == []
    assert rail.balance(alice_id).available_credits == 500 + 200
    deposit = next(d for d in rail.deposits(alice_id) if d.tx_hash == lost.log.tx_hash)
    assert deposit.status == "credited"


def test_a_transfer_credited_at_once_by_an_x402_settlement_is_matched_like_any_deposit(
    make_rail: object, rpc: ChainRpc, token: LocalToken
) -> None:
    rail: Rail = make_rail(confirmations=3)  # type: ignore[operator]
    chain_id = rail.chain.chain_id
    agent_id, agent = rail.customer("agent")
    clock = ChainTime(rpc)
    paid = clock.send(token, agent, 5_000_000, 10)
    observe_transaction(rail.engine, rail.chain, rpc, paid.log.tx_hash, now=clock.at(11), credit_now=True)
    clock.mine(100, count=rail.chain.confirmations + 1)  # the re-scan reads only blocks past the confirmations
    settings = rail.settings.model_copy(update={"finance_late_window_seconds": 0})
    (run,) = reconcile_period(
        rail.engine,
        settings,
        rail=f"usdc:{chain_id}",
        period_start=clock.at(0),
        period_end=clock.at(60),
        readers={chain_id: rpc},
        now=clock.at(200),
    )
    assert (run.external_records, run.missing_in_ledger, run.missing_externally, run.amount_mismatch) == (1, 0, 0, 0)
    with unit_of_work(rail.engine) as s:
        [item] = list_items(s, run.id)
        assert list_exceptions(s, "open") == []
        report = period_report(s, rail=f"usdc:{chain_id}", period_start=clock.at(0), period_end=clock.at(60))
    assert (item.external_ref, item.category) == (paid.reference, "matched")
    assert report.x402 is not None
    assert (report.x402.purchases, report.x402.credits_minted) == (1, 500)
    assert rail.balance(agent_id).available_credits == 500
