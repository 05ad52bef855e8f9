"""Process orchestration for the fault tests: a private PostgreSQL server, a local chain with the test token,
customers with keys and deposit addresses, and the API and workers as processes of their own.

- :class:`ServiceProcess` is one ``creditrail`` command in a process of its own (its output kept in a log file per
  start): started, waited for until ready (the API answers ``/healthz``; a worker logged ``worker_started``, both
  polled with a deadline), killed with SIGKILL, started again. Each process names itself to PostgreSQL
  (``application_name``), so a test can see when it has a transaction open.
- :class:`FaultStack` holds the rest: the private server (scripts/benchdb.py's :class:`PrivateServer`, never the
  shared one), the schema migrated once, anvil with the test token, the customers, and every process started for
  the test. :meth:`FaultStack.report` gathers the tail of every log, the server's included, for a failing test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx
from sqlalchemy import text
from sqlalchemy.engine import Engine

from chain.devchain import LocalToken, mine, open_dev_token
from chain.node import DEFAULT_CHAIN_ID, AnvilNode, free_port
from chain.rpc import ChainRpc
from scripts.benchdb import PrivateServer, ensure_database
from services.apikeys.service import issue_key
from services.core.db import make_engine, unit_of_work
from services.core.migrate import upgrade
from services.core.money import usdc_units_to_credits
from services.core.settings import ChainSettings, Settings
from services.dev import dev_xpub
from services.ledger.accounts import create_customer_account
from services.ledger.balance import get_balance
from services.ledger.invariants import check_invariants
from services.ledger.minting import grant
from services.ledger.system_accounts import SystemAccount
from services.usdc.addresses import ensure_deposit_address

CREDITRAIL = Path(sys.executable).parent / "creditrail"
DATABASE = "creditrail"
# A test's server: no fsync to the disk other test runs share. Only an operating system crash needs it: a stopped or
# crashed server (an immediate stop) finds every WAL record it wrote, in the operating system's cache, when it starts.
SERVER_SETTINGS = {"fsync": "off", "max_connections": "200"}
CONFIRMATIONS = 2
LOG_TAIL_LINES = 60


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def scalar(engine: Engine, sql: str, **params: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one() or 0)


# --- a process of its own ------------------------------------------------------------------------------------


@dataclass
class ServiceProcess:
    """One ``creditrail`` command (``run``, ``worker``) in a process of its own; every start logs to a file of its
    own in ``log_dir``."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    log_paths: list[Path] = field(default_factory=list)
    _log: IO[bytes] | None = None

    def start(self) -> ServiceProcess:
        assert not self.alive(), f"{self.name} is running"
        self.starts += 1
        path = self.log_dir / f"{self.name}.{self.starts}.log"
        self.log_paths.append(path)
        self._log = path.open("wb")
        self.process = subprocess.Popen(
            [str(CREDITRAIL), *self.args],
            cwd=self.log_dir,  # no .env file of the project's is read
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash or the kernel's OOM killer would."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)
            self.kills += 1
        self._close_log()

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM and a wait; SIGKILL when it does not exit in time."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self, start: int | None = None) -> str:
        """What the process printed: in its ``start``-th start (1-based), or the latest."""
        path = self.log_paths[(start or self.starts) - 1]
        return path.read_text(errors="replace") if path.exists() else ""

    def log_lines(self, start: int | None = None) -> list[dict[str, Any]]:
        """The JSON lines of a start's log (the worker's structured log)."""
        lines = []
        for raw in self.log_text(start).splitlines():
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(line, dict):
                lines.append(line)
        return lines

    def tail(self) -> str:
        if not self.log_paths:
            return f"--- {self.name}: never started"
        parts = []
        for number in range(1, self.starts + 1):
            lines = self.log_text(number).splitlines()[-LOG_TAIL_LINES:]
            parts.append(f"--- {self.name}, start {number} ({self.log_paths[number - 1].name}):\n" + "\n".join(lines))
        return "\n".join(parts)

    def _exited(self) -> str | None:
        if self.process is not None and self.process.poll() is not None:
            return f"{self.name} exited with {self.process.returncode}:\n{self.tail()}"
        return None

    def wait_ready(self, timeout: float = 60) -> ServiceProcess:
        deadline = time.monotonic() + timeout
        while not self.ready():
            exited = self._exited()
            if exited:
                raise AssertionError(exited)
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not ready after {timeout:g} s:\n{self.tail()}")
            time.sleep(0.05)
        return self

    def ready(self) -> bool:
        raise NotImplementedError


@dataclass
class ApiProcess(ServiceProcess):
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False


@dataclass
class WorkerProcess(ServiceProcess):
    def ready(self) -> bool:
        return any(line.get("event") == "worker_started" for line in self.log_lines())

    def runs(self, job: str | None = None) -> list[dict[str, Any]]:
        """Every run this start logged (one line per run: job, outcome, items, error)."""
        return [line for line in self.log_lines() if line.get("event") == "job_run" and job in (None, line["job"])]


# --- the stack -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Customer:
    account_id: int
    key: str
    address: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


class FaultStack:
    """A private PostgreSQL server with the schema migrated, anvil with the test token, and the processes a test
    starts against them. Close it to stop everything (see :meth:`report` for the logs)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[ServiceProcess] = []
        self.extra_env: dict[str, str] = {}
        # What was started so far, closed in reverse (also when starting the rest fails).
        self._started = contextlib.ExitStack()
        try:
            self._start()
        except BaseException:
            self._started.close()
            raise

    def _start(self) -> None:
        self.server = PrivateServer(SERVER_SETTINGS, prefix="creditrail-faults-")
        self._started.callback(self.server.close)
        self.server.start()
        self._started.callback(self._keep_server_log)
        url = self.server.url(DATABASE)
        ensure_database(url)
        self.engine = make_engine(url, pool_size=4)
        self._started.callback(self.engine.dispose)
        upgrade(self.engine)
        self.node = self._started.enter_context(AnvilNode(chain_id=DEFAULT_CHAIN_ID, slots_in_an_epoch=1))
        self.rpc = ChainRpc(self.node.url, expected_chain_id=DEFAULT_CHAIN_ID)
        self._started.callback(self.rpc.close)
        self.token: LocalToken = open_dev_token(self.rpc, None, 10**12)
        self.chain = ChainSettings(
            chain_id=DEFAULT_CHAIN_ID,
            name="fault test anvil",
            rpc_url=self.node.url,
            usdc_address=self.token.address,
            confirmations=CONFIRMATIONS,
            start_block=0,
        )
        self.settings = Settings(
            environment="test",
            database_url=url.render_as_string(hide_password=False),
            usdc_xpub=dev_xpub(),
            usdc_chains=[self.chain],
        )
        with unit_of_work(self.engine) as session:
            self.admin_key = issue_key(session, role="admin", account_id=None, name="faults admin").key

    # --- people ------------------------------------------------------------------------------------------------

    def customers(self, count: int, *, granted_credits: int = 0) -> list[Customer]:
        made = []
        with unit_of_work(self.engine) as session:
            for number in range(count):
                account_id = create_customer_account(session, name=f"customer {number}")
                key = issue_key(session, role="customer", account_id=account_id).key
                address = ensure_deposit_address(
                    session, self.settings, account_id=account_id, chain_id=self.chain.chain_id
                ).address
                if granted_credits:
                    grant(
                        session,
                        account_id=account_id,
                        amount_credits=granted_credits,
                        idempotency_key=f"faults:{account_id}",
                    )
                made.append(Customer(account_id, key, address))
        return made

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    # --- processes ---------------------------------------------------------------------------------------------

    def env(self, name: str) -> dict[str, str]:
        """The environment of process ``name``: the private server (the process named in its connections), the
        chain, quick job intervals and backoffs, and whatever the test added in :attr:`extra_env`."""
        url = self.server.url(DATABASE).update_query_dict({"application_name": name})
        return {
            "CREDITRAIL_ENVIRONMENT": "test",
            "CREDITRAIL_DATABASE_URL": url.render_as_string(hide_password=False),
            "CREDITRAIL_DATABASE_POOL_SIZE": "5",
            "CREDITRAIL_USDC_XPUB": self.settings.usdc_xpub,
            "CREDITRAIL_USDC_CHAINS": json.dumps([self.chain.model_dump()]),
            "CREDITRAIL_USDC_POLL_INTERVAL_SECONDS": "0.2",
            "CREDITRAIL_WORKER_LOT_EXPIRY_INTERVAL_SECONDS": "1",
            "CREDITRAIL_WORKER_HOLD_EXPIRY_INTERVAL_SECONDS": "1",
            "CREDITRAIL_WORKER_BACKOFF_INITIAL_SECONDS": "0.1",
            "CREDITRAIL_WORKER_BACKOFF_MAX_SECONDS": "0.5",
            "CREDITRAIL_WORKER_LOG_LEVEL": "INFO",
            **self.extra_env,
        }

    def api(self, name: str = "api") -> ApiProcess:
        port = free_port()
        process = ApiProcess(
            name, ["run", "--host", "127.0.0.1", "--port", str(port)], self.env(name), self.log_dir, port=port
        )
        self.processes.append(process)
        return process

    def worker(self, name: str, jobs: list[str]) -> WorkerProcess:
        env = self.env(name) | {"CREDITRAIL_WORKER_JOBS": json.dumps(jobs)}
        process = WorkerProcess(name, ["worker"], env, self.log_dir)
        self.processes.append(process)
        return process

    def in_transaction(self, process: ServiceProcess) -> bool:
        """Whether ``process`` has a database transaction open right now."""
        return bool(
            scalar(
                self.engine,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name AND xact_start IS NOT NULL",
                name=process.name,
            )
        )

    # --- the chain ---------------------------------------------------------------------------------------------

    def deposit(self, customer: Customer, amount_usdc_units: int) -> str:
        """Send test USDC to the customer's deposit address; returns the lot reference it mints under (chain id,
        tx hash, log index)."""
        receipt = self.token.transfer(customer.address, amount_usdc_units)
        (log,) = receipt["logs"]
        return f"{self.chain.chain_id}:{receipt['transactionHash'].lower()}:{int(log['logIndex'], 16)}"

    def confirm_all(self) -> None:
        """Blocks on top of the last deposit, enough to confirm it."""
        mine(self.rpc, CONFIRMATIONS + 1)

    # --- reading -----------------------------------------------------------------------------------------------

    def job_health(self, api: ApiProcess, job: str) -> dict[str, Any]:
        response = httpx.get(f"{api.url}/v1/admin/jobs/{job}", headers=self.admin_headers, timeout=10)
        assert response.status_code == 200, response.text
        health: dict[str, Any] = response.json()
        return health

    def succeeded_since(self, api: ApiProcess, job: str, moment: datetime) -> bool:
        health = self.job_health(api, job)
        succeeded = health["last_succeeded_at"]
        return (
            succeeded is not None
            and datetime.fromisoformat(succeeded) > moment
            and health["consecutive_failures"] == 0
            and health["status"] == "ok"
        )

    def violations(self) -> list[str]:
        with unit_of_work(self.engine) as session:
            return [f"{v.invariant} {v.subject}: {v.detail}" for v in check_invariants(session)]

    def lots_by_reference(self, rail: str) -> dict[str, int]:
        """Lots of ``rail`` counted by external reference."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT external_ref, count(*) FROM lots WHERE rail = :rail GROUP BY external_ref"),
                {"rail": rail},
            ).all()
        return {str(ref): int(count) for ref, count in rows}

    # --- the end -----------------------------------------------------------------------------------------------

    def report(self) -> str:
        """The tail of every process's logs and of the server's log."""
        server = self.server.log_text().splitlines()[-LOG_TAIL_LINES:]
        return "\n".join([*(p.tail() for p in self.processes), "--- postgresql:", *server])

    def _keep_server_log(self) -> None:
        (self.log_dir / "postgresql.log").write_text(self.server.log_text())

    def close(self) -> None:
        """Stop every process, then the chain and the server (its log kept beside the processes')."""
        try:
            for process in self.processes:
                process.stop()
        finally:
            self._started.close()


# --- clients that retry --------------------------------------------------------------------------------------


class Progress:
    """What the load's threads did so far, for the test's conditions to wait on: counters by name, failures seen
    (when, what), and errors that ended a thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.failures: list[tuple[float, str]] = []
        self.errors: list[BaseException] = []

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + amount

    def count(self, name: str) -> int:
        with self._lock:
            return self.counts.get(name, 0)

    def failed(self, what: str) -> None:
        with self._lock:
            self.failures.append((time.monotonic(), what))

    def failure_texts(self) -> list[str]:
        with self._lock:
            return [what for _, what in self.failures]

    def failures_since(self, moment: float) -> int:
        with self._lock:
            return sum(1 for at, _ in self.failures if at >= moment)

    def thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        """A daemon thread running ``target``; an exception that ends it is kept in :attr:`errors`."""

        def run() -> None:
            try:
                target()
            except BaseException as exc:
                with self._lock:
                    self.errors.append(exc)
                raise

        return threading.Thread(target=run, name=name, daemon=True)


# How a failure to reach the API at all (refused, reset, no answer) is noted, as against an answer of 5xx.
TRANSPORT_FAILURE = "no answer:"


def error_code(response: httpx.Response) -> str:
    """The ``error.code`` of an error answer (or its first characters when it has none)."""
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def post_until_answered(
    client: httpx.Client,
    path: str,
    progress: Progress,
    *,
    headers: dict[str, str],
    json_body: Any = None,
    content: bytes | None = None,
    timeout: float = 90,
) -> httpx.Response:
    """POST until the API answers with anything but a 5xx, the same request (and Idempotency-Key) each time, as a
    client does whose request failed or whose answer was lost; every failure is noted in ``progress``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = client.post(path, headers=headers, json=json_body, content=content)
            if response.status_code < 500:
                return response
            failure = f"{path}: {response.status_code} {error_code(response)}"
        except httpx.TransportError as exc:
            failure = f"{path}: {TRANSPORT_FAILURE} {type(exc).__name__}: {exc}"
        progress.failed(failure)
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} still failing after {timeout:g} s: {failure}")
        time.sleep(0.05)  # a client's pause before it tries again


# --- what the load did, and checking it was applied once ------------------------------------------------------


@dataclass(frozen=True)
class Spent:
    account_id: int
    key: str
    amount_credits: int
    transaction_id: int


@dataclass(frozen=True)
class Deposited:
    account_id: int
    reference: str
    amount_usdc_units: int


def spend(
    client: httpx.Client, progress: Progress, customer: Customer, key: str, amount_credits: int, *, replay: bool
) -> tuple[Spent, int | None]:
    """A charge over HTTP, retried with its key until answered; with ``replay``, sent once more after its answer
    (the transaction id the replay named, which must be the same)."""
    headers = customer.headers | {"Idempotency-Key": key}
    body = {"amount_credits": amount_credits}
    progress.add("spend_attempts")
    response = post_until_answered(client, "/v1/charges", progress, headers=headers, json_body=body)
    assert response.status_code == 201, response.text
    spent = Spent(customer.account_id, key, amount_credits, response.json()["transaction_id"])
    progress.add("spends")
    if not replay:
        return spent, None
    again = post_until_answered(client, "/v1/charges", progress, headers=headers, json_body=body)
    assert again.status_code == 201, again.text
    assert again.json()["replayed"] is True, again.text
    return spent, int(again.json()["transaction_id"])


def assert_spent_once(stack: FaultStack, spent: list[Spent]) -> None:
    """Every spend is one journal transaction under its key (the one its client was told of), and nothing else was
    spent: usage revenue holds exactly their sum."""
    with stack.engine.connect() as conn:
        spends: dict[str, int] = dict(
            conn.execute(text("SELECT idempotency_key, id FROM ledger_transactions WHERE kind = 'spend'")).all()
        )
        revenue = conn.execute(
            text("SELECT coalesce(sum(amount_credits), 0) FROM ledger_entries WHERE account_id = :revenue"),
            {"revenue": SystemAccount.REVENUE_USAGE},
        ).scalar_one()
    assert spends == {f"spend:{s.account_id}:{s.key}": s.transaction_id for s in spent}
    assert revenue == sum(s.amount_credits for s in spent)


def assert_deposited_once(stack: FaultStack, deposited: list[Deposited]) -> None:
    """Every deposit credited: one lot under its chain reference, for what it carried; no other USDC lot."""
    assert scalar(stack.engine, "SELECT count(*) FROM usdc_deposits WHERE status <> 'credited'") == 0
    assert stack.lots_by_reference("usdc") == {d.reference: 1 for d in deposited}
    with stack.engine.connect() as conn:
        lot_credits: dict[str, int] = dict(
            conn.execute(text("SELECT external_ref, credits FROM lots WHERE rail = 'usdc'")).all()
        )
    assert lot_credits == {d.reference: usdc_units_to_credits(d.amount_usdc_units)[0] for d in deposited}


def assert_balances(stack: FaultStack, expected_credits: dict[int, int]) -> None:
    """Each customer holds what it was expected to (nothing reserved, no debt)."""
    with unit_of_work(stack.engine) as session:
        found = {}
        for account_id in expected_credits:
            balance = get_balance(session, account_id)
            found[account_id] = (balance.available_credits, balance.reserved_credits, balance.debt_credits)
    assert found == {account_id: (credits, 0, 0) for account_id, credits in expected_credits.items()}
