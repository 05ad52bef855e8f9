"""The ledger's hot operations on PostgreSQL in few round trips: spends (and debit adjustments), holds (create,
capture, release) and mints.

The same rules, rows and results as the Core path: the rules themselves (the customer check, idempotency, which
lots a draw takes, budgets, how a hold resolves, debt repayment) come from ``common`` and ``budgets``; this module
only reads and writes. Each operation runs on the session's own psycopg connection and transaction (the caller
commits) and, after the transaction's BEGIN, takes two round trips:

1. In pipeline mode: the account's row lock, then the account's state with the lots it would draw first (or the
   hold with its allocations), and the budgets that apply. The server runs them one after the other, each with a
   snapshot taken when it starts, so everything after the lock is read once the lock is granted (as the Core
   path's separate statements are).
2. Every write of the operation in one statement (data-modifying CTEs): the journal transaction and its entries,
   the lots, their movements, the budgets, the hold. Each table's new rows get their ids in the order the Core
   path inserts them.

An account whose first lots do not cover a draw costs one more round trip per further page of lots; a replayed
spend or mint reads its result back through the Core path. The statements are SQL text built once, which psycopg
prepares on the server after a few uses. Each write statement takes its values through a one-row ``MATERIALIZED``
CTE, so that its generic plan costs what a plan for given values does and the server keeps the generic plan
instead of planning every execution again. A database error is raised as SQLAlchemy raises what goes through it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

import psycopg
from psycopg.types.json import Json
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, StatementError
from sqlmodel import Session

from services.core.clock import period_start
from services.ledger import repository as repo
from services.ledger.budgets import budgets_to_charge
from services.ledger.common import (
    check_same_request,
    debt_repaid,
    plan_draws,
    require_customer,
    split_reservation,
)
from services.ledger.models import BudgetPeriod, BudgetScope, HoldStatus, MovementKind, TransactionKind
from services.ledger.system_accounts import SystemAccount

PgConnection = psycopg.Connection[tuple[Any, ...]]

_PIPELINE = psycopg.Pipeline.is_supported()
# Pages of lots after the first (repo.FIRST_DRAW_PAGE lots): each this many times the one before, up to the last.
_PAGE_GROWTH = 8
_LAST_PAGE = 4_096


def driver_of(session: Session | Connection) -> PgConnection | None:
    """The session's psycopg connection when it runs on PostgreSQL through psycopg (the fast path), else None.
    A Core connection standing in for a session (the repository only calls ``execute``) works too."""
    connection = session if isinstance(session, Connection) else session.connection()
    if not _PIPELINE or connection.dialect.driver != "psycopg":
        return None
    return cast(PgConnection, connection.connection.driver_connection)


class Replay(NamedTuple):
    """The request was made before, with the same idempotency key: its transaction."""

    transaction_id: int


class Drawn(NamedTuple):
    transaction_id: int
    # (lot id, credits) drawn, in draw-down order.
    draws: list[tuple[int, int]]


class Minted(NamedTuple):
    lot_id: int
    transaction_id: int
    debt_repaid_credits: int


class HoldRow(NamedTuple):
    """A hold's row as the ledger shows it (timestamps in UTC)."""

    id: int
    account_id: int
    amount_credits: int
    captured_credits: int
    status: str
    project: str | None
    description: str | None
    created_at: datetime
    expires_at: datetime
    resolved_at: datetime | None
    capture_transaction_id: int | None


class LockedHold(NamedTuple):
    """A hold read under its account's lock, with its allocations: (lot id, credits, lot's expiry) in order."""

    row: HoldRow
    allocations: list[tuple[int, int, datetime]]


_HOLD_FIELDS = HoldRow._fields
_HOLD_WIDTH = len(_HOLD_FIELDS)


def _hold_columns(table: str) -> str:
    return ", ".join(f"{table}.{name}" for name in _HOLD_FIELDS)


def _hold_row(values: Sequence[Any]) -> HoldRow:
    (hold_id, account_id, amount, captured, status, project, description, created, expires, resolved, txn) = values
    return HoldRow(
        hold_id,
        account_id,
        amount,
        captured,
        status,
        project,
        description,
        created.astimezone(UTC),
        expires.astimezone(UTC),
        None if resolved is None else resolved.astimezone(UTC),
        txn,
    )


def _array(values: Iterable[int]) -> str:
    """A bigint[] literal: whole numbers need no quoting, and text is cheaper to send than a list to adapt."""
    return "{" + ",".join(map(str, values)) + "}"


def _aware(moment: datetime) -> datetime:
    """Refuse a naive datetime, as the Core path's UTC column type does (SQLAlchemy raises its refusal)."""
    if moment.tzinfo is None:
        refusal = ValueError("naive datetime given where UTC is required")
        raise StatementError(str(refusal), None, None, refusal)
    return moment


def _raised(exc: psycopg.Error) -> Exception:
    return cast(Exception, DBAPIError.instance(None, None, exc, psycopg.Error))


# --- reads under the lock ----------------------------------------------------------------------------------

_LOCK_SQL = b"SELECT id FROM accounts WHERE id = %(account)s FOR UPDATE"

# Draw-down order, as the Core path reads lots.
_DRAW_ORDER = ", ".join(column.name for column in repo.DRAW_ORDER)

# The first page of lots with unreserved credits in draw-down order.
_FIRST_LOTS = f"""
    SELECT id, remaining_credits - reserved_credits AS free, expires_at, credited_at FROM lots
    WHERE account_id = %(account)s AND remaining_credits > 0 AND expires_at > %(now)s
      AND remaining_credits > reserved_credits
    ORDER BY {_DRAW_ORDER}
    LIMIT %(limit)s
"""

# The account's state, the transaction already posted under the idempotency key if any, and the first page of
# lots: one row per lot (one row without a lot when there is none; no row when there is no such account).
_DRAW_STATE_SQL = f"""
SELECT accounts.kind, accounts.debt_credits, existing.id, existing.request_hash,
       lot.id, lot.free, lot.expires_at, lot.credited_at
FROM accounts
    LEFT OUTER JOIN ledger_transactions AS existing ON existing.idempotency_key = %(key)s
    LEFT OUTER JOIN ({_FIRST_LOTS}) AS lot ON true
WHERE accounts.id = %(account)s
ORDER BY {", ".join(f"lot.{column.name}" for column in repo.DRAW_ORDER)}
""".encode()

# The same with the hold already made under the idempotency key, if any, instead of a transaction.
_HOLD_STATE_SQL = f"""
SELECT accounts.kind, accounts.debt_credits, lot.id, lot.free, lot.expires_at, lot.credited_at,
       existing.request_hash, {_hold_columns("existing")}
FROM accounts
    LEFT OUTER JOIN holds AS existing
        ON existing.account_id = accounts.id AND existing.idempotency_key = %(key)s
    LEFT OUTER JOIN ({_FIRST_LOTS}) AS lot ON true
WHERE accounts.id = %(account)s
ORDER BY {", ".join(f"lot.{column.name}" for column in repo.DRAW_ORDER)}
""".encode()

# The account's state and the transaction already posted under the idempotency key, if any (for a mint).
_ACCOUNT_STATE_SQL = b"""
SELECT accounts.kind, accounts.debt_credits, existing.id, existing.request_hash
FROM accounts LEFT OUTER JOIN ledger_transactions AS existing ON existing.idempotency_key = %(key)s
WHERE accounts.id = %(account)s
"""

# A further page of lots, after the last lot of the one before (the draw-down order's columns).
_NEXT_LOTS_SQL = f"""
SELECT id, remaining_credits - reserved_credits, expires_at, credited_at FROM lots
WHERE account_id = %(account)s AND remaining_credits > 0 AND expires_at > %(now)s
  AND remaining_credits > reserved_credits
  AND ({_DRAW_ORDER}) > (%(after_expires)s, %(after_credited)s, %(after_id)s)
ORDER BY {_DRAW_ORDER}
LIMIT %(limit)s
""".encode()

# The budgets that apply to an API key or project, with what counts against each in its current period (the
# period's start comes in for each kind of period).
_BUDGETS_SQL = f"""
SELECT budgets.id, budgets.name, budgets.period, budgets.limit_credits, COALESCE(used.used_credits, 0)
FROM budgets LEFT OUTER JOIN budget_usage AS used
    ON used.budget_id = budgets.id
    AND used.period_start = CASE budgets.period
        {" ".join(f"WHEN '{period.value}' THEN %(period_{period.value})s::timestamptz" for period in BudgetPeriod)}
    END
WHERE budgets.account_id = %(account)s AND budgets.deleted_at IS NULL
  AND ((budgets.scope = '{BudgetScope.API_KEY.value}' AND budgets.scope_ref = %(api_key_ref)s)
       OR (budgets.scope = '{BudgetScope.PROJECT.value}' AND budgets.scope_ref = %(project)s)
       OR budgets.scope = '{BudgetScope.ACCOUNT.value}')
ORDER BY budgets.id
""".encode()

# The hold's owner, locked; nothing when the hold does not exist or is not the given account's.
_LOCK_HOLD_OWNER_SQL = b"""
SELECT accounts.id FROM accounts
WHERE accounts.id = (
    SELECT holds.account_id FROM holds
    WHERE holds.id = %(hold)s AND (%(owner)s::bigint IS NULL OR holds.account_id = %(owner)s::bigint)
)
FOR UPDATE OF accounts
"""

# The owner's kind, the hold and its allocations in order (one row per allocation); nothing when the hold does not
# exist or is not the given account's.
_HOLD_SQL = f"""
SELECT accounts.kind, {_hold_columns("holds")}, allocation.lot_id, allocation.amount_credits, lots.expires_at
FROM holds
    JOIN accounts ON accounts.id = holds.account_id
    LEFT OUTER JOIN hold_allocations AS allocation ON allocation.hold_id = holds.id
    LEFT OUTER JOIN lots ON lots.id = allocation.lot_id
WHERE holds.id = %(hold)s AND (%(owner)s::bigint IS NULL OR holds.account_id = %(owner)s::bigint)
ORDER BY allocation.position
""".encode()


class _Budget(NamedTuple):
    id: int
    name: str
    period: str
    limit_credits: int
    used_credits: int


def _budget_params(params: dict[str, Any], api_key_id: int | None, project: str | None, now: datetime) -> None:
    params["api_key_ref"] = None if api_key_id is None else str(api_key_id)
    params["project"] = project
    for period in BudgetPeriod:
        params[f"period_{period.value}"] = period_start(now, period.value)


def _charges(rows: list[tuple[Any, ...]], amount_credits: int, now: datetime) -> list[tuple[int, datetime]]:
    budgets = [_Budget(*row) for row in rows]
    used = {budget.id: budget.used_credits for budget in budgets}
    return budgets_to_charge(budgets, amount_credits, now, lambda budget_id, _start: used[budget_id])


def _candidates(
    conn: PgConnection, page: list[tuple[Any, ...]], account_id: int, now: datetime, needed_credits: int
) -> list[tuple[int, int]]:
    """(lot id, unreserved credits) in draw-down order, as many lots as cover ``needed_credits`` (all of them when
    the account holds less): ``page`` is the first page of (lot id, unreserved credits, expiry, credited at), and
    further pages are read as needed."""
    found: list[tuple[int, int]] = []
    covered = 0
    size = repo.FIRST_DRAW_PAGE
    while True:
        for lot_id, free, _expires_at, _credited_at in page:
            found.append((lot_id, free))
            covered += free
            if covered >= needed_credits:
                return found
        if len(page) < size:
            return found
        size = min(size * _PAGE_GROWTH, _LAST_PAGE)
        last_id, _free, last_expires, last_credited = page[-1]
        params = {
            "account": account_id,
            "now": now,
            "limit": size,
            "after_expires": last_expires,
            "after_credited": last_credited,
            "after_id": last_id,
        }
        page = conn.execute(_NEXT_LOTS_SQL, params).fetchall()


# --- writes ------------------------------------------------------------------------------------------------

# Budget usage counted or given back: what the Core path does with an UPDATE, then an INSERT when no row changed.
_ADD_USAGE = (
    "ON CONFLICT (budget_id, period_start) DO UPDATE SET used_credits = budget_usage.used_credits + "
    "EXCLUDED.used_credits"
)

# Rows that travel as arrays keep their order through WITH ORDINALITY, so that the ids they get follow it.
_DRAW_WRITE_SQL = f"""
WITH p AS MATERIALIZED (
    SELECT %(account)s::bigint AS account_id, %(amount)s::bigint AS amount_credits,
           %(counter)s::bigint AS counter_account_id, %(now)s::timestamptz AS now, %(kind)s::text AS kind,
           %(movement_kind)s::text AS movement_kind, %(key)s::text AS idempotency_key,
           %(hash)s::text AS request_hash, %(description)s::text AS description, %(details)s::json AS details,
           %(lot_ids)s::bigint[] AS lot_ids, %(lot_credits)s::bigint[] AS lot_credits,
           %(budget_ids)s::bigint[] AS budget_ids, %(budget_starts)s::timestamptz[] AS budget_starts
), txn AS (
    INSERT INTO ledger_transactions
        (kind, idempotency_key, request_hash, account_id, created_at, description, details)
    SELECT kind, idempotency_key, request_hash, account_id, now, description, details FROM p
    RETURNING id
), legs AS (
    INSERT INTO ledger_entries (transaction_id, account_id, amount_credits, created_at)
    SELECT txn.id, leg.account_id, leg.amount_credits, p.now
    FROM p, txn, LATERAL (VALUES (1, p.account_id, -p.amount_credits), (2, p.counter_account_id, p.amount_credits))
        AS leg (n, account_id, amount_credits)
    ORDER BY leg.n
), draw AS (
    SELECT d.lot_id, d.credits, d.n FROM p, unnest(p.lot_ids, p.lot_credits) WITH ORDINALITY AS d (lot_id, credits, n)
), drawn AS (
    UPDATE lots SET remaining_credits = lots.remaining_credits - draw.credits FROM draw WHERE lots.id = draw.lot_id
), moved AS (
    INSERT INTO lot_movements (lot_id, transaction_id, kind, amount_credits, hold_id, created_at)
    SELECT draw.lot_id, txn.id, p.movement_kind, -draw.credits, NULL, p.now FROM p, txn, draw ORDER BY draw.n
), counted AS (
    INSERT INTO budget_usage (budget_id, period_start, used_credits)
    SELECT c.budget_id, c.period_start, p.amount_credits
    FROM p, unnest(p.budget_ids, p.budget_starts) WITH ORDINALITY AS c (budget_id, period_start, n)
    ORDER BY c.n
    {_ADD_USAGE}
)
SELECT id FROM txn
""".encode()

_HOLD_WRITE_SQL = f"""
WITH p AS MATERIALIZED (
    SELECT %(account)s::bigint AS account_id, %(api_key)s::bigint AS api_key_id, %(project)s::text AS project,
           %(key)s::text AS idempotency_key, %(hash)s::text AS request_hash, %(amount)s::bigint AS amount_credits,
           %(description)s::text AS description, %(now)s::timestamptz AS now,
           %(expires)s::timestamptz AS expires_at,
           %(lot_ids)s::bigint[] AS lot_ids, %(lot_credits)s::bigint[] AS lot_credits,
           %(budget_ids)s::bigint[] AS budget_ids, %(budget_starts)s::timestamptz[] AS budget_starts
), hold AS (
    INSERT INTO holds (account_id, api_key_id, project, idempotency_key, request_hash, amount_credits,
                       captured_credits, status, description, created_at, expires_at)
    SELECT account_id, api_key_id, project, idempotency_key, request_hash, amount_credits, 0,
           '{HoldStatus.ACTIVE.value}', description, now, expires_at
    FROM p
    RETURNING {", ".join(_HOLD_FIELDS)}
), reservation AS (
    SELECT r.lot_id, r.credits, r.n FROM p, unnest(p.lot_ids, p.lot_credits) WITH ORDINALITY AS r (lot_id, credits, n)
), reserved AS (
    UPDATE lots SET reserved_credits = lots.reserved_credits + reservation.credits
    FROM reservation WHERE lots.id = reservation.lot_id
), allocated AS (
    INSERT INTO hold_allocations (hold_id, lot_id, position, amount_credits)
    SELECT hold.id, reservation.lot_id, reservation.n - 1, reservation.credits
    FROM hold, reservation ORDER BY reservation.n
), charge AS (
    SELECT c.budget_id, c.period_start, c.n
    FROM p, unnest(p.budget_ids, p.budget_starts) WITH ORDINALITY AS c (budget_id, period_start, n)
), counted AS (
    INSERT INTO budget_usage (budget_id, period_start, used_credits)
    SELECT charge.budget_id, charge.period_start, p.amount_credits FROM p, charge ORDER BY charge.n
    {_ADD_USAGE}
), charged AS (
    INSERT INTO hold_budget_charges (hold_id, budget_id, period_start, amount_credits)
    SELECT hold.id, charge.budget_id, charge.period_start, p.amount_credits FROM p, hold, charge ORDER BY charge.n
)
SELECT {", ".join(_HOLD_FIELDS)} FROM hold
""".encode()

# What resolving a hold writes: every allocated lot un-reserved, drawn from and expired from at once; the capture
# transaction and the expiry transaction (each when it moves credits), their entries and the lots' movements
# (the capture's, then the expiry's, each in the hold's order); the budgets given back what the hold did not
# capture; the hold, resolved.
_CAPTURE = TransactionKind.CAPTURE.value
_EXPIRY = TransactionKind.EXPIRY.value
_SETTLE_WRITE_SQL = f"""
WITH p AS MATERIALIZED (
    SELECT %(hold)s::bigint AS hold_id, %(account)s::bigint AS account_id, %(now)s::timestamptz AS now,
           %(status)s::text AS status, %(capture)s::bigint AS capture_credits,
           %(unused)s::bigint AS unused_credits, %(expired_total)s::bigint AS expired_credits,
           %(capture_key)s::text AS capture_key, %(capture_description)s::text AS capture_description,
           %(capture_details)s::json AS capture_details, %(expiry_key)s::text AS expiry_key,
           %(expiry_details)s::json AS expiry_details, %(lot_ids)s::bigint[] AS lot_ids,
           %(unreserved)s::bigint[] AS unreserved, %(drawn)s::bigint[] AS drawn, %(expired)s::bigint[] AS expired
), lot_change AS (
    SELECT c.lot_id, c.unreserved, c.drawn, c.expired, c.n
    FROM p, unnest(p.lot_ids, p.unreserved, p.drawn, p.expired) WITH ORDINALITY
        AS c (lot_id, unreserved, drawn, expired, n)
), changed AS (
    UPDATE lots SET reserved_credits = lots.reserved_credits - lot_change.unreserved,
                    remaining_credits = lots.remaining_credits - lot_change.drawn - lot_change.expired,
                    expired_credits = lots.expired_credits + lot_change.expired
    FROM lot_change WHERE lots.id = lot_change.lot_id
), posting AS (
    SELECT 1 AS n, '{_CAPTURE}' AS kind, capture_key AS idempotency_key, capture_description AS description,
           capture_details AS details, capture_credits AS amount_credits,
           {SystemAccount.REVENUE_USAGE}::bigint AS counter_account_id
    FROM p WHERE capture_credits > 0
    UNION ALL
    SELECT 2, '{_EXPIRY}', expiry_key, NULL, expiry_details, expired_credits, {SystemAccount.BREAKAGE}::bigint
    FROM p WHERE expired_credits > 0
), txn AS (
    INSERT INTO ledger_transactions
        (kind, idempotency_key, request_hash, account_id, created_at, description, details)
    SELECT posting.kind, posting.idempotency_key, NULL, p.account_id, p.now, posting.description, posting.details
    FROM p, posting ORDER BY posting.n
    RETURNING id, kind
), legs AS (
    INSERT INTO ledger_entries (transaction_id, account_id, amount_credits, created_at)
    SELECT txn.id, leg.account_id, leg.amount_credits, p.now
    FROM p, txn JOIN posting ON posting.kind = txn.kind,
        LATERAL (VALUES (1, p.account_id, -posting.amount_credits),
                        (2, posting.counter_account_id, posting.amount_credits)) AS leg (n, account_id, amount_credits)
    ORDER BY posting.n, leg.n
), moved AS (
    INSERT INTO lot_movements (lot_id, transaction_id, kind, amount_credits, hold_id, created_at)
    SELECT m.lot_id, txn.id, m.kind, m.amount_credits, p.hold_id, p.now
    FROM p, (
        SELECT 1 AS step, n, lot_id, '{MovementKind.CAPTURE.value}' AS kind, -drawn AS amount_credits,
               '{_CAPTURE}' AS transaction_kind
        FROM lot_change WHERE drawn > 0
        UNION ALL
        SELECT 2, n, lot_id, '{MovementKind.EXPIRY.value}', -expired, '{_EXPIRY}' FROM lot_change WHERE expired > 0
    ) AS m JOIN txn ON txn.kind = m.transaction_kind
    ORDER BY m.step, m.n
), given_back AS (
    INSERT INTO budget_usage (budget_id, period_start, used_credits)
    SELECT charge.budget_id, charge.period_start, -p.unused_credits
    FROM p JOIN hold_budget_charges AS charge ON charge.hold_id = p.hold_id
    WHERE p.unused_credits > 0
    ORDER BY charge.budget_id
    {_ADD_USAGE}
)
UPDATE holds SET status = p.status, captured_credits = p.capture_credits, resolved_at = p.now,
    capture_transaction_id = (SELECT txn.id FROM txn WHERE txn.kind = '{_CAPTURE}')
FROM p
WHERE holds.id = p.hold_id
RETURNING {_hold_columns("holds")}
""".encode()

_MINT_WRITE_SQL = f"""
WITH p AS MATERIALIZED (
    SELECT %(account)s::bigint AS account_id, %(amount)s::bigint AS amount_credits,
           %(funding)s::bigint AS funding_account_id, %(now)s::timestamptz AS now,
           %(expires)s::timestamptz AS expires_at, %(kind)s::text AS kind, %(key)s::text AS idempotency_key,
           %(hash)s::text AS request_hash, %(description)s::text AS description, %(details)s::json AS details,
           %(rail)s::text AS rail, %(external_ref)s::text AS external_ref,
           %(cost_basis_cents)s::bigint AS cost_basis_cents, %(cost_basis_usdc_units)s::bigint AS cost_basis_usdc_units,
           %(promotional)s::boolean AS promotional, %(repaid)s::bigint AS repaid_credits,
           %(debt_after)s::bigint AS debt_after
), txn AS (
    INSERT INTO ledger_transactions
        (kind, idempotency_key, request_hash, account_id, created_at, description, details)
    SELECT kind, idempotency_key, request_hash, account_id, now, description, details FROM p
    RETURNING id
), legs AS (
    INSERT INTO ledger_entries (transaction_id, account_id, amount_credits, created_at)
    SELECT txn.id, leg.account_id, leg.amount_credits, p.now
    FROM p, txn, LATERAL (VALUES (1, p.funding_account_id, -p.amount_credits), (2, p.account_id, p.amount_credits))
        AS leg (n, account_id, amount_credits)
    ORDER BY leg.n
), lot AS (
    INSERT INTO lots (account_id, rail, external_ref, cost_basis_cents, cost_basis_usdc_units, promotional, credits,
                      remaining_credits, reserved_credits, expired_credits, clawed_back_credits, credited_at,
                      expires_at, mint_transaction_id, details)
    SELECT p.account_id, p.rail, p.external_ref, p.cost_basis_cents, p.cost_basis_usdc_units, p.promotional,
           p.amount_credits, p.amount_credits - p.repaid_credits, 0, 0, 0, p.now, p.expires_at, txn.id, p.details
    FROM p, txn
    RETURNING id
), moved AS (
    INSERT INTO lot_movements (lot_id, transaction_id, kind, amount_credits, hold_id, created_at)
    SELECT lot.id, txn.id, m.kind, m.amount_credits, NULL, p.now
    FROM p, lot, txn, LATERAL (VALUES (1, '{MovementKind.MINT.value}', p.amount_credits),
                                      (2, '{MovementKind.DEBT_REPAYMENT.value}', -p.repaid_credits))
        AS m (n, kind, amount_credits)
    WHERE m.amount_credits <> 0
    ORDER BY m.n
), repaid AS (
    UPDATE accounts SET debt_credits = p.debt_after FROM p WHERE accounts.id = p.account_id AND p.repaid_credits > 0
)
SELECT lot.id, txn.id FROM lot, txn
""".encode()


# --- spends and debit adjustments --------------------------------------------------------------------------


def _lock_and_read(
    conn: PgConnection,
    state_sql: bytes,
    account_id: int,
    idempotency_key: str,
    now: datetime,
    api_key_id: int | None,
    project: str | None,
) -> tuple[psycopg.Cursor[Any], dict[str, Any], psycopg.Cursor[Any] | None]:
    """Lock the account and read its state for a draw (``state_sql``), with the budgets that apply to
    ``api_key_id`` and ``project`` when either is given, in one pipelined round trip: (the cursor holding the
    state, the statements' parameters, the cursor holding the budgets or None)."""
    params: dict[str, Any] = {
        "account": account_id,
        "key": idempotency_key,
        "now": _aware(now),
        "limit": repo.FIRST_DRAW_PAGE,
    }
    budgeted = api_key_id is not None or project is not None
    if budgeted:
        _budget_params(params, api_key_id, project, now)
    cursor = conn.cursor()
    with conn.pipeline():
        cursor.execute(_LOCK_SQL, params)
        cursor.execute(state_sql, params)  # a cursor keeps the result of its last statement
        budgets = conn.cursor().execute(_BUDGETS_SQL, params) if budgeted else None
    return cursor, params, budgets


def draw(
    conn: PgConnection,
    *,
    account_id: int,
    amount_credits: int,
    idempotency_key: str,
    request_hash: str,
    kind: str,
    movement_kind: str,
    counter_account_id: int,
    now: datetime,
    description: str | None,
    details: dict[str, Any] | None,
    api_key_id: int | None = None,
    project: str | None = None,
) -> Drawn | Replay:
    """Debit ``amount_credits`` from the account's lots in draw-down order into ``counter_account_id``, counted
    against the budgets that apply to ``api_key_id`` and ``project``: a spend, or a debit adjustment."""
    try:
        cursor, params, budgets = _lock_and_read(
            conn, _DRAW_STATE_SQL, account_id, idempotency_key, now, api_key_id, project
        )
        rows = cursor.fetchall()
        require_customer(account_id, rows[0][0] if rows else None)
        _kind, debt_credits, existing_id, existing_hash = rows[0][:4]
        if existing_id is not None:
            check_same_request(existing_hash, request_hash, idempotency_key)
            return Replay(existing_id)

        page = [row[4:] for row in rows if row[4] is not None]
        candidates = _candidates(conn, page, account_id, now, amount_credits + debt_credits)
        draws = plan_draws(candidates, amount_credits, debt_credits)
        charged = _charges(budgets.fetchall(), amount_credits, now) if budgets is not None else []
        params.update(
            kind=kind,
            hash=request_hash,
            description=description,
            details=Json(details or {}),
            amount=amount_credits,
            counter=counter_account_id,
            movement_kind=movement_kind,
            lot_ids=_array(lot_id for lot_id, _ in draws),
            lot_credits=_array(credits for _, credits in draws),
            budget_ids=_array(budget_id for budget_id, _ in charged),
            budget_starts=[start for _, start in charged],
        )
        written = cursor.execute(_DRAW_WRITE_SQL, params).fetchone()
    except psycopg.Error as exc:
        raise _raised(exc) from exc
    assert written is not None
    return Drawn(written[0], draws)


# --- holds -------------------------------------------------------------------------------------------------


def create_hold(
    conn: PgConnection,
    *,
    account_id: int,
    amount_credits: int,
    idempotency_key: str,
    request_hash: str,
    now: datetime,
    expires_at: datetime,
    api_key_id: int | None,
    project: str | None,
    description: str | None,
) -> tuple[HoldRow, bool]:
    """Reserve ``amount_credits`` on the account's lots in draw-down order, counted against the budgets that
    apply: (the hold, whether it is the one made before under ``idempotency_key``)."""
    try:
        cursor, params, budgets = _lock_and_read(
            conn, _HOLD_STATE_SQL, account_id, idempotency_key, now, api_key_id, project
        )
        rows = cursor.fetchall()
        require_customer(account_id, rows[0][0] if rows else None)
        debt_credits, existing_hash, existing = rows[0][1], rows[0][6], rows[0][7:]
        if existing[0] is not None:
            check_same_request(existing_hash, request_hash, idempotency_key)
            return _hold_row(existing), True

        page = [row[2:6] for row in rows if row[2] is not None]
        candidates = _candidates(conn, page, account_id, now, amount_credits + debt_credits)
        draws = plan_draws(candidates, amount_credits, debt_credits)
        charged = _charges(budgets.fetchall(), amount_credits, now) if budgets is not None else []
        params.update(
            api_key=api_key_id,
            project=project,
            hash=request_hash,
            amount=amount_credits,
            description=description,
            expires=_aware(expires_at),
            lot_ids=_array(lot_id for lot_id, _ in draws),
            lot_credits=_array(credits for _, credits in draws),
            budget_ids=_array(budget_id for budget_id, _ in charged),
            budget_starts=[start for _, start in charged],
        )
        written = cursor.execute(_HOLD_WRITE_SQL, params).fetchone()
    except psycopg.Error as exc:
        raise _raised(exc) from exc
    assert written is not None
    return _hold_row(written), False


def lock_hold(conn: PgConnection, *, account_id: int | None, hold_id: int) -> LockedHold | None:
    """Lock the hold's account and read the hold and its allocations under the lock; None when there is no such
    hold, or it is not ``account_id``'s (None: any account's)."""
    params = {"hold": hold_id, "owner": account_id}
    try:
        cursor = conn.cursor()
        with conn.pipeline():
            cursor.execute(_LOCK_HOLD_OWNER_SQL, params)
            cursor.execute(_HOLD_SQL, params)
        rows = cursor.fetchall()
    except psycopg.Error as exc:
        raise _raised(exc) from exc
    if not rows:
        return None
    hold = _hold_row(rows[0][1 : _HOLD_WIDTH + 1])
    require_customer(hold.account_id, rows[0][0])
    allocations = [row[_HOLD_WIDTH + 1 :] for row in rows if row[_HOLD_WIDTH + 1] is not None]
    return LockedHold(hold, cast(list[tuple[int, int, datetime]], allocations))


def settle_hold(conn: PgConnection, hold: LockedHold, capture_credits: int, now: datetime, status: str) -> HoldRow:
    """Resolve a locked, active hold: draw ``capture_credits`` from its lots in order, un-reserve everything,
    expire at once what it frees on lots that have expired, and give unused budget back. Returns the hold."""
    row = hold.row
    draws, expiring = split_reservation(hold.allocations, capture_credits, _aware(now))
    drawn = dict(draws)
    expired = dict(expiring)
    lot_ids = [lot_id for lot_id, _, _ in hold.allocations]
    params = {
        "hold": row.id,
        "account": row.account_id,
        "now": now,
        "status": status,
        "capture": capture_credits,
        "unused": row.amount_credits - capture_credits,
        "lot_ids": _array(lot_ids),
        "unreserved": _array(credits for _, credits, _ in hold.allocations),
        "drawn": _array(drawn.get(lot_id, 0) for lot_id in lot_ids),
        "expired": _array(expired.get(lot_id, 0) for lot_id in lot_ids),
        "capture_key": f"capture:{row.id}",
        "capture_description": row.description,
        "capture_details": Json({"hold_id": row.id, "project": row.project}),
        "expiry_key": f"expiry:hold:{row.id}",
        "expiry_details": Json({"hold_id": row.id, "lots": [lot_id for lot_id, _ in expiring]}),
        "expired_total": sum(credits for _, credits in expiring),
    }
    try:
        written = conn.execute(_SETTLE_WRITE_SQL, params).fetchone()
    except psycopg.Error as exc:
        raise _raised(exc) from exc
    assert written is not None
    return _hold_row(written)


# --- mints -------------------------------------------------------------------------------------------------


def mint(
    conn: PgConnection,
    *,
    account_id: int,
    amount_credits: int,
    idempotency_key: str,
    request_hash: str,
    kind: str,
    funding_account_id: int,
    rail: str,
    external_ref: str,
    cost_basis_cents: int | None,
    cost_basis_usdc_units: int | None,
    promotional: bool,
    credited_at: datetime,
    expires_at: datetime,
    description: str | None,
    details: dict[str, Any] | None,
) -> Minted | Replay:
    """Create a lot of ``amount_credits`` funded by ``funding_account_id``, repaying the account's debt first."""
    params: dict[str, Any] = {
        "account": account_id,
        "key": idempotency_key,
        "now": _aware(credited_at),
        "expires": _aware(expires_at),
    }
    try:
        cursor = conn.cursor()
        with conn.pipeline():
            cursor.execute(_LOCK_SQL, params)
            cursor.execute(_ACCOUNT_STATE_SQL, params)
        row = cursor.fetchone()
        require_customer(account_id, None if row is None else row[0])
        assert row is not None
        _kind, debt_credits, existing_id, existing_hash = row
        if existing_id is not None:
            check_same_request(existing_hash, request_hash, idempotency_key)
            return Replay(existing_id)
        repaid = debt_repaid(debt_credits, amount_credits)
        params.update(
            kind=kind,
            hash=request_hash,
            description=description,
            details=Json(details or {}),
            funding=funding_account_id,
            amount=amount_credits,
            rail=rail,
            external_ref=external_ref,
            cost_basis_cents=cost_basis_cents,
            cost_basis_usdc_units=cost_basis_usdc_units,
            promotional=promotional,
            repaid=repaid,
            debt_after=debt_credits - repaid,
        )
        written = cursor.execute(_MINT_WRITE_SQL, params).fetchone()
    except psycopg.Error as exc:
        raise _raised(exc) from exc
    assert written is not None
    return Minted(written[0], written[1], repaid)
