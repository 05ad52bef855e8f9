"""Finance exceptions carry one reference format per rail whoever raised them, and the queue is filtered by it
(API and command line): a USDC transfer the listener set aside and reconciliation found missing in the ledger
is one reference, ``usdc:<chain id>:<tx hash>:<log index>`` (a real anvil, both databases)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from chain.devchain import LocalToken, mine
from chain.rpc import ChainRpc
from services.cli import main
from services.review.service import card_reference, usdc_reference
from tests.card.conftest import make_card
from tests.chain.conftest import anvil, rpc, token, wallet
from tests.usdc.conftest import Rail, chain_settings_for, random_xpub
from tests.usdc.support import send_transfer

__all__ = ["anvil", "rpc", "token", "wallet"]

TOO_MANY_UNITS_TO_MINT = 2 * 10**16


def test_the_listener_and_reconciliation_name_a_transfer_alike_and_the_queue_filters_by_it(
    engine: Engine, rpc: ChainRpc, token: LocalToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = chain_settings_for(rpc, token, confirmations=1)
    cards = make_card(engine, usdc_xpub=random_xpub(), usdc_chains=[chain])
    card = next(cards)
    try:
        usdc = Rail(engine, card.settings)
        token.mint(token.wallet.address, TOO_MANY_UNITS_TO_MINT)
        account_id, address = usdc.customer()
        send_transfer(token, address, TOO_MANY_UNITS_TO_MINT)
        send_transfer(token, address, 2_000_000)
        mine(rpc, chain.confirmations)
        usdc.settle(rpc)
        huge, _ = usdc.deposits(account_id)
        reference = usdc_reference(chain.chain_id, huge.tx_hash, huge.log_index)

        finance = card.key("finance")
        now = datetime.now(UTC)
        period = {"period_start": (now - timedelta(hours=1)).isoformat(), "period_end": now.isoformat()}
        ran = card.client.post("/v1/finance/reconciliations", json={"rail": "usdc", **period}, headers=finance)
        assert ran.status_code == 200, ran.text

        found = card.client.get("/v1/finance/exceptions", params={"reference": reference}, headers=finance)
        assert found.status_code == 200
        assert sorted(item["kind"] for item in found.json()["data"]) == [
            "deposit_set_aside",
            "reconciliation_missing_in_ledger",
        ]
        assert {item["reference"] for item in found.json()["data"]} == {reference}
        everything = card.client.get("/v1/finance/exceptions", headers=finance).json()["data"]
        assert len(everything) == 2, "the deposit credited raised nothing"

        monkeypatch.setattr("services.finance.cli.ready_engine", lambda _settings: engine)
        listed = CliRunner().invoke(main, ["finance", "exceptions", "--reference", reference])
        assert listed.exit_code == 0, listed.output
        assert {(row["kind"], row["reference"]) for row in json.loads(listed.output)} == {
            ("deposit_set_aside", reference),
            ("reconciliation_missing_in_ledger", reference),
        }
        none = CliRunner().invoke(main, ["finance", "exceptions", "--reference", card_reference("ch_none")])
        assert json.loads(none.output) == []
    finally:
        next(cards, None)
