"""The worker runs ``alerts.evaluate`` (its interval and batch size from settings); a run with nothing changed
changes nothing."""

from __future__ import annotations

from services.alerts.tasks import alerts_job
from services.app.jobs import default_jobs
from services.core.settings import Settings
from services.worker.runner import run_job_once
from tests.alerts.conftest import Alerts


def test_the_worker_has_the_alerts_job_with_its_settings() -> None:
    settings = Settings(environment="test", alerts_interval_seconds=7.5, alerts_batch_size=20)
    [spec] = [spec for spec in default_jobs(settings) if spec.name == "alerts.evaluate"]
    assert (spec.interval_seconds, spec.batch_size, spec.batch) == (7.5, 20, None)


def test_a_run_of_the_job_sends_the_crossing_and_the_next_run_nothing(alerts: Alerts) -> None:
    customer = alerts.customer(credits=100)
    alerts.configure(customer, low_balance_threshold_credits=500)
    spec = alerts_job(alerts.settings)
    first = run_job_once(alerts.engine, spec)
    assert (str(first.outcome), first.items) == ("success", 1)
    second = run_job_once(alerts.engine, spec)
    assert (str(second.outcome), second.items) == ("success", 0)
    assert len(alerts.events("credits.low")) == 1
