"""Lot expiry paces itself: busy at most its share of the time while it works off a backlog, resting before a batch
touches the database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session

from services.core.db import unit_of_work
from services.core.settings import Settings
from services.ledger import tasks
from services.ledger.tasks import LONGEST_REST_SECONDS, PACED_BATCH_SECONDS, PacedBatch, Pacer
from tests.ledger.support import T0, ledger_balance, mint_card, new_account


class FakeTime:
    """A clock that batches advance by hand, and a sleep that advances it and records each rest."""

    def __init__(self) -> None:
        self.now = 100.0
        self.rests: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.rests.append(seconds)
        self.now += seconds

    def batch(self, seconds: float, items: int = 1) -> int:
        self.now += seconds
        return items


def paced(share: float, min_rate: float | None = None) -> tuple[Pacer, FakeTime]:
    fake = FakeTime()
    return Pacer(share, min_rate=min_rate, clock=fake.clock, sleep=fake.sleep), fake


def test_batches_back_to_back_are_busy_their_share_of_the_time():
    pacer, fake = paced(0.2)
    start = fake.now
    for _ in range(5):
        pacer.work(lambda: fake.batch(0.1))
    # The first batch starts at once; each later one after four times the batch before it.
    assert fake.rests == pytest.approx([0.4] * 4)
    assert 0.5 / (fake.now - start) == pytest.approx(0.5 / 2.1)
    pacer.work(lambda: fake.batch(0.1))
    assert pacer.rest() == pytest.approx(0.4)


def test_a_short_batch_a_pause_and_a_first_batch_need_no_rest():
    pacer, fake = paced(0.2)
    assert pacer.rest() == 0.0
    pacer.work(lambda: fake.batch(PACED_BATCH_SECONDS / 2))
    assert pacer.rest() == 0.0
    pacer.work(lambda: fake.batch(0.1))
    fake.now += 0.3  # the caller did other things for part of the rest the batch asks for
    assert pacer.rest() == pytest.approx(0.1)
    pacer.work(lambda: fake.batch(0.1))
    fake.now += 60  # the next run
    assert pacer.rest() == 0.0
    assert fake.rests == pytest.approx([0.1])


def test_a_rest_is_never_longer_than_the_longest_and_a_failed_batch_counts():
    pacer, fake = paced(0.5)

    def fails() -> int:
        fake.batch(30.0)
        raise RuntimeError("batch failed")

    with pytest.raises(RuntimeError):
        pacer.work(fails)
    assert pacer.rest() == LONGEST_REST_SECONDS
    assert Pacer(1.0, clock=fake.clock, sleep=fake.sleep).work(lambda: fake.batch(1.0, 7)) == 7


def test_the_minimum_rate_shortens_a_rest_the_busy_share_would_ask_for():
    pacer, fake = paced(0.1, min_rate=2_000)
    # A batch of 2,000 items in 0.05 s: the share asks for 0.45 s of rest, the rate allows 0.95 s.
    pacer.work(lambda: fake.batch(0.05, 2_000))
    assert pacer.rest() == pytest.approx(0.45)
    # Slowed down to 0.4 s: the share would ask for 3.6 s, but 2,000 items a second allow only 0.6 s.
    pacer.work(lambda: fake.batch(0.4, 2_000))
    assert pacer.rest() == pytest.approx(0.6)
    # Slower than the rate itself: no rest at all.
    pacer.work(lambda: fake.batch(1.5, 2_000))
    assert pacer.rest() == 0.0


def test_a_failed_batch_rests_by_the_busy_share_alone():
    pacer, fake = paced(0.5, min_rate=1_000)

    def fails() -> int:
        fake.batch(0.2)
        raise RuntimeError("batch failed")

    with pytest.raises(RuntimeError):
        pacer.work(fails)
    assert pacer.rest() == pytest.approx(0.2)


def test_the_lot_expiry_job_is_paced_by_its_settings():
    job = tasks.lot_expiry_job(Settings(worker_lot_expiry_busy_share=0.3, worker_lot_expiry_min_lots_per_second=5_000))
    assert isinstance(job.batch, PacedBatch)
    assert (job.batch.pacer.share, job.batch.pacer.min_rate) == (0.3, 5_000)
    assert job.batch.batch is tasks.expire_lots_batch


@pytest.mark.parametrize("share", [0, -0.5, 1.5])
def test_a_busy_share_is_a_fraction(share):
    with pytest.raises(ValueError, match="busy share"):
        Pacer(share)


@pytest.mark.parametrize("min_rate", [0, -1.0])
def test_a_minimum_rate_is_positive(min_rate):
    with pytest.raises(ValueError, match="minimum rate"):
        Pacer(0.5, min_rate=min_rate)


@pytest.mark.parametrize(
    ("name", "value"),
    [("BUSY_SHARE", "0"), ("BUSY_SHARE", "1.5"), ("MIN_LOTS_PER_SECOND", "0")],
)
def test_settings_refuse_a_pace_that_is_no_pace(monkeypatch, name, value):
    monkeypatch.setenv(f"CREDITRAIL_WORKER_LOT_EXPIRY_{name}", value)
    with pytest.raises(ValueError, match=name.lower()):
        Settings()


def test_the_expiry_job_rests_before_its_batch_opens_anything(engine):
    accounts = [new_account(engine) for _ in range(3)]
    for account_id in accounts:
        for n in range(2):
            mint_card(engine, account_id, 10, at=T0 - timedelta(days=400 + n))
    fake = FakeTime()
    rests_in_transaction: list[bool] = []
    session_of_batch: list[Session] = []

    def sleep(seconds: float) -> None:
        rests_in_transaction.append(session_of_batch[-1].in_transaction())
        fake.sleep(seconds)

    def clock() -> float:
        fake.now += 0.05  # every batch seems to take 50 ms
        return fake.now

    batch = PacedBatch(tasks.expire_lots_batch, Pacer(0.25, clock=clock, sleep=sleep))
    examined = []
    for _ in range(4):
        with unit_of_work(engine) as session:
            session_of_batch.append(session)
            examined.append(batch(session, T0, 2))
    assert examined == [2, 2, 2, 0]
    assert [ledger_balance(engine, account_id) for account_id in accounts] == [0, 0, 0]
    # Three rests (after each batch of 50 ms: three times that, less the clock's own reading), none of them with
    # the batch's transaction open.
    assert fake.rests == pytest.approx([0.1] * 3)
    assert rests_in_transaction == [False, False, False]
