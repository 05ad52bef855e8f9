"""Worker benchmark on PostgreSQL: the lot-expiry job expiring 1,000,000 lots, and one-shot spends while it runs.

    .venv/bin/python -m scripts.bench_worker [--quick] [--database-url URL] [--clients 1,4] [--seconds S]
                                             [--due-lots N]

For each spend client count (1 and 4 by default), on a schema seeded afresh:

1. Seeds, with bulk ``INSERT ... SELECT`` on the server, 10,000 customer accounts each holding one spendable lot,
   and 1,000,000 lots whose time came over the last 30 days, interleaved over those accounts. Every lot is minted
   as the ledger mints: a journal transaction funded by ``funding:card`` (system account 1) whose two entries sum
   to zero, the lot, and its mint movement (so a lot's remaining credits equal the sum of its movements).
2. Baseline: one-shot spends (``services.ledger.spending.spend``, 1 credit on a random account) from N client
   processes for S seconds, with no expiry running; measured again after the expiry (the machine's other load
   may have changed meanwhile), and the two averaged.
3. The worker itself (``python -m services.worker`` with only the lot-expiry job) as a process of its own, while
   the same clients spend. Its run's log line gives the lots expired and the run's duration; its peak resident
   memory is the process's high-water mark; the CPU time it and its database backends used gives the expiry's
   cost per lot and its share of the machine. The spend rate is counted inside the run's start and end.
4. Checks that nothing due is left and every expired credit reached breakage once.

Prints one JSON line with a run per client count. Targets: spends keep at least 0.9 of their rate while the job
runs; the job, which paces itself to leave them that (``services.ledger.tasks``: busy at most its busy share of the
time, ``CREDITRAIL_WORKER_LOT_EXPIRY_BUSY_SHARE``, at a minimum rate), still expires 1,000,000 lots within 10
minutes (at least 1,667 lots/s; ``--due-lots`` measures fewer, the rate then saying how long a million take); and
at most 30 microseconds of CPU per lot. One client leaves the machine room for the job, so its ratio measures what
the job does to spends (locks, the WAL, the disk); clients that keep every core busy lose at least the job's share of
the machine's CPU (``cpu_share_of_machine``), whatever the job does otherwise. It runs on a private PostgreSQL server
with production's settings unless ``--database-url`` names one (see ``scripts/benchdb.py``); the database
(``creditrail_bench_worker``) is created when missing, and everything lives in its schema ``bench``, dropped and
recreated at the start of each run. pgbench at the same client count is reported beside, from the same server.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import URL, Engine, make_url

from scripts.benchdb import (
    DUE_EXPIRES_SQL,
    bench_server,
    ensure_database,
    fresh_schema,
    maintain,
    pgbench_init,
    pgbench_tps,
    seed_accounts,
    seed_lots,
)
from services.core.clock import utcnow
from services.core.db import make_engine, unit_of_work
from services.core.settings import Settings
from services.ledger import spending
from services.ledger.system_accounts import SystemAccount

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "creditrail_bench_worker"
PGBENCH_DATABASE = "creditrail_pgbench"
PGBENCH_SCALE = 10
SCHEMA = "bench"
JOB = "ledger.expire_lots"
WORKER_APPLICATION = "creditrail-bench-worker"

# Targets: spends keep nine tenths of their rate while the job works off the backlog (it paces itself: see
# services.ledger.tasks), the backlog of a million lots is gone within 10 minutes all the same, and a lot costs at
# most 30 microseconds of CPU (the worker's and its database backends').
TARGET_SPEND_RATIO = 0.9
TARGET_EXPIRY_LOTS_PER_S = 1_000_000 / 600
TARGET_CPU_US_PER_LOT = 30.0

SPENDABLE_LOT_CREDITS = 100_000_000
DUE_LOT_CREDITS = 100
WARMUP_SPENDS = 5


@dataclass(frozen=True, slots=True)
class Sizes:
    accounts: int
    due_lots: int
    seconds: float


FULL = Sizes(accounts=10_000, due_lots=1_000_000, seconds=20.0)
QUICK = Sizes(accounts=1_000, due_lots=50_000, seconds=5.0)


def log(message: str) -> None:
    print(f"[bench_worker] {message}", file=sys.stderr, flush=True)


# --- spend clients -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Clients:
    url: str
    first_account: int
    accounts: int


def spend_client(
    job: Clients, index: int, tag: str, ready: Queue[int], go: Event, stop: Event, results: Queue[Any]
) -> None:
    """Spend 1 credit on a random account, back to back, from ``go`` until ``stop``; report each spend's end."""
    engine = make_engine(job.url, pool_size=1)
    rng = random.Random(f"{tag}:{index}")

    def one(key: str) -> None:
        account_id = job.first_account + rng.randrange(job.accounts)
        with unit_of_work(engine) as session:
            spending.spend(session, account_id=account_id, amount_credits=1, idempotency_key=key)

    for n in range(WARMUP_SPENDS):
        one(f"{tag}-w{index}-{n}")
    ready.put(index)
    go.wait()
    ends: list[float] = []
    errors = 0
    first_error: str | None = None
    while not stop.is_set():
        try:
            one(f"{tag}-{index}-{len(ends) + errors}")
            ends.append(time.time())
        except Exception as exc:
            errors += 1
            first_error = first_error or f"{type(exc).__name__}: {exc}"[:300]
    engine.dispose()
    results.put({"ends": ends, "errors": errors, "first_error": first_error})


class SpendLoad:
    """N client processes, started and warmed up first, spending between ``go()`` and ``stop()``."""

    def __init__(self, job: Clients, clients: int, tag: str) -> None:
        ctx = mp.get_context("spawn")
        self.ready: Queue[int] = ctx.Queue()
        self.results: Queue[Any] = ctx.Queue()
        self.go_event = ctx.Event()
        self.stop_event = ctx.Event()
        self.procs = [
            ctx.Process(
                target=spend_client,
                args=(job, i, tag, self.ready, self.go_event, self.stop_event, self.results),
            )
            for i in range(clients)
        ]

    def start(self) -> SpendLoad:
        for proc in self.procs:
            proc.start()
        for _ in self.procs:
            self.ready.get(timeout=120)
        return self

    def go(self) -> float:
        began = time.time()
        self.go_event.set()
        return began

    def stop(self) -> tuple[list[float], int, str | None]:
        self.stop_event.set()
        outcomes = [self.results.get(timeout=120) for _ in self.procs]
        for proc in self.procs:
            proc.join(60)
        ends = sorted(end for outcome in outcomes for end in outcome["ends"])
        errors = sum(outcome["errors"] for outcome in outcomes)
        first_error = next((o["first_error"] for o in outcomes if o["first_error"]), None)
        return ends, errors, first_error


def rate_within(ends: list[float], start: float, end: float) -> float:
    inside = sum(1 for moment in ends if start <= moment <= end)
    return inside / (end - start) if end > start else 0.0


# --- the worker --------------------------------------------------------------------------------------------


def peak_rss_mb(pid: int) -> float | None:
    """The process's resident-memory high-water mark (Linux: VmHWM)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU time the process has used so far (Linux: /proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backend_pids(engine: Engine, application_name: str) -> list[int]:
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"), {"name": application_name}
        )
        return [int(pid) for pid in found.scalars()]


def start_worker(url: str, batch_size: int, log_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CREDITRAIL_ENVIRONMENT": "test",
        "CREDITRAIL_DATABASE_URL": url,
        "CREDITRAIL_WORKER_JOBS": json.dumps([JOB]),
        "CREDITRAIL_WORKER_LOT_EXPIRY_BATCH_SIZE": str(batch_size),
        "CREDITRAIL_WORKER_LOT_EXPIRY_INTERVAL_SECONDS": "3600",
        "CREDITRAIL_WORKER_LOG_LEVEL": "INFO",
    }
    with log_path.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "services.worker"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=sink
        )


def worker_runs(log_path: Path) -> list[dict[str, Any]]:
    runs = []
    for raw in log_path.read_text(errors="replace").splitlines():
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if line.get("event") == "job_run" and line.get("job") == JOB:
            runs.append(line)
    return runs


def verify(engine: Engine, now: datetime, lots: int) -> dict[str, Any]:
    with engine.connect() as conn:
        left = conn.execute(
            text("SELECT count(*) FROM lots WHERE remaining_credits > reserved_credits AND expires_at <= :now"),
            {"now": now},
        ).scalar_one()
        breakage = conn.execute(
            text("SELECT coalesce(sum(amount_credits), 0) FROM ledger_entries WHERE account_id = :a"),
            {"a": SystemAccount.BREAKAGE},
        ).scalar_one()
        expired = conn.execute(text("SELECT coalesce(sum(expired_credits), 0) FROM lots")).scalar_one()
        moved, movements = conn.execute(
            text("SELECT coalesce(sum(amount_credits), 0), count(*) FROM lot_movements WHERE kind = 'expiry'")
        ).one()
    expected = lots * DUE_LOT_CREDITS
    ok = left == 0 and movements == lots and expected == breakage == expired == -moved
    return {"due_lots_left": int(left), "expiry_movements": int(movements), "breakage_credits": int(breakage), "ok": ok}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes and short runs (a smoke run)")
    parser.add_argument(
        "--database-url", help="the benchmark's database (created if missing); by default a private server's"
    )
    parser.add_argument(
        "--clients", type=client_counts, default=(1, 4), help="spend client processes of each run (default 1,4)"
    )
    parser.add_argument("--seconds", type=float, help="seconds of the baseline spend run")
    parser.add_argument("--due-lots", type=int, help="due lots to expire (default 1,000,000; --quick 50,000)")
    parser.add_argument("--batch-size", type=int, default=Settings().worker_lot_expiry_batch_size)
    parser.add_argument("--check-invariants", action="store_true", help="check every ledger invariant at the end")
    options = parser.parse_args(argv)
    load_start = [round(x, 2) for x in os.getloadavg()]
    with bench_server(options.database_url, DATABASE) as (url, server):
        runs = [run(options, url, clients) for clients in options.clients]
    sizes = _sizes(options)
    settings = Settings()
    report: dict[str, Any] = {
        "bench": "worker",
        "mode": "quick" if options.quick else "full",
        "server": server,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "accounts": sizes.accounts,
        "due_lots": sizes.due_lots,
        "batch_size": options.batch_size,
        "expiry_busy_share": settings.worker_lot_expiry_busy_share,
        "expiry_min_lots_per_s": settings.worker_lot_expiry_min_lots_per_second,
        "cores": os.cpu_count(),
        "runs": runs,
        # The machine is shared: its load when the runs began and ended says how far to trust the figures.
        "load_average": {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]},
    }
    print(json.dumps(report, separators=(",", ":")))
    return 0


def _sizes(options: argparse.Namespace) -> Sizes:
    sizes = QUICK if options.quick else FULL
    return sizes if options.due_lots is None else replace(sizes, due_lots=options.due_lots)


def client_counts(value: str) -> tuple[int, ...]:
    counts = tuple(int(part) for part in value.split(","))
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("client counts are positive integers, separated by commas")
    return counts


def run(options: argparse.Namespace, url: URL, clients_count: int) -> dict[str, Any]:
    """One run: a fresh schema, its baseline spends, the expiry with spends beside it, and the checks."""
    sizes = _sizes(options)
    seconds = options.seconds or sizes.seconds
    log(f"run with {clients_count} spend clients")
    engine = fresh_schema(url, SCHEMA)
    worker_url = url.update_query_dict({"options": f"-csearch_path={SCHEMA}"}).render_as_string(hide_password=False)
    # The worker's connections carry a name of their own, so that its database backends can be found.
    expiry_url = make_url(worker_url).update_query_dict({"application_name": WORKER_APPLICATION})
    pgbench_url = url.set(database=PGBENCH_DATABASE)
    ensure_database(pgbench_url)
    pgbench_init(pgbench_url, PGBENCH_SCALE)

    log(f"seeding {sizes.accounts} accounts and {sizes.due_lots} due lots")
    began = time.perf_counter()
    now = utcnow()
    with engine.begin() as conn:
        first_account = seed_accounts(conn, sizes.accounts, now)
        seed_lots(
            conn,
            tag="spendable",
            first_account=first_account,
            accounts=sizes.accounts,
            lots=sizes.accounts,
            lot_credits=SPENDABLE_LOT_CREDITS,
            expires_sql=":now + interval '200 days' + g * interval '1 second'",
            now=now,
        )
        seed_lots(
            conn,
            tag="due",
            first_account=first_account,
            accounts=sizes.accounts,
            lots=sizes.due_lots,
            lot_credits=DUE_LOT_CREDITS,
            expires_sql=DUE_EXPIRES_SQL,
            now=now,
        )
    seed_seconds = round(time.perf_counter() - began, 1)
    maintain(engine)
    log(f"seeded in {seed_seconds} s")

    clients = Clients(worker_url, first_account, sizes.accounts)
    spend_errors: list[str] = []

    def baseline_spends(tag: str) -> float:
        load = SpendLoad(clients, clients_count, tag).start()
        began = load.go()
        time.sleep(seconds)  # the measurement window itself, not a synchronisation
        ended = time.time()
        ends, errors, first_error = load.stop()
        spend_errors.extend([first_error or "error"] * errors)
        rate = rate_within(ends, began, ended)
        log(f"spends without expiry ({tag}): {rate:.0f}/s over {clients_count} clients")
        maintain(engine)
        return rate

    baseline_before = baseline_spends("before")
    yardstick = pgbench_tps(pgbench_url, clients_count, min(seconds, 10.0))
    log(f"pgbench tpcb-like, {clients_count} clients: {yardstick:.0f} tps")

    handle, log_name = tempfile.mkstemp(prefix="bench_worker_", suffix=".log")
    os.close(handle)
    log_path = Path(log_name)
    load = SpendLoad(clients, clients_count, "during").start()
    expiry_now = utcnow()
    load.go()
    worker = start_worker(expiry_url.render_as_string(hide_password=False), options.batch_size, log_path)
    peak: float | None = None
    # CPU time of the worker (from its first connection on) and of its database backends, read while they live.
    worker_cpu_start: float | None = None
    worker_cpu_end: float | None = None
    backend_cpu: dict[int, float | None] = {}
    try:
        deadline = time.monotonic() + 3_600
        runs: list[dict[str, Any]] = []
        while not any(run["items"] > 0 for run in runs):
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}: {log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the expiry run did not finish within an hour")
            time.sleep(0.2)
            for pid in backend_pids(engine, WORKER_APPLICATION):
                if worker_cpu_start is None:
                    worker_cpu_start = cpu_seconds(worker.pid)
                backend_cpu[pid] = cpu_seconds(pid)
            runs = worker_runs(log_path)
        peak = peak_rss_mb(worker.pid)
        worker_cpu_end = cpu_seconds(worker.pid)
        backend_cpu.update({pid: cpu_seconds(pid) for pid in backend_cpu})
    finally:
        ends, during_errors, during_first_error = load.stop()
        worker.terminate()
        worker.wait(120)
    spend_errors.extend([during_first_error or "error"] * during_errors)
    run = next(run for run in runs if run["items"] > 0)
    run_start = datetime.fromisoformat(run["started_at"]).timestamp()
    run_end = datetime.fromisoformat(run["finished_at"]).timestamp()
    during = rate_within(ends, run_start, run_end)
    # The run's items are the lots its batches examined (a lot whose account was busy is examined again later);
    # the rate counts the lots it expired.
    checks = verify(engine, expiry_now, sizes.due_lots)
    expired = checks["expiry_movements"]
    lots_per_s = expired / (run["duration_ms"] / 1000) if run["duration_ms"] else 0.0
    log(f"expiry: {expired} lots in {run['duration_ms'] / 1000:.1f} s = {lots_per_s:.0f} lots/s")
    expiry_cpu: float | None = None
    cpu_share: float | None = None
    if worker_cpu_start is not None and worker_cpu_end is not None and None not in backend_cpu.values():
        expiry_cpu = worker_cpu_end - worker_cpu_start + sum(cpu for cpu in backend_cpu.values() if cpu is not None)
        cpu_share = expiry_cpu / (run["duration_ms"] / 1000 * (os.cpu_count() or 1)) if run["duration_ms"] else None
        log(f"expiry CPU (worker and its backends): {expiry_cpu:.1f} s, {cpu_share or 0:.0%} of the machine")
    maintain(engine)
    # Measured before and after, as the machine's other load may change meanwhile: the baseline is their mean.
    baseline_after = baseline_spends("after")
    baseline = (baseline_before + baseline_after) / 2
    log(f"spends during expiry: {during:.0f}/s ({during / baseline if baseline else 0:.2f} of baseline)")

    violations: int | None = None
    if options.check_invariants:
        from services.ledger.invariants import check_invariants

        with unit_of_work(engine) as session:
            violations = len(check_invariants(session))
    engine.dispose()

    ratio = round(during / baseline, 3) if baseline else 0.0
    cpu_us_per_lot = expiry_cpu / run["items"] * 1e6 if expiry_cpu and run["items"] else None
    return {
        "clients": clients_count,
        "expiry": {
            "lots": expired,
            "lots_examined": run["items"],
            "batches": run["batches"],
            "seconds": round(run["duration_ms"] / 1000, 2),
            "lots_per_s": round(lots_per_s, 1),
            "worker_peak_rss_mb": round(peak, 1) if peak is not None else None,
            # CPU the expiry took (the worker process and its database backends): per lot, and as a share of every
            # core during the run. Spends that keep the cores busy lose about that share whatever the locks do.
            "cpu_us_per_lot": round(cpu_us_per_lot, 1) if cpu_us_per_lot is not None else None,
            "cpu_share_of_machine": round(cpu_share, 3) if cpu_share is not None else None,
            "verified": checks["ok"],
        },
        "spend": {
            "baseline_per_s": round(baseline, 1),
            "baseline_before_per_s": round(baseline_before, 1),
            "baseline_after_per_s": round(baseline_after, 1),
            "during_expiry_per_s": round(during, 1),
            "ratio": ratio,
            "errors": len(spend_errors),
            "first_error": spend_errors[0] if spend_errors else None,
            "pgbench_tps_same_clients": round(yardstick, 1),
        },
        "targets": {
            "spend_ratio_min": TARGET_SPEND_RATIO,
            "expiry_lots_per_s_min": round(TARGET_EXPIRY_LOTS_PER_S, 1),
            "cpu_us_per_lot_max": TARGET_CPU_US_PER_LOT,
        },
        "targets_met": {
            "expiry_lots_per_s": lots_per_s >= TARGET_EXPIRY_LOTS_PER_S,
            "spend_ratio": ratio >= TARGET_SPEND_RATIO,
            "cpu_us_per_lot": cpu_us_per_lot is not None and cpu_us_per_lot <= TARGET_CPU_US_PER_LOT,
        },
        "checks": checks,
        "invariant_violations": violations,
        "seed_seconds": seed_seconds,
    }


if __name__ == "__main__":
    sys.exit(main())
