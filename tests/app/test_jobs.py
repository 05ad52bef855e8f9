"""The job registry: the ledger's jobs from settings, and jobs the rails add."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import pytest
from sqlmodel import Session

from services.app.jobs import default_jobs, enabled_jobs, register_job, unregister_job
from services.core.settings import Settings
from services.worker.jobs import JobSpec


def nothing(session: Session, now: datetime, batch_size: int) -> int:
    return 0


@pytest.fixture
def clean_registry() -> Iterator[None]:
    yield
    unregister_job("example.sync")


def test_the_ledger_jobs_take_their_intervals_and_batch_sizes_from_settings() -> None:
    settings = Settings(
        environment="test",
        worker_lot_expiry_interval_seconds=30,
        worker_lot_expiry_batch_size=123,
        worker_hold_expiry_interval_seconds=5,
        worker_hold_expiry_batch_size=45,
    )
    jobs = {spec.name: spec for spec in default_jobs(settings)}
    assert list(jobs)[:2] == ["ledger.expire_lots", "ledger.expire_holds"]
    assert (jobs["ledger.expire_lots"].interval_seconds, jobs["ledger.expire_lots"].batch_size) == (30, 123)
    assert (jobs["ledger.expire_holds"].interval_seconds, jobs["ledger.expire_holds"].batch_size) == (5, 45)


@pytest.mark.usefixtures("clean_registry")
def test_a_rail_registers_a_job_built_from_settings() -> None:
    register_job("example.sync", lambda s: JobSpec("example.sync", nothing, s.worker_hold_expiry_interval_seconds, 50))
    jobs = default_jobs(Settings(environment="test", worker_hold_expiry_interval_seconds=9))
    assert [spec.name for spec in jobs][-1] == "example.sync"
    assert jobs[-1].interval_seconds == 9
    unregister_job("example.sync")
    assert "example.sync" not in [spec.name for spec in default_jobs(Settings(environment="test"))]


@pytest.mark.usefixtures("clean_registry")
def test_a_registered_job_must_carry_its_registered_name() -> None:
    register_job("example.sync", lambda s: JobSpec("example.other", nothing, 60, 50))
    with pytest.raises(ValueError, match="registered as"):
        default_jobs(Settings(environment="test"))


@pytest.mark.usefixtures("clean_registry")
def test_two_jobs_of_one_name_are_refused() -> None:
    register_job("example.sync", lambda s: JobSpec("example.sync", nothing, 60, 50))
    register_job("example.sync", lambda s: JobSpec("example.sync", nothing, 30, 50))  # replaces
    assert [spec.interval_seconds for spec in default_jobs(Settings()) if spec.name == "example.sync"] == [30]
    register_job("ledger.expire_lots", lambda s: JobSpec("ledger.expire_lots", nothing, 60, 50))
    try:
        with pytest.raises(ValueError, match="registered twice"):
            default_jobs(Settings())
    finally:
        unregister_job("ledger.expire_lots")


@pytest.mark.parametrize(
    ("name", "interval", "batch"),
    [("Bad Name", 60, 10), ("ok.name", 0, 10), ("ok.name", 60, 0), ("ok.name", 60, True)],
)
def test_a_job_spec_refuses_nonsense(name: str, interval: float, batch: int) -> None:
    with pytest.raises(ValueError, match="job"):
        JobSpec(name, nothing, interval, batch)


def test_settings_choose_which_jobs_a_worker_runs() -> None:
    every = [spec.name for spec in default_jobs(Settings(environment="test"))]
    assert [spec.name for spec in enabled_jobs(Settings(environment="test"))] == every
    chosen = Settings(environment="test", worker_jobs=["ledger.expire_holds"])
    assert [spec.name for spec in enabled_jobs(chosen)] == ["ledger.expire_holds"]
    with pytest.raises(ValueError, match="unknown jobs: nope"):
        enabled_jobs(Settings(environment="test", worker_jobs=["nope"]))
