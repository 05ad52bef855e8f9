"""The worker's own /metrics: what its jobs did in its process, the database's gauges, the same protection."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy.engine import Engine

from services.core.settings import Settings
from services.ledger.tasks import lot_expiry_job
from services.ops.metrics_server import start_metrics_server
from services.worker.runner import run_job_once


def _expiry_runs(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "creditrail_ledger_operations_total" and sample.labels == {
                "kind": "expiry",
                "outcome": "ok",
            }:
                return sample.value
    return 0.0


def test_the_worker_serves_its_metrics_behind_the_token(engine: Engine) -> None:
    settings = Settings(
        environment="development",
        database_url=str(engine.url),
        metrics_token=SecretStr("w-token-1"),
        worker_metrics_port=0,
    )
    server = start_metrics_server(engine, settings)
    assert server is not None
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with httpx.Client(timeout=10) as client:
            assert client.get(url).status_code == 401
            assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
            before = client.get(url, headers={"Authorization": "Bearer w-token-1"})
            run_job_once(engine, lot_expiry_job(settings))
            after = client.get(url, headers={"Authorization": "Bearer w-token-1"})
            assert client.get(f"http://127.0.0.1:{server.port}/other").status_code == 404
    finally:
        server.close()
    assert before.status_code == after.status_code == 200
    assert after.headers["content-type"].startswith("text/plain")
    assert _expiry_runs(after.text) == _expiry_runs(before.text) + 1
    assert 'creditrail_job_runs_total{job="ledger.expire_lots"} 1.0' in after.text


def test_the_worker_serves_no_metrics_unless_a_port_is_set(engine: Engine) -> None:
    assert start_metrics_server(engine, Settings(environment="test", database_url=str(engine.url))) is None
