"""Helpers for the operating tests: rows that say where a chain's listener stands, job runs, and a scrape parsed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.usdc import repository as usdc_repo
from services.worker.jobs import JobSpec

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient, headers: dict[str, str] | None = None) -> Samples:
    """``GET /metrics`` parsed with Prometheus' own parser: value by (sample name, sorted labels)."""
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def chain_rows(
    engine: Engine,
    chain_id: int,
    *,
    next_block: int,
    head_block: int | None,
    account_id: int | None = None,
    pending: int = 0,
    last_error: str | None = None,
    now: datetime | None = None,
) -> None:
    """A chain's cursor as the listener would leave it, and ``pending`` deposits waiting for confirmations."""
    now = now or utcnow()
    with unit_of_work(engine) as session:
        usdc_repo.insert_cursor(session, chain_id, next_block, 100, now)
        values: dict[str, Any] = {"head_block": head_block}
        if last_error is not None:
            values |= {"last_error": last_error, "last_error_at": now}
        usdc_repo.update_cursor(session, chain_id, **values)
        for index in range(pending):
            assert account_id is not None
            session.execute(
                insert(usdc_repo.deposits).values(
                    chain_id=chain_id,
                    tx_hash=f"0x{index:064x}",
                    log_index=0,
                    block_number=max(0, next_block - 1),
                    block_hash=f"0x{index + 1:064x}",
                    from_address="0x" + "11" * 20,
                    to_address="0x" + "22" * 20,
                    account_id=account_id,
                    amount_usdc_units=1_000_000,
                    status="observed",
                    observed_at=now,
                )
            )


def _fails(*_: Any) -> int:
    raise RuntimeError("the batch failed")


def _succeeds(*_: Any) -> int:
    return 0


def job(name: str, *, fails: bool = False) -> JobSpec:
    return JobSpec(name=name, batch=_fails if fails else _succeeds, interval_seconds=60, batch_size=10)
