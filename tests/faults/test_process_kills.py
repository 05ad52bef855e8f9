"""The API and two workers killed with SIGKILL at seeded points under load, and started again.

The load: card purchases (started over the API, paid at the Stripe stand-in, announced by signed
``checkout.session.completed`` webhooks, sometimes twice), USDC deposits on anvil, and spends. The API runs as
``creditrail run`` and reaches Stripe over HTTP (tests/faults/stripe_server.py); both workers run every job the two
rails need (the webhook inbox, the Stripe sync, the chain's poll and confirmation, the ledger's expiries), on the
one private database, so they share the jobs through the advisory locks. Every client retries what failed with
the same idempotency key, as Stripe redelivers a webhook that was not acknowledged.

Each kill comes once a seeded number of purchases is done, at a moment the process has a database transaction open
when one comes within a short deadline; the API stays down until a client has found it so. At the end every paid
session minted exactly one lot, every deposit exactly one, every spend applied once, every webhook event processed,
and the ledger's invariants hold.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from dataclasses import dataclass
from functools import partial

import httpx
from sqlalchemy import text

from services.core.money import usdc_units_to_credits
from tests.card.stripe_fake import sign
from tests.faults.stripe_server import StripeServer
from tests.faults.support import (
    TRANSPORT_FAILURE,
    ApiProcess,
    Customer,
    Deposited,
    FaultStack,
    Progress,
    ServiceProcess,
    Spent,
    assert_balances,
    assert_deposited_once,
    assert_spent_once,
    post_until_answered,
    scalar,
    spend,
    wait_for,
)

SEED = 13
CHAIN = 31337
JOBS = [
    "ledger.expire_lots",
    "ledger.expire_holds",
    "card.inbox",
    "card.sync",
    f"usdc.poll.{CHAIN}",
    f"usdc.confirm.{CHAIN}",
]
WEBHOOK_SECRET = "whsec_faults_kill"
PACKS = ("starter", "standard", "pro", "business")
PURCHASES = 32
DEPOSITS = 24
SPENDS_PER_PURCHASE = 3
GRANTED_CREDITS = 100_000
# Each process is killed this many times, in a seeded order.
KILLS_EACH = 2


@dataclass(frozen=True)
class Bought:
    account_id: int
    purchase_id: int
    session_id: str
    amount_credits: int


class Load:
    """Purchases from one client; deposits and spends in step with its attempts (failed ones included), so that
    they go on whichever process is down."""

    def __init__(self, stack: FaultStack, stripe: StripeServer, api: ApiProcess, customers: list[Customer]) -> None:
        self.stack, self.stripe, self.api, self.customers = stack, stripe, api, customers
        self.progress = Progress()
        self.bought: list[Bought] = []
        self.deposited: list[Deposited] = []
        self.spent: list[Spent] = []
        self.replays: list[tuple[Spent, int]] = []
        # Purchases below this number may start: the killer moves it on (the load waits for it before its first
        # purchase, and at most two purchases past where the next kill comes).
        self.limit = 0
        self.threads = [
            self.progress.thread(self.buy, "buyer"),
            self.progress.thread(self.deposit, "depositor"),
            self.progress.thread(self.spend, "spender"),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in self.threads), "the load did not finish"

    def bought_at_least(self, purchases: int) -> bool:
        return bool(self.progress.errors) or self.progress.count("purchases") >= purchases

    def may_start(self, purchase: int) -> bool:
        return purchase < self.limit

    def felt_since(self, moment: float) -> bool:
        """Whether a client has failed since ``moment`` (or a thread ended)."""
        return bool(self.progress.errors) or self.progress.failures_since(moment) > 0

    def attempted(self, purchases: int) -> bool:
        return self.progress.count("purchase_attempts") + self.progress.failures_since(0) >= purchases

    def buy(self) -> None:
        rng = random.Random(SEED)
        with httpx.Client(base_url=self.api.url, timeout=10) as client:
            for n in range(PURCHASES):
                wait_for(partial(self.may_start, n), timeout=120, what=f"the killer to let purchase {n} start")
                customer = self.customers[n % len(self.customers)]
                self.progress.add("purchase_attempts")
                started = post_until_answered(
                    client,
                    "/v1/card/purchases",
                    self.progress,
                    headers=customer.headers | {"Idempotency-Key": f"buy-{n}"},
                    json_body={"pack": rng.choice(PACKS)},
                )
                assert started.status_code in (200, 201), started.text
                purchase = started.json()
                session_id = purchase["checkout_session_id"]
                assert session_id, purchase
                with self.stripe.locked() as fake:
                    paid = fake.pay(session_id)
                    event = fake.event("checkout.session.completed", paid)
                # Stripe delivers until acknowledged, and now and then once more after that.
                for _ in range(2 if rng.random() < 0.25 else 1):
                    self.deliver(client, event)
                self.bought.append(Bought(customer.account_id, purchase["id"], session_id, purchase["amount_credits"]))
                self.progress.add("purchases")

    def deliver(self, client: httpx.Client, event: dict[str, object]) -> None:
        payload = json.dumps(event)
        response = post_until_answered(
            client,
            "/v1/stripe/webhook",
            self.progress,
            headers={"Stripe-Signature": sign(payload, WEBHOOK_SECRET), "Content-Type": "application/json"},
            content=payload.encode(),
        )
        assert response.status_code == 200, response.text

    def deposit(self) -> None:
        rng = random.Random(SEED + 1)
        for n in range(DEPOSITS):
            due = n * PURCHASES // DEPOSITS
            wait_for(partial(self.attempted, due), timeout=120, what=f"purchase attempts before deposit {n}")
            customer = self.customers[n % len(self.customers)]
            amount = rng.randint(1, 20) * 1_000_000
            self.deposited.append(Deposited(customer.account_id, self.stack.deposit(customer, amount), amount))
            self.progress.add("deposits")

    def spend(self) -> None:
        rng = random.Random(SEED + 2)
        with httpx.Client(base_url=self.api.url, timeout=10) as client:
            for n in range(PURCHASES * SPENDS_PER_PURCHASE):
                wait_for(partial(self.attempted, n // SPENDS_PER_PURCHASE), timeout=120, what=f"before spend {n}")
                customer = self.customers[n % len(self.customers)]
                spent, replayed = spend(
                    client, self.progress, customer, f"spend-{n}", rng.randint(1, 50), replay=rng.random() < 0.2
                )
                self.spent.append(spent)
                if replayed is not None:
                    self.replays.append((spent, replayed))


class Killer:
    """Kills the processes in a seeded order, each once a seeded number of purchases is done (the load goes at most
    two purchases past that point before the kill), and starts them again while the load goes on (a process is
    killed again only once it is back)."""

    def __init__(self, stack: FaultStack, load: Load, processes: list[ServiceProcess], rng: random.Random) -> None:
        self.stack, self.load = stack, load
        self.plan = [process for process in processes for _ in range(KILLS_EACH)]
        rng.shuffle(self.plan)
        spacing = (PURCHASES - 8) // len(self.plan)
        self.after_purchases = [4 + spacing * n + rng.randrange(spacing) for n in range(len(self.plan))]

    def run(self) -> None:
        self.load.limit = self.after_purchases[0] + 2
        for number, (process, purchases) in enumerate(zip(self.plan, self.after_purchases, strict=True)):
            wait_for(partial(self.load.bought_at_least, purchases), timeout=120, what=f"{purchases} purchases")
            assert not self.load.progress.errors, self.load.progress.errors
            process.wait_ready()  # back from its last kill
            # Mid-transaction when the process has one open within a moment; wherever it is otherwise.
            with contextlib.suppress(AssertionError):
                wait_for(partial(self.stack.in_transaction, process), timeout=3, interval=0.002, what="a transaction")
            killed_at = time.monotonic()
            process.kill()
            later = self.after_purchases[number + 1 :]
            self.load.limit = later[0] + 2 if later else PURCHASES
            if isinstance(process, ApiProcess):
                # Down until a client has felt it.
                wait_for(partial(self.load.felt_since, killed_at), timeout=60, what="a client to find the API down")
            process.start()  # ready when it is ready: the load goes on meanwhile
        for process in self.plan:
            process.wait_ready()


def settled(stack: FaultStack) -> bool:
    """Every purchase minted, every deposit credited, every webhook event done with."""
    return (
        scalar(stack.engine, "SELECT count(*) FROM card_purchases WHERE status <> 'completed'") == 0
        and scalar(stack.engine, "SELECT count(*) FROM card_purchases") == PURCHASES
        and scalar(stack.engine, "SELECT count(*) FROM usdc_deposits WHERE status = 'credited'") == DEPOSITS
        and scalar(stack.engine, "SELECT count(*) FROM stripe_webhook_events WHERE status <> 'processed'") == 0
    )


def test_api_and_two_workers_killed_and_restarted_under_load_mint_everything_exactly_once(
    stack: FaultStack,
) -> None:
    customers = stack.customers(4, granted_credits=GRANTED_CREDITS)
    with StripeServer() as stripe:
        stack.extra_env |= {
            "CREDITRAIL_STRIPE_SECRET_KEY": "sk_test_faults_kill",
            "CREDITRAIL_STRIPE_WEBHOOK_SECRETS": json.dumps([WEBHOOK_SECRET]),
            "CREDITRAIL_STRIPE_API_BASE": stripe.url,
            "CREDITRAIL_STRIPE_MAX_NETWORK_RETRIES": "1",
            "CREDITRAIL_CARD_INBOX_GRACE_SECONDS": "1",
            "CREDITRAIL_CARD_INBOX_INTERVAL_SECONDS": "0.5",
            "CREDITRAIL_CARD_INBOX_BACKOFF_INITIAL_SECONDS": "0.2",
            "CREDITRAIL_CARD_INBOX_BACKOFF_MAX_SECONDS": "1",
            "CREDITRAIL_CARD_SYNC_INTERVAL_SECONDS": "2",
        }
        api = stack.api()
        workers = [stack.worker("worker-a", JOBS), stack.worker("worker-b", JOBS)]
        processes: list[ServiceProcess] = [api, *workers]
        for process in processes:
            process.start()
        for process in processes:
            process.wait_ready()
        load = Load(stack, stripe, api, customers)
        killer = Killer(stack, load, processes, random.Random(SEED))
        load.start()
        killer.run()
        load.join(timeout=120)
        assert not load.progress.errors, load.progress.errors
        stack.confirm_all()
        wait_for(partial(settled, stack), timeout=60, what="every purchase, deposit and event settled")

        assert [p.kills for p in processes] == [KILLS_EACH] * 3
        assert all(p.alive() for p in processes)

        # The clients failed only while the API was down: no answer, never a 5xx.
        failures = load.progress.failure_texts()
        assert failures
        assert [text for text in failures if TRANSPORT_FAILURE not in text] == []

        # Every paid session minted one lot, for its pack, and its purchase points at it.
        assert len(load.bought) == PURCHASES
        assert stack.lots_by_reference("card") == {b.session_id: 1 for b in load.bought}
        with stack.engine.connect() as conn:
            minted = {
                str(ref): (int(credits), int(purchase_id))
                for ref, credits, purchase_id in conn.execute(
                    text(
                        "SELECT l.external_ref, l.credits, p.id FROM lots l "
                        "JOIN card_purchases p ON p.lot_id = l.id WHERE l.rail = 'card'"
                    )
                ).all()
            }
        assert minted == {b.session_id: (b.amount_credits, b.purchase_id) for b in load.bought}

        # Every deposit credited once, every spend applied once, and the balances add up.
        assert len(load.deposited) == DEPOSITS
        assert_deposited_once(stack, load.deposited)
        assert all(first.transaction_id == again for first, again in load.replays)
        assert_spent_once(stack, load.spent)
        expected = {c.account_id: GRANTED_CREDITS for c in customers}
        for b in load.bought:
            expected[b.account_id] += b.amount_credits
        for d in load.deposited:
            expected[d.account_id] += usdc_units_to_credits(d.amount_usdc_units)[0]
        for s in load.spent:
            expected[s.account_id] -= s.amount_credits
        assert_balances(stack, expected)
        assert stack.violations() == []
        # Nothing failed but the clients' requests to a dead API: no job run ended in error, no API error logged.
        failed_runs = [
            line
            for worker in workers
            for start in range(1, worker.starts + 1)
            for line in worker.log_lines(start)
            if line.get("event") == "job_run" and line.get("outcome") == "error"
        ]
        assert failed_runs == []
        assert not any("Traceback" in api.log_text(start) for start in range(1, api.starts + 1))
        for process in processes:  # before Stripe's stand-in goes away
            process.stop()
