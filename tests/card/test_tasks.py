"""The card rail's jobs are registered with the worker, with their intervals and batch sizes from settings."""

from __future__ import annotations

from pydantic import SecretStr

from services.app.jobs import default_jobs
from services.core.settings import Settings


def test_the_card_jobs_are_registered_with_the_worker() -> None:
    settings = Settings(
        card_inbox_interval_seconds=7,
        card_inbox_batch_size=11,
        card_sync_interval_seconds=120,
        card_auto_recharge_batch_size=5,
        stripe_secret_key=SecretStr("sk_test_realistic"),
    )
    jobs = {job.name: job for job in default_jobs(settings)}
    assert {"card.inbox", "card.sync", "card.auto_recharge"} <= set(jobs)
    assert (jobs["card.inbox"].interval_seconds, jobs["card.inbox"].batch_size) == (7, 11)
    assert jobs["card.sync"].interval_seconds == 120
    assert jobs["card.auto_recharge"].batch_size == 5


def test_the_jobs_that_call_stripe_stay_off_until_a_real_key_is_set() -> None:
    names = {job.name for job in default_jobs(Settings())}
    assert "card.inbox" in names
    assert not {"card.sync", "card.auto_recharge"} & names
