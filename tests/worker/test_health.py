"""Job health: the service, the admin endpoint and ``creditrail jobs``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.apikeys.service import issue_key
from services.app.app import create_app
from services.app.jobs import default_jobs
from services.app.worker_cli import jobs, run_job
from services.core.db import unit_of_work
from services.core.settings import Settings, get_settings
from services.ledger.accounts import create_customer_account
from services.worker.health import list_job_health
from services.worker.jobs import JobSpec
from services.worker.runner import run_job_once
from tests.worker.support import seed_lots

SETTINGS = Settings(environment="test", worker_lot_expiry_batch_size=7, worker_hold_expiry_interval_seconds=11)


def failing(session: Session, now: datetime, batch_size: int) -> int:
    raise RuntimeError("the rail is down")


def test_configured_jobs_show_before_they_ever_ran(engine: Engine) -> None:
    with unit_of_work(engine) as session:
        views = list_job_health(session, default_jobs(SETTINGS))
    assert [v.job for v in views] == [spec.name for spec in default_jobs(SETTINGS)]
    assert [v.job for v in views][:2] == ["ledger.expire_lots", "ledger.expire_holds"]
    assert all((v.status, v.total_runs, v.last_started_at) == ("never_run", 0, None) for v in views)
    assert (views[0].batch_size, views[1].interval_seconds) == (7, 11)


def test_health_shows_successes_errors_and_jobs_no_longer_configured(engine: Engine) -> None:
    seed_lots(engine, accounts=2, lots_per_account=4)
    lot_job = default_jobs(SETTINGS)[0]
    run_job_once(engine, lot_job)
    run_job_once(engine, JobSpec("retired.job", failing, interval_seconds=60, batch_size=1))

    with unit_of_work(engine) as session:
        views = {v.job: v for v in list_job_health(session, default_jobs(SETTINGS))}
    assert list(views)[:2] == ["ledger.expire_lots", "ledger.expire_holds"]
    assert list(views)[-1] == "retired.job"  # no longer configured: after the configured ones
    lots = views["ledger.expire_lots"]
    assert (lots.status, lots.last_items, lots.total_items, lots.last_batches) == ("ok", 8, 8, 2)
    assert lots.last_started_at is not None
    assert lots.last_succeeded_at is not None
    retired = views["retired.job"]
    assert (retired.status, retired.last_error, retired.interval_seconds) == (
        "failing",
        "RuntimeError: the rail is down",
        None,
    )


# --- over HTTP -----------------------------------------------------------------------------------------------


@pytest.fixture
def client(engine: Engine) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    app: FastAPI = create_app(SETTINGS, engine=engine)
    with unit_of_work(engine) as session:
        admin = issue_key(session, role="admin", account_id=None, name="root")
        account_id = create_customer_account(session, name="acme")
        customer = issue_key(session, role="customer", account_id=account_id)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield (
            test_client,
            {"Authorization": f"Bearer {admin.key}"},
            {"Authorization": f"Bearer {customer.key}"},
        )


def test_admins_read_job_health_over_http(engine: Engine, client) -> None:
    test_client, admin, _ = client
    seed_lots(engine, accounts=1, lots_per_account=3)
    run_job_once(engine, default_jobs(SETTINGS)[0])

    listed = test_client.get("/v1/admin/jobs", headers=admin)
    assert listed.status_code == 200
    body = {job["job"]: job for job in listed.json()["data"]}
    assert body["ledger.expire_lots"]["status"] == "ok"
    assert body["ledger.expire_lots"]["last_items"] == 3
    assert body["ledger.expire_lots"]["batch_size"] == 7
    assert body["ledger.expire_holds"]["status"] == "never_run"
    assert body["ledger.expire_holds"]["last_started_at"] is None

    one = test_client.get("/v1/admin/jobs/ledger.expire_lots", headers=admin)
    assert one.status_code == 200
    assert one.json()["total_items"] == 3
    missing = test_client.get("/v1/admin/jobs/no.such.job", headers=admin)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "job_not_found"


def test_job_health_is_for_admins_only(client) -> None:
    test_client, _, customer = client
    assert test_client.get("/v1/admin/jobs", headers=customer).status_code == 403
    assert test_client.get("/v1/admin/jobs").status_code == 401


# --- on the command line -------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(database_url: str) -> Iterator[dict[str, str]]:
    get_settings.cache_clear()
    yield {"CREDITRAIL_DATABASE_URL": database_url, "CREDITRAIL_WORKER_LOT_EXPIRY_BATCH_SIZE": "2"}
    get_settings.cache_clear()


def test_jobs_prints_a_table_and_json(engine: Engine, cli_env: dict[str, str]) -> None:
    seed_lots(engine, accounts=1, lots_per_account=3)
    runner = CliRunner()

    ran = runner.invoke(run_job, ["ledger.expire_lots"], env=cli_env)
    assert ran.exit_code == 0, ran.output
    printed = json.loads(ran.output.strip().splitlines()[-1])
    assert (printed["outcome"], printed["items"], printed["batches"]) == ("success", 3, 2)

    table = runner.invoke(jobs, [], env=cli_env)
    assert table.exit_code == 0, table.output
    header, *rows = (line.split() for line in table.output.splitlines())
    assert header[:2] == ["JOB", "STATUS"]
    status = {row[0]: row[1] for row in rows}
    assert (status["ledger.expire_lots"], status["ledger.expire_holds"]) == ("ok", "never_run")

    as_json = runner.invoke(jobs, ["--json"], env=cli_env)
    assert as_json.exit_code == 0, as_json.output
    listed = {job["job"]: job for job in json.loads(as_json.output)}
    assert (listed["ledger.expire_lots"]["total_items"], listed["ledger.expire_lots"]["batch_size"]) == (3, 2)


def test_run_job_refuses_an_unknown_job(cli_env: dict[str, str]) -> None:
    result = CliRunner().invoke(run_job, ["no.such.job"], env=cli_env)
    assert result.exit_code == 2
    assert "no job named" in result.output
