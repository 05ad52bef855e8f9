"""Benchmark of buying credits over x402 end to end on a local anvil and PostgreSQL, beside the raw rate of
``transferWithAuthorization`` transactions the same node accepts in the same run.

Starts its own anvil, deploys TestUSDC, serves the app (uvicorn, ``--workers`` processes of its own, the built-in
facilitator relaying from one development account) over a database of its own (``creditrail_bench_x402``, dropped
and created again each run), and funds ``--concurrency`` payers. Then, interleaved ``--repeats`` times so both see
the same machine load:

- raw: ``--purchases`` EIP-3009 authorizations, each signed by a payer and relayed from another development account,
  ``--concurrency`` at a time, each sent and waited for until its receipt (``raw_tx_per_s``): what the node takes
  when nothing else is done;
- x402: ``--purchases`` purchases by ``--concurrency`` clients at a time, each the whole exchange an agent makes: the
  402 offer, the authorization signed by the x402 package's client scheme, the paid request, settled, observed and
  minted, and the 200 (``x402_purchases_per_s``; target: at least half the raw rate), with the latency from sending
  the signed request to the 200 answer (``latency_ms_p50``, ``latency_ms_p99``) and the server's CPU time per
  purchase (``server_cpu_ms_per_purchase``: the machine's load changes the wall clock, not this).

Prints one JSON line on stdout; progress goes to stderr.

    .venv/bin/python -m scripts.bench_x402 [--purchases 200] [--concurrency 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from bip32 import BIP32
from eth_account import Account
from eth_account.signers.local import LocalAccount
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from x402.http.utils import decode_payment_required_header
from x402.mechanisms.evm import EthAccountSigner
from x402.mechanisms.evm.exact import ExactEvmClientScheme
from x402.schemas import PaymentPayload, PaymentRequirements

from chain.addresses import checksum
from chain.devchain import DevWallet, LocalToken, dev_account, mine, wait_for_receipt
from chain.node import AnvilNode, free_port
from chain.rpc import ChainRpc
from services.core.db import make_engine
from services.core.migrate import upgrade
from services.core.settings import ChainSettings, Settings
from services.x402.token import calldata

CHAIN_ID = 31337
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/creditrail_bench_x402"
CREDITS = 500
RELAYER_ACCOUNT = 9  # the app's built-in facilitator
RAW_RELAYER_ACCOUNT = 8  # the raw measurement's
ROOT = Path(__file__).resolve().parent.parent


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
    engine = make_engine(target, pool_size=40)
    upgrade(engine)
    return engine


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def sign(account: LocalAccount, requirement: PaymentRequirements) -> str:
    """A PAYMENT-SIGNATURE header, signed by the x402 package's client scheme (what its httpx client sends)."""
    inner = ExactEvmClientScheme(EthAccountSigner(account)).create_payment_payload(requirement)
    payload = PaymentPayload(x402_version=2, payload=inner, accepted=requirement)
    return base64.b64encode(payload.model_dump_json(by_alias=True, exclude_none=True).encode()).decode()


class Served:
    """The app served by uvicorn in processes of its own (``workers``), the built-in facilitator relaying from one
    key: the clients, their signing and the raw measurement do not share its interpreter."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.port = free_port()
        chains = [json.loads(chain.model_dump_json()) for chain in settings.usdc_chains]
        self.env = os.environ | {
            "CREDITRAIL_ENVIRONMENT": "test",
            "CREDITRAIL_DATABASE_URL": settings.database_url,
            "CREDITRAIL_DATABASE_POOL_SIZE": "40",
            "CREDITRAIL_AUTO_MIGRATE": "false",  # migrated by the benchmark, before several workers start
            "CREDITRAIL_USDC_XPUB": settings.usdc_xpub,
            "CREDITRAIL_USDC_CHAINS": json.dumps(chains),
            "CREDITRAIL_X402_RELAYER_KEY": settings.x402_relayer_key.get_secret_value(),
            "CREDITRAIL_LOG_LEVEL": "WARNING",
        }
        self.command = [
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
            str(self.port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env)
        deadline = time.monotonic() + 90
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"the API exited with {self.process.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return f"http://127.0.0.1:{self.port}/v1/x402/credits"
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.process.kill()
                raise SystemExit("the API did not start")
            time.sleep(0.1)

    def cpu_seconds(self) -> float:
        """CPU time of the server's processes so far (from /proc)."""
        if self.process is None:
            return 0.0
        pids = [self.process.pid]
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
            pids += [int(pid) for pid in children]
        except OSError:
            pass
        return sum(_proc_cpu_seconds(pid) for pid in pids)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _proc_cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_concurrently(count: int, concurrency: int, task: Callable[[int], float | None]) -> tuple[float, list[float]]:
    """``task(i)`` for i < count, ``concurrency`` at a time; (wall seconds, the latencies the tasks returned)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(task, range(count)))
    return time.perf_counter() - started, [r for r in results if r is not None]


def raw_round(
    rpc: ChainRpc, token: LocalToken, payers: list[LocalAccount], relayer: DevWallet, count: int, concurrency: int
) -> float:
    """Seconds for ``count`` transferWithAuthorization transactions, signed and relayed ``concurrency`` at a time,
    each waited for until mined."""
    recipient = Account.create().address
    domain = {
        "name": "Test USD Coin",
        "version": "2",
        "chainId": CHAIN_ID,
        "verifyingContract": checksum(token.address),
    }
    types = {
        "TransferWithAuthorization": [
            {"name": "from", "type": "address"},
            {"name": "to", "type": "address"},
            {"name": "value", "type": "uint256"},
            {"name": "validAfter", "type": "uint256"},
            {"name": "validBefore", "type": "uint256"},
            {"name": "nonce", "type": "bytes32"},
        ]
    }
    lock = threading.Lock()
    gas = 150_000

    def one(index: int) -> None:
        payer = payers[index % len(payers)]
        nonce = os.urandom(32)
        message = {
            "from": payer.address,
            "to": recipient,
            "value": 5_000_000,
            "validAfter": 0,
            "validBefore": int(time.time()) + 300,
            "nonce": nonce,
        }
        signed = payer.sign_typed_data(domain, types, message)
        data = calldata(
            "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)",
            ["address", "address", "uint256", "uint256", "uint256", "bytes32", "uint8", "bytes32", "bytes32"],
            [
                payer.address,
                recipient,
                5_000_000,
                0,
                message["validBefore"],
                nonce,
                signed.v,
                signed.r.to_bytes(32, "big"),
                signed.s.to_bytes(32, "big"),
            ],
        )
        with lock:
            tx = relayer.sign(token.address, data, gas=gas)
            relayer.send_signed(tx)
        wait_for_receipt(rpc, tx.tx_hash)

    seconds, _ = run_concurrently(count, concurrency, one)
    return seconds


def x402_round(url: str, payers: list[LocalAccount], count: int, concurrency: int) -> tuple[float, list[float]]:
    """Seconds for ``count`` purchases, ``concurrency`` clients at a time, and each one's latency from sending the
    signed request to its 200."""
    clients = [httpx.Client(timeout=60) for _ in range(concurrency)]
    local = threading.local()
    counter = iter(range(concurrency))
    counter_lock = threading.Lock()

    def one(index: int) -> float:
        if not hasattr(local, "client"):
            with counter_lock:
                local.client = clients[next(counter)]
        client: httpx.Client = local.client
        payer = payers[index % len(payers)]
        body = {"credits": CREDITS, "wallet_address": payer.address}
        offer = client.post(url, json=body)
        if offer.status_code != 402:
            raise SystemExit(f"expected a 402 offer, got {offer.status_code}: {offer.text[:300]}")
        requirement = decode_payment_required_header(offer.headers["PAYMENT-REQUIRED"]).accepts[0]
        assert isinstance(requirement, PaymentRequirements)
        header = sign(payer, requirement)
        started = time.perf_counter()
        paid = client.post(url, json=body, headers={"PAYMENT-SIGNATURE": header})
        latency = time.perf_counter() - started
        if paid.status_code != 200:
            raise SystemExit(f"expected a 200, got {paid.status_code}: {paid.text[:300]}")
        return latency

    try:
        return run_concurrently(count, concurrency, one)
    finally:
        for client in clients:
            client.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    engine = fresh_database(args.database_url)
    with AnvilNode(chain_id=CHAIN_ID, slots_in_an_epoch=1) as node:
        rpc = ChainRpc(node.url, expected_chain_id=CHAIN_ID, timeout_seconds=60)
        owner = DevWallet(rpc, dev_account(0))
        token = LocalToken.deploy(owner)
        payers = [Account.create() for _ in range(args.concurrency)]
        for payer in payers:
            token.mint(payer.address, 10**15)
        mine(rpc, 2)
        chain = ChainSettings(
            chain_id=CHAIN_ID,
            name="bench",
            rpc_url=node.url,
            usdc_address=token.address,
            confirmations=3,
            start_block=rpc.block_number() + 1,
        )
        settings = Settings(
            environment="test",
            database_url=args.database_url,
            usdc_xpub=str(BIP32.from_seed(os.urandom(32)).get_xpub_from_path("m/44'/60'/0'")),
            usdc_chains=[chain],
            x402_relayer_key=SecretStr(dev_account(RELAYER_ACCOUNT).key.hex()),
        )
        raw_relayer = DevWallet(rpc, dev_account(RAW_RELAYER_ACCOUNT))
        served = Served(settings, args.workers)
        with served as url:
            progress("warming up ...")
            x402_round(url, payers, args.concurrency, args.concurrency)
            raw_round(rpc, token, payers, raw_relayer, args.concurrency, args.concurrency)
            raw_rates, x402_rates, latencies, server_cpu = [], [], [], []
            for repeat in range(args.repeats):
                seconds = raw_round(rpc, token, payers, raw_relayer, args.purchases, args.concurrency)
                raw_rates.append(args.purchases / seconds)
                cpu_before = served.cpu_seconds()
                seconds, round_latencies = x402_round(url, payers, args.purchases, args.concurrency)
                server_cpu.append((served.cpu_seconds() - cpu_before) / args.purchases)
                x402_rates.append(args.purchases / seconds)
                latencies.extend(round_latencies)
                progress(f"round {repeat + 1}: raw {raw_rates[-1]:.1f} tx/s, x402 {x402_rates[-1]:.1f} purchases/s")
    engine.dispose()
    raw = statistics.median(raw_rates)
    x402 = statistics.median(x402_rates)
    return {
        "benchmark": "x402",
        "purchases": args.purchases,
        "concurrency": args.concurrency,
        "repeats": args.repeats,
        "raw_tx_per_s": round(raw, 1),
        "x402_purchases_per_s": round(x402, 1),
        "x402_to_raw_ratio": round(x402 / raw, 3),
        "target_ratio": 0.5,
        "latency_ms_p50": round(statistics.median(latencies) * 1e3, 1),
        "latency_ms_p99": round(percentile(latencies, 0.99) * 1e3, 1),
        "server_cpu_ms_per_purchase": round(statistics.median(server_cpu) * 1e3, 1),
        "server_workers": args.workers,
        "load_average_1m": round(os.getloadavg()[0], 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--purchases", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="the API's processes (uvicorn workers)")
    parser.add_argument("--database-url", default=os.environ.get("CREDITRAIL_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    args = parser.parse_args(argv)
    print(json.dumps(run(args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
