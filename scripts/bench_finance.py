"""Reconciliation speed and memory on PostgreSQL, beside a plain scan of the same tables in the same run.

    .venv/bin/python -m scripts.bench_finance [--database-url URL] [--records N]

Generates N USDC lots and N re-scanned Transfer records (the mirror) for one chain and one period, with a few
discrepancies of every kind (a transfer never credited, a lot with no transfer, a lot bigger than its transfer),
then, each in a fresh process so its peak memory is its own:

- the yardstick: a plain scan of both tables (every row streamed to the client through a server-side cursor);
- the reconciliation of the whole period (``reconcile_usdc``: every record and lot sorted into an item);
- the reconciliation of a tenth of the period (the same code on a tenth of the rows), to show memory is flat in the
  number of records.

Prints one JSON line: rows per second for the scan and the reconciliation, their ratio (target >= 0.3), the peak
memory of each process (target < 300 MB, flat), and the item counts (checked against the discrepancies injected).
Progress goes to stderr. Runs in a schema of its own (``bench_finance``) of the benchmark database.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.queues import Queue
from typing import Any

from sqlalchemy.engine import URL, Engine, make_url

from scripts.bench_ledger import DEFAULT_URL
from scripts.benchdb import ensure_database, fresh_schema, maintain
from services.core.db import make_engine, unit_of_work
from services.finance.matching import reconcile_usdc

SCHEMA = "bench_finance"
CHAIN_ID = 31337
ACCOUNTS = 1_000
MIN_DEPOSIT_USDC_UNITS = 1_000_000
PERIOD_START = datetime(2026, 10, 1, tzinfo=UTC)
PERIOD = timedelta(days=1)
# One in this many rows of each kind is a discrepancy.
MISSING_IN_LEDGER_EVERY = 1_000  # g % 1000 == 3: a transfer with no lot
MISSING_EXTERNALLY_EVERY = 1_000  # g % 1000 == 7: a lot with no transfer
MISMATCH_EVERY = 1_000  # g % 1000 == 5: a lot 500 credits bigger than its transfer (and its carry)
SCAN_BATCH = 10_000


def log(message: str) -> None:
    print(f"[bench_finance {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(engine: Engine, records: int) -> None:
    """Accounts, their deposit addresses, ``records`` transfers and the lots they minted, all server-side."""
    seconds = PERIOD.total_seconds()
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO accounts (kind, name, debt_credits, created_at) "
            "SELECT 'customer', 'bench ' || g, 0, %(t)s FROM generate_series(1, %(n)s) g",
            {"t": PERIOD_START - timedelta(days=30), "n": ACCOUNTS},
        )
        first_account = conn.exec_driver_sql("SELECT min(id) FROM accounts WHERE kind = 'customer'").scalar_one()
        conn.exec_driver_sql(
            "INSERT INTO deposit_addresses (account_id, chain_id, derivation_index, address, carry_usdc_units, "
            "created_at) SELECT id, %(chain)s, id, '0x' || lpad(to_hex(id), 40, '0'), 0, created_at FROM accounts "
            "WHERE kind = 'customer'",
            {"chain": CHAIN_ID},
        )
        txn_id = conn.exec_driver_sql(
            "INSERT INTO ledger_transactions (kind, idempotency_key, created_at, details) "
            "VALUES ('mint', 'bench:finance:seed', %(t)s, '{}') RETURNING id",
            {"t": PERIOD_START},
        ).scalar_one()
        params = {"n": records, "chain": CHAIN_ID, "first": first_account, "accounts": ACCOUNTS}
        log(f"generating {records:,} transfers")
        conn.exec_driver_sql(
            "INSERT INTO chain_transfer_records (chain_id, tx_hash, log_index, block_number, block_hash, "
            "from_address, to_address, amount_usdc_units, reference, scanned_at) "
            "SELECT %(chain)s, '0x' || lpad(to_hex(g), 64, '0'), 0, g / 10, '0x' || lpad(to_hex(g / 10), 64, '0'), "
            "'0x' || repeat('ab', 20), '0x' || lpad(to_hex(%(first)s + g %% %(accounts)s), 40, '0'), "
            "1000000 + (g %% 100) * 10000, %(chain)s || ':0x' || lpad(to_hex(g), 64, '0') || ':0', now() "
            "FROM generate_series(1, %(n)s) g WHERE g %% 1000 <> 7",
            params,
        )
        log(f"generating {records:,} lots")
        conn.exec_driver_sql(
            "INSERT INTO lots (account_id, rail, external_ref, cost_basis_usdc_units, promotional, credits, "
            "remaining_credits, reserved_credits, expired_credits, clawed_back_credits, credited_at, expires_at, "
            "mint_transaction_id, details) "
            "SELECT %(first)s + g %% %(accounts)s, 'usdc', %(chain)s || ':0x' || lpad(to_hex(g), 64, '0') || ':0', "
            "c * 10000, false, c, c, 0, 0, 0, t, t + interval '1 year', %(txn)s, '{}' "
            "FROM (SELECT g, 100 + (g %% 100) + CASE WHEN g %% 1000 = 5 THEN 500 ELSE 0 END AS c, "
            "%(start)s + (g * %(seconds)s / %(n)s) * interval '1 second' AS t "
            "FROM generate_series(1, %(n)s) g WHERE g %% 1000 <> 3) s",
            {**params, "txn": txn_id, "start": PERIOD_START, "seconds": seconds - 1},
        )


def expected_counts(records: int) -> dict[str, int]:
    per = records // 1_000
    return {"missing_in_ledger": per, "missing_externally": per, "amount_mismatch": per}


def scan_process(url: str, schema: str, results: Queue[Any]) -> None:
    """The yardstick: stream every row of both tables to the client."""
    engine = make_engine(url, schema=schema, pool_size=1)
    baseline = _rss_mb()
    rows = 0
    started = time.perf_counter()
    with engine.connect() as conn:
        for table in ("chain_transfer_records", "lots"):
            result = conn.execution_options(stream_results=True, max_row_buffer=SCAN_BATCH).exec_driver_sql(
                f"SELECT * FROM {table}"
            )
            for batch in result.partitions(SCAN_BATCH):
                rows += len(batch)
    elapsed = time.perf_counter() - started
    results.put({"rows": rows, "seconds": elapsed, "peak_mb": _rss_mb(), "baseline_mb": baseline})


def reconcile_process(url: str, schema: str, fraction: float, records: int, results: Queue[Any]) -> None:
    """One reconciliation run over ``fraction`` of the period (and of its blocks), in one unit of work."""
    engine = make_engine(url, schema=schema, pool_size=1)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    baseline = _rss_mb()
    end = PERIOD_START + PERIOD * fraction
    last_block = int(records * fraction) // 10
    started = time.perf_counter()
    with unit_of_work(engine) as session:
        run = reconcile_usdc(
            session,
            chain_id=CHAIN_ID,
            blocks=(0, last_block),
            period_start=PERIOD_START,
            period_end=end,
            min_deposit_usdc_units=MIN_DEPOSIT_USDC_UNITS,
            now=PERIOD_START + timedelta(days=2),
        )
    elapsed = time.perf_counter() - started
    results.put(
        {
            "rows": run.external_records + run.ledger_records,
            "seconds": elapsed,
            "peak_mb": _rss_mb(),
            "baseline_mb": baseline,
            "matched": run.matched,
            "missing_in_ledger": run.missing_in_ledger,
            "missing_externally": run.missing_externally,
            "amount_mismatch": run.amount_mismatch,
            "late": run.late,
        }
    )


def in_process(target: Any, *args: Any) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    results: Queue[Any] = context.Queue()
    process = context.Process(target=target, args=(*args, results))
    process.start()
    outcome: dict[str, Any] = results.get()
    process.join()
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--schema", default=SCHEMA, help="The schema to run in (dropped and created again).")
    parser.add_argument("--keep", action="store_true", help="Keep the schema afterwards (default: drop it).")
    args = parser.parse_args(argv)
    if args.records < 1_000 or args.records % 1_000:
        parser.error("--records must be a positive multiple of 1,000")
    url: URL = make_url(args.database_url).set(drivername="postgresql+psycopg")
    ensure_database(url)
    engine = fresh_schema(url, args.schema)
    generate(engine, args.records)
    maintain(engine)
    url_text = url.render_as_string(hide_password=False)

    log("plain scan")
    scan = in_process(scan_process, url_text, args.schema)
    log("reconciliation of a tenth of the period")
    tenth = in_process(reconcile_process, url_text, args.schema, 0.1, args.records)
    log("reconciliation of the whole period")
    whole = in_process(reconcile_process, url_text, args.schema, 1.0, args.records)
    log("plain scan again")
    scan_again = in_process(scan_process, url_text, args.schema)
    if not args.keep:
        engine.dispose()
        admin = make_engine(url)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE')
        admin.dispose()

    scan_rate = max(scan["rows"] / scan["seconds"], scan_again["rows"] / scan_again["seconds"])
    recon_rate = whole["rows"] / whole["seconds"]
    expected = expected_counts(args.records)
    found = {name: whole[name] for name in expected}
    print(
        json.dumps(
            {
                "benchmark": "finance_reconciliation",
                "records": args.records,
                "rows_reconciled": whole["rows"],
                "reconcile_rows_per_s": round(recon_rate),
                "reconcile_seconds": round(whole["seconds"], 2),
                "plain_scan_rows_per_s": round(scan_rate),
                "ratio_to_plain_scan": round(recon_rate / scan_rate, 3),
                "target_ratio": 0.3,
                "peak_mb_whole": round(whole["peak_mb"], 1),
                "peak_mb_tenth": round(tenth["peak_mb"], 1),
                "peak_mb_plain_scan": round(scan["peak_mb"], 1),
                "target_peak_mb": 300,
                "items": {**found, "matched": whole["matched"], "late": whole["late"]},
                "discrepancies_found_as_injected": found == expected,
            }
        )
    )
    return 0 if found == expected else 1


if __name__ == "__main__":
    sys.exit(main())
