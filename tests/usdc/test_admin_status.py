"""Admins see where each chain's listener stands (API and ``creditrail usdc status``) and any account's deposit
addresses and deposits, against a real anvil."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from chain.devchain import LocalToken, mine
from chain.errors import ChainUnreachableError
from chain.rpc import ChainRpc
from services.apikeys.service import issue_key
from services.app.app import create_app
from services.cli import main
from services.core.db import make_engine, unit_of_work
from services.core.migrate import upgrade
from services.core.settings import get_settings
from services.usdc.flows.listener import record_error

from .conftest import CHAIN_ID, Rail
from .support import send_transfer


def _admin(engine: Engine) -> dict[str, str]:
    with unit_of_work(engine) as session:
        issued = issue_key(session, role="admin", account_id=None)
    return {"Authorization": f"Bearer {issued.key}"}


def test_the_listener_state_and_an_accounts_deposits_as_admins_see_them(
    usdc: Rail, rpc: ChainRpc, token: LocalToken
) -> None:
    account_id, address = usdc.customer("watched")
    _, block = send_transfer(token, address, 2_500_000)
    usdc.poll_until_caught_up(rpc)
    admin = _admin(usdc.engine)
    with TestClient(create_app(usdc.settings, engine=usdc.engine), raise_server_exceptions=False) as client:
        chains = client.get("/v1/admin/usdc/chains", headers=admin)
        assert chains.status_code == 200, chains.text
        page = chains.json()
        assert (page["has_more"], page["next_cursor"]) == (False, None)
        [chain] = page["data"]
        cursor = usdc.cursor()
        assert chain["chain_id"] == CHAIN_ID
        assert chain["configured"] is True
        assert chain["confirmations"] == 3
        assert chain["next_block"] == cursor.next_block
        assert chain["scanned_block"] == cursor.next_block - 1
        assert chain["head_block"] == cursor.head_block >= block
        assert chain["lag_blocks"] == cursor.head_block - (cursor.next_block - 1)
        assert chain["deposits_pending"] == 1
        assert chain["last_error"] is None

        one = client.get(f"/v1/admin/usdc/chains/{CHAIN_ID}", headers=admin)
        assert one.json() == chain
        missing = client.get("/v1/admin/usdc/chains/424242", headers=admin)
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "chain_not_found")

        addresses = client.get(f"/v1/admin/accounts/{account_id}/usdc/addresses", headers=admin).json()
        assert [(a["chain_id"], a["address"].lower()) for a in addresses["data"]] == [(CHAIN_ID, address)]
        deposits = client.get(f"/v1/admin/accounts/{account_id}/usdc/deposits", headers=admin).json()
        [deposit] = deposits["data"]
        assert (deposit["status"], deposit["amount_usdc_units"], deposit["block_number"]) == (
            "observed",
            2_500_000,
            block,
        )
        assert deposits["has_more"] is False

        mine(rpc, 3)
        usdc.settle(rpc)
        settled = client.get(f"/v1/admin/usdc/chains/{CHAIN_ID}", headers=admin).json()
        assert settled["deposits_pending"] == 0
        credited = client.get(f"/v1/admin/accounts/{account_id}/usdc/deposits", headers=admin).json()["data"][0]
        assert (credited["status"], credited["credits_minted"]) == ("credited", 250)

        customer = client.get("/v1/admin/usdc/chains", headers={"Authorization": "Bearer nope"})
        assert customer.status_code == 401


def test_deposits_page_newest_first_with_the_list_envelope(usdc: Rail, rpc: ChainRpc, token: LocalToken) -> None:
    account_id, address = usdc.customer("pages")
    for units in (1_000_000, 2_000_000, 3_000_000):
        send_transfer(token, address, units)
    usdc.poll_until_caught_up(rpc)
    admin = _admin(usdc.engine)
    with TestClient(create_app(usdc.settings, engine=usdc.engine), raise_server_exceptions=False) as client:
        url = f"/v1/admin/accounts/{account_id}/usdc/deposits"
        first = client.get(url, params={"limit": 2}, headers=admin).json()
        assert [d["amount_usdc_units"] for d in first["data"]] == [3_000_000, 2_000_000]
        assert first["has_more"] is True
        second = client.get(url, params={"limit": 2, "cursor": first["next_cursor"]}, headers=admin).json()
        assert [d["amount_usdc_units"] for d in second["data"]] == [1_000_000]
        assert (second["has_more"], second["next_cursor"]) == (False, None)
        bad = client.get(url, params={"cursor": "abc"}, headers=admin)
        assert bad.status_code == 422
        unknown = client.get("/v1/admin/accounts/999999/usdc/deposits", headers=admin)
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "account_not_found")


def test_the_last_node_error_is_shown_with_when_and_without_the_nodes_key(usdc: Rail, rpc: ChainRpc) -> None:
    usdc.poll_until_caught_up(rpc)
    secret_url = "https://eth.example-provider.io/v2/providerKey987654"
    settings = usdc.settings.model_copy(update={"usdc_chains": [usdc.chain.model_copy(update={"rpc_url": secret_url})]})
    record_error(usdc.engine, CHAIN_ID, ChainUnreachableError(f"cannot reach {secret_url}: refused"))
    admin = _admin(usdc.engine)
    with TestClient(create_app(settings, engine=usdc.engine), raise_server_exceptions=False) as client:
        chain = client.get(f"/v1/admin/usdc/chains/{CHAIN_ID}", headers=admin).json()
    assert chain["last_error"].startswith("ChainUnreachableError: cannot reach [redacted]")
    assert "providerKey987654" not in chain["last_error"]
    assert chain["last_error_at"] is not None


def test_usdc_status_on_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade(make_engine(url))
    chains = [{"chain_id": 1, "name": "mainnet", "rpc_url": "http://127.0.0.1:9", "usdc_address": "0x" + "33" * 20}]
    monkeypatch.setenv("CREDITRAIL_DATABASE_URL", url)
    monkeypatch.setenv("CREDITRAIL_USDC_XPUB", "xpub-for-tests")
    monkeypatch.setenv("CREDITRAIL_USDC_CHAINS", json.dumps(chains))
    get_settings.cache_clear()
    try:
        table = CliRunner().invoke(main, ["usdc", "status"])
        as_json = CliRunner().invoke(main, ["usdc", "status", "--json"])
    finally:
        get_settings.cache_clear()
    assert table.exit_code == 0, table.output
    header, row = table.output.splitlines()
    assert header.split()[:3] == ["CHAIN", "NAME", "NEXT"]
    assert row.split()[:2] == ["1", "mainnet"]
    [status] = json.loads(as_json.output)
    assert (status["chain_id"], status["configured"], status["next_block"], status["deposits_pending"]) == (
        1,
        True,
        None,
        0,
    )
