"""Where lot expiry's CPU goes on PostgreSQL: the client's (Python) and the database backend's, per lot and per step.

    .venv/bin/python -m scripts.profile_expiry [--database-url URL] [--lots N] [--batch-size B] [--batches K]

Seeds (as ``scripts.bench_worker`` does) 10,000 accounts and ``N`` due lots, then runs ``K`` expiry batches of
``B`` lots one after the other in one process, each in a transaction of its own as the job runs them, and measures
every step of a batch: picking and locking the lots (``lock_due_lots``), planning (``plan_expiry``), writing the
plan (``write_expiry``) and the commit, each as the client's CPU, the backend's CPU and the wall time, per lot. A
CPU-time profile of the client's part, taken on a fifth as many further batches, follows on stderr. Prints one
JSON line.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import text

from scripts.benchdb import DUE_EXPIRES_SQL, bench_server, fresh_schema, maintain, seed_accounts, seed_lots
from services.core.clock import utcnow
from services.core.db import make_engine, unit_of_work
from services.ledger import plans
from services.ledger.store import store_for

DATABASE = "creditrail_bench_worker"
SCHEMA = "bench_profile_expiry"
ACCOUNTS = 10_000
DUE_LOT_CREDITS = 100

T = TypeVar("T")


def log(message: str) -> None:
    print(f"[profile_expiry] {message}", file=sys.stderr, flush=True)


def backend_cpu_s(pid: int) -> float:
    """User plus system CPU of a server process (same machine), from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Steps:
    """Client CPU, backend CPU and wall time summed per step."""

    def __init__(self, backend: int) -> None:
        self.backend = backend
        self.totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])

    def measure(self, name: str, step: Callable[[], T]) -> T:
        client, server, wall = time.process_time(), backend_cpu_s(self.backend), time.perf_counter()
        try:
            return step()
        finally:
            total = self.totals[name]
            total[0] += time.process_time() - client
            total[1] += backend_cpu_s(self.backend) - server
            total[2] += time.perf_counter() - wall

    def per_lot_us(self, lots: int) -> dict[str, dict[str, float]]:
        return {
            name: {
                "client_cpu_us": round(client / lots * 1e6, 2),
                "backend_cpu_us": round(server / lots * 1e6, 2),
                "wall_us": round(wall / lots * 1e6, 2),
            }
            for name, (client, server, wall) in self.totals.items()
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", help="the database to profile on; by default a private server's")
    parser.add_argument("--lots", type=int, default=200_000, help="due lots seeded")
    parser.add_argument("--batch-size", type=int, default=2_000)
    parser.add_argument("--batches", type=int, default=50, help="batches measured (after two to warm up)")
    options = parser.parse_args(argv)
    with bench_server(options.database_url, DATABASE) as (url, _server):
        engine = fresh_schema(url, SCHEMA)
        now = utcnow()
        log(f"seeding {ACCOUNTS} accounts and {options.lots} due lots")
        with engine.begin() as conn:
            first = seed_accounts(conn, ACCOUNTS, now)
            seed_lots(
                conn,
                tag="due",
                first_account=first,
                accounts=ACCOUNTS,
                lots=options.lots,
                lot_credits=DUE_LOT_CREDITS,
                expires_sql=DUE_EXPIRES_SQL,
                now=now,
            )
        maintain(engine)
        engine.dispose()
        # One connection, so that its backend is the one measured.
        engine = make_engine(url, schema=SCHEMA, pool_size=1)
        with engine.connect() as conn:
            backend = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        steps, warm = Steps(backend), Steps(backend)
        profile = cProfile.Profile(time.process_time)

        def batch(measured: Steps) -> int:
            with unit_of_work(engine) as session:
                store = store_for(session)
                due = measured.measure("lock_due_lots", lambda: store.lock_due_lots(now, options.batch_size))
                if due.lots:
                    planned = measured.measure("plan_expiry", lambda: plans.plan_expiry(due, now))
                    measured.measure("write_expiry", lambda: store.write_expiry(planned))
                measured.measure("commit", session.commit)
            return len(due.lots)

        for _ in range(2):
            batch(warm)
        lots = 0
        client0, server0, wall0 = time.process_time(), backend_cpu_s(backend), time.perf_counter()
        for _ in range(options.batches):
            lots += batch(steps)
        client, server, wall = (
            time.process_time() - client0,
            backend_cpu_s(backend) - server0,
            time.perf_counter() - wall0,
        )
        # The client's profile, on further batches (the profiler's own cost kept out of the figures above).
        profile.enable()
        for _ in range(max(1, options.batches // 5)):
            batch(warm)
        profile.disable()
        with engine.connect() as conn:
            hot = conn.execute(
                text(
                    "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                    "WHERE relname = 'lots' AND schemaname = current_schema()"
                )
            ).one()
        engine.dispose()
    stats = pstats.Stats(profile, stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(25)
    report: dict[str, Any] = {
        "profile": "expiry",
        "lots": lots,
        "batch_size": options.batch_size,
        "client_cpu_us_per_lot": round(client / lots * 1e6, 2),
        "backend_cpu_us_per_lot": round(server / lots * 1e6, 2),
        "cpu_us_per_lot": round((client + server) / lots * 1e6, 2),
        "wall_us_per_lot": round(wall / lots * 1e6, 2),
        "steps": steps.per_lot_us(lots),
        "lots_updates": int(hot.n_tup_upd),
        "lots_hot_updates": int(hot.n_tup_hot_upd),
    }
    print(json.dumps(report, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
