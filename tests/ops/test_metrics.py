"""/metrics: scraped through the app after a spend, a webhook and job runs, parsed with Prometheus' own parser;
and who may scrape it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from services.app.app import create_app
from services.card.webhooks import parse_event, store_event
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.settings import Settings
from services.ledger.accounts import create_customer_account
from services.ledger.minting import grant, mint
from services.ledger.system_accounts import SystemAccount
from services.review.service import raise_exception
from services.worker.runner import JobRunner, run_job_once
from tests.card.conftest import Card, make_card
from tests.ops.support import Samples, chain_rows, job, scrape, value

LEDGER = "creditrail_ledger_operations_total"


@pytest.fixture
def card(engine: Engine) -> Iterator[Card]:
    yield from make_card(engine)


def _delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_a_scrape_after_a_spend_a_webhook_and_job_runs_reports_them(card: Card) -> None:
    before = scrape(card.client)
    customer = card.customer("metrics", credits=1_000)
    charge = {"amount_credits": 40}
    headers = {**customer.headers, "Idempotency-Key": "spend-1"}
    assert card.client.post("/v1/charges", json=charge, headers=headers).status_code == 201
    assert card.client.post("/v1/charges", json=charge, headers=headers).status_code in (200, 201)
    too_much = {**customer.headers, "Idempotency-Key": "spend-2"}
    assert card.client.post("/v1/charges", json={"amount_credits": 10**6}, headers=too_much).status_code == 402

    purchase = card.bought(customer)
    card.complete(purchase)  # checkout.session.completed: received, stored, processed (mints)

    run_job_once(card.engine, job("ops.sweep"))
    failing = JobRunner(card.engine, job("ops.broken", fails=True))
    failing.run()
    failing.run()

    waiting = card.stripe.event(
        "checkout.session.completed", card.stripe.pay(card.bought(customer, "k2")["checkout_session_id"])
    )
    received_at = utcnow() - timedelta(seconds=120)
    with unit_of_work(card.engine) as session:
        store_event(
            session,
            parse_event(json.dumps(waiting)),
            json.dumps(waiting),
            source="sync",
            now=received_at,
            settings=card.settings,
        )
        raise_exception(session, rail="usdc", kind="deep_reorg", reference="1:0xabc:0")
    chain_rows(card.engine, 31337, next_block=101, head_block=130, account_id=customer.account_id, pending=2)

    after = scrape(card.client)

    assert _delta(after, before, LEDGER, kind="spend", outcome="ok") == 1
    assert _delta(after, before, LEDGER, kind="spend", outcome="replay") == 1
    assert _delta(after, before, LEDGER, kind="spend", outcome="insufficient_credits") == 1
    assert _delta(after, before, LEDGER, kind="mint", outcome="ok") == 2  # the seed and the card purchase
    assert _delta(after, before, "creditrail_ledger_operation_seconds_count", kind="spend") == 3
    assert _delta(after, before, "creditrail_card_webhooks_received_total", duplicate="false") == 1
    assert _delta(after, before, "creditrail_card_webhooks_processed_total") == 1
    assert _delta(after, before, "creditrail_card_webhooks_failed_total") == 0

    assert value(after, "creditrail_job_runs_total", job="ops.sweep") == 1
    assert value(after, "creditrail_job_failures_total", job="ops.sweep") == 0
    assert value(after, "creditrail_job_last_success_timestamp_seconds", job="ops.sweep") > utcnow().timestamp() - 60
    assert value(after, "creditrail_job_runs_total", job="ops.broken") == 2
    assert value(after, "creditrail_job_failures_total", job="ops.broken") == 2
    assert value(after, "creditrail_job_consecutive_failures", job="ops.broken") == 2
    assert ("creditrail_job_last_success_timestamp_seconds", (("job", "ops.broken"),)) not in after

    assert value(after, "creditrail_chain_head_block", chain_id="31337") == 130
    assert value(after, "creditrail_chain_scanned_block", chain_id="31337") == 100
    assert value(after, "creditrail_chain_lag_blocks", chain_id="31337") == 30
    assert value(after, "creditrail_usdc_deposits_pending", chain_id="31337") == 2

    assert value(after, "creditrail_finance_exceptions_open", rail="usdc") == 1
    assert value(after, "creditrail_finance_exceptions_open", rail="card") == 0
    assert value(after, "creditrail_queue_backlog_items", queue="card_webhook_inbox") == 1
    assert value(after, "creditrail_queue_oldest_age_seconds", queue="card_webhook_inbox") >= 120
    for source in ("chains", "jobs", "finance_exceptions", "card_webhook_inbox"):
        assert value(after, "creditrail_metrics_source_up", source=source) == 1


def test_an_operation_inside_another_counts_once_as_the_outer_one(engine: Engine) -> None:
    app = create_app(Settings(environment="test", database_url=str(engine.url)), engine=engine)
    with TestClient(app) as client:
        before = scrape(client)
        with unit_of_work(engine) as session:
            account_id = create_customer_account(session, name="nested")
            grant(session, account_id=account_id, amount_credits=500, idempotency_key="welcome")
            grant(session, account_id=account_id, amount_credits=500, idempotency_key="welcome")
            mint(
                session,
                account_id=account_id,
                amount_credits=100,
                rail="card",
                external_ref="cs_nested",
                funding_account_id=SystemAccount.FUNDING_CARD,
            )
        after = scrape(client)
    assert _delta(after, before, LEDGER, kind="grant", outcome="ok") == 1
    assert _delta(after, before, LEDGER, kind="grant", outcome="replay") == 1
    assert _delta(after, before, LEDGER, kind="mint", outcome="ok") == 1
    assert _delta(after, before, "creditrail_ledger_operation_seconds_count", kind="mint") == 1


def _app(engine: Engine, **settings: object) -> TestClient:
    return TestClient(create_app(Settings(database_url=str(engine.url), **settings), engine=engine))  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_metrics_are_refused_in_production_without_a_token(engine: Engine) -> None:
    with _app(
        engine,
        environment="production",
        public_base_url="https://credits.example.com",
        stripe_secret_key=SecretStr("sk_live_realkey123"),
        stripe_webhook_secrets=[SecretStr("whsec_real")],
        receipt_link_secret=SecretStr("receipt-links-0123456789abcdef-0123456789"),
    ) as client:
        response = client.get("/metrics")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "metrics_not_public"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_metrics_need_the_token_when_one_is_set(engine: Engine) -> None:
    with _app(engine, environment="development", metrics_token=SecretStr("scrape-secret-1")) as client:
        missing = client.get("/metrics")
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        right = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret-1"})
    assert missing.status_code == wrong.status_code == 401
    assert missing.json()["error"]["code"] == "metrics_token_required"
    assert right.status_code == 200
    assert "creditrail_ledger_operations_total" in right.text


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_metrics_are_open_in_development_and_can_be_closed(engine: Engine) -> None:
    with _app(engine, environment="development") as client:
        assert client.get("/metrics").status_code == 200
    with _app(engine, environment="development", metrics_public=False) as client:
        assert client.get("/metrics").status_code == 403


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_an_empty_metrics_token_opens_nothing(engine: Engine) -> None:
    production = {
        "environment": "production",
        "public_base_url": "https://credits.example.com",
        "stripe_secret_key": SecretStr("sk_live_realkey123"),
        "stripe_webhook_secrets": [SecretStr("whsec_real")],
        "receipt_link_secret": SecretStr("receipt-links-0123456789abcdef-0123456789"),
        "metrics_token": SecretStr(""),
    }
    with _app(engine, **production) as client:
        assert client.get("/metrics").status_code == 403
        assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 403
