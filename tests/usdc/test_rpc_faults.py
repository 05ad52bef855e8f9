"""The node answering errors, timeouts and truncated JSON, through a real HTTP server in front of a real anvil: the
listener's jobs record each error in job health, skip nothing (every transfer sent during the faults is credited
once after the node recovers), and the ledger's invariants hold."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from chain.devchain import LocalToken, mine
from chain.node import AnvilNode
from chain.rpc import ChainRpc, RetryPolicy
from services.core.db import unit_of_work
from services.usdc import tasks
from services.worker.health import get_job_health
from services.worker.jobs import JobSpec
from services.worker.models import RunOutcome
from services.worker.runner import run_job_once
from tests.chain.faulty_node import Fault, FaultyNode

from .conftest import Rail, chain_settings_for, rail_settings
from .support import send_transfer

FAULTS_AND_ERRORS = [
    (Fault.HTTP_500, "HTTP 500"),
    (Fault.HANG, "no answer within"),
    (Fault.TRUNCATED, "not JSON"),
    (Fault.GARBAGE, "not JSON"),
]


@pytest.fixture
def faulty(anvil: AnvilNode) -> Iterator[FaultyNode]:
    with FaultyNode(upstream=anvil.url) as node:
        yield node


def _jobs(usdc: Rail, client: ChainRpc) -> tuple[JobSpec, JobSpec]:
    chain = usdc.chain
    poll = JobSpec(
        f"usdc.poll.{chain.chain_id}",
        None,
        interval_seconds=5,
        batch_size=1_000,
        step=tasks.poll_job_fn(chain, usdc.settings, client),
    )
    confirm = JobSpec(
        f"usdc.confirm.{chain.chain_id}",
        None,
        interval_seconds=5,
        batch_size=100,
        step=tasks.confirm_job_fn(chain, client),
    )
    return poll, confirm


def _last_error(engine: Engine, job: str) -> str:
    with unit_of_work(engine) as session:
        health = get_job_health(session, job)
    assert health is not None
    return health.last_error or ""


def test_errors_timeouts_and_truncated_answers_are_recorded_and_every_transfer_is_credited_once_after(
    engine: Engine, rpc: ChainRpc, token: LocalToken, faulty: FaultyNode
) -> None:
    chain = chain_settings_for(rpc, token, rpc_url=faulty.url("/v3/KEY"), rpc_timeout_seconds=0.5)
    usdc = Rail(engine, rail_settings(engine, chain))
    client = ChainRpc(
        chain.rpc_url,
        expected_chain_id=chain.chain_id,
        timeout_seconds=0.5,
        retry=RetryPolicy(max_attempts=2, backoff_initial_seconds=0.01),
    )
    poll, confirm = _jobs(usdc, client)
    account_id, address = usdc.customer()
    sent_units = []

    assert run_job_once(engine, poll).outcome == RunOutcome.SUCCESS
    for number, (fault, error) in enumerate(FAULTS_AND_ERRORS, start=1):
        units = 1_000_000 * number + number
        send_transfer(token, address, units)  # sent straight to the node: the listener sees it only via the proxy
        sent_units.append(units)
        mine(rpc, 1)
        faulty.set(fault)
        for job in (poll, confirm):
            run = run_job_once(engine, job)
            assert run.outcome == RunOutcome.ERROR
            assert error in (run.error or "")
            assert error in _last_error(engine, job.name)
        assert error in (usdc.cursor().last_error or "")
        faulty.set(Fault.NONE)
        # The node answers again, the next transfer goes out, and the next fault comes: nothing was credited
        # during a fault, and nothing is lost across them.

    # An intermittent provider: every third request fails, so runs fail part way (after some progress) and resume.
    send_transfer(token, address, 9_000_009)
    sent_units.append(9_000_009)
    mine(rpc, usdc.chain.confirmations)
    faulty.set(Fault.HTTP_500, every=3)
    for _ in range(30):
        run_job_once(engine, poll)
        run_job_once(engine, confirm)
    faulty.set(Fault.NONE)
    for job in (poll, confirm, poll, confirm):
        assert run_job_once(engine, job).outcome == RunOutcome.SUCCESS

    deposits = usdc.deposits(account_id)
    assert sorted(int(d.amount_usdc_units) for d in deposits) == sorted(sent_units)
    assert {d.status for d in deposits} == {"credited"}
    assert len({(d.tx_hash, d.log_index) for d in deposits}) == len(sent_units)
    total_units = sum(sent_units)
    assert usdc.balance(account_id).total_credits == total_units // 10_000
    assert usdc.carry(account_id) == total_units % 10_000
    assert usdc.cursor().last_error is None
    assert faulty.faulty_answers > len(FAULTS_AND_ERRORS)
    usdc.assert_invariants()
