"""Outbox benchmark: receipts and webhook deliveries sent by the worker while card webhooks arrive at 200/s.

    .venv/bin/python -m scripts.bench_outbox [--quick] [--rate EVENTS_PER_S] [--seconds S] [--database-url URL]
        [--events checkout|stripe] [--fulfil-in-worker] [--worker-env NAME=VALUE ...]

On the local PostgreSQL (``creditrail_bench_outbox``, dropped and recreated at the start):

- the API under uvicorn (2 worker processes, as ``scripts/bench_card.py`` runs it), processing each Stripe webhook
  right after acknowledging it: the mint writes the receipt (every account has an email) and a ``purchase.completed``
  event with a pending delivery for the one webhook endpoint registered;
- the worker (``python -m services.worker``, its scheduler, intervals and batch sizes as configured; only the
  ``outbox.deliver`` and ``events.deliver`` jobs), sending to
- a local SMTP server (aiosmtpd) and a local HTTP receiver, in a process of their own, each noting when every
  message and delivery arrived;
- signed ``checkout.session.completed`` webhooks at 200 per second (open loop), or with ``--events stripe`` every
  event Stripe sends per purchase (``charge.succeeded``, which names the card, ``payment_intent.succeeded``, then
  ``checkout.session.completed``: 200 webhooks per second are then a third as many purchases), in three phases:

  1. baseline: for half the measured time, with no worker: the acknowledgement latency (p50, p99) of this machine
     at this moment, the yardstick for the same figure with the worker running;
  2. drain: the worker started on the backlog the baseline left (a receipt and a webhook per purchase): the
     messages it sends per second flat out, and how long it takes;
  3. measured: for 60 s (``--quick``: 20 s) with the worker running.

With ``--fulfil-in-worker`` the API only stores and acknowledges webhooks (``CREDITRAIL_CARD_PROCESS_WEBHOOKS_INLINE``
off) and the worker's ``card.inbox`` job fulfils them (every quarter second, asking the same stand-in for Stripe); in
the baseline phase, then, nothing is fulfilled until the worker starts.

Printed as one JSON line beside the targets, for the measured phase: card webhook acknowledgement p50/p99 (target:
p99 within 50 ms at 200 events/s), receipts and webhook deliveries per second as they arrived, the delay from the
mint (the lot's ``credited_at``) to the receipt's arrival at the SMTP server and to the event's arrival at the HTTP
receiver (p50, p99; target: every receipt within 10 s at p99), the CPU the worker spent per message, and the load
average. Progress goes to stderr. ``--worker-env CREDITRAIL_OUTBOX_INTERVAL_SECONDS=1`` (say) measures another
configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import psutil
from aiosmtpd.controller import Controller
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine, make_url

from scripts.bench_card import (
    ROOT,
    cards_recorded,
    free_port,
    log,
    paid_intents,
    payloads_for,
    percentile,
    recreate_database,
    seed,
    send_paced,
    start_server,
    start_stripe,
    stop_server,
    stripe_env,
)
from services.core.clock import utcnow
from services.core.db import make_engine, unit_of_work
from services.core.migrate import upgrade
from services.core.settings import Settings
from services.events.service import create_endpoint

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/creditrail_bench_outbox"
RATE = 200.0
FULL_SECONDS = 60.0
QUICK_SECONDS = 20.0
DRAIN_TIMEOUT_SECONDS = 300.0
# The baseline phase (no worker) sends this share of the measured phase's webhooks.
BASELINE_SHARE = 0.5
BASELINE = "baseline"
MEASURED = "paced"

TARGET_RECEIPT_P99_S = 10.0
TARGET_ACK_P99_MS = 50.0


# --- the sinks: an SMTP server and an HTTP receiver, in a process of their own --------------------------------


class _Arrivals:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mail: list[tuple[str, float]] = []
        self.hooks: list[tuple[str, float]] = []


class _SmtpHandler:
    def __init__(self, arrivals: _Arrivals) -> None:
        self.arrivals = arrivals

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's naming
        arrived = time.time()
        content: bytes = envelope.content if isinstance(envelope.content, bytes) else envelope.content.encode()
        message_id = ""
        for line in content.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                message_id = line.split(b":", 1)[1].strip().decode()
                break
            if not line:
                break
        with self.arrivals.lock:
            self.arrivals.mail.append((message_id, arrived))
        return "250 OK"


def serve_sinks() -> None:
    """Run the SMTP server and the HTTP receiver until stdin closes; print their ports first (one JSON line).
    ``GET /arrivals`` on the receiver answers every arrival noted so far."""
    arrivals = _Arrivals()

    class Receiver(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body leave in two writes: without this, Nagle's algorithm holds the body back until the client
        # acknowledges the headers (a delayed ACK: 40 ms a request).
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            arrived = time.time()
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with arrivals.lock:
                arrivals.hooks.append((str(self.headers.get("Creditrail-Event-Id")), arrived))
            self._answer(b"ok")

        def do_GET(self) -> None:
            with arrivals.lock:
                body = json.dumps({"mail": arrivals.mail, "hooks": arrivals.hooks}).encode()
            self._answer(body)

        def _answer(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    http = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    http.daemon_threads = True
    smtp_port = free_port()
    smtp = Controller(_SmtpHandler(arrivals), hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    threading.Thread(target=http.serve_forever, daemon=True).start()
    print(json.dumps({"smtp_port": smtp_port, "http_port": http.server_address[1]}), flush=True)
    sys.stdin.read()
    http.shutdown()
    smtp.stop()


def start_sinks() -> tuple[subprocess.Popen[str], int, int]:
    sinks = subprocess.Popen(
        [sys.executable, "-m", "scripts.bench_outbox", "--sinks"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sinks.stdout is not None
    ports = json.loads(sinks.stdout.readline())
    return sinks, int(ports["smtp_port"]), int(ports["http_port"])


def stop_sinks(sinks: subprocess.Popen[str]) -> None:
    assert sinks.stdin is not None
    sinks.stdin.close()
    try:
        sinks.wait(timeout=15)
    except subprocess.TimeoutExpired:
        sinks.kill()
        sinks.wait()


# --- the worker ----------------------------------------------------------------------------------------------


def start_worker(
    url: URL, smtp_port: int, extra_env: dict[str, str], stripe_url: str | None = None
) -> subprocess.Popen[bytes]:
    """The worker, sending receipts and webhooks; with ``stripe_url``, fulfilling the inbox too."""
    jobs = ["outbox.deliver", "events.deliver"] + (["card.inbox"] if stripe_url else [])
    fulfils = stripe_env(stripe_url) | {"CREDITRAIL_CARD_INBOX_INTERVAL_SECONDS": "0.25"} if stripe_url else {}
    env = os.environ | {
        "CREDITRAIL_ENVIRONMENT": "test",
        "CREDITRAIL_DATABASE_URL": url.render_as_string(hide_password=False),
        "CREDITRAIL_AUTO_MIGRATE": "false",
        "CREDITRAIL_WORKER_JOBS": json.dumps(jobs),
        "CREDITRAIL_WORKER_LOG_LEVEL": "WARNING",
        "CREDITRAIL_SMTP_HOST": "127.0.0.1",
        "CREDITRAIL_SMTP_PORT": str(smtp_port),
        "CREDITRAIL_SMTP_SECURITY": "none",
        "CREDITRAIL_MAIL_FROM": "creditrail <receipts@bench.test>",
    }
    return subprocess.Popen([sys.executable, "-m", "services.worker"], cwd=ROOT, env=env | fulfils | extra_env)


def process_cpu_seconds(process: subprocess.Popen[Any]) -> float:
    root = psutil.Process(process.pid)
    total = 0.0
    for each in [root, *root.children(recursive=True)]:
        try:
            times = each.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


# --- seeding and measuring -----------------------------------------------------------------------------------


def prepare(
    engine: Engine, stripe_url: str, http_port: int, baseline_count: int, count: int
) -> tuple[list[Any], list[Any]]:
    """Accounts with an open purchase each (for the baseline and the measured phase) and an email; one webhook
    endpoint for every event type."""
    baseline = seed(engine, BASELINE, paid_intents(stripe_url, baseline_count))
    items = seed(engine, MEASURED, paid_intents(stripe_url, count))
    with unit_of_work(engine) as session:
        session.execute(text("UPDATE accounts SET email = 'customer' || id || '@bench.test' WHERE kind = 'customer'"))
        create_endpoint(
            session,
            Settings(environment="test"),
            url=f"http://127.0.0.1:{http_port}/hooks",
            event_types=["*"],
            description="bench",
            now=utcnow(),
        )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    return baseline, items


def wait_drained(engine: Engine, expected: int, timeout: float) -> tuple[float, int, int, int]:
    """Poll until ``expected`` purchases are minted, their receipts sent and their events delivered (or the
    timeout); returns when (monotonic) and those three counts."""
    stmt = text(
        "SELECT (SELECT count(*) FROM card_purchases WHERE status = 'completed'), "
        "(SELECT count(*) FROM outbox_messages WHERE status = 'sent'), "
        "(SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered')"
    )
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while True:
            minted, sent, delivered = (int(value) for value in conn.execute(stmt).one())
            conn.commit()
            now = time.monotonic()
            if (minted >= expected and sent >= expected and delivered >= expected) or now > deadline:
                return now, minted, sent, delivered
            time.sleep(0.05)


def mint_times(engine: Engine) -> tuple[dict[str, float], dict[str, float]]:
    """When each receipt's and each event's lot was minted (unix seconds), by Message-ID and by event id, for the
    measured phase's purchases."""
    with engine.connect() as conn:
        mail = conn.execute(
            text(
                "SELECT m.message_id, EXTRACT(EPOCH FROM l.credited_at) FROM outbox_messages m "
                "JOIN lots l ON l.id = m.lot_id JOIN card_purchases p ON p.lot_id = l.id "
                "WHERE p.idempotency_key LIKE :tag"
            ),
            {"tag": f"checkout:{MEASURED}-%"},
        ).all()
        hooks = conn.execute(
            text(
                "SELECT e.public_id, EXTRACT(EPOCH FROM l.credited_at) FROM events e "
                "JOIN lots l ON l.id = CAST(e.data ->> 'lot_id' AS BIGINT) JOIN card_purchases p ON p.lot_id = l.id "
                "WHERE p.idempotency_key LIKE :tag"
            ),
            {"tag": f"checkout:{MEASURED}-%"},
        ).all()
    return {str(key): float(value) for key, value in mail}, {str(key): float(value) for key, value in hooks}


def delays(arrivals: list[list[Any]], minted: dict[str, float]) -> list[float]:
    """Seconds from the mint to the first arrival of each message."""
    first: dict[str, float] = {}
    for key, arrived in arrivals:
        first.setdefault(str(key), float(arrived))
    return [first[key] - minted[key] for key in first if key in minted]


def rate_of(arrivals: list[list[Any]], keys: dict[str, float]) -> float:
    """Arrivals per second of the measured phase's messages, from its first to its last."""
    times = sorted(float(arrived) for key, arrived in arrivals if key in keys)
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def run(
    url: URL,
    seconds: float,
    rate: float,
    worker_env: dict[str, str],
    events: str = "checkout",
    fulfil_in_worker: bool = False,
) -> dict[str, Any]:
    recreate_database(url)
    engine = make_engine(url, pool_size=4)
    upgrade(engine)
    sinks, smtp_port, http_port = start_sinks()
    server = worker = None
    stripe_process, stripe_url = start_stripe()
    try:
        per_purchase = 3 if events == "stripe" else 1
        baseline_count = int(rate * seconds * BASELINE_SHARE) // per_purchase + 1
        count = int(rate * seconds) // per_purchase + 1
        baseline, items = prepare(engine, stripe_url, http_port, baseline_count, count)
        port = free_port()
        log(f"starting the API on 127.0.0.1:{port}, the SMTP server on {smtp_port}, the receiver on {http_port}")
        inline = {"CREDITRAIL_CARD_PROCESS_WEBHOOKS_INLINE": "false"} if fulfil_in_worker else {}
        server = start_server(url, port, 2, stripe_url, inline)
        payloads = payloads_for(baseline, events)[per_purchase - 1 :]  # the first is sent to warm up
        log(f"baseline: {len(payloads) - 1} card webhooks at {rate:.0f}/s, no worker")
        baseline_latencies, _ = asyncio.run(send_paced("127.0.0.1", port, payloads, rate))
        log(f"the worker drains the backlog ({baseline_count} receipts and as many webhooks)")
        drain_started = time.monotonic()
        worker = start_worker(url, smtp_port, worker_env, stripe_url if fulfil_in_worker else None)
        drained_at, _, drained_sent, drained_delivered = wait_drained(engine, baseline_count, DRAIN_TIMEOUT_SECONDS)
        drain_seconds = drained_at - drain_started

        payloads = payloads_for(items, events)[per_purchase - 1 :]
        log(f"measured: {len(payloads) - 1} card webhooks at {rate:.0f}/s, the worker running")
        worker_cpu = process_cpu_seconds(worker)
        latencies, first_sent = asyncio.run(send_paced("127.0.0.1", port, payloads, rate))
        sent_seconds = time.monotonic() - first_sent
        log("waiting for every receipt and delivery")
        _, minted, receipts_sent, delivered = wait_drained(engine, baseline_count + count, DRAIN_TIMEOUT_SECONDS)
        worker_cpu = process_cpu_seconds(worker) - worker_cpu
        arrivals = httpx.get(f"http://127.0.0.1:{http_port}/arrivals", timeout=30).json()
        mail_minted, hook_minted = mint_times(engine)
        cards = cards_recorded(engine)
    finally:
        if worker is not None:
            stop_server(worker)
        if server is not None:
            stop_server(server)
        stop_sinks(sinks)
        stripe_process.communicate(timeout=30)
        engine.dispose()

    receipt_delays = delays(arrivals["mail"], mail_minted)
    hook_delays = delays(arrivals["hooks"], hook_minted)
    ack_p99_ms = percentile(latencies, 0.99) * 1000
    receipt_p99 = percentile(receipt_delays, 0.99)
    messages = len(receipt_delays) + len(hook_delays)
    return {
        "bench": "outbox",
        "worker_env": worker_env,
        "events": events,
        "fulfilled_by": "worker" if fulfil_in_worker else "api",
        "paced_rate_events_per_s": rate,
        "baseline_ack_p50_ms": round(percentile(baseline_latencies, 0.50) * 1000, 2),
        "baseline_ack_p99_ms": round(percentile(baseline_latencies, 0.99) * 1000, 2),
        "drain_receipts": drained_sent,
        "drain_webhooks": drained_delivered,
        "drain_seconds": round(drain_seconds, 2),
        "drain_messages_per_s": round((drained_sent + drained_delivered) / drain_seconds, 1),
        "paced_seconds": round(sent_seconds, 1),
        "card_webhooks": len(latencies),
        "ack_p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "ack_p99_ms": round(ack_p99_ms, 2),
        "minted": minted,
        "receipts_sent": receipts_sent,
        "webhooks_delivered": delivered,
        "receipts_per_s": round(rate_of(arrivals["mail"], mail_minted), 1),
        "webhook_deliveries_per_s": round(rate_of(arrivals["hooks"], hook_minted), 1),
        "mint_to_receipt_p50_s": round(percentile(receipt_delays, 0.50), 3),
        "mint_to_receipt_p99_s": round(receipt_p99, 3),
        "mint_to_receipt_max_s": round(max(receipt_delays, default=float("nan")), 3),
        "mint_to_webhook_p50_s": round(percentile(hook_delays, 0.50), 3),
        "mint_to_webhook_p99_s": round(percentile(hook_delays, 0.99), 3),
        "mint_to_webhook_max_s": round(max(hook_delays, default=float("nan")), 3),
        "worker_cpu_ms_per_message": round(worker_cpu / messages * 1000, 2) if messages else None,
        "targets": {
            "mint_to_receipt_p99_s_max": TARGET_RECEIPT_P99_S,
            "ack_p99_ms_at_200_per_s_max": TARGET_ACK_P99_MS,
            "receipt_p99_met": receipt_p99 <= TARGET_RECEIPT_P99_S,
            "ack_p99_met": rate >= RATE and ack_p99_ms <= TARGET_ACK_P99_MS,
            "all_sent": minted == baseline_count + count
            and receipts_sent == minted
            and delivered == minted
            and len(receipt_delays) == count
            and len(hook_delays) == count,
            "all_cards_recorded": cards == baseline_count + count,
        },
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SECONDS:.0f} s of webhooks instead of 60 s")
    parser.add_argument("--seconds", type=float, default=None, help="how long webhooks are sent")
    parser.add_argument("--rate", type=float, default=RATE, help="card webhooks per second (default: 200)")
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--worker-env", action="append", default=[], help="NAME=VALUE for the worker, repeatable")
    parser.add_argument(
        "--events",
        choices=("checkout", "stripe"),
        default="checkout",
        help="per purchase, checkout.session.completed alone, or every event Stripe sends with it",
    )
    parser.add_argument(
        "--fulfil-in-worker", action="store_true", help="the API only acknowledges; the worker's inbox job fulfils"
    )
    parser.add_argument("--sinks", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sinks:
        serve_sinks()
        return
    url = make_url(args.database_url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    seconds = args.seconds or (QUICK_SECONDS if args.quick else FULL_SECONDS)
    worker_env = dict(item.split("=", 1) for item in args.worker_env)
    print(json.dumps(run(url, seconds, args.rate, worker_env, args.events, args.fulfil_in_worker)), flush=True)


if __name__ == "__main__":
    main()
