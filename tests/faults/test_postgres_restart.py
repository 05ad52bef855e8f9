"""PostgreSQL stopped and restarted under load: the API (``creditrail run``) takes spends over HTTP and the worker
(``creditrail worker``) credits USDC deposits sent on anvil, each a process of its own on a private server.

The first outage lasts until both processes have noticed it (a spend failed, the worker logged a failed run) and a
deposit was sent during it; the second is a crash (``stop -m immediate``: no checkpoint, the server recovers from its
write-ahead log when it starts again) in the middle of the load. Neither process is restarted. Afterwards
every deposit is credited once, every spend applied once (a key retried or replayed never doubles), the ledger's
invariants hold, both processes serve again by themselves, and what the clients were told meanwhile was a 503
``database_unavailable``, never a 500.
"""

from __future__ import annotations

import random
import time
from functools import partial

import httpx

from services.core.clock import utcnow
from services.core.money import usdc_units_to_credits
from tests.faults.support import (
    ApiProcess,
    Customer,
    Deposited,
    FaultStack,
    Progress,
    Spent,
    assert_balances,
    assert_deposited_once,
    assert_spent_once,
    scalar,
    spend,
    wait_for,
)

SEED = 20261207
CHAIN = 31337
JOBS = ["ledger.expire_lots", "ledger.expire_holds", f"usdc.poll.{CHAIN}", f"usdc.confirm.{CHAIN}"]
SPEND_CLIENTS = 2
SPENDS_PER_CLIENT = 120
SPENDS = SPEND_CLIENTS * SPENDS_PER_CLIENT
DEPOSITS = 24
GRANTED_CREDITS = 1_000_000


class Load:
    """Spends from a few clients and deposits sent on the chain in step with them (one deposit per so many spend
    attempts, failed ones included, so deposits keep arriving while the database is down)."""

    def __init__(self, stack: FaultStack, api: ApiProcess, customers: list[Customer]) -> None:
        self.stack, self.api, self.customers = stack, api, customers
        self.progress = Progress()
        self.spent: list[Spent] = []
        self.replays: list[tuple[Spent, int]] = []
        self.deposited: list[Deposited] = []
        self.threads = [self.progress.thread(partial(self.spend, n), f"spender-{n}") for n in range(SPEND_CLIENTS)] + [
            self.progress.thread(self.deposit, "depositor")
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in self.threads), "the load did not finish"

    def spend(self, client_number: int) -> None:
        rng = random.Random(SEED + client_number)
        mine = self.customers[client_number::SPEND_CLIENTS]
        with httpx.Client(base_url=self.api.url, timeout=10) as client:
            for n in range(SPENDS_PER_CLIENT):
                customer = mine[n % len(mine)]
                amount = rng.randint(1, 50)
                # Some spends are sent again after their answer, as a client unsure of it would: a replay.
                spent, replayed = spend(
                    client, self.progress, customer, f"spend-{client_number}-{n}", amount, replay=rng.random() < 0.2
                )
                self.spent.append(spent)
                if replayed is not None:
                    self.replays.append((spent, replayed))

    def attempted(self, spend_attempts: int) -> bool:
        """Whether the spenders have tried (or tried again) ``spend_attempts`` times."""
        return self.progress.count("spend_attempts") + self.progress.failures_since(0) >= spend_attempts

    def deposit(self) -> None:
        rng = random.Random(SEED - 1)
        pace = SPENDS // DEPOSITS
        for n in range(DEPOSITS):
            wait_for(partial(self.attempted, n * pace), timeout=120, what=f"spend attempts before deposit {n}")
            customer = self.customers[n % len(self.customers)]
            amount = rng.randint(1, 20) * 1_000_000
            reference = self.stack.deposit(customer, amount)
            self.deposited.append(Deposited(customer.account_id, reference, amount))
            self.progress.add("deposits")


def expected_credits(customers: list[Customer], spent: list[Spent], deposited: list[Deposited]) -> dict[int, int]:
    expected = {c.account_id: GRANTED_CREDITS for c in customers}
    for d in deposited:
        expected[d.account_id] += usdc_units_to_credits(d.amount_usdc_units)[0]
    for s in spent:
        expected[s.account_id] -= s.amount_credits
    return expected


def credited(stack: FaultStack) -> int:
    return scalar(stack.engine, "SELECT count(*) FROM usdc_deposits WHERE status = 'credited'")


def failed_runs_since(worker_lines: list[dict[str, object]], moment: str) -> int:
    return sum(
        1
        for line in worker_lines
        if line.get("event") == "job_run" and line.get("outcome") == "error" and str(line.get("finished_at")) > moment
    )


def test_postgresql_restarted_under_spends_and_deposits_loses_and_doubles_nothing(stack: FaultStack) -> None:
    customers = stack.customers(4, granted_credits=GRANTED_CREDITS)
    api = stack.api()
    worker = stack.worker("worker", JOBS)
    api.start()
    worker.start()
    api.wait_ready()
    worker.wait_ready()
    pids = (api.pid, worker.pid)
    load = Load(stack, api, customers)
    load.start()
    progress = load.progress

    # The first outage: down until both processes have felt it and a deposit arrived meanwhile.
    wait_for(
        lambda: progress.errors or (progress.count("spends") >= SPENDS // 4 and credited(stack) >= 3),
        timeout=90,
        what="a quarter of the spends and some deposits credited",
    )
    assert not progress.errors, progress.errors
    stack.server.stop()
    stopped_at, stopped_iso = time.monotonic(), utcnow().isoformat()
    deposits_before = progress.count("deposits")
    wait_for(
        lambda: (
            progress.errors
            or (
                progress.failures_since(stopped_at) > 0
                and failed_runs_since(worker.log_lines(), stopped_iso) > 0
                and progress.count("deposits") > deposits_before
            )
        ),
        timeout=60,
        what="a failed spend, a failed worker run and a deposit while the database is down",
    )
    assert not progress.errors, progress.errors
    stack.server.start()

    # The second: a crash in the middle of the load, and the server's recovery.
    wait_for(
        lambda: progress.errors or (progress.count("spends") >= SPENDS // 2 and credited(stack) >= DEPOSITS // 3),
        timeout=90,
        what="half the spends and a third of the deposits credited",
    )
    assert not progress.errors, progress.errors
    stack.server.restart(mode="immediate")
    restarted_at = utcnow()

    load.join(timeout=120)
    assert not progress.errors, progress.errors
    stack.confirm_all()
    wait_for(lambda: credited(stack) == DEPOSITS, timeout=60, what="every deposit credited")

    # Both processes came back by themselves: the same processes, the API answering, the worker's jobs healthy.
    assert (api.pid, worker.pid) == pids
    assert api.alive()
    assert worker.alive()
    assert (api.starts, worker.starts) == (1, 1)
    for job in (f"usdc.poll.{CHAIN}", f"usdc.confirm.{CHAIN}"):
        wait_for(partial(stack.succeeded_since, api, job, restarted_at), timeout=30, what=f"{job} healthy")
    # The failed runs of the outage were recorded once the database was back.
    assert sum(stack.job_health(api, job)["total_failures"] for job in JOBS) > 0

    # While the database was away, the API said so: 503 database_unavailable (a client tries again), never a 500.
    failures = progress.failure_texts()
    assert failures
    assert {text.split(": ", 1)[1] for text in failures} == {"503 database_unavailable"}
    assert "Traceback" not in api.log_text()  # an outage is logged in a line per request, not as a bug

    # Every spend applied once, under its key, as its client was told; every deposit credited once.
    assert len(load.spent) == SPENDS
    assert all(first.transaction_id == again for first, again in load.replays)
    assert_spent_once(stack, load.spent)
    assert len(load.deposited) == DEPOSITS
    assert_deposited_once(stack, load.deposited)
    assert_balances(stack, expected_credits(customers, load.spent, load.deposited))
    assert stack.violations() == []
