"""Benchmark of the USDC listener on a local anvil and PostgreSQL: catch-up rate, decoding, and head lag.

Starts its own anvil, deploys TestUSDC, creates ``--addresses`` customer accounts with deposit addresses (derived
from a fresh xpub) in a database of its own (``creditrail_bench_usdc``, dropped and created again each run), and
makes ``--transfers`` Transfer logs to them (``transferMany``: 1,000 per transaction). Then, in the same run:

- raw fetch: one ``eth_getLogs`` of the whole range for the deposit addresses, the node's JSON parsed and nothing
  else (``raw_fetch_logs_per_s``);
- catch-up: from the start block until caught up as the poll job runs it (``catch_up`` with the job's batch of
  deposits, called again while a call fills its batch: each range's scan overlapping the store of the range before
  it), i.e. fetch, decode, reorg checks and every deposit stored in PostgreSQL (``catchup_logs_per_s``; target: at
  least half the raw rate). Raw fetch and catch-up are interleaved, ``--repeats`` times each, and the medians
  compared. The CPU time each used (this process, the database server, anvil) is reported beside, as the wall
  clock of a shared machine varies with its load;
- decoding alone (``decode_us_per_log``; target: at most 50 us);
- confirmation: the whole backlog credited by ``confirm_deposits`` in batches (``confirm_deposits_per_s``);
- steady state: the node mines a block every ``--block-time`` seconds; transfers keep arriving while the listener
  polls and confirms every ``--poll-interval`` seconds. For each deposit, how many blocks the head was past its
  block when it was credited (``head_lag_blocks_max``; target: confirmations + the blocks of one poll interval).

Prints one JSON line on stdout; progress goes to stderr.

    .venv/bin/python scripts/bench_usdc.py [--transfers 10000] [--addresses 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from bip32 import BIP32
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine, make_url

from chain.abi import TRANSFER_TOPIC
from chain.addresses import address_topic
from chain.devchain import DevWallet, LocalToken, dev_account, mine, wait_for_receipt
from chain.logs import decode_transfer_logs
from chain.node import AnvilNode
from chain.rpc import ChainRpc, RawLog
from services.core.clock import utcnow
from services.core.db import make_engine, unit_of_work
from services.core.migrate import upgrade
from services.core.settings import ChainSettings, Settings
from services.ledger.accounts import create_customer_account
from services.usdc import repository as repo
from services.usdc.addresses import ensure_deposit_address
from services.usdc.flows.listener import catch_up, confirm_deposits
from services.usdc.models import DepositStatus
from services.usdc.tasks import POLL_BATCH_SIZE

CHAIN_ID = 31337
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/creditrail_bench_usdc"


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fresh_database(url: str) -> Engine:
    """Drop and create the benchmark's own database, migrated to the latest schema."""
    target = make_url(url)
    name = target.database
    if not name or not name.startswith("creditrail_bench"):
        raise SystemExit(f"refusing to drop {name!r}: the benchmark's database name must start with creditrail_bench")
    admin = make_engine(target.set(database="postgres"))
    with admin.connect() as connection:
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    engine = make_engine(target)
    upgrade(engine)
    return engine


def random_xpub() -> str:
    return str(BIP32.from_seed(os.urandom(32)).get_xpub_from_path("m/44'/60'/0'"))


def cpu_seconds(engine: Engine, node: AnvilNode) -> dict[str, float]:
    """CPU time used so far by this process, by the database's server processes serving this benchmark's database,
    and by anvil (from /proc; what a loaded machine's wall clock hides)."""
    with engine.connect() as connection:
        pids = connection.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")).scalars()
        postgres = sum(_proc_cpu_seconds(int(pid)) for pid in pids)
    return {
        "python": time.process_time(),
        "postgres": postgres,
        "anvil": _proc_cpu_seconds(node.pid) if node.pid is not None else 0.0,
    }


def _proc_cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before}


def median_cpu_ms(samples: list[dict[str, float]]) -> dict[str, float]:
    return {name: round(statistics.median(s[name] for s in samples) * 1e3, 1) for name in samples[0]}


def make_customers(engine: Engine, settings: Settings, count: int) -> list[str]:
    """``count`` customer accounts with a deposit address each; returns the addresses (lowercase)."""
    out = []
    with unit_of_work(engine) as session:
        for index in range(count):
            account_id = create_customer_account(session, name=f"bench-{index}")
            view = ensure_deposit_address(session, settings, account_id=account_id, chain_id=CHAIN_ID)
            out.append(view.address.lower())
    return out


def make_transfers(rpc: ChainRpc, token: LocalToken, recipients: Sequence[str], transfers: int) -> tuple[int, int]:
    """``transfers`` Transfer logs in transactions of up to 1,000, four empty blocks after each; the block range."""
    wallet = token.wallet
    rounds_per_tx = max(1, 1_000 // len(recipients))
    logs_per_tx = rounds_per_tx * len(recipients)
    first_block = rpc.block_number() + 1
    gas = None
    for index in range(math.ceil(transfers / logs_per_tx)):
        rounds = min(rounds_per_tx, math.ceil((transfers - index * logs_per_tx) / len(recipients)))
        data = token.transfer_many_data(recipients, 1_000_000 + index, rounds)
        if gas is None:
            gas = wallet.estimate_gas(token.address, data) * 3 // 2
        wait_for_receipt(rpc, wallet.send_signed(wallet.sign(token.address, data, gas=gas)))
        mine(rpc, 4)
    return first_block, rpc.block_number()


def reset_listener(engine: Engine) -> None:
    """Back to an empty listener state (TRUNCATE, so no run pays for the dead rows of the one before)."""
    with unit_of_work(engine) as session:
        session.execute(text("TRUNCATE usdc_deposits, chain_blocks, chain_cursors"))


def poll_job(engine: Engine, chain: ChainSettings, rpc: ChainRpc) -> tuple[int, int, bool]:
    """One call of the poll job's step (services.usdc.tasks.poll): the polls it made (units of work), the deposits
    it stored, and whether it caught up."""
    outcomes = catch_up(engine, chain, rpc, max_stored=POLL_BATCH_SIZE)
    return len(outcomes), sum(o.stored_logs for o in outcomes), outcomes[-1].caught_up


def catch_up_from_start(engine: Engine, chain: ChainSettings, rpc: ChainRpc) -> tuple[float, int, int]:
    """Seconds to poll from the start block until caught up (the poll job's step called again and again), the polls
    made and the deposits stored."""
    started = time.perf_counter()
    polls = stored = 0
    while True:
        made, done, caught_up = poll_job(engine, chain, rpc)
        polls += made
        stored += done
        if caught_up:
            return time.perf_counter() - started, polls, stored


def confirm_all(engine: Engine, chain: ChainSettings, rpc: ChainRpc, batch_size: int) -> tuple[float, int]:
    started = time.perf_counter()
    settled = 0
    while True:
        done = confirm_deposits(engine, chain, rpc, limit=batch_size)
        settled += done
        if done < batch_size:
            return time.perf_counter() - started, settled


def credited_blocks(engine: Engine, chain_id: int) -> dict[int, int]:
    """Deposit id -> block number of the credited (or carried) deposits."""
    d = repo.deposits
    with unit_of_work(engine) as session:
        rows = session.execute(
            select(d.c.id, d.c.block_number).where(
                d.c.chain_id == chain_id, d.c.status.in_([DepositStatus.CREDITED, DepositStatus.CARRIED])
            )
        ).all()
    return {int(row.id): int(row.block_number) for row in rows}


def steady_state(
    engine: Engine,
    settings: Settings,
    rpc: ChainRpc,
    token: LocalToken,
    recipients: Sequence[str],
    *,
    deposits: int,
    block_time_seconds: int,
) -> dict[str, Any]:
    """Interval mining, transfers arriving now and then, and the listener polling and confirming at its interval."""
    chain = settings.usdc_chains[0]
    interval = settings.usdc_poll_interval_seconds
    already = set(credited_blocks(engine, CHAIN_ID))
    rpc.request("evm_setIntervalMining", [block_time_seconds])
    lags: list[int] = []
    sent = 0
    polls = 0
    next_tick = time.monotonic()
    deadline = time.monotonic() + (deposits * 2 + chain.confirmations + 6) * block_time_seconds + 10 * interval
    try:
        while len(lags) < deposits:
            if time.monotonic() > deadline:
                raise SystemExit(f"steady state: only {len(lags)} of {deposits} deposits credited in time")
            if sent < deposits and polls % 2 == 0:
                # Signed and sent without waiting: the next mined block includes it.
                token.wallet.send_signed(
                    token.wallet.sign(token.address, token.transfer_data(recipients[sent % len(recipients)], 2_000_000))
                )
                sent += 1
            poll_job(engine, chain, rpc)
            confirm_deposits(engine, chain, rpc, limit=settings.usdc_confirm_batch_size)
            polls += 1
            head = rpc.block_number()
            for deposit_id, block in credited_blocks(engine, CHAIN_ID).items():
                if deposit_id not in already:
                    already.add(deposit_id)
                    lags.append(head - block)
            next_tick += interval
            time.sleep(max(0.0, next_tick - time.monotonic()))
    finally:
        rpc.request("evm_setIntervalMining", [0])
    blocks_per_interval = math.ceil(interval / block_time_seconds)
    return {
        "steady_deposits": len(lags),
        "head_lag_blocks_max": max(lags),
        "head_lag_blocks_median": statistics.median(lags),
        "head_lag_target_blocks": chain.confirmations + blocks_per_interval,
        "poll_interval_s": interval,
        "block_time_s": block_time_seconds,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    setup_started = time.perf_counter()
    engine = fresh_database(args.database_url)
    with AnvilNode(chain_id=CHAIN_ID, slots_in_an_epoch=1) as node:
        rpc = ChainRpc(node.url, expected_chain_id=CHAIN_ID, timeout_seconds=60)
        wallet = DevWallet(rpc, dev_account(0))
        token = LocalToken.deploy(wallet)
        token.mint(wallet.address, 10**18)
        mine(rpc, 2)
        chain = ChainSettings(
            chain_id=CHAIN_ID,
            name="bench",
            rpc_url=node.url,
            usdc_address=token.address,
            confirmations=args.confirmations,
            start_block=rpc.block_number() + 1,
            min_deposit_usdc_units=1_000_000,
        )
        settings = Settings(
            environment="test",
            database_url=args.database_url,
            usdc_xpub=random_xpub(),
            usdc_chains=[chain],
            usdc_poll_interval_seconds=args.poll_interval,
        )
        recipients = make_customers(engine, settings, args.addresses)
        progress(f"making {args.transfers} transfers to {args.addresses} deposit addresses ...")
        first_block, last_block = make_transfers(rpc, token, recipients, args.transfers)
        setup_seconds = time.perf_counter() - setup_started
        progress(f"blocks {first_block}..{last_block} ready in {setup_seconds:.1f} s; measuring ...")

        topics = [TRANSFER_TOPIC, None, [address_topic(a) for a in recipients]]

        def fetch_raw() -> list[RawLog]:
            return rpc.get_logs(from_block=chain.start_block, to_block=last_block, address=token.address, topics=topics)

        fetched = len(fetch_raw())
        if fetched != args.transfers:
            raise SystemExit(f"expected {args.transfers} logs, the node gave {fetched}")
        # As the worker does once started: what start-up built is kept out of the collector's sight.
        gc.collect()
        gc.freeze()
        raw_times: list[float] = []
        catchup_times: list[float] = []
        polls: list[int] = []
        raw_cpu: list[dict[str, float]] = []
        catchup_cpu: list[dict[str, float]] = []
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            gc.collect()  # each timed run starts from the same collector state
            before = cpu_seconds(engine, node)
            started = time.perf_counter()
            fetch_raw()
            raw_times.append(time.perf_counter() - started)
            raw_cpu.append(cpu_spent(before, cpu_seconds(engine, node)))
            reset_listener(engine)
            gc.collect()
            before = cpu_seconds(engine, node)
            seconds, poll_count, stored = catch_up_from_start(engine, chain, rpc)
            catchup_cpu.append(cpu_spent(before, cpu_seconds(engine, node)))
            if stored != args.transfers:
                raise SystemExit(f"the listener stored {stored} deposits, expected {args.transfers}")
            catchup_times.append(seconds)
            polls.append(poll_count)
        raws = fetch_raw()
        decode_times = []
        for _ in range(max(args.repeats, 5)):
            started = time.perf_counter()
            decode_transfer_logs(raws, CHAIN_ID)
            decode_times.append(time.perf_counter() - started)

        later: dict[str, Any] = {}
        if not args.skip_confirm:
            with unit_of_work(engine) as session:
                stored_rows = session.execute(select(func.count()).select_from(repo.deposits)).scalar_one()
            progress(f"{stored_rows} deposits stored; crediting them ...")
            confirm_seconds, confirmed = confirm_all(engine, chain, rpc, settings.usdc_confirm_batch_size)
            progress(f"{confirmed} deposits credited in {confirm_seconds:.1f} s; steady state ...")
            steady = steady_state(
                engine,
                settings,
                rpc,
                token,
                recipients,
                deposits=args.steady_deposits,
                block_time_seconds=args.block_time,
            )
            later = {
                "confirm_deposits_per_s": round(confirmed / confirm_seconds),
                "confirmations": chain.confirmations,
                **steady,
                "head_lag_target_met": steady["head_lag_blocks_max"] <= steady["head_lag_target_blocks"],
            }
    engine.dispose()

    raw_seconds = statistics.median(raw_times)
    catchup_seconds = statistics.median(catchup_times)
    raw_rate = args.transfers / raw_seconds
    catchup_rate = args.transfers / catchup_seconds
    decode_us = statistics.median(decode_times) / args.transfers * 1e6
    return {
        "bench": "usdc_listener",
        "logs": args.transfers,
        "addresses": args.addresses,
        "blocks": last_block - chain.start_block + 1,
        "raw_fetch_logs_per_s": round(raw_rate),
        "catchup_logs_per_s": round(catchup_rate),
        "catchup_to_raw_ratio": round(catchup_rate / raw_rate, 3),
        "catchup_target_met": catchup_rate >= 0.5 * raw_rate,
        "raw_fetch_ms": round(raw_seconds * 1e3, 1),
        "catchup_ms": round(catchup_seconds * 1e3, 1),
        "catchup_polls": statistics.median(polls),
        "raw_fetch_cpu_ms": median_cpu_ms(raw_cpu),
        "catchup_cpu_ms": median_cpu_ms(catchup_cpu),
        "decode_us_per_log": round(decode_us, 2),
        "decode_target_met": decode_us <= 50,
        **later,
        "repeats": args.repeats,
        "setup_s": round(setup_seconds, 1),
        "database": "postgresql",
        "measured_at": utcnow().isoformat(timespec="seconds"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transfers", type=int, default=10_000)
    parser.add_argument("--addresses", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--confirmations", type=int, default=3)
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between polls in steady state")
    parser.add_argument("--block-time", type=int, default=1, help="seconds between blocks in steady state")
    parser.add_argument("--steady-deposits", type=int, default=6)
    parser.add_argument("--skip-confirm", action="store_true", help="measure the catch-up only")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    args = parser.parse_args(argv)
    if min(args.transfers, args.addresses, args.repeats, args.steady_deposits, args.block_time) < 1:
        parser.error("counts and --block-time must be positive")
    print(json.dumps(run(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
