"""The USDC rail's configuration checked at start: the token's address (EIP-55) and its decimals (a real anvil)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import ValidationError
from sqlalchemy.engine import Engine

from chain.devchain import LocalToken, set_code
from chain.node import free_port
from chain.rpc import ChainRpc
from services.app.worker_cli import worker
from services.core.clock import utcnow
from services.core.settings import ChainSettings, Settings, get_settings
from services.usdc import tasks
from services.usdc.errors import TokenDecimalsMismatch
from tests.chain.conftest import random_address

from .conftest import Rail, chain_settings_for, rail_settings, random_xpub
from .support import send_transfer

CIRCLE_USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
# Runtime code answering every call with the 32-byte number 18 (PUSH1 18, PUSH1 0, MSTORE, PUSH1 32, PUSH1 0,
# RETURN): "decimals() = 18", as a token of 18 decimals would.
EIGHTEEN_DECIMALS_CODE = "0x601260005260206000f3"


def _chain(**values: Any) -> dict[str, Any]:
    return {"chain_id": 1, "rpc_url": "https://rpc.example/v3/key", "usdc_address": CIRCLE_USDC, **values}


def test_a_usdc_address_whose_mixed_case_is_not_its_checksum_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    typo = CIRCLE_USDC.replace("eB48", "eb48")
    monkeypatch.setenv("CREDITRAIL_USDC_XPUB", random_xpub())
    monkeypatch.setenv("CREDITRAIL_USDC_CHAINS", json.dumps([_chain(usdc_address=typo)]))
    with pytest.raises(ValidationError) as refused:
        Settings()
    [error] = refused.value.errors()
    assert error["loc"] == ("usdc_chains", 0, "usdc_address")
    assert "EIP-55 checksum" in error["msg"]
    for bad in ("0x1234", "A0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", CIRCLE_USDC + "00", "0x" + "g" * 40):
        with pytest.raises(ValidationError, match="usdc_address"):
            ChainSettings(**_chain(usdc_address=bad))


def test_a_checksummed_or_lowercase_usdc_address_is_accepted_and_normalised() -> None:
    for given in (CIRCLE_USDC, CIRCLE_USDC.lower(), "0x" + CIRCLE_USDC[2:].upper()):
        assert ChainSettings(**_chain(usdc_address=given)).usdc_address == CIRCLE_USDC.lower()


@pytest.fixture
def worker_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[dict[str, str]]:
    monkeypatch.setenv("CREDITRAIL_DATABASE_URL", f"sqlite:///{tmp_path / 'worker.db'}")
    monkeypatch.setenv("CREDITRAIL_USDC_XPUB", random_xpub())
    get_settings.cache_clear()
    yield {}
    get_settings.cache_clear()


def test_the_worker_refuses_to_start_on_a_token_without_six_decimals_in_one_line(
    rpc: ChainRpc, worker_environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    impostor = random_address()
    set_code(rpc, impostor, EIGHTEEN_DECIMALS_CODE)
    chains = [{"chain_id": rpc.chain_id(), "rpc_url": rpc.url, "usdc_address": impostor, "confirmations": 1}]
    monkeypatch.setenv("CREDITRAIL_USDC_CHAINS", json.dumps(chains))

    result = CliRunner().invoke(worker, [])

    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert "has 18 decimals; the USDC rail needs 6" in line
    assert f"chain {rpc.chain_id()}" in line


def test_the_poll_job_refuses_a_token_without_six_decimals_or_without_code_and_stores_nothing(
    engine: Engine, rpc: ChainRpc, token: LocalToken
) -> None:
    impostor = random_address()
    set_code(rpc, impostor, EIGHTEEN_DECIMALS_CODE)
    for usdc_address, message in ((impostor, "has 18 decimals"), (random_address(), "has no decimals()")):
        chain = chain_settings_for(rpc, token, usdc_address=usdc_address)
        usdc = Rail(engine, rail_settings(engine, chain))
        _, address = usdc.customer()
        send_transfer(token, address, 2_000_000)
        run = tasks.poll_job_fn(chain, usdc.settings, rpc)
        with pytest.raises(TokenDecimalsMismatch, match=message):
            run(engine, utcnow(), 100)
        assert usdc.deposits() == []


def test_a_node_down_at_the_workers_start_is_a_warning_without_its_url(rpc: ChainRpc, token: LocalToken) -> None:
    down = f"http://127.0.0.1:{free_port()}/v3/SECRETKEY123"
    chain = chain_settings_for(rpc, token, rpc_url=down, rpc_timeout_seconds=1)
    settings = Settings(environment="test", usdc_xpub=random_xpub(), usdc_chains=[chain])

    [warning] = tasks.preflight(settings)

    assert f"chain {chain.chain_id}" in warning
    assert "SECRETKEY123" not in warning


def test_a_refused_chain_setting_never_echoes_its_rpc_url(monkeypatch: pytest.MonkeyPatch) -> None:
    leaky = {"chain_id": 1, "rpc_url": "https://rpc.example/v3/SECRETKEY123"}  # no usdc_address
    monkeypatch.setenv("CREDITRAIL_USDC_CHAINS", json.dumps([leaky]))
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert "usdc_chains.0.usdc_address" in str(refused.value)
    assert "SECRETKEY123" not in str(refused.value)
    assert "SECRETKEY123" not in repr(ChainSettings(**_chain(rpc_url=leaky["rpc_url"])))
