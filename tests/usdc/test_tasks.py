"""The worker's USDC jobs: node outages recorded on the cursor and caught up after, a poller killed mid-transaction,
two chains at once, and the job descriptions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from chain.devchain import LocalToken, mine
from chain.errors import ChainResponseError, ChainUnreachableError
from chain.rpc import ChainRpc
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.usdc import repository as usdc_repo
from services.usdc import tasks

from .conftest import CHAIN_ID, OwnChain, Rail, chain_settings_for, rail_settings, start_own_chain
from .support import FlakyRpc, send_transfer

KILLED_POLLER = Path(__file__).with_name("killed_poller.py")


def test_a_node_outage_is_recorded_on_the_cursor_and_caught_up_after_the_restart(
    engine: Engine, own_chain: OwnChain
) -> None:
    chain = chain_settings_for(own_chain.rpc, own_chain.token, confirmations=2)
    usdc = Rail(engine, rail_settings(engine, chain))
    account_id, address = usdc.customer()
    send_transfer(own_chain.token, address, 3_000_000)
    assert tasks.poll(engine, chain, own_chain.rpc, utcnow(), 100) == 1
    before = usdc.cursor()
    send_transfer(own_chain.token, address, 4_000_000)
    mine(own_chain.rpc, chain.confirmations)

    head = own_chain.rpc.block_number()
    hashes_before = own_chain.rpc.block_hashes(range(chain.start_block, head + 1))
    own_chain.node.stop()
    with pytest.raises(ChainUnreachableError):
        tasks.poll(engine, chain, own_chain.rpc, utcnow(), 100)
    down = usdc.cursor()
    assert down.next_block == before.next_block, "the cursor did not move"
    assert down.last_error is not None
    assert down.last_error.startswith("ChainUnreachableError")
    assert down.last_error_at is not None
    with pytest.raises(ChainUnreachableError):
        tasks.confirm(engine, chain, own_chain.rpc, utcnow(), 100)
    assert [d.status for d in usdc.deposits()] == ["observed"]

    own_chain.node.start()
    assert own_chain.rpc.block_hashes(range(chain.start_block, head + 1)) == hashes_before, "the same chain"
    assert tasks.poll(engine, chain, own_chain.rpc, utcnow(), 100) == 1
    up = usdc.cursor()
    assert up.next_block == own_chain.rpc.block_number() + 1
    assert up.last_error is None
    assert up.last_error_at is None
    assert tasks.confirm(engine, chain, own_chain.rpc, utcnow(), 100) == 2
    assert [d.status for d in usdc.deposits()] == ["credited", "credited"]
    assert usdc.balance(account_id).total_credits == 700
    usdc.assert_invariants()


def test_a_poll_run_stops_at_its_batch_budget_and_a_failing_provider_keeps_the_progress_made(
    usdc: Rail, rpc: ChainRpc, token: LocalToken
) -> None:
    account_id, address = usdc.customer()
    start = usdc.chain.start_block
    for value_units in (1_000_000, 2_000_000, 3_000_000):
        send_transfer(token, address, value_units)
    mine(rpc, 2)
    chain = usdc.chain.model_copy(update={"max_range_blocks": 1})  # one block per eth_getLogs call
    one_call = {"max_calls_per_poll": 1}

    assert tasks.poll(usdc.engine, chain, rpc, utcnow(), 2, **one_call) == 2
    assert usdc.cursor().next_block == start + 3

    # A provider failing every other call: the run keeps what it stored, records the error and raises it.
    with pytest.raises(ChainResponseError, match="temporarily unavailable"):
        tasks.poll(usdc.engine, chain, FlakyRpc(rpc), utcnow(), 100, **one_call)
    cursor = usdc.cursor()
    assert cursor.next_block == start + 4
    assert cursor.last_error is not None
    assert "temporarily unavailable" in cursor.last_error
    assert len(usdc.deposits()) == 3

    assert tasks.poll(usdc.engine, chain, rpc, utcnow(), 100) == 0
    assert usdc.cursor().next_block == rpc.block_number() + 1
    assert usdc.cursor().last_error is None, "a clean poll clears the last error"
    mine(rpc, chain.confirmations)
    assert tasks.confirm(usdc.engine, chain, rpc, utcnow(), 2) == 2
    assert tasks.confirm(usdc.engine, chain, rpc, utcnow(), 2) == 1
    assert tasks.confirm(usdc.engine, chain, rpc, utcnow(), 2) == 0
    assert usdc.balance(account_id).total_credits == 600
    usdc.assert_invariants()


def test_a_poller_killed_mid_transaction_leaves_nothing_and_the_rerun_stores_each_log_once(
    usdc: Rail, rpc: ChainRpc, token: LocalToken, backend: str, request: pytest.FixtureRequest
) -> None:
    account_id, address = usdc.customer()
    for value_units in (1_000_000, 2_000_000, 3_000_000):
        send_transfer(token, address, value_units)
    schema = request.getfixturevalue("postgres_database").schema if backend == "postgresql" else ""
    job = {
        "database_url": usdc.engine.url.render_as_string(hide_password=False),
        "schema": schema,
        "chain": usdc.chain.model_dump(),
    }
    completed = subprocess.run(
        [sys.executable, str(KILLED_POLLER), json.dumps(job)],
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == -signal.SIGKILL, completed.stderr.decode()[-2000:]
    assert b"storing 3 deposits" in completed.stdout, "it died after writing the deposits, before its commit"
    assert usdc.deposits() == []
    assert usdc.cursor().next_block == usdc.chain.start_block

    tasks.poll(usdc.engine, usdc.chain, rpc, utcnow(), 100)
    deposits = usdc.deposits(account_id)
    assert [d.amount_usdc_units for d in deposits] == [1_000_000, 2_000_000, 3_000_000]
    assert usdc.cursor().next_block == rpc.block_number() + 1
    mine(rpc, usdc.chain.confirmations)
    tasks.confirm(usdc.engine, usdc.chain, rpc, utcnow(), 100)
    assert usdc.balance(account_id).total_credits == 600
    usdc.assert_invariants()


@pytest.mark.parametrize("kill_at_store", [1, 2])
def test_a_catch_up_killed_while_it_stores_one_range_and_holds_the_next_loses_and_duplicates_nothing(
    make_rail: Any,
    rpc: ChainRpc,
    token: LocalToken,
    backend: str,
    request: pytest.FixtureRequest,
    kill_at_store: int,
) -> None:
    usdc: Rail = make_rail(max_range_blocks=1)  # one block per range
    account_id, address = usdc.customer()
    amounts = [1_000_000, 2_000_000, 3_000_000]
    blocks = [send_transfer(token, address, value_units)[1] for value_units in amounts]
    schema = request.getfixturevalue("postgres_database").schema if backend == "postgresql" else ""
    job = {
        "database_url": usdc.engine.url.render_as_string(hide_password=False),
        "schema": schema,
        "chain": usdc.chain.model_dump(),
        "kill_at_store": kill_at_store,
    }
    completed = subprocess.run(
        [sys.executable, str(KILLED_POLLER), json.dumps(job)],
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == -signal.SIGKILL, completed.stderr.decode()[-2000:]
    assert b"prefetched\nstoring 1 deposits" in completed.stdout, "it died storing a range with the next one fetched"
    # What committed before the killed store stays; the killed store and the range fetched ahead left nothing.
    committed = amounts[: kill_at_store - 1]
    assert [d.amount_usdc_units for d in usdc.deposits(account_id)] == committed
    assert usdc.cursor().next_block == blocks[kill_at_store - 1]

    assert tasks.poll(usdc.engine, usdc.chain, rpc, utcnow(), 100) == len(amounts) - len(committed)
    deposits = usdc.deposits(account_id)
    assert [(d.amount_usdc_units, d.block_number) for d in deposits] == list(zip(amounts, blocks, strict=True))
    assert usdc.cursor().next_block == rpc.block_number() + 1
    mine(rpc, usdc.chain.confirmations)
    tasks.confirm(usdc.engine, usdc.chain, rpc, utcnow(), 100)
    assert usdc.balance(account_id).total_credits == 600
    usdc.assert_invariants()


def test_two_chains_at_once_each_minting_against_its_own_funding_account(
    engine: Engine, rpc: ChainRpc, token: LocalToken
) -> None:
    other = start_own_chain(CHAIN_ID + 2)
    try:
        mine(rpc, 8)
        first = chain_settings_for(rpc, token, confirmations=2)
        second = chain_settings_for(other.rpc, other.token, name="second", confirmations=4)
        usdc = Rail(engine, rail_settings(engine, first, second))
        account_id, address = usdc.customer()
        with unit_of_work(engine) as session:
            assert usdc_repo.deposit_address_for(session, account_id, second.chain_id).address == address
        send_transfer(token, address, 5_000_000)
        send_transfer(other.token, address, 7_000_000)
        send_transfer(other.token, address, 1_500_000)
        mine(rpc, first.confirmations)
        mine(other.rpc, second.confirmations)
        for chain, client in ((first, rpc), (second, other.rpc)):
            assert tasks.poll(engine, chain, client, utcnow(), 100) >= 1
            tasks.confirm(engine, chain, client, utcnow(), 100)

        by_chain = sorted((d.chain_id, d.amount_usdc_units, d.credits_minted) for d in usdc.deposits(account_id))
        assert by_chain == [
            (first.chain_id, 5_000_000, 500),
            (second.chain_id, 1_500_000, 150),
            (second.chain_id, 7_000_000, 700),
        ]
        assert usdc.system_balance(f"funding:usdc:{first.chain_id}") == -500
        assert usdc.system_balance(f"funding:usdc:{second.chain_id}") == -850
        assert usdc.balance(account_id).total_credits == 1_350
        assert usdc.cursor(first.chain_id).next_block == rpc.block_number() + 1
        assert usdc.cursor(second.chain_id).next_block == other.rpc.block_number() + 1
        usdc.assert_invariants()
    finally:
        other.rpc.close()
        other.node.close()


def test_each_configured_chain_gets_a_poll_and_a_confirm_job(engine: Engine, rpc: ChainRpc, token: LocalToken) -> None:
    first = chain_settings_for(rpc, token)
    second = first.model_copy(update={"chain_id": 10, "name": "optimism"})
    settings = rail_settings(engine, first, second)
    specs = tasks.usdc_job_specs(settings)
    assert [s.name for s in specs] == [
        f"usdc.poll.{CHAIN_ID}",
        f"usdc.confirm.{CHAIN_ID}",
        "usdc.poll.10",
        "usdc.confirm.10",
    ]
    assert all(s.interval_seconds == settings.usdc_poll_interval_seconds for s in specs)
    assert specs[1].batch_size == settings.usdc_confirm_batch_size
    assert tasks.usdc_job_specs(settings.model_copy(update={"usdc_xpub": ""})) == []

    # The jobs are steps: they open their own units of work around their node calls.
    assert all(s.batch is None and s.step is not None for s in specs)
    usdc = Rail(engine, settings.model_copy(update={"usdc_chains": [first]}))
    usdc.customer()
    assert specs[0].step is not None
    assert specs[0].step(engine, utcnow(), specs[0].batch_size) == 0
    assert usdc.cursor().next_block == rpc.block_number() + 1
