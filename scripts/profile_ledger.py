"""Where the ledger's time goes on PostgreSQL, and what other ways of doing the same writes would gain.

    .venv/bin/python -m scripts.profile_ledger [--database-url URL] [--seconds S]

1. One process, one operation at a time: for a spend, a hold, a capture and an expiry batch, the round trips
   (counted in a libpq protocol trace), the client's CPU, the database backend's CPU and the wall time per
   operation, and where the client's CPU goes (a CPU-time profile grouped by package).
2. The spend done other ways over the same tables, at 1, 4 and 8 client processes and on one hot account, next to
   pgbench in the same run: the ledger as it is; without the pool's pre-ping; on a Core connection instead of an
   ORM session; the same statements sent straight through psycopg; the same writes in two round trips (psycopg
   pipeline mode, the writes in one statement); and the ledger as it is on lots whose indexes allow HOT updates.
3. Expiry: the ledger's batch against the same batch done as one set-based statement, on the same due lots.

Everything runs in schemas of its own (``bench_profile``, ``bench_profile_hot``) of the benchmark's database; every
ledger invariant is checked at the end. Prints one JSON line; progress and the profiles go to stderr.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import itertools
import json
import os
import pstats
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, cast

from psycopg.pq import Trace
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlmodel import Session, create_engine

from scripts.bench_ledger import (
    CLIENT_COUNTS,
    DEFAULT_URL,
    DUE_LOT_CREDITS,
    HOT_CLIENTS,
    PGBENCH_DATABASE,
    ClientJob,
    client_engine,
    ratio,
    run_clients,
    spend_op,
)
from scripts.benchdb import ensure_database, fresh_schema, maintain, pgbench_init, pgbench_tps, seed_accounts, seed_lots
from services.core.clock import utcnow
from services.core.db import make_engine, unit_of_work
from services.ledger import expiry, holds, spending
from services.ledger.common import fingerprint
from services.ledger.invariants import check_invariants
from services.ledger.system_accounts import SystemAccount

SCHEMA = "bench_profile"
HOT_SCHEMA = "bench_profile_hot"
ACCOUNTS = 10_000
EXPIRY_BATCH_LOTS = 5_000


def log(message: str) -> None:
    print(f"[profile] {message}", file=sys.stderr, flush=True)


# --- measuring one process -----------------------------------------------------------------------------------


def backend_cpu_s(pid: int) -> float:
    """User plus system CPU of a server process (same machine), from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def breakdown(engine: Engine, ops: Sequence[Callable[[], Any]], *, raw: bool = False) -> dict[str, float]:
    """Wall time, client CPU and backend CPU per operation, in milliseconds (the engine has one connection, or,
    with ``raw``, the operations use the psycopg connection the prototypes keep)."""
    pid = int(_driver_connection(engine).info.backend_pid) if raw else backend_pid(engine)
    server, client, wall = backend_cpu_s(pid), time.process_time(), time.perf_counter()
    for op in ops:
        op()
    count = len(ops)
    return {
        "wall_ms": round((time.perf_counter() - wall) / count * 1000, 3),
        "client_cpu_ms": round((time.process_time() - client) / count * 1000, 3),
        "server_cpu_ms": round((backend_cpu_s(pid) - server) / count * 1000, 3),
    }


def round_trips(engine: Engine, op: Callable[[], Any], *, raw: bool = False) -> dict[str, int]:
    """Round trips (the client waiting for the server) and statements of one operation, from a libpq trace of the
    engine's pooled connection (or, with ``raw``, of the psycopg connection the prototypes keep)."""
    if raw:
        pgconn = _driver_connection(engine).pgconn
    else:
        pooled = engine.raw_connection()
        pgconn = cast(Any, pooled.driver_connection).pgconn
        pooled.close()  # back to the pool: the next checkout is this same connection
    fd, path = tempfile.mkstemp(suffix=".trace")
    try:
        pgconn.trace(fd)
        pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS)
        op()
        pgconn.untrace()
        os.close(fd)
        with open(path) as trace:
            directions = [line.split("\t", 1)[0] for line in trace if line[:2] in ("F\t", "B\t")]
            trace.seek(0)
            statements = sum(1 for line in trace if "\tQuery\t" in line or "\tExecute\t" in line)
    finally:
        os.unlink(path)
    trips = sum(1 for pair in itertools.pairwise(directions) if pair == ("F", "B"))
    return {"round_trips": trips, "statements": statements}


def cpu_profile(ops: list[Callable[[], Any]], label: str) -> dict[str, float]:
    """Share of the client's CPU by package (a CPU-time profile); the top functions go to stderr."""
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for op in ops:
        op()
    profiler.disable()
    stats = pstats.Stats(profiler, stream=sys.stderr)
    by_package: Counter[str] = Counter()
    raw_stats = cast(dict[tuple[str, int, str], tuple[Any, ...]], stats.stats)  # type: ignore[attr-defined]
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in raw_stats.items():
        by_package[_package(filename)] += tottime
    total = sum(by_package.values()) or 1.0
    print(f"\n[profile] {label}: CPU-time profile, top functions by own time", file=sys.stderr)
    stats.sort_stats("tottime").print_stats(12)
    return {package: round(seconds / total, 3) for package, seconds in by_package.most_common()}


def _package(filename: str) -> str:
    for package in ("sqlalchemy", "sqlmodel", "psycopg", "pydantic", "json", "hashlib", "services", "scripts"):
        if f"/{package}/" in filename or filename.endswith(f"/{package}.py"):
            return "creditrail" if package in ("services", "scripts") else package
    return "builtins" if filename == "~" else "other"


def statement_times(engine: Engine) -> Counter[str]:
    """Seconds spent in each kind of statement (by its first words), from the engine's cursor events."""
    spent: Counter[str] = Counter()

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, _cursor: Any, _statement: str, _params: Any, _context: Any, _many: bool) -> None:
        conn.info["began"] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool) -> None:
        spent[" ".join(statement.split()[:3])] += time.perf_counter() - conn.info["began"]

    return spent


# --- the spend, other ways -----------------------------------------------------------------------------------

LOCK_SQL = "SELECT id FROM accounts WHERE id = %(account)s FOR UPDATE"
# Read once the lock is granted (a statement that waited for it would still see its older snapshot).
STATE_SQL = """
SELECT accounts.id, accounts.kind, accounts.debt_credits,
       EXISTS (SELECT 1 FROM budgets WHERE budgets.account_id = accounts.id AND budgets.deleted_at IS NULL),
       existing.id, existing.request_hash
FROM accounts LEFT OUTER JOIN ledger_transactions AS existing ON existing.idempotency_key = %(key)s
WHERE accounts.id = %(account)s
"""
DRAW_SQL = """
SELECT id, remaining_credits - reserved_credits FROM lots
WHERE account_id = %(account)s AND remaining_credits > 0 AND expires_at > %(now)s
ORDER BY expires_at, credited_at, id LIMIT 32
"""
TXN_SQL = """
INSERT INTO ledger_transactions (kind, idempotency_key, request_hash, account_id, created_at, description, details)
VALUES ('spend', %(key)s, %(hash)s, %(account)s, %(now)s, NULL, '{}') RETURNING id
"""
ENTRY_SQL = (
    "INSERT INTO ledger_entries (transaction_id, account_id, amount_credits, created_at) VALUES (%s, %s, %s, %s)"
)
DRAW_LOT_SQL = "UPDATE lots SET remaining_credits = remaining_credits - %s WHERE id = %s"
MOVEMENT_SQL = (
    "INSERT INTO lot_movements (lot_id, transaction_id, kind, amount_credits, hold_id, created_at) "
    "VALUES (%s, %s, 'spend', %s, NULL, %s)"
)
# The spend's writes in one statement: the transaction, its two entries, the lots drawn and their movements.
WRITE_SQL = """
WITH txn AS (
    INSERT INTO ledger_transactions (kind, idempotency_key, request_hash, account_id, created_at, description, details)
    VALUES ('spend', %(key)s, %(hash)s, %(account)s, %(now)s, NULL, '{}') RETURNING id
), legs AS (
    INSERT INTO ledger_entries (transaction_id, account_id, amount_credits, created_at)
    SELECT txn.id, leg.account_id, leg.amount_credits, %(now)s
    FROM txn, (VALUES (%(account)s::bigint, -%(amount)s::bigint), (%(revenue)s::bigint, %(amount)s::bigint))
        AS leg (account_id, amount_credits)
), draws AS (
    SELECT * FROM unnest(%(lot_ids)s::bigint[], %(takes)s::bigint[]) AS d (lot_id, take)
), drawn AS (
    UPDATE lots SET remaining_credits = lots.remaining_credits - draws.take FROM draws WHERE lots.id = draws.lot_id
)
INSERT INTO lot_movements (lot_id, transaction_id, kind, amount_credits, hold_id, created_at)
SELECT draws.lot_id, txn.id, 'spend', -draws.take, NULL, %(now)s FROM txn, draws
"""

_raw_connections: dict[int, Any] = {}


def _driver_connection(engine: Engine) -> Any:
    """A psycopg connection of the engine's, kept for the life of the process."""
    key = id(engine)
    if key not in _raw_connections:
        _raw_connections[key] = engine.raw_connection()
    return _raw_connections[key].driver_connection


def _spend_params(account_id: int, key: str) -> dict[str, Any]:
    return {
        "account": account_id,
        "key": f"spend:{account_id}:{key}",
        "hash": fingerprint(credits=1, project=None, description=None),
        "now": utcnow(),
        "amount": 1,
        "revenue": SystemAccount.REVENUE_USAGE,
    }


def _plan(free_rows: list[tuple[int, int]], amount_credits: int) -> list[tuple[int, int]]:
    plan: list[tuple[int, int]] = []
    left = amount_credits
    for lot_id, free in free_rows:
        if left == 0:
            break
        if free > 0:
            take = min(free, left)
            plan.append((lot_id, take))
            left -= take
    if left:
        raise RuntimeError("insufficient credits")
    return plan


def _check_state(row: Any, params: dict[str, Any]) -> None:
    if row is None or row[1] != "customer" or row[2] or row[3] or row[4] is not None:
        raise RuntimeError(f"the prototype only covers a plain first spend (account {params['account']})")


def raw_same_statements_op(engine: Engine, account_id: int, key: str) -> None:
    """The ledger's statements, one round trip each, sent straight through psycopg (no ORM, no pre-ping)."""
    conn = _driver_connection(engine)
    params = _spend_params(account_id, key)
    try:
        with conn.cursor() as cur:
            cur.execute(LOCK_SQL, params)
            cur.execute(STATE_SQL, params)
            _check_state(cur.fetchone(), params)
            plan = _plan(cur.execute(DRAW_SQL, params).fetchall(), params["amount"])
            txn_id = cur.execute(TXN_SQL, params).fetchone()[0]
            now = params["now"]
            legs = [(txn_id, account_id, -1, now), (txn_id, SystemAccount.REVENUE_USAGE, 1, now)]
            cur.executemany(ENTRY_SQL, legs)
            for lot_id, take in plan:
                cur.execute(DRAW_LOT_SQL, (take, lot_id))
                cur.execute(MOVEMENT_SQL, (lot_id, txn_id, -take, now))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def raw_two_trips_op(engine: Engine, account_id: int, key: str) -> None:
    """The same statements as the ledger's up to the draw, then its writes as one statement: two round trips.

    psycopg's pipeline mode sends BEGIN, the lock, the account's state and its lots together: the server still runs
    them one after the other, each with a snapshot taken when it starts, so the state is read after the lock is
    granted as it is today. Then the writes and COMMIT together.
    """
    conn = _driver_connection(engine)
    conn.autocommit = True  # BEGIN and COMMIT are sent as statements, in the pipeline
    params = _spend_params(account_id, key)
    try:
        with conn.pipeline(), conn.cursor() as cur, conn.cursor() as lots_cur:
            cur.execute("BEGIN")
            cur.execute(LOCK_SQL, params)
            cur.execute(STATE_SQL, params)
            lots_cur.execute(DRAW_SQL, params)
            _check_state(cur.fetchone(), params)
            plan = _plan(lots_cur.fetchall(), params["amount"])
            params["lot_ids"] = [lot_id for lot_id, _ in plan]
            params["takes"] = [take for _, take in plan]
            cur.execute(WRITE_SQL, params)
            cur.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def no_pre_ping_engine(url: str, schema: str) -> Engine:
    """make_engine's engine without the pool's pre-ping (one round trip less per unit of work)."""
    return create_engine(
        url, pool_size=1, max_overflow=1, pool_pre_ping=False, connect_args={"options": f"-c search_path={schema}"}
    )


def spend_on_connection_op(engine: Engine, account_id: int, key: str) -> None:
    """The ledger's spend on a Core connection instead of an ORM session (the repository only calls execute)."""
    with engine.begin() as conn:
        spending.spend(cast(Session, conn), account_id=account_id, amount_credits=1, idempotency_key=key)


# --- expiry, set-based ---------------------------------------------------------------------------------------

EXPIRY_CANDIDATES_SQL = """
SELECT id, account_id FROM lots WHERE remaining_credits > reserved_credits AND expires_at <= %(now)s
ORDER BY expires_at, id LIMIT %(limit)s
"""
EXPIRY_LOCK_SQL = "SELECT id FROM accounts WHERE id = ANY(%(accounts)s::bigint[]) ORDER BY id FOR UPDATE"
# The batch's writes in one statement, with the same transactions, entries, lot changes, movements and keys. Each
# account's transaction id is drawn from the sequence up front, so no step joins another on the account.
EXPIRY_WRITE_SQL = """
WITH due AS MATERIALIZED (
    SELECT id, account_id, remaining_credits - reserved_credits AS amount,
           id || ':' || remaining_credits || ':' || reserved_credits || ':'
               || (SELECT max(m.id) FROM lot_movements AS m WHERE m.lot_id = lots.id) AS state
    FROM lots WHERE id = ANY(%(lots)s::bigint[]) AND remaining_credits > reserved_credits AND expires_at <= %(now)s
), grouped AS (
    SELECT account_id, sum(amount) AS total, count(*) AS lots, array_agg(id ORDER BY id) AS lot_ids,
           array_agg(amount ORDER BY id) AS amounts,
           left(encode(sha256(convert_to(string_agg(state, ',' ORDER BY id), 'UTF8')), 'hex'), 32) AS digest
    FROM due GROUP BY account_id
), per_account AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('ledger_transactions', 'id')) AS txn_id, *
    FROM (SELECT * FROM grouped ORDER BY account_id) AS ordered
), txns AS (
    INSERT INTO ledger_transactions
        (id, kind, idempotency_key, request_hash, account_id, created_at, description, details)
    SELECT txn_id, 'expiry', 'expiry:' || account_id || ':' || %(now_iso)s || ':' || digest, NULL, account_id,
           %(now)s, NULL, json_build_object('lots', lots)
    FROM per_account
), legs AS (
    INSERT INTO ledger_entries (transaction_id, account_id, amount_credits, created_at)
    SELECT txn_id, account_id, -total, %(now)s FROM per_account
    UNION ALL SELECT txn_id, %(breakage)s, total, %(now)s FROM per_account
), drained AS (
    UPDATE lots SET expired_credits = expired_credits + remaining_credits - reserved_credits,
                    remaining_credits = reserved_credits
    WHERE id = ANY(%(lots)s::bigint[]) AND remaining_credits > reserved_credits AND expires_at <= %(now)s
), moved AS (
    INSERT INTO lot_movements (lot_id, transaction_id, kind, amount_credits, hold_id, created_at)
    SELECT lot.id, per_account.txn_id, 'expiry', -lot.amount, NULL, %(now)s
    FROM per_account, unnest(per_account.lot_ids, per_account.amounts) AS lot (id, amount)
)
SELECT count(*), COALESCE(sum(amount), 0), (SELECT count(*) FROM per_account) FROM due
"""


def set_based_expiry_batch(engine: Engine, now: datetime, limit: int) -> tuple[int, int, int]:
    """One expiry batch in five round trips whatever its size (BEGIN, the candidates, the account locks, the writes,
    COMMIT): (lots, credits, transactions)."""
    conn = _driver_connection(engine)
    with conn.cursor() as cur:
        candidates = cur.execute(EXPIRY_CANDIDATES_SQL, {"now": now, "limit": limit}).fetchall()
        if not candidates:
            conn.rollback()
            return 0, 0, 0
        accounts = sorted({account_id for _, account_id in candidates})
        cur.execute(EXPIRY_LOCK_SQL, {"accounts": accounts})
        params = {
            "lots": [lot_id for lot_id, _ in candidates],
            "now": now,
            "now_iso": now.isoformat(),
            "breakage": SystemAccount.BREAKAGE,
        }
        lots, credits, transactions = cur.execute(EXPIRY_WRITE_SQL, params).fetchone()
    conn.commit()
    return int(lots), int(credits), int(transactions)


# --- the run -------------------------------------------------------------------------------------------------


def seed(engine: Engine, now: datetime) -> tuple[int, int]:
    """ACCOUNTS accounts with one large lot each, and a hot account; returns (first account, hot account)."""
    with engine.begin() as conn:
        first = seed_accounts(conn, ACCOUNTS, now)
        seed_lots(
            conn,
            tag="acct",
            first_account=first,
            accounts=ACCOUNTS,
            lots=ACCOUNTS,
            lot_credits=1_000_000,
            expires_sql=":now + interval '200 days' + g * interval '1 second'",
            now=now,
        )
        hot = seed_accounts(conn, 1, now)
        seed_lots(
            conn,
            tag="hot",
            first_account=hot,
            accounts=1,
            lots=1,
            lot_credits=100_000_000,
            expires_sql=":now + interval '200 days'",
            now=now,
        )
    return first, hot


def per_operation(engine: Engine, first: int, ops: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Part 1 for spend, hold and capture."""
    counter = iter(range(10**9))

    def account() -> int:
        return first + next(counter) * 7919 % ACCOUNTS

    def spend() -> None:
        spend_op(engine, account(), f"p-{time.time_ns()}")

    created: list[holds.HoldView] = []

    def hold() -> None:
        with unit_of_work(engine) as session:
            created.append(
                holds.create_hold(
                    session, account_id=account(), amount_credits=1, idempotency_key=f"p-{time.time_ns()}"
                )
            )

    def capture() -> None:
        view = created.pop()
        with unit_of_work(engine) as session:
            holds.capture_hold(session, account_id=view.account_id, hold_id=view.id, amount_credits=1)

    for _ in range(20):  # warm: psycopg prepares statements on their fifth use
        spend()
        hold()
        capture()
    figures: dict[str, Any] = {}
    shares: dict[str, Any] = {}
    # Each capture takes one of the holds made just before it.
    for name, op in (("spend", spend), ("hold", hold), ("capture", capture)):
        entry = round_trips(engine, op)
        figures[name] = {**entry, **breakdown(engine, [op] * ops)}
        log(f"{name}: {figures[name]}")
    shares["spend"] = cpu_profile([spend] * ops, "spend")
    shares["hold"] = cpu_profile([hold] * ops, "hold")
    shares["capture"] = cpu_profile([capture] * ops, "capture")
    if created:
        raise RuntimeError(f"{len(created)} holds left uncaptured")
    return figures, shares


def spend_variants(url: URL, pgbench_url: URL, first: int, hot: int, seconds: float, ops: int) -> dict[str, Any]:
    """Part 2: for each way of spending, its round trips and CPU per spend in one process; then its throughput at
    each client count (right after pgbench at that count) and on the hot account. The variants take turns, so
    drift in the machine's load reaches them all alike."""
    url_text = url.render_as_string(hide_password=False)
    variants: list[tuple[str, str, Callable[[Engine, int, str], None], Callable[[str, str], Engine]]] = [
        ("ledger", SCHEMA, spend_op, client_engine),
        ("ledger_no_pre_ping", SCHEMA, spend_op, no_pre_ping_engine),
        ("ledger_on_core_connection", SCHEMA, spend_on_connection_op, client_engine),
        ("raw_same_statements", SCHEMA, raw_same_statements_op, client_engine),
        ("raw_two_round_trips", SCHEMA, raw_two_trips_op, client_engine),
        ("ledger_hot_updatable_lots", HOT_SCHEMA, spend_op, client_engine),
    ]
    tps: dict[str, float] = {}
    rates: dict[str, dict[str, float]] = {name: {} for name, *_ in variants}
    per_spend: dict[str, dict[str, float]] = {}
    for name, schema, op, factory in variants:
        engine = factory(url_text, schema)
        for n in range(12):
            op(engine, first + n, f"{name}-warm-{n}")
        raw = name.startswith("raw")
        traced = functools.partial(op, engine, first + 99, f"{name}-trace")
        timed = [functools.partial(op, engine, first + n * 7919 % ACCOUNTS, f"{name}-cpu-{n}") for n in range(ops)]
        per_spend[name] = {**round_trips(engine, traced, raw=raw), **breakdown(engine, timed, raw=raw)}
        log(f"{name}: {per_spend[name]}")
        for pooled in _raw_connections.values():
            pooled.close()
        _raw_connections.clear()
        engine.dispose()
    pgbench_init(pgbench_url, 10)
    for clients in (*CLIENT_COUNTS, "hot"):
        if clients != "hot":
            tps[str(clients)] = pgbench_tps(pgbench_url, int(clients), seconds)
        for name, schema, op, factory in variants:
            if clients == "hot":
                job = ClientJob(url_text, schema, op, hot, 1, f"{name}-hot", factory)
                count = HOT_CLIENTS
            else:
                job = ClientJob(url_text, schema, op, first, ACCOUNTS, f"{name}-{clients}", factory)
                count = int(clients)
            rate, errors, first_error = run_clients(job, count, seconds)
            if errors:
                raise RuntimeError(f"{name} ({clients}): {errors} errors, first {first_error}")
            rates[name][str(clients)] = round(rate, 1)
            log(f"{name} {clients}: {rate:.0f}/s")
    return {
        "spend_per_operation": per_spend,
        "pgbench_tps": tps,
        "spend_per_s": rates,
        "spend_ratio_to_pgbench": {
            name: {k: ratio(v, tps[k]) for k, v in found.items() if k in tps} for name, found in rates.items()
        },
    }


def expiry_comparison(engine: Engine, first: int, due_lots: int) -> dict[str, Any]:
    """Part 3: the ledger's expiry batch, then the set-based batch, each over half of the same due lots."""
    now = utcnow()
    with engine.begin() as conn:
        seed_lots(
            conn,
            tag="due",
            first_account=first,
            accounts=ACCOUNTS,
            lots=due_lots,
            lot_credits=DUE_LOT_CREDITS,
            expires_sql=":now - interval '1 day' - ((g * 7919) % 2592000) * interval '1 second'",
            now=now,
        )
    maintain(engine)
    batches = max(1, due_lots // 2 // EXPIRY_BATCH_LOTS)
    spent = statement_times(engine)

    def ledger_batch() -> tuple[int, int, int]:
        with unit_of_work(engine) as session:
            batch = expiry.expire_lots(session, now=now, limit=EXPIRY_BATCH_LOTS)
        return batch.lots_expired, batch.credits_expired, batch.accounts

    def set_based_batch() -> tuple[int, int, int]:
        return set_based_expiry_batch(engine, now, EXPIRY_BATCH_LOTS)

    found: dict[str, Any] = {}
    for name, batch in (("ledger", ledger_batch), ("set_based", set_based_batch)):
        trips = round_trips(engine, batch, raw=name == "set_based")  # one batch, traced (not timed)
        pid = backend_pid(engine) if name == "ledger" else int(_driver_connection(engine).info.backend_pid)
        spent.clear()
        server, client, wall = backend_cpu_s(pid), time.process_time(), time.perf_counter()
        lots = transactions = 0
        for _ in range(batches - 1):
            done, _credits, txns = batch()
            lots += done
            transactions += txns
        seconds = time.perf_counter() - wall
        found[name] = {
            **trips,
            "lots": lots,
            "transactions": transactions,
            "lots_per_s": round(lots / seconds, 1),
            "client_cpu_us_per_lot": round((time.process_time() - client) / lots * 1e6, 1),
            "server_cpu_us_per_lot": round((backend_cpu_s(pid) - server) / lots * 1e6, 1),
            "wall_us_per_lot": round(seconds / lots * 1e6, 1),
        }
        if name == "ledger":
            found[name]["statement_seconds"] = {k: round(v, 2) for k, v in spent.most_common()}
        log(f"expiry {name}: {found[name]}")
    with engine.connect() as conn:
        left = conn.execute(
            text("SELECT count(*) FROM lots WHERE remaining_credits > reserved_credits AND expires_at <= :now"),
            {"now": now},
        ).scalar_one()
    found["due_lots_left"] = int(left)
    return found


def hot_update_share(engine: Engine) -> float:
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_stat_force_next_flush()")
        row = conn.execute(
            text(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                "WHERE relname = 'lots' AND schemaname = current_schema()"
            )
        ).one()
    return ratio(row.n_tup_hot_upd, row.n_tup_upd)


def hot_updatable_schema(url: URL, now: datetime) -> tuple[Engine, int, int]:
    """The same schema, but lots' indexes name no column a spend changes (no partial-index predicates), and lots
    leave room on each page: an update that draws or reserves credits can then be a HOT update."""
    engine = fresh_schema(url, HOT_SCHEMA)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_lots_drawable")
        conn.exec_driver_sql("CREATE INDEX ix_lots_drawable ON lots (account_id, expires_at, credited_at, id)")
        conn.exec_driver_sql("DROP INDEX ix_lots_expiry_queue")
        conn.exec_driver_sql("CREATE INDEX ix_lots_expiry_queue ON lots (expires_at, id)")
        conn.exec_driver_sql("ALTER TABLE lots SET (fillfactor = 85)")
    first, hot = seed(engine, now)
    maintain(engine)
    return engine, first, hot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--pgbench-database", default=PGBENCH_DATABASE)
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per throughput run")
    parser.add_argument("--ops", type=int, default=1_000, help="operations per single-process measurement")
    parser.add_argument("--expiry-lots", type=int, default=200_000, help="due lots for the expiry comparison")
    options = parser.parse_args(argv)

    url = make_url(options.database_url).set(drivername="postgresql+psycopg")
    ensure_database(url)
    ensure_database(url.set(database=options.pgbench_database))
    now = utcnow()
    engine = fresh_schema(url, SCHEMA)
    first, hot = seed(engine, now)
    maintain(engine)
    single = make_engine(url, schema=SCHEMA, pool_size=1)
    per_op, cpu_shares = per_operation(single, first, options.ops)

    hot_engine, hot_first, hot_hot = hot_updatable_schema(url, now)
    if (hot_first, hot_hot) != (first, hot):
        raise RuntimeError("both schemas must number their accounts alike")
    pgbench_url = url.set(database=options.pgbench_database)
    variants = spend_variants(url, pgbench_url, first, hot, options.seconds, options.ops)
    hot_share = {"ledger": hot_update_share(single), "hot_updatable_lots": hot_update_share(hot_engine)}

    expiry_figures = expiry_comparison(single, first, options.expiry_lots)

    violations = {}
    for name, checked in (("bench_profile", single), ("bench_profile_hot", hot_engine)):
        with unit_of_work(checked) as session:
            found = check_invariants(session)
        violations[name] = len(found)
        for violation in found[:10]:
            log(f"{name}: invariant violated: {violation}")
    single.dispose()
    hot_engine.dispose()
    engine.dispose()

    report = {
        "per_operation": per_op,
        "client_cpu_share_by_package": cpu_shares,
        **variants,
        "lots_hot_update_share": hot_share,
        "expiry": expiry_figures,
        "invariant_violations": violations,
    }
    print(json.dumps(report, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
