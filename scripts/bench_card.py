"""Card rail benchmark: Stripe webhook ingestion over HTTP on PostgreSQL, from arrival to minted credits.

    .venv/bin/python scripts/bench_card.py [--quick] [--workers N] [--rate EVENTS_PER_S] [--database-url URL]

The API runs under a real uvicorn server (a subprocess on 127.0.0.1, a free port) against a database of its own
(``creditrail_bench_card``, dropped and recreated at the start), processing each event right after acknowledging
it, as it does in production. Open purchases are seeded, then signed ``checkout.session.completed`` events (Stripe's
real shape, signed as Stripe signs) are sent over keep-alive HTTP/1.1 connections by a lean client of its own:

1. paced: at 200 events per second (``--rate``), each request started on its own schedule whatever the others do
   (open loop): the acknowledgement latency (p50, p99), and whether fulfilment keeps up (all minted, how long after);
2. flat out: as fast as the server takes them (8 in flight): fulfilled purchases per second from the first
   event sent to the last purchase minted;
3. the ledger's one-shot mint rate in the same run (4 threads, a unit of work per mint), as the yardstick.

Each event carries payment_status and amount_total, but a Checkout Session names the PaymentIntent, not the card
that paid. With ``--events checkout`` (the default) only ``checkout.session.completed`` is sent, and fulfilment asks
Stripe for the card (the PaymentIntent with its latest charge expanded) before minting, so the receipt can say "Visa
ending 4242". With ``--events stripe`` each purchase gets what Stripe sends an endpoint that takes the card rail's
events: ``charge.succeeded`` (which names the card), ``payment_intent.succeeded`` and ``checkout.session.completed``,
in that order; the rates then count every webhook (a third of them are purchases). Stripe is the local stand-in
(services/stripe_standin), in a process of its own (its CPU is counted apart), holding one paid PaymentIntent per
seeded purchase; the benchmark checks that every purchase recorded its card (``cards_recorded``).

Beside the rates: the CPU time the server's processes and the client spent per event (a machine shared with other
work lowers the rates, much less the CPU per event) and the 1-minute load average during the run.

Prints one JSON line with every figure and which targets are met; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import stripe
from sqlalchemy import insert, select, text
from sqlalchemy.engine import URL, Engine, make_url

from services.card import repository as card_repo
from services.card.models import PurchaseKind, PurchaseStatus
from services.card.stripe_objects import ACCOUNT_ID_KEY, CREDITS_KEY, PACK_KEY, PURCHASE_ID_KEY
from services.core.clock import utcnow
from services.core.db import make_engine, unit_of_work
from services.core.migrate import upgrade
from services.ledger import repository as ledger_repo
from services.ledger.minting import mint
from services.ledger.models import AccountKind
from services.ledger.system_accounts import SystemAccount

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/creditrail_bench_card"
ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_bench_card"  # noqa: S105 - the benchmark signs its own events
STRIPE_KEY = "sk_test_bench_card"
PACK_CREDITS = 1_000

RATE = 200.0
BURST_CONCURRENCY = 8
MINT_THREADS = 4

TARGET_ACK_P99_MS = 50.0
TARGET_FULFILLED_PER_S = 200.0
# A machine busy with other work can take more than a minute to start the server's processes.
SERVER_START_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class Sizes:
    paced_seconds: float
    burst_events: int
    mint_seconds: float


FULL = Sizes(paced_seconds=15.0, burst_events=4_000, mint_seconds=5.0)
QUICK = Sizes(paced_seconds=3.0, burst_events=600, mint_seconds=1.5)


def log(message: str) -> None:
    print(f"[bench_card] {message}", file=sys.stderr, flush=True)


# --- the database and the server ---------------------------------------------------------------------------


def recreate_database(url: URL) -> None:
    admin = make_engine(url.set(database="postgres"))
    try:
        with admin.connect() as conn:
            auto = conn.execution_options(isolation_level="AUTOCOMMIT")
            auto.exec_driver_sql(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
            auto.exec_driver_sql(f'CREATE DATABASE "{url.database}"')
    finally:
        admin.dispose()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stripe_env(stripe_url: str) -> dict[str, str]:
    """The settings that point a process at the stand-in for Stripe."""
    return {
        "CREDITRAIL_STRIPE_SECRET_KEY": STRIPE_KEY,
        "CREDITRAIL_STRIPE_WEBHOOK_SECRETS": json.dumps([SECRET]),
        "CREDITRAIL_STRIPE_API_BASE": stripe_url,
        "CREDITRAIL_STRIPE_MAX_NETWORK_RETRIES": "0",
    }


def start_server(
    url: URL, port: int, workers: int, stripe_url: str, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "CREDITRAIL_ENVIRONMENT": "test",
        "CREDITRAIL_DATABASE_URL": url.render_as_string(hide_password=False),
        "CREDITRAIL_DATABASE_POOL_SIZE": "20",
        # Migrated by the benchmark before the server starts (several workers must not race to migrate).
        "CREDITRAIL_AUTO_MIGRATE": "false",
        # The stand-in, answering the one call fulfilment makes (the card that paid).
        **stripe_env(stripe_url),
        **(extra_env or {}),
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "services.app.app:create_app",
        "--factory",
        "--workers",
        str(workers),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.terminate()
    raise RuntimeError("the server did not start")


def serve_stripe(port: int) -> None:
    """The stand-in for Stripe, in this process until its standard input closes (``--serve-stripe``)."""
    from services.stripe_standin.server import StandinConfig, start_standin

    standin = start_standin(StandinConfig(environment="test", port=port, secret_key=STRIPE_KEY))
    try:
        sys.stdin.read()
    finally:
        standin.stop()


def start_stripe() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, str(Path(__file__).resolve()), "--serve-stripe", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Stripe stand-in exited with {process.returncode}")
        try:
            httpx.get(f"{url}/v1/customers/cus_none", timeout=1)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the Stripe stand-in did not start")


def paid_intents(stripe_url: str, count: int) -> list[str]:
    """``count`` PaymentIntents paid by Stripe's test Visa card, as Checkout leaves them."""
    ids = []
    with httpx.Client(base_url=stripe_url, headers={"Authorization": f"Bearer {STRIPE_KEY}"}) as client:
        for _ in range(count):
            form = {"amount": str(PACK_CREDITS), "currency": "usd", "payment_method": "pm_card_visa", "confirm": "true"}
            answer = client.post("/v1/payment_intents", data=form)
            answer.raise_for_status()
            ids.append(str(answer.json()["id"]))
    return ids


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


# --- seeding and events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seeded:
    purchase_id: int
    account_id: int
    session_id: str
    intent_id: str


def seed(engine: Engine, tag: str, intent_ids: list[str]) -> list[Seeded]:
    """A customer account for each PaymentIntent, each with an open Standard purchase whose Checkout Session it
    paid."""
    count = len(intent_ids)
    now = utcnow()
    with unit_of_work(engine) as session:
        account_ids = list(
            session.execute(
                insert(ledger_repo.accounts).returning(ledger_repo.accounts.c.id),
                [
                    {"kind": AccountKind.CUSTOMER, "name": f"{tag} {i}", "debt_credits": 0, "created_at": now}
                    for i in range(count)
                ],
            ).scalars()
        )
        rows = [
            {
                "account_id": account_id,
                "kind": PurchaseKind.CHECKOUT,
                "pack": "standard",
                "amount_credits": PACK_CREDITS,
                "amount_cents": PACK_CREDITS,
                "status": PurchaseStatus.OPEN,
                "idempotency_key": f"checkout:{tag}-{i}",
                "request_hash": "bench",
                "save_card": False,
                "checkout_session_id": f"cs_test_{tag}_{i:06d}_{uuid.uuid4().hex[:16]}",
                "refunded_cents": 0,
                "stripe_attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            for i, account_id in enumerate(account_ids)
        ]
        purchase_ids = list(
            session.execute(insert(card_repo.purchases).returning(card_repo.purchases.c.id), rows).scalars()
        )
    return [
        Seeded(purchase_id, row["account_id"], str(row["checkout_session_id"]), intent_id)
        for purchase_id, row, intent_id in zip(purchase_ids, rows, intent_ids, strict=True)
    ]


def event_payload(item: Seeded, template: dict[str, Any]) -> str:
    """A ``checkout.session.completed`` event in Stripe's shape, for a paid session of ``item``."""
    metadata = {
        PURCHASE_ID_KEY: str(item.purchase_id),
        ACCOUNT_ID_KEY: str(item.account_id),
        CREDITS_KEY: str(PACK_CREDITS),
        PACK_KEY: "standard",
    }
    session = template | {
        "id": item.session_id,
        "amount_subtotal": PACK_CREDITS,
        "amount_total": PACK_CREDITS,
        "currency": "usd",
        "client_reference_id": str(item.purchase_id),
        "customer": f"cus_bench{item.account_id}",
        "metadata": metadata,
        "mode": "payment",
        "payment_intent": item.intent_id,
        "payment_status": "paid",
        "status": "complete",
        "url": None,
    }
    event = {
        "id": f"evt_bench_{item.purchase_id}_{uuid.uuid4().hex[:12]}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "checkout.session.completed",
        "data": {"object": session},
    }
    return json.dumps(event)


def _envelope(event_type: str, obj: dict[str, Any], tag: str) -> str:
    event = {
        "id": f"evt_bench_{tag}_{uuid.uuid4().hex[:12]}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {"object": obj},
    }
    return json.dumps(event)


def companion_payloads(item: Seeded, templates: dict[str, dict[str, Any]]) -> list[str]:
    """``charge.succeeded`` and ``payment_intent.succeeded`` for ``item``'s payment, in Stripe's shapes: what Stripe
    sends before ``checkout.session.completed`` (the charge names the card: Visa ending 4242)."""
    metadata = {PURCHASE_ID_KEY: str(item.purchase_id), ACCOUNT_ID_KEY: str(item.account_id)}
    charge_id = f"ch_bench_{item.purchase_id}"
    card = templates["charge"]["payment_method_details"]["card"] | {"brand": "visa", "last4": "4242"}
    charge = templates["charge"] | {
        "id": charge_id,
        "amount": PACK_CREDITS,
        "amount_captured": PACK_CREDITS,
        "amount_refunded": 0,
        "currency": "usd",
        "customer": f"cus_bench{item.account_id}",
        "metadata": metadata,
        "paid": True,
        "payment_intent": item.intent_id,
        "payment_method_details": {"card": card, "type": "card"},
        "status": "succeeded",
    }
    intent = templates["payment_intent"] | {
        "id": item.intent_id,
        "amount": PACK_CREDITS,
        "amount_received": PACK_CREDITS,
        "currency": "usd",
        "customer": f"cus_bench{item.account_id}",
        "latest_charge": charge_id,
        "metadata": metadata,
        "status": "succeeded",
    }
    return [
        _envelope("charge.succeeded", charge, str(item.purchase_id)),
        _envelope("payment_intent.succeeded", intent, str(item.purchase_id)),
    ]


def payloads_for(items: list[Seeded], events: str) -> list[str]:
    """Each purchase's webhooks in the order sent: ``checkout.session.completed`` alone, or (``stripe``) after the
    charge's and the PaymentIntent's events."""
    template = session_template()
    templates = {name: _fixture(name) for name in ("charge", "payment_intent")}
    out: list[str] = []
    for item in items:
        if events == "stripe":
            out += companion_payloads(item, templates)
        out.append(event_payload(item, template))
    return out


def _fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ROOT / "tests" / "card" / "fixtures" / f"{name}.json").read_text())
    return loaded


def session_template() -> dict[str, Any]:
    return _fixture("checkout_session")


# --- sending -----------------------------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection to the server. The benchmark's own client is kept lean (a request is a
    few bytes written and a response read back), so that on a machine it shares with the server it takes as little
    CPU as it can: a general-purpose async client spent several milliseconds per request here."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader = reader
        self.writer = writer
        self.head = (f"POST /v1/stripe/webhook HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n").encode()

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def post(self, payload: bytes, signature: str) -> tuple[int, bytes]:
        self.writer.write(
            self.head + f"Stripe-Signature: {signature}\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload
        )
        status_line = await self.reader.readline()
        status = int(status_line.split(b" ", 2)[1])
        length = None
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError("the server answered without a Content-Length")
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def _send(connections: asyncio.Queue[Connection], payload: str) -> float:
    """Send one event on a free connection; returns the time from the call to the acknowledgement (waiting for a
    free connection included)."""
    started = time.perf_counter()
    header = stripe.WebhookSignature.generate_signature_header(payload, SECRET, int(time.time()))
    connection = await connections.get()
    try:
        status, body = await connection.post(payload.encode(), header)
    finally:
        connections.put_nowait(connection)
    elapsed = time.perf_counter() - started
    if status != 200:
        raise RuntimeError(f"webhook answered {status}: {body.decode(errors='replace')}")
    return elapsed


async def _connections(host: str, port: int, count: int) -> asyncio.Queue[Connection]:
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for connection in await asyncio.gather(*(Connection.open(host, port) for _ in range(count))):
        pool.put_nowait(connection)
    return pool


def _close_all(pool: asyncio.Queue[Connection]) -> None:
    while not pool.empty():
        pool.get_nowait().close()


async def send_paced(host: str, port: int, payloads: list[str], rate: float) -> tuple[list[float], float]:
    """Each request starts at its own time (i / rate), whatever the others do (up to 64 in flight). Returns
    latencies and the monotonic time the first one was sent."""
    pool = await _connections(host, port, 64)
    try:
        await _send(pool, payloads[0])  # warm up; not measured
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05
        first = time.monotonic() + 0.05

        async def scheduled(index: int, payload: str) -> float:
            await asyncio.sleep(max(0.0, start + index / rate - loop.time()))
            return await _send(pool, payload)

        latencies = await asyncio.gather(*(scheduled(i, p) for i, p in enumerate(payloads[1:])))
    finally:
        _close_all(pool)
    return list(latencies), first


async def send_flat_out(host: str, port: int, payloads: list[str], concurrency: int) -> tuple[list[float], float]:
    pool = await _connections(host, port, concurrency)
    pending = iter(payloads)
    latencies: list[float] = []
    try:
        first = time.monotonic()

        async def worker() -> None:
            for payload in pending:
                latencies.append(await _send(pool, payload))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        _close_all(pool)
    return latencies, first


def wait_minted(engine: Engine, tag: str, count: int, timeout: float) -> tuple[float, int]:
    """Poll until ``count`` purchases of ``tag`` are completed; returns (monotonic time seen, completed)."""
    stmt = text("SELECT count(*) FROM card_purchases WHERE status = 'completed' AND idempotency_key LIKE :tag")
    deadline = time.monotonic() + timeout
    done = 0
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            done = int(conn.execute(stmt, {"tag": f"checkout:{tag}-%"}).scalar_one())
            conn.commit()
            if done >= count:
                return time.monotonic(), done
            time.sleep(0.01)
    return time.monotonic(), done


def fulfil_lags_ms(engine: Engine, tag: str) -> list[float]:
    """Per purchase: from the event's arrival (stored in the inbox) to the purchase minted."""
    stmt = text(
        "SELECT EXTRACT(EPOCH FROM (p.completed_at - e.received_at)) * 1000 FROM card_purchases p "
        "JOIN stripe_webhook_events e ON e.object_id = p.checkout_session_id "
        "WHERE p.idempotency_key LIKE :tag AND p.status = 'completed'"
    )
    with engine.connect() as conn:
        return [float(value) for value in conn.execute(stmt, {"tag": f"checkout:{tag}-%"}).scalars()]


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# --- the ledger's yardstick ----------------------------------------------------------------------------------


def ledger_mint_rate(engine: Engine, threads: int, seconds: float) -> float:
    """One-shot mints per second (a unit of work each), ``threads`` clients on accounts of their own."""
    accounts = [item.account_id for item in seed(engine, "mint", [f"pi_unused_{i}" for i in range(threads)])]
    counts = [0] * threads
    stop = threading.Event()

    def client(index: int) -> None:
        while not stop.is_set():
            with unit_of_work(engine) as session:
                mint(
                    session,
                    account_id=accounts[index],
                    amount_credits=100,
                    rail="card",
                    external_ref=f"bench-mint-{uuid.uuid4().hex}",
                    funding_account_id=SystemAccount.FUNDING_CARD,
                    cost_basis_cents=100,
                )
            counts[index] += 1

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.monotonic() - started)


# --- the run -------------------------------------------------------------------------------------------------


def cpu_seconds(server: subprocess.Popen[bytes]) -> float:
    """CPU time (user + system) used so far by the server's processes (its workers included)."""
    root = psutil.Process(server.pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def own_cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def cards_recorded(engine: Engine) -> int:
    """Purchases that know the card that paid them."""
    with engine.connect() as conn:
        purchases = card_repo.purchases
        return int(conn.execute(select(text("count(*)")).where(purchases.c.card_brand.is_not(None))).scalar_one())


def inbox_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(card_repo.inbox.c.status, text("count(*)")).group_by(card_repo.inbox.c.status))
        return {str(status): int(count) for status, count in rows}


def run(url: URL, sizes: Sizes, workers: int, rate: float = RATE, events: str = "checkout") -> dict[str, Any]:
    recreate_database(url)
    migrator = make_engine(url)
    upgrade(migrator)
    migrator.dispose()
    port = free_port()
    stripe_process, stripe_url = start_stripe()
    log(f"starting the API on 127.0.0.1:{port}, Stripe's stand-in at {stripe_url}")
    try:
        server = start_server(url, port, workers, stripe_url)
    except BaseException:
        stripe_process.kill()
        raise
    engine = make_engine(url, pool_size=MINT_THREADS + 2)
    per_purchase = 3 if events == "stripe" else 1
    try:
        paced_count = int(rate * sizes.paced_seconds) // per_purchase + 1
        burst_count = sizes.burst_events // per_purchase
        paced = seed(engine, "paced", paid_intents(stripe_url, paced_count))
        burst = seed(engine, "burst", paid_intents(stripe_url, burst_count))
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")

        paced_payloads = payloads_for(paced, events)[per_purchase - 1 :]  # the first is sent to warm up
        log(f"paced: {len(paced_payloads) - 1} events at {rate:.0f}/s")
        server_cpu, client_cpu = cpu_seconds(server), own_cpu_seconds()
        latencies, paced_first = asyncio.run(send_paced("127.0.0.1", port, paced_payloads, rate))
        paced_sent = time.monotonic()
        paced_done, paced_minted = wait_minted(engine, "paced", paced_count, timeout=120)
        paced_server_cpu = cpu_seconds(server) - server_cpu
        paced_client_cpu = own_cpu_seconds() - client_cpu
        paced_lags = fulfil_lags_ms(engine, "paced")

        burst_payloads = payloads_for(burst, events)
        log(f"flat out: {len(burst_payloads)} events, {BURST_CONCURRENCY} in flight")
        server_cpu, stripe_cpu = cpu_seconds(server), cpu_seconds(stripe_process)
        burst_latencies, burst_first = asyncio.run(send_flat_out("127.0.0.1", port, burst_payloads, BURST_CONCURRENCY))
        burst_sent = time.monotonic()
        burst_done, burst_minted = wait_minted(engine, "burst", burst_count, timeout=300)
        burst_server_cpu = cpu_seconds(server) - server_cpu
        burst_stripe_cpu = cpu_seconds(stripe_process) - stripe_cpu
        burst_lags = fulfil_lags_ms(engine, "burst")
        counts = inbox_counts(engine)
        cards = cards_recorded(engine)

        log(f"ledger one-shot mints: {MINT_THREADS} threads for {sizes.mint_seconds:.0f}s")
        mint_rate = ledger_mint_rate(engine, MINT_THREADS, sizes.mint_seconds)
    finally:
        stop_server(server)
        stripe_process.communicate(timeout=30)
        engine.dispose()

    paced_seconds = paced_done - paced_first
    burst_seconds = burst_done - burst_first
    fulfilled_per_s = burst_minted / burst_seconds if burst_seconds > 0 else 0.0
    ack_p99 = percentile(latencies, 0.99) * 1000
    result = {
        "bench": "card_webhooks",
        "server": f"uvicorn, {workers} worker process(es), processing right after the acknowledgement",
        "paced_rate_events_per_s": rate,
        "paced_events": len(latencies),
        "ack_p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "ack_p99_ms": round(ack_p99, 2),
        "ack_max_ms": round(max(latencies) * 1000, 2),
        "paced_minted": paced_minted,
        "paced_fulfilled_per_s": round(paced_minted / paced_seconds, 1) if paced_seconds > 0 else 0.0,
        "paced_all_minted_after_last_ack_ms": round((paced_done - paced_sent) * 1000, 1),
        "paced_fulfil_lag_p50_ms": round(percentile(paced_lags, 0.50), 2),
        "paced_fulfil_lag_p99_ms": round(percentile(paced_lags, 0.99), 2),
        "events": events,
        "flat_out_events": len(burst_payloads),
        "flat_out_purchases": burst_count,
        "flat_out_concurrency": BURST_CONCURRENCY,
        "flat_out_acks_per_s": round(len(burst_payloads) / (burst_sent - burst_first), 1),
        "flat_out_ack_p50_ms": round(percentile(burst_latencies, 0.50) * 1000, 2),
        "flat_out_ack_p99_ms": round(percentile(burst_latencies, 0.99) * 1000, 2),
        "flat_out_minted": burst_minted,
        "fulfilled_per_s": round(fulfilled_per_s, 1),
        "flat_out_fulfil_lag_p50_ms": round(percentile(burst_lags, 0.50), 2),
        "flat_out_fulfil_lag_p99_ms": round(percentile(burst_lags, 0.99), 2),
        "server_cpu_ms_per_event": round(burst_server_cpu / len(burst_payloads) * 1000, 2),
        "server_cpu_ms_per_purchase": round(burst_server_cpu / burst_count * 1000, 2),
        "paced_server_cpu_ms_per_event": round(paced_server_cpu / len(latencies) * 1000, 2),
        "client_cpu_ms_per_event": round(paced_client_cpu / len(latencies) * 1000, 2),
        "stripe_standin_cpu_ms_per_event": round(burst_stripe_cpu / len(burst_payloads) * 1000, 2),
        "inbox": counts,
        "cards_recorded": cards,
        "ledger_mint_per_s": round(mint_rate, 1),
        "fulfilled_to_ledger_mint_ratio": round(fulfilled_per_s / mint_rate, 3) if mint_rate else None,
        "targets": {
            "ack_p99_ms_at_200_per_s_max": TARGET_ACK_P99_MS,
            "fulfilled_per_s_min": TARGET_FULFILLED_PER_S,
            "ack_p99_met": rate >= RATE and ack_p99 <= TARGET_ACK_P99_MS,
            "fulfilled_per_s_met": fulfilled_per_s >= TARGET_FULFILLED_PER_S,
            "all_minted": paced_minted == paced_count and burst_minted == burst_count,
            "all_cards_recorded": cards == paced_count + burst_count,
        },
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run (a smoke test, not a measurement)")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (default: 2, one a core)")
    parser.add_argument("--rate", type=float, default=RATE, help="events per second of the paced phase (default: 200)")
    parser.add_argument(
        "--events",
        choices=("checkout", "stripe"),
        default="checkout",
        help="per purchase, checkout.session.completed alone, or every event Stripe sends with it",
    )
    parser.add_argument("--serve-stripe", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_stripe:
        serve_stripe(args.serve_stripe)
        return
    url = make_url(args.database_url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    print(json.dumps(run(url, QUICK if args.quick else FULL, args.workers, args.rate, args.events)), flush=True)


if __name__ == "__main__":
    main()
