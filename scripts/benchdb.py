"""What the ledger and worker benchmarks share: the PostgreSQL server they measure on, their databases and schemas,
bulk seeding of accounts and lots as the ledger mints them, and pgbench as the yardstick.

The server. Unless a ``--database-url`` names one, a benchmark starts a PostgreSQL cluster of its own (initdb in a
temporary folder, a free port on 127.0.0.1, stopped and removed at the end) with the settings production runs with
(:data:`SERVER_SETTINGS`, the same as docker-compose.yml gives its ``postgres`` service), and measures both the
ledger and pgbench on it. A packaged server's defaults (128 MB of shared buffers, a 1 GB WAL before a forced
checkpoint) are sized for a laptop: with a million lots they measure buffer eviction and full-page writes rather
than the ledger. Durability stays as in production (fsync and synchronous commit on); autovacuum is off so that it
does not land inside one measurement and not another (each phase vacuums and checkpoints first). The server itself
is :class:`PrivateServer`, which the fault tests (tests/faults) also start, with settings of their own, to restart
under load.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL, Connection, Engine, make_url

from services.core.db import make_engine
from services.core.migrate import upgrade
from services.ledger.system_accounts import SystemAccount

SERVER_SETTINGS = {
    "shared_buffers": "2GB",
    "effective_cache_size": "8GB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "wal_buffers": "64MB",
    "maintenance_work_mem": "512MB",
    "autovacuum": "off",
}


def log(message: str) -> None:
    print(f"[benchdb] {message}", file=sys.stderr, flush=True)


# --- the server ----------------------------------------------------------------------------------------------


def server_binaries() -> Path | None:
    """The folder with initdb and pg_ctl: on PATH, or the newest of Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateServer:
    """A PostgreSQL cluster of its own: initdb into a temporary folder, served on a free port of 127.0.0.1 (and a
    Unix socket in its data folder) with ``settings`` as server options, trust authentication for ``postgres``.

    :meth:`stop` and :meth:`start` take it down and bring it back on the same port with the same data (a restart,
    as an operator or a crash-and-recover would); :meth:`close` stops it and removes its folder. As root, the
    cluster belongs to the ``postgres`` user (the server refuses to run as root)."""

    def __init__(self, settings: Mapping[str, str], *, prefix: str = "creditrail-pg-") -> None:
        binaries = server_binaries()
        if binaries is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb) found: install them or pass --database-url")
        self.binaries = binaries
        self.settings = dict(settings)
        self._as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.folder = Path(tempfile.mkdtemp(prefix=prefix))
        self.data, self.logfile = self.folder / "data", self.folder / "server.log"
        if self._as_user:
            shutil.chown(self.folder, "postgres")
        self.port = _free_port()
        self._initialised = False

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [*self._as_user, str(self.binaries / "pg_ctl"), "-D", str(self.data), *args],
            check=True,
            capture_output=True,
        )

    def _options(self) -> str:
        return " ".join(
            [f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-k {self.data}"]
            + [f"-c {name}={value}" for name, value in self.settings.items()]
        )

    def start(self) -> PrivateServer:
        """Create the cluster (the first time) and start the server; returns once it accepts connections."""
        if not self._initialised:
            initdb = [str(self.binaries / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"]
            subprocess.run([*self._as_user, *initdb, "--no-sync"], check=True, capture_output=True)
            self._initialised = True
        self._pg_ctl("-l", str(self.logfile), "-o", self._options(), "-w", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: open sessions are disconnected, open transactions rolled back)."""
        self._pg_ctl("-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def url(self, database: str = "postgres") -> URL:
        return make_url(f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}")

    def log_text(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

    def close(self) -> None:
        """Stop the server (when it runs) and remove its folder."""
        if self._initialised:
            subprocess.run(
                [*self._as_user, str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                capture_output=True,
            )
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PrivateServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()


@contextlib.contextmanager
def bench_server(database_url: str | None, database: str) -> Iterator[tuple[URL, dict[str, str]]]:
    """The URL of ``database`` on the server to measure on, and that server's settings as measured.

    With ``database_url``, that server (and database) as it is; otherwise a private cluster with
    :data:`SERVER_SETTINGS`, gone when the block ends."""
    if database_url is not None:
        url = make_url(database_url).set(drivername="postgresql+psycopg")
        ensure_database(url)
        yield url, {"server": "given"}
        return
    server = PrivateServer(SERVER_SETTINGS, prefix="creditrail-benchdb-")
    try:
        server.start()
        log(
            f"private PostgreSQL server on port {server.port} "
            f"({', '.join(f'{k}={v}' for k, v in SERVER_SETTINGS.items())})"
        )
        url = server.url(database)
        ensure_database(url)
        yield url, {"server": "private", **SERVER_SETTINGS}
    finally:
        server.close()


# --- databases and schemas -----------------------------------------------------------------------------------


def ensure_database(url: URL) -> None:
    """Create the database ``url`` names when it does not exist (through the server's ``postgres`` database)."""
    admin = make_engine(url.set(database="postgres"))
    try:
        with admin.connect() as conn:
            auto = conn.execution_options(isolation_level="AUTOCOMMIT")
            found = auto.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database})
            if found.scalar() is None:
                auto.exec_driver_sql(f'CREATE DATABASE "{url.database}"')
    finally:
        admin.dispose()


def fresh_schema(url: URL, schema: str) -> Engine:
    """Drop and recreate ``schema``, migrate it, and return an engine on it."""
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    admin.dispose()
    engine = make_engine(url, schema=schema)
    upgrade(engine)
    return engine


def maintain(engine: Engine) -> None:
    """VACUUM ANALYZE the engine's schema and take a checkpoint between phases, so that neither lands inside a
    measurement (and the planner knows what was just loaded)."""
    with engine.connect() as conn:
        auto = conn.execution_options(isolation_level="AUTOCOMMIT")
        tables = auto.exec_driver_sql(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
            "WHERE schemaname = current_schema()"
        ).scalars()
        auto.exec_driver_sql(f"VACUUM ANALYZE {', '.join(tables)}")
        auto.exec_driver_sql("CHECKPOINT")


# --- seeding -------------------------------------------------------------------------------------------------


def reserve_ids(conn: Connection, table: str, count: int) -> int:
    """Take ``count`` consecutive ids from ``table``'s sequence; returns the first (nothing else writes now)."""
    sequence = conn.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}).scalar_one()
    first = int(conn.execute(text("SELECT nextval(:s)"), {"s": sequence}).scalar_one())
    conn.execute(text("SELECT setval(:s, :last)"), {"s": sequence, "last": first + count - 1})
    return first


def seed_accounts(conn: Connection, count: int, now: datetime) -> int:
    """``count`` customer accounts with consecutive ids; returns the first id."""
    first = reserve_ids(conn, "accounts", count)
    conn.execute(
        text(
            "INSERT INTO accounts (id, kind, code, name, debt_credits, created_at) "
            "SELECT :first + g, 'customer', NULL, 'bench ' || (:first + g), 0, :now "
            "FROM generate_series(0, :count - 1) AS g"
        ),
        {"first": first, "count": count, "now": now},
    )
    return first


# Due over the last 30 days, in an order that interleaves the accounts (7919 is prime): the lots the expiry
# benchmarks expire.
DUE_EXPIRES_SQL = ":now - interval '1 day' - ((g * 7919) % 2592000) * interval '1 second'"


def seed_lots(
    conn: Connection,
    *,
    tag: str,
    first_account: int,
    accounts: int,
    lots: int,
    lot_credits: int,
    expires_sql: str,
    now: datetime,
) -> None:
    """Mint ``lots`` card lots of ``lot_credits`` each, round-robin over the accounts, as the ledger would: per lot
    one mint transaction funded by ``funding:card`` (two entries summing to zero), the lot, its mint movement and
    its entry in the expiry queue.

    ``expires_sql`` is the lot's expiry as SQL over ``g`` (the lot's number) and ``:now``; every lot was credited
    twelve months before it expires. Generated on the server, so a million lots take seconds.
    """
    if conn.execute(text("SELECT current_setting('is_superuser') = 'on'")).scalar_one():
        # Skip the per-row foreign-key checks for the rest of this transaction (a bulk load's usual step, and
        # most of its time): every row references the system account or a row written just before it here.
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
    first_txn = reserve_ids(conn, "ledger_transactions", lots)
    first_lot = reserve_ids(conn, "lots", lots)
    params = {
        "tag": tag,
        "first_account": first_account,
        "accounts": accounts,
        "lots": lots,
        "credits": lot_credits,
        "first_txn": first_txn,
        "first_lot": first_lot,
        "now": now,
    }
    conn.exec_driver_sql("DROP TABLE IF EXISTS bench_seed")
    statements = [
        "CREATE TEMP TABLE bench_seed AS "
        "SELECT g, :first_account + (g % :accounts) AS account_id, "
        "'cs_bench_' || CAST(:tag AS text) || '_' || g AS external_ref, "
        "due.expires_at - interval '12 months' AS credited_at, due.expires_at "
        f"FROM generate_series(CAST(0 AS bigint), :lots - 1) AS g, LATERAL (SELECT {expires_sql} AS expires_at) AS due",
        "INSERT INTO ledger_transactions "
        "(id, kind, idempotency_key, request_hash, account_id, created_at, description, details) "
        "SELECT :first_txn + g, 'mint', 'mint:card:' || external_ref, NULL, account_id, credited_at, NULL, '{}' "
        "FROM bench_seed",
        "INSERT INTO ledger_entries (transaction_id, account_id, amount_credits, created_at) "
        f"SELECT :first_txn + g, {SystemAccount.FUNDING_CARD}, -CAST(:credits AS bigint), credited_at "
        "FROM bench_seed "
        "UNION ALL SELECT :first_txn + g, account_id, :credits, credited_at FROM bench_seed",
        "INSERT INTO lots (id, account_id, rail, external_ref, cost_basis_cents, cost_basis_usdc_units, promotional, "
        "credits, remaining_credits, reserved_credits, expired_credits, clawed_back_credits, credited_at, expires_at, "
        "mint_transaction_id, details) "
        "SELECT :first_lot + g, account_id, 'card', external_ref, :credits, NULL, false, :credits, :credits, 0, 0, 0, "
        "credited_at, expires_at, :first_txn + g, '{}' FROM bench_seed",
        "INSERT INTO lot_movements (lot_id, transaction_id, kind, amount_credits, hold_id, created_at) "
        "SELECT :first_lot + g, :first_txn + g, 'mint', :credits, NULL, credited_at FROM bench_seed",
        "INSERT INTO lot_expiry_queue (expires_at, lot_id, account_id) "
        "SELECT expires_at, :first_lot + g, account_id FROM bench_seed",
        "DROP TABLE bench_seed",
    ]
    for statement in statements:
        conn.execute(text(statement), params)


# --- pgbench -------------------------------------------------------------------------------------------------


def _pgbench_args(url: URL) -> tuple[list[str], dict[str, str]]:
    args = ["-h", url.host or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres"]
    env = {**os.environ, "PGPASSWORD": str(url.password)} if url.password else dict(os.environ)
    return args, env


def pgbench_binary() -> str:
    """pgbench on PATH, or the one beside the server binaries."""
    found = shutil.which("pgbench")
    if found:
        return found
    binaries = server_binaries()
    if binaries is not None and (binaries / "pgbench").exists():
        return str(binaries / "pgbench")
    raise RuntimeError("pgbench not found: install PostgreSQL's client programs")


def pgbench_init(url: URL, scale: int) -> None:
    """pgbench's tables at ``scale`` in the database ``url`` names."""
    args, env = _pgbench_args(url)
    subprocess.run(
        [pgbench_binary(), *args, "-i", "-s", str(scale), "-q", url.database or ""],
        check=True,
        env=env,
        capture_output=True,
    )


def pgbench_tps(url: URL, clients: int, seconds: float) -> float:
    """tpcb-like transactions per second at ``clients`` clients (pgbench's own figure, connections excluded)."""
    args, env = _pgbench_args(url)
    duration = str(max(1, round(seconds)))
    done = subprocess.run(
        [pgbench_binary(), *args, "-c", str(clients), "-j", str(clients), "-T", duration, "-n", url.database or ""],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    )
    match = re.search(r"^tps = ([0-9.]+)", done.stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no tps in pgbench output:\n{done.stdout}\n{done.stderr}")
    return float(match.group(1))
