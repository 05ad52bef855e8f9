"""An RPC URL's path and query often are the provider's key: it appears in no error, log line or response, whether
the node is unreachable, answers HTTP 500 or answers garbage (real sockets and servers, both databases)."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from chain.errors import ChainRpcError
from chain.node import free_port
from chain.rpc import NO_RETRY, ChainRpc
from services.usdc.tasks import usdc_job_specs
from services.worker.runner import run_job_once
from tests.card.conftest import make_card
from tests.chain.faulty_node import Fault, FaultyNode

from .conftest import Rail, chain_settings_for, random_xpub

SECRET = "SECRETKEY123"
PERIOD = {"period_start": "2026-11-01T00:00:00Z", "period_end": "2026-11-02T00:00:00Z"}


def _no_secret(text: object) -> None:
    assert SECRET not in str(text)


@pytest.fixture(params=["closed_port", Fault.HTTP_500.value, Fault.GARBAGE.value])
def secret_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """An RPC URL carrying the key in its path and query, of a node that fails in the test's way."""
    path = f"/v3/{SECRET}?apikey={SECRET}"
    if request.param == "closed_port":
        yield f"http://127.0.0.1:{free_port()}{path}"
        return
    with FaultyNode(upstream=None) as node:
        node.set(Fault(request.param))
        yield node.url(path)


def test_chain_errors_name_neither_the_key_nor_the_urls_path(secret_url: str) -> None:
    client = ChainRpc(secret_url, retry=NO_RETRY, timeout_seconds=2)
    with pytest.raises(ChainRpcError) as failed:
        client.block_number()
    _no_secret(failed.value)
    _no_secret(repr(failed.value))
    _no_secret("".join(traceback.format_exception(failed.value)))
    _no_secret(repr(client))
    assert "127.0.0.1" in str(failed.value)


def test_the_key_reaches_no_response_job_health_reconciliation_row_or_log_record(
    engine: Engine, secret_url: str, token: object, rpc: ChainRpc, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    chain = chain_settings_for(rpc, token, rpc_url=secret_url, rpc_timeout_seconds=2)  # type: ignore[arg-type]
    cards = make_card(engine, usdc_xpub=random_xpub(), usdc_chains=[chain])
    card = next(cards)
    try:
        finance = card.key("finance")
        started = card.client.post("/v1/finance/reconciliations", json={"rail": "usdc", **PERIOD}, headers=finance)
        assert started.status_code == 502
        _no_secret(started.text)
        listed = card.client.get("/v1/finance/reconciliations", headers=finance)
        assert listed.status_code == 200
        assert "last_error" in listed.text
        _no_secret(listed.text)

        [poll_job] = [spec for spec in usdc_job_specs(card.settings) if spec.name.startswith("usdc.poll.")]
        run = run_job_once(engine, poll_job)
        assert run.error
        _no_secret(run.error)
        jobs = card.client.get("/v1/admin/jobs", headers=card.admin)
        assert jobs.status_code == 200
        assert poll_job.name in jobs.text
        _no_secret(jobs.text)
        cursor = Rail(engine, card.settings).cursor(chain.chain_id)
        _no_secret(cursor.last_error if cursor is not None else "")
    finally:
        next(cards, None)  # the rest of the fixture: the app's shutdown
    assert caplog.records, "the failures were logged"
    for record in caplog.records:
        _no_secret(record.getMessage())
        _no_secret(getattr(record, "fields", ""))
        if record.exc_info:
            _no_secret("".join(traceback.format_exception(*record.exc_info)))
