"""Benchmark of the chain-access layer on a local anvil: how fast Transfer logs come off a node and through the scanner.

Starts its own anvil, deploys TestUSDC and makes ``--transfers`` Transfer logs to ``--addresses`` random addresses
(``transferMany`` emits many per transaction, spread over a few blocks). Then, over that whole block range, in the
same run, it measures:

- the raw ``eth_getLogs`` fetch (one call, the node's JSON parsed, nothing else): ``raw_fetch_logs_per_s``;
- the scanner (the same query, plus decoding into ``TransferLog``): ``scanner_logs_per_s``, and the ratio;
- decoding alone: ``decode_us_per_log``.

Each figure is the median of ``--repeats`` runs. Prints one JSON line on stdout; progress goes to stderr.

    .venv/bin/python scripts/bench_chain.py [--transfers 10000] [--addresses 200]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from chain.abi import TRANSFER_TOPIC
from chain.addresses import address_topic
from chain.devchain import DevWallet, LocalToken, dev_account, mine, wait_for_receipt
from chain.logs import decode_transfer_logs
from chain.node import AnvilNode
from chain.rpc import ChainRpc, RawLog
from chain.scanner import ScannerConfig, ScanState, TransferScanner

CHAIN_ID = 31337


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def median_seconds(run: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def make_transfers(
    rpc: ChainRpc, token: LocalToken, recipients: Sequence[str], transfers: int, per_tx: int, gap_blocks: int
) -> tuple[int, int]:
    """Send ``transfers`` Transfer logs in transactions of up to ``per_tx`` logs; returns the block range."""
    wallet = token.wallet
    rounds_per_tx = max(1, per_tx // len(recipients))
    logs_per_tx = rounds_per_tx * len(recipients)
    txs = -(-transfers // logs_per_tx)
    first_block = rpc.block_number() + 1
    gas = None
    for index in range(txs):
        remaining_rounds = -(-(transfers - index * logs_per_tx) // len(recipients))
        rounds = min(rounds_per_tx, remaining_rounds)
        data = token.transfer_many_data(recipients, 1_000_000 + index, rounds)
        if gas is None:
            gas = wallet.estimate_gas(token.address, data) * 3 // 2  # the first is dearest (new balances)
        signed = wallet.sign(token.address, data, gas=gas)
        wait_for_receipt(rpc, wallet.send_signed(signed))
        if gap_blocks:
            mine(rpc, gap_blocks)
    return first_block, rpc.block_number()


def run(transfers: int, addresses: int, per_tx: int, gap_blocks: int, repeats: int) -> dict[str, Any]:
    setup_started = time.perf_counter()
    with AnvilNode(chain_id=CHAIN_ID, slots_in_an_epoch=1) as node:
        rpc = ChainRpc(node.url, expected_chain_id=CHAIN_ID, timeout_seconds=60)
        wallet = DevWallet(rpc, dev_account(0))
        token = LocalToken.deploy(wallet)
        token.mint(wallet.address, 10**18)
        recipients = ["0x" + secrets.token_hex(20) for _ in range(addresses)]
        progress(f"minting {transfers} transfers to {addresses} addresses ...")
        first_block, last_block = make_transfers(rpc, token, recipients, transfers, per_tx, gap_blocks)
        setup_seconds = time.perf_counter() - setup_started
        progress(f"blocks {first_block}..{last_block} ready in {setup_seconds:.1f} s; measuring ...")

        topics = [TRANSFER_TOPIC, None, [address_topic(a) for a in recipients]]
        span = last_block - first_block + 1

        def fetch_raw() -> list[RawLog]:
            return rpc.get_logs(from_block=first_block, to_block=last_block, address=token.address, topics=topics)

        scanner = TransferScanner(
            rpc,
            ScannerConfig(tokens=(token.address,), max_range_blocks=span, hash_window_blocks=0),
            chain_id=CHAIN_ID,
        )

        def scan() -> int:
            result = scanner.scan(ScanState(first_block, range_blocks=span), recipients, to_block=last_block)
            return len(result.transfers)

        raws = fetch_raw()
        found = scan()  # warm both paths once
        if len(raws) != transfers or found != transfers:
            raise SystemExit(f"expected {transfers} logs, the node gave {len(raws)} and the scanner {found}")

        raw_times, scan_times = [], []
        for _ in range(repeats):  # interleaved, so both see the same machine load
            raw_times.append(median_seconds(fetch_raw, 1))
            scan_times.append(median_seconds(scan, 1))
        raw_seconds = statistics.median(raw_times)
        scan_seconds = statistics.median(scan_times)
        decode_seconds = median_seconds(lambda: decode_transfer_logs(raws, CHAIN_ID), max(repeats, 5))

    raw_rate = transfers / raw_seconds
    scan_rate = transfers / scan_seconds
    return {
        "bench": "chain_scan",
        "logs": transfers,
        "addresses": addresses,
        "blocks": span,
        "raw_fetch_logs_per_s": round(raw_rate),
        "scanner_logs_per_s": round(scan_rate),
        "scanner_to_raw_ratio": round(scan_rate / raw_rate, 3),
        "decode_us_per_log": round(decode_seconds / transfers * 1e6, 2),
        "raw_fetch_ms": round(raw_seconds * 1e3, 1),
        "scanner_ms": round(scan_seconds * 1e3, 1),
        "repeats": repeats,
        "setup_s": round(setup_seconds, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transfers", type=int, default=10_000)
    parser.add_argument("--addresses", type=int, default=200)
    parser.add_argument("--per-tx", type=int, default=1_000, help="Transfer logs per transaction")
    parser.add_argument("--gap-blocks", type=int, default=4, help="empty blocks mined after each transaction")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.transfers < 1 or args.addresses < 1 or args.repeats < 1:
        parser.error("--transfers, --addresses and --repeats must be positive")
    print(json.dumps(run(args.transfers, args.addresses, args.per_tx, args.gap_blocks, args.repeats)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
