"""/healthz answers without the database; /readyz says why the process is not ready: a database that does not
answer, a schema behind, a chain's listener lagging, a job failing run after run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from chain.node import free_port
from services.app.app import create_app
from services.core.db import make_engine, unit_of_work
from services.core.migrate import head_revision
from services.core.settings import ChainSettings, Settings
from services.ledger.accounts import create_customer_account
from services.usdc import repository as usdc_repo
from services.worker.runner import JobRunner
from tests.ops.support import chain_rows, job

CHAIN_ID = 31337


def _settings(engine: Engine, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"environment": "test", "database_url": str(engine.url)}
    return Settings(**(values | overrides))


@contextmanager
def _client(engine: Engine, **overrides: Any) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(engine, **overrides), engine=engine), raise_server_exceptions=False) as client:
        yield client


def _reasons(client: TestClient) -> list[dict[str, Any]]:
    response = client.get("/readyz")
    if response.status_code == 200:
        assert response.json() == {"status": "ready"}
        return []
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "not_ready"
    reasons: list[dict[str, Any]] = error["details"]["reasons"]
    assert reasons
    return reasons


def _chain(**overrides: Any) -> dict[str, Any]:
    chain = ChainSettings(chain_id=CHAIN_ID, rpc_url="http://127.0.0.1:9/rpc-key", usdc_address="0x" + "33" * 20)
    return {"usdc_xpub": "xpub-for-tests", "usdc_chains": [chain], **overrides}


def test_a_fresh_database_is_ready(engine: Engine) -> None:
    with _client(engine) as client:
        assert _reasons(client) == []


def test_healthz_answers_without_a_database() -> None:
    gone = make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    with TestClient(create_app(Settings(environment="test"), engine=gone)) as client:
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_a_database_that_does_not_answer_is_not_ready() -> None:
    gone = make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    with TestClient(create_app(Settings(environment="test"), engine=gone)) as client:
        reasons = _reasons(client)
    assert [reason["code"] for reason in reasons] == ["database_unreachable"]
    assert "127.0.0.1" not in str(reasons)  # nothing of the error's text: the endpoint is public


def test_a_schema_behind_is_not_ready(engine: Engine) -> None:
    head = head_revision()
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0007'"))
    try:
        with _client(engine) as client:
            reasons = _reasons(client)
    finally:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head})
    assert reasons == [
        {
            "code": "schema_behind",
            "message": f"the database schema is at 0007, this version needs {head}",
            "details": {"current": "0007", "head": head},
        }
    ]


def test_a_job_failing_run_after_run_is_not_ready_past_the_bound(engine: Engine) -> None:
    runner = JobRunner(engine, job("ledger.expire_holds", fails=True))
    with _client(engine, readyz_max_job_failures=3) as client:
        runner.run()
        runner.run()
        assert _reasons(client) == []  # two failures in a row: within the bound
        runner.run()
        reasons = _reasons(client)
        assert reasons == [
            {
                "code": "job_failing",
                "message": "job ledger.expire_holds failed 3 runs in a row",
                "details": {"job": "ledger.expire_holds", "consecutive_failures": 3, "max_failures": 3},
            }
        ]
        JobRunner(engine, job("ledger.expire_holds")).run()  # it recovers
        assert _reasons(client) == []


def test_a_failing_job_that_is_not_configured_here_does_not_count(engine: Engine) -> None:
    runner = JobRunner(engine, job("elsewhere.only", fails=True))
    for _ in range(3):
        runner.run()
    with _client(engine, readyz_max_job_failures=3) as client:
        assert _reasons(client) == []


def test_a_chain_lagging_past_the_bound_is_not_ready(engine: Engine) -> None:
    with unit_of_work(engine) as session:
        account_id = create_customer_account(session, name="chains")
    chain_rows(engine, CHAIN_ID, next_block=101, head_block=150, account_id=account_id, pending=1)
    with _client(engine, **_chain(readyz_max_chain_lag_blocks=40)) as client:
        reasons = _reasons(client)
        assert [reason["code"] for reason in reasons] == ["chain_lagging"]
        assert reasons[0]["details"] == {"chain_id": CHAIN_ID, "lag_blocks": 50, "max_lag_blocks": 40}
        with unit_of_work(engine) as session:
            usdc_repo.update_cursor(session, CHAIN_ID, next_block=120)  # the listener catches up
        assert _reasons(client) == []


def test_a_chain_not_configured_here_does_not_count(engine: Engine) -> None:
    chain_rows(engine, 5, next_block=1, head_block=10_000)
    with _client(engine, readyz_max_chain_lag_blocks=10) as client:
        assert _reasons(client) == []


def test_a_database_never_migrated_is_not_ready(tmp_path: Path) -> None:
    empty = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with TestClient(create_app(Settings(environment="test"), engine=empty)) as client:
        reasons = _reasons(client)
    assert [(reason["code"], reason["details"]["current"]) for reason in reasons] == [("schema_behind", None)]
