"""The ledger's store on PostgreSQL through psycopg: the Core store's reads and writes in few round trips.

Each hot operation runs on the session's own psycopg connection and transaction (the caller commits) and takes two
round trips, the caller's COMMIT a third:

1. In pipeline mode: the transaction's BEGIN when it has not begun yet (``services.core.pg.pipeline``), the
   account's row lock, then the account's state with the lots it would draw first, and the budgets that apply.
   The server runs them one after the other, each with a snapshot taken when it starts, so everything after the
   lock is read once the lock is granted (as the Core store's separate statements are). A capture or release
   locks and reads in one statement instead (the hold's account and the hold locked, its allocations and budget
   charges read with them: see ``_LOCK_HOLD_SQL``), since nothing it reads but those two rows can change.
2. Every write of the plan in one statement (data-modifying CTEs): the journal transactions and their entries, the
   lots, their movements, the budgets, the hold. The plan's rows travel as arrays, unnested ``WITH ORDINALITY`` so
   that each table's new rows get their ids in the plan's order, as the Core store gives them.

An account whose first lots do not cover a draw costs one more round trip per further page of lots. The client's
share of the work is kept small: the statements go through two cursors kept with the connection (a cursor learns how
to adapt each type of value once), and the plan's rows travel as array literals built by hand. The statements
are SQL text built once, which psycopg prepares on the server after a few uses; each takes its values through a
one-row ``MATERIALIZED`` CTE, so that its generic plan costs what a plan for given values does and the server keeps
it instead of planning every execution again.

Lot expiry is set-based here: one statement (pipelined with the transaction's BEGIN) picks a batch from the expiry
queue and locks its accounts without waiting for a busy one (``SKIP LOCKED``), one reads the lots again under those
locks, and one writes the plan (a spend's statement, with the lots taken leaving the queue). Clawbacks,
reinstatements and the rest are the Core store's (inherited): rare, and not worth SQL of their own.
A database error is raised as SQLAlchemy raises what goes through it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlmodel import Session

from services.core.clock import period_start
from services.core.db import json_text
from services.core.pg import (
    PgConnection,
    aware,
    bigint_array,
    cursors,
    pipeline,
    text_array,
    timestamp_array,
    translated,
)
from services.ledger import repository as repo
from services.ledger.core_store import CoreStore
from services.ledger.models import AccountKind, BudgetPeriod, BudgetScope, HoldStatus, MovementKind
from services.ledger.plans import (
    AccountState,
    BudgetUse,
    DrawPlan,
    DrawRequest,
    DueLot,
    DueLots,
    Existing,
    ExpiryPlan,
    HoldPlan,
    HoldRequest,
    HoldRow,
    LockedHold,
    MintPlan,
    MintRequest,
    SettlePlan,
    Writes,
)

# Pages of lots after the first (repo.FIRST_DRAW_PAGE lots): each this many times the one before, up to the last.
_PAGE_GROWTH = 8
_LAST_PAGE = 4_096

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


# --- reads under the lock ----------------------------------------------------------------------------------

_LOCK_SQL = b"SELECT id FROM accounts WHERE id = %(account)s FOR UPDATE"

# Draw-down order, as the Core store reads lots.
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

# The budgets that apply to an API key or project, and the account-wide ones that cap them all, with what counts
# against each in its current period (the period's start comes in for each kind of period).
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

# The hold with its owner's kind, the budgets it counted against (ids and period starts, as arrays) and its
# allocations in order (one row per allocation); nothing when the hold does not exist or is not the given account's.
# The owner is locked first, then the hold (the lock order of every operation: the account, then its rows). One
# statement both locks and reads: a statement that waited for a lock reads the rows it locked as they are once it
# has them (the account and the hold, whose status a settlement changes), and the rest as they were when it began,
# which is as they are now: allocations, budget charges and lots' expiries never change once the hold exists.
_LOCK_HOLD_SQL = f"""
SELECT accounts.kind, {_hold_columns("holds")},
       ARRAY(SELECT budget_id FROM hold_budget_charges WHERE hold_id = holds.id ORDER BY budget_id),
       ARRAY(SELECT period_start FROM hold_budget_charges WHERE hold_id = holds.id ORDER BY budget_id),
       allocation.lot_id, allocation.amount_credits, lots.expires_at
FROM holds
    JOIN accounts ON accounts.id = holds.account_id
    LEFT OUTER JOIN hold_allocations AS allocation ON allocation.hold_id = holds.id
    LEFT OUTER JOIN lots ON lots.id = allocation.lot_id
WHERE holds.id = %(hold)s AND (%(owner)s::bigint IS NULL OR holds.account_id = %(owner)s::bigint)
ORDER BY allocation.position
FOR UPDATE OF accounts FOR NO KEY UPDATE OF holds
""".encode()


# --- writes: shared pieces of the statements ---------------------------------------------------------------

# The plan's values (see ``_writes_params``), one row.
_WRITES_VALUES = """
    %(now)s::timestamptz AS now,
    %(t_kinds)s::text[] AS t_kinds, %(t_keys)s::text[] AS t_keys, %(t_hashes)s::text[] AS t_hashes,
    %(t_accounts)s::bigint[] AS t_accounts, %(t_descriptions)s::text[] AS t_descriptions,
    %(t_details)s::json[] AS t_details,
    %(leg_postings)s::bigint[] AS leg_postings, %(leg_accounts)s::bigint[] AS leg_accounts,
    %(leg_credits)s::bigint[] AS leg_credits,
    %(c_lots)s::bigint[] AS c_lots, %(c_remaining)s::bigint[] AS c_remaining,
    %(c_reserved)s::bigint[] AS c_reserved, %(c_expired)s::bigint[] AS c_expired,
    %(c_clawed_back)s::bigint[] AS c_clawed_back,
    %(m_lots)s::bigint[] AS m_lots, %(m_postings)s::bigint[] AS m_postings, %(m_kinds)s::text[] AS m_kinds,
    %(m_credits)s::bigint[] AS m_credits, %(m_holds)s::bigint[] AS m_holds,
    %(b_ids)s::bigint[] AS b_ids, %(b_starts)s::timestamptz[] AS b_starts, %(b_credits)s::bigint[] AS b_credits,
    %(debt_account)s::bigint AS debt_account, %(debt_after)s::bigint AS debt_after"""

# The journal transactions (``posted``: each one's id by its number in the plan, from 1) and their entries.
_POSTINGS = """
posting AS (
    SELECT t.kind, t.idempotency_key, t.request_hash, t.account_id, t.description, t.details, t.n
    FROM p, unnest(p.t_kinds, p.t_keys, p.t_hashes, p.t_accounts, p.t_descriptions, p.t_details)
        WITH ORDINALITY AS t (kind, idempotency_key, request_hash, account_id, description, details, n)
), txn AS (
    INSERT INTO ledger_transactions
        (kind, idempotency_key, request_hash, account_id, created_at, description, details)
    SELECT posting.kind, posting.idempotency_key, posting.request_hash, posting.account_id, p.now,
           posting.description, posting.details
    FROM p, posting ORDER BY posting.n
    RETURNING id, idempotency_key
), posted AS (
    SELECT posting.n, txn.id FROM posting JOIN txn ON txn.idempotency_key = posting.idempotency_key
), legs AS (
    INSERT INTO ledger_entries (transaction_id, account_id, amount_credits, created_at)
    SELECT posted.id, leg.account_id, leg.amount_credits, p.now
    FROM p, posted, unnest(p.leg_postings, p.leg_accounts, p.leg_credits)
        WITH ORDINALITY AS leg (posting, account_id, amount_credits, n)
    WHERE posted.n = leg.posting
    ORDER BY leg.n
)"""

# Changes to lots, at most one per lot (a counter no lot changes comes as an empty array: unnest pads it with NULLs).
_LOT_CHANGES = """
changed AS (
    UPDATE lots SET remaining_credits = lots.remaining_credits + COALESCE(c.remaining, 0),
        reserved_credits = lots.reserved_credits + COALESCE(c.reserved, 0),
        expired_credits = lots.expired_credits + COALESCE(c.expired, 0),
        clawed_back_credits = lots.clawed_back_credits + COALESCE(c.clawed_back, 0)
    FROM p, unnest(p.c_lots, p.c_remaining, p.c_reserved, p.c_expired, p.c_clawed_back)
        AS c (lot_id, remaining, reserved, expired, clawed_back)
    WHERE lots.id = c.lot_id
)"""

# Lot movements; a movement without a lot is the new lot's (``{new_lot}``: its id).
_MOVEMENTS = """
moved AS (
    INSERT INTO lot_movements (lot_id, transaction_id, kind, amount_credits, hold_id, created_at)
    SELECT COALESCE(m.lot_id, {new_lot}), posted.id, m.kind, m.amount_credits, m.hold_id, p.now
    FROM p, posted, unnest(p.m_lots, p.m_postings, p.m_kinds, p.m_credits, p.m_holds)
        WITH ORDINALITY AS m (lot_id, posting, kind, amount_credits, hold_id, n)
    WHERE posted.n = m.posting
    ORDER BY m.n
)"""

# Budget usage counted or given back: what the Core store does with an UPDATE, then an INSERT when no row changed.
_BUDGETS = """
counted AS (
    INSERT INTO budget_usage (budget_id, period_start, used_credits)
    SELECT b.budget_id, b.period_start, b.credits
    FROM p, unnest(p.b_ids, p.b_starts, p.b_credits) WITH ORDINALITY AS b (budget_id, period_start, credits, n)
    ORDER BY b.n
    ON CONFLICT (budget_id, period_start) DO UPDATE SET used_credits = budget_usage.used_credits + EXCLUDED.used_credits
)"""

# The account's new debt.
_DEBT = """
owed AS (
    UPDATE accounts SET debt_credits = p.debt_after FROM p WHERE accounts.id = p.debt_account
)"""


def _statement(values: str, *ctes: str, final: str) -> bytes:
    return ("WITH p AS MATERIALIZED (SELECT " + values + "\n)," + ",".join(ctes) + "\n" + final).encode()


# A spend or a debit adjustment: a posting, lot changes, movements, budgets.
_DRAW_SQL = _statement(
    _WRITES_VALUES,
    _POSTINGS,
    _LOT_CHANGES,
    _MOVEMENTS.format(new_lot="NULL"),
    _BUDGETS,
    final="SELECT id FROM posted ORDER BY n",
)

# An expiry batch: the lots taken leave the expiry queue (their entries found by the lots' own expiry times); a
# posting, lot changes, movements (none of them when no lot taken was due).
_EXPIRY_SQL = _statement(
    _WRITES_VALUES + ",\n    %(dequeued)s::bigint[] AS dequeued",
    _POSTINGS,
    _LOT_CHANGES,
    _MOVEMENTS.format(new_lot="NULL"),
    """
dequeued AS (
    DELETE FROM lot_expiry_queue AS queue USING p, lots
    WHERE lots.id = ANY(p.dequeued) AND queue.expires_at = lots.expires_at AND queue.lot_id = lots.id
)""",
    final="SELECT (SELECT id FROM posted WHERE n = 1)",
)

_LOT_VALUES = """,
    %(lot_account)s::bigint AS lot_account, %(rail)s::text AS rail, %(external_ref)s::text AS external_ref,
    %(cost_basis_cents)s::bigint AS cost_basis_cents, %(cost_basis_usdc_units)s::bigint AS cost_basis_usdc_units,
    %(promotional)s::boolean AS promotional, %(credits)s::bigint AS credits,
    %(remaining_credits)s::bigint AS remaining_credits, %(credited_at)s::timestamptz AS credited_at,
    %(expires_at)s::timestamptz AS expires_at, %(lot_details)s::json AS lot_details"""

# A mint: a posting, a new lot minted by it (and its entry in the expiry queue), its movements, the account's debt.
_MINT_SQL = _statement(
    _WRITES_VALUES + _LOT_VALUES,
    _POSTINGS,
    """
new_lot AS (
    INSERT INTO lots (account_id, rail, external_ref, cost_basis_cents, cost_basis_usdc_units, promotional, credits,
                      remaining_credits, reserved_credits, expired_credits, clawed_back_credits, credited_at,
                      expires_at, mint_transaction_id, details)
    SELECT p.lot_account, p.rail, p.external_ref, p.cost_basis_cents, p.cost_basis_usdc_units, p.promotional,
           p.credits, p.remaining_credits, 0, 0, 0, p.credited_at, p.expires_at, posted.id, p.lot_details
    FROM p, posted WHERE posted.n = 1
    RETURNING id
), queued AS (
    INSERT INTO lot_expiry_queue (expires_at, lot_id, account_id)
    SELECT p.expires_at, new_lot.id, p.lot_account FROM p, new_lot
)""",
    _MOVEMENTS.format(new_lot="(SELECT id FROM new_lot)"),
    _DEBT,
    final="SELECT new_lot.id, posted.id FROM new_lot, posted WHERE posted.n = 1",
)

_HOLD_VALUES = """,
    %(account)s::bigint AS account_id, %(api_key)s::bigint AS api_key_id, %(project)s::text AS project,
    %(key)s::text AS idempotency_key, %(hash)s::text AS request_hash, %(amount)s::bigint AS amount_credits,
    %(description)s::text AS description, %(expires)s::timestamptz AS expires_at,
    %(a_lots)s::bigint[] AS a_lots, %(a_credits)s::bigint[] AS a_credits,
    %(h_budgets)s::bigint[] AS h_budgets, %(h_starts)s::timestamptz[] AS h_starts"""

# A new hold with its allocations and budget charges, and the plan's writes: lot changes (reservations), budgets.
_HOLD_SQL_WRITE = _statement(
    _WRITES_VALUES + _HOLD_VALUES,
    f"""
hold AS (
    INSERT INTO holds (account_id, api_key_id, project, idempotency_key, request_hash, amount_credits,
                       captured_credits, status, description, created_at, expires_at)
    SELECT account_id, api_key_id, project, idempotency_key, request_hash, amount_credits, 0,
           '{HoldStatus.ACTIVE.value}', description, now, expires_at
    FROM p
    RETURNING *
), allocated AS (
    INSERT INTO hold_allocations (hold_id, lot_id, position, amount_credits)
    SELECT hold.id, a.lot_id, a.n - 1, a.credits
    FROM hold, p, unnest(p.a_lots, p.a_credits) WITH ORDINALITY AS a (lot_id, credits, n)
    ORDER BY a.n
), charged AS (
    INSERT INTO hold_budget_charges (hold_id, budget_id, period_start, amount_credits)
    SELECT hold.id, h.budget_id, h.period_start, p.amount_credits
    FROM hold, p, unnest(p.h_budgets, p.h_starts) WITH ORDINALITY AS h (budget_id, period_start, n)
    ORDER BY h.n
)""",
    _LOT_CHANGES,
    _BUDGETS,
    final=f"SELECT {_hold_columns('hold')} FROM hold",
)

_SETTLE_VALUES = """,
    %(hold)s::bigint AS hold_id, %(status)s::text AS status, %(capture)s::bigint AS capture_credits,
    %(capture_posting)s::bigint AS capture_posting"""

# The plan's writes (postings, lot changes, movements, budgets given back), then the hold resolved.
_SETTLE_SQL = _statement(
    _WRITES_VALUES + _SETTLE_VALUES,
    _POSTINGS,
    _LOT_CHANGES,
    _MOVEMENTS.format(new_lot="NULL"),
    _BUDGETS,
    final=f"""
UPDATE holds SET status = p.status, captured_credits = p.capture_credits, resolved_at = p.now,
    capture_transaction_id = (SELECT posted.id FROM posted WHERE posted.n = p.capture_posting)
FROM p
WHERE holds.id = p.hold_id
RETURNING {_hold_columns("holds")}""",
)


def _writes_params(writes: Writes) -> dict[str, Any]:
    """The values of ``_WRITES_VALUES``: each list of the plan as arrays, positions from 1 (a column of nothing but
    zeros or NULLs as an empty array)."""
    postings = writes.postings
    legs = [(n, account_id, credits) for n, posting in enumerate(postings, 1) for account_id, credits in posting.legs]
    lots, moves, budgets = writes.lots, writes.movements, writes.budgets
    return {
        "now": aware(writes.now),
        "t_kinds": text_array([posting.kind for posting in postings]),
        "t_keys": text_array([posting.idempotency_key for posting in postings]),
        "t_hashes": text_array([posting.request_hash for posting in postings]),
        "t_accounts": bigint_array(posting.account_id for posting in postings),
        "t_descriptions": text_array([posting.description for posting in postings]),
        "t_details": text_array([json_text(posting.details) for posting in postings]),
        "leg_postings": bigint_array(n for n, _, _ in legs),
        "leg_accounts": bigint_array(account_id for _, account_id, _ in legs),
        "leg_credits": bigint_array(credits for _, _, credits in legs),
        "c_lots": bigint_array(c.lot_id for c in lots),
        "c_remaining": _sparse([c.remaining_credits for c in lots]),
        "c_reserved": _sparse([c.reserved_credits for c in lots]),
        "c_expired": _sparse([c.expired_credits for c in lots]),
        "c_clawed_back": _sparse([c.clawed_back_credits for c in lots]),
        "m_lots": bigint_array(m.lot_id for m in moves),
        "m_postings": bigint_array(m.posting + 1 for m in moves),
        "m_kinds": _kinds_array([m.kind for m in moves]),
        "m_credits": bigint_array(m.amount_credits for m in moves),
        "m_holds": _sparse([m.hold_id for m in moves]),
        "b_ids": bigint_array(budget_id for budget_id, _, _ in budgets),
        "b_starts": timestamp_array(start for _, start, _ in budgets),
        "b_credits": bigint_array(credits for _, _, credits in budgets),
        "debt_account": None if writes.debt is None else writes.debt[0],
        "debt_after": None if writes.debt is None else writes.debt[1],
    }


_MOVEMENT_KINDS = frozenset(MovementKind)


def _kinds_array(kinds: list[str]) -> str:
    """A text[] literal of movement kinds (plain words, which need no quoting: cheaper than a list to adapt)."""
    if not _MOVEMENT_KINDS.issuperset(kinds):
        raise ValueError(f"not movement kinds: {sorted(set(kinds) - _MOVEMENT_KINDS)}")
    return "{" + ",".join(kinds) + "}"


def _sparse(values: list[int] | list[int | None]) -> str:
    """A bigint[] literal, empty when every value is 0 or NULL (what a shorter array is padded with and read as)."""
    return bigint_array(values) if any(values) else "{}"


def _only(
    writes: Writes,
    *,
    postings: bool = False,
    lots: bool = False,
    movements: bool = False,
    budgets: bool = False,
    new_lot: bool = False,
    debt: bool = False,
) -> None:
    """Refuse a plan with writes the operation's statement does not make (a plan the planner never makes)."""
    made = {
        "postings": bool(writes.postings),
        "lots": bool(writes.lots),
        "movements": bool(writes.movements),
        "budgets": bool(writes.budgets),
        "new_lot": writes.new_lot is not None,
        "debt": writes.debt is not None,
    }
    allowed = {"postings": postings, "lots": lots, "movements": movements, "budgets": budgets}
    allowed.update(new_lot=new_lot, debt=debt)
    unwritten = sorted(name for name, present in made.items() if present and not allowed[name])
    if unwritten:
        raise ValueError(f"this statement does not write the plan's {', '.join(unwritten)}")


def _budget_params(params: dict[str, Any], api_key_id: int | None, project: str | None, now: datetime) -> None:
    params["api_key_ref"] = None if api_key_id is None else str(api_key_id)
    params["project"] = project
    for period in BudgetPeriod:
        params[f"period_{period.value}"] = period_start(now, period.value)


# --- expiry ------------------------------------------------------------------------------------------------

# The soonest lots in the expiry queue whose time has come, and for each that is its account's first, all of that
# account's lots whose time has come (soonest first), until the batch is full. A nested loop read lazily: it stops
# as soon as the batch is full, so a backlog of many lots per account reads only the accounts it takes.
_PICK = """
SELECT l.lot_id AS id, l.account_id
FROM (
    SELECT lot_id, account_id, expires_at FROM lot_expiry_queue
    WHERE expires_at <= %(now)s
    ORDER BY expires_at, lot_id LIMIT %(limit)s
) AS first_due
CROSS JOIN LATERAL (
    SELECT lot_id, account_id FROM lot_expiry_queue
    WHERE account_id = first_due.account_id AND expires_at <= %(now)s
    ORDER BY expires_at, lot_id LIMIT %(limit)s
) AS l
WHERE NOT EXISTS (
    SELECT FROM lot_expiry_queue AS sooner
    WHERE sooner.account_id = first_due.account_id
      AND (sooner.expires_at, sooner.lot_id) < (first_due.expires_at, first_due.lot_id)
)
LIMIT %(limit)s
"""

# The pick, and the accounts of its lots locked, without waiting for any: NO KEY UPDATE excludes the customers'
# operations (they lock FOR UPDATE) but not other tables' foreign-key checks, and SKIP LOCKED passes over an account
# a customer's operation holds. The lots picked come back with those of the accounts locked, and the accounts picked
# (for when none could be locked). The transaction's commit need not wait for the disk (see ``expiry``), and its
# statements keep one plan each rather than being planned again at every batch.
_PICK_AND_LOCK_SQL = f"""
WITH settings AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true), set_config('plan_cache_mode', 'force_generic_plan', true)
), picked AS MATERIALIZED ({_PICK}
), locked AS MATERIALIZED (
    SELECT id FROM accounts
    WHERE id = ANY(ARRAY(SELECT DISTINCT account_id FROM picked)) AND EXISTS (SELECT FROM settings)
    ORDER BY id FOR NO KEY UPDATE SKIP LOCKED
)
SELECT (SELECT count(*) FROM picked) AS examined,
       (SELECT array_agg(id ORDER BY id) FROM picked) AS picked,
       (SELECT array_agg(DISTINCT account_id ORDER BY account_id) FROM picked) AS accounts,
       (SELECT array_agg(picked.id ORDER BY picked.id) FROM picked JOIN locked ON locked.id = picked.account_id)
""".encode()

# When every account the batch picked is busy, it waits for them (in the fixed lock order) rather than pick the same
# lots again and again.
_LOCK_ACCOUNTS_SQL = b"SELECT id FROM accounts WHERE id = ANY(%(accounts)s::bigint[]) ORDER BY id FOR NO KEY UPDATE"

# The lots picked, read again under their accounts' locks (a hold or a spend may have changed them since), as
# arrays in lot id order: one row is far cheaper to read than thousands.
_DUE_NOW_SQL = b"""
SELECT array_agg(id ORDER BY id), array_agg(account_id ORDER BY id),
       array_agg(remaining_credits - reserved_credits ORDER BY id), array_agg(reserved_credits ORDER BY id)
FROM lots
WHERE id = ANY(%(lots)s::bigint[]) AND remaining_credits > reserved_credits AND expires_at <= %(now)s
"""


class PgStore(CoreStore):
    """See the module's docstring; ``store.LedgerStore`` says what each method promises."""

    def __init__(self, session: Session, conn: PgConnection) -> None:
        super().__init__(session)
        self.conn = conn
        # The cursor of every statement here, and one for the budgets read beside a draw's state.
        self.cursor, self.budget_cursor = cursors(conn)

    # --- locks and reads ---------------------------------------------------------------------------------------

    def _lock_and_read(
        self, state_sql: bytes, req: DrawRequest | HoldRequest
    ) -> tuple[list[tuple[Any, ...]], psycopg.Cursor[Any] | None]:
        """Lock the account and read its state for a draw (``state_sql``), with the budgets that apply to the
        request's API key and project when either is given, in one pipelined round trip: (the state's rows, the
        cursor holding the budgets or None)."""
        params: dict[str, Any] = {
            "account": req.account_id,
            "key": req.idempotency_key,
            "now": aware(req.now),
            "limit": repo.FIRST_DRAW_PAGE,
        }
        budgeted = req.api_key_id is not None or req.project is not None
        if budgeted:
            _budget_params(params, req.api_key_id, req.project, req.now)
        with translated():
            cursor = self.cursor
            with pipeline(self.conn):
                cursor.execute(_LOCK_SQL, params)
                cursor.execute(state_sql, params)  # a cursor keeps the result of its last statement
                budgets = self.budget_cursor.execute(_BUDGETS_SQL, params) if budgeted else None
            return cursor.fetchall(), budgets

    def _planned(
        self,
        state: AccountState,
        page: list[tuple[Any, ...]],
        budgets: psycopg.Cursor[Any] | None,
        req: DrawRequest | HoldRequest,
    ) -> AccountState:
        """The state with what a new request is planned from: the lots that cover it and the budgets."""
        if state.kind != AccountKind.CUSTOMER or state.existing is not None:
            return state
        with translated():
            candidates = self._candidates(page, req.account_id, req.now, req.amount_credits + state.debt_credits)
            found = [BudgetUse(*row) for row in budgets.fetchall()] if budgets is not None else []
        return state._replace(candidates=candidates, budgets=found)

    def lock_for_draw(self, req: DrawRequest) -> AccountState:
        rows, budgets = self._lock_and_read(_DRAW_STATE_SQL, req)
        if not rows:
            return AccountState(None, 0)
        kind, debt_credits, existing_id, existing_hash = rows[0][:4]
        existing = None if existing_id is None else Existing(existing_hash, existing_id)
        page = [row[4:] for row in rows if row[4] is not None]
        return self._planned(AccountState(kind, debt_credits, existing), page, budgets, req)

    def lock_for_hold(self, req: HoldRequest) -> AccountState:
        rows, budgets = self._lock_and_read(_HOLD_STATE_SQL, req)
        if not rows:
            return AccountState(None, 0)
        kind, debt_credits, existing_hash, found = rows[0][0], rows[0][1], rows[0][6], rows[0][7:]
        existing = None if found[0] is None else Existing(existing_hash, hold=_hold_row(found))
        page = [row[2:6] for row in rows if row[2] is not None]
        return self._planned(AccountState(kind, debt_credits, existing), page, budgets, req)

    def lock_for_mint(self, req: MintRequest) -> AccountState:
        params = {"account": req.account_id, "key": req.idempotency_key}
        with translated():
            cursor = self.cursor
            with pipeline(self.conn):
                cursor.execute(_LOCK_SQL, params)
                cursor.execute(_ACCOUNT_STATE_SQL, params)
            row = cursor.fetchone()
        if row is None:
            return AccountState(None, 0)
        kind, debt_credits, existing_id, existing_hash = row
        return AccountState(kind, debt_credits, None if existing_id is None else Existing(existing_hash, existing_id))

    def _candidates(
        self, page: list[tuple[Any, ...]], account_id: int, now: datetime, needed_credits: int
    ) -> list[tuple[int, int]]:
        """(lot id, unreserved credits) in draw-down order, as many lots as cover ``needed_credits`` (all of them
        when the account holds less): ``page`` is the first page of (lot id, unreserved credits, expiry, credited
        at), and further pages are read as needed."""
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
            page = self.cursor.execute(_NEXT_LOTS_SQL, params).fetchall()

    def lock_hold(self, account_id: int | None, hold_id: int) -> LockedHold | None:
        params = {"hold": hold_id, "owner": account_id}
        with translated():
            cursor = self.cursor
            with pipeline(self.conn):
                cursor.execute(_LOCK_HOLD_SQL, params)
            rows = cursor.fetchall()
        if not rows:
            return None
        first = rows[0]
        hold = _hold_row(first[1 : _HOLD_WIDTH + 1])
        budget_ids, starts = first[_HOLD_WIDTH + 1], first[_HOLD_WIDTH + 2]
        allocated = _HOLD_WIDTH + 3
        allocations = [row[allocated:] for row in rows if row[allocated] is not None]
        return LockedHold(first[0], hold, allocations, list(zip(budget_ids, starts, strict=True)))

    def lock_due_lots(self, now: datetime, limit: int) -> DueLots:
        params: dict[str, Any] = {"now": aware(now), "limit": limit}
        with translated():
            cursor = self.conn.cursor()
            with pipeline(self.conn):  # the transaction's BEGIN travels with the pick
                cursor.execute(_PICK_AND_LOCK_SQL, params)
            examined, picked, accounts, mine = cursor.fetchone() or (0, None, None, None)
            if not examined:
                return DueLots(0, [])
            if mine is None:
                self.conn.execute(_LOCK_ACCOUNTS_SQL, {"accounts": bigint_array(accounts)})
                mine = picked
            params["lots"] = bigint_array(mine)
            columns = self.conn.execute(_DUE_NOW_SQL, params).fetchone()
        assert columns is not None
        taken = list(mine)
        if columns[0] is None:
            return DueLots(examined, [], taken)
        return DueLots(examined, list(map(DueLot._make, zip(*columns, strict=True))), taken)

    # --- writes ------------------------------------------------------------------------------------------------

    def _write(self, sql: bytes, params: dict[str, Any]) -> tuple[Any, ...]:
        with translated():
            written = self.cursor.execute(sql, params).fetchone()
        assert written is not None
        return written

    def write_draw(self, plan: DrawPlan) -> int:
        _only(plan.writes, postings=True, lots=True, movements=True, budgets=True)
        return int(self._write(_DRAW_SQL, _writes_params(plan.writes))[0])

    def write_expiry(self, plan: ExpiryPlan) -> int | None:
        _only(plan.writes, postings=True, lots=True, movements=True)
        params = _writes_params(plan.writes)
        params["dequeued"] = bigint_array(plan.dequeued)
        transaction_id = self._write(_EXPIRY_SQL, params)[0]
        return None if transaction_id is None else int(transaction_id)

    def write_mint(self, plan: MintPlan) -> tuple[int, int]:
        writes = plan.writes
        _only(writes, postings=True, movements=True, new_lot=True, debt=True)
        lot = writes.new_lot
        assert lot is not None
        params = _writes_params(writes)
        params.update(
            lot_account=lot["account_id"],
            rail=lot["rail"],
            external_ref=lot["external_ref"],
            cost_basis_cents=lot["cost_basis_cents"],
            cost_basis_usdc_units=lot["cost_basis_usdc_units"],
            promotional=lot["promotional"],
            credits=lot["credits"],
            remaining_credits=lot["remaining_credits"],
            credited_at=aware(lot["credited_at"]),
            expires_at=aware(lot["expires_at"]),
            lot_details=json_text(lot["details"]),
        )
        lot_id, transaction_id = self._write(_MINT_SQL, params)
        return int(lot_id), int(transaction_id)

    def write_hold(self, plan: HoldPlan) -> HoldRow:
        req = plan.request
        _only(plan.writes, lots=True, budgets=True)
        params = _writes_params(plan.writes)
        params.update(
            account=req.account_id,
            api_key=req.api_key_id,
            project=req.project,
            key=req.idempotency_key,
            hash=req.request_hash,
            amount=req.amount_credits,
            description=req.description,
            expires=aware(req.expires_at),
            a_lots=bigint_array(lot_id for lot_id, _ in plan.reservations),
            a_credits=bigint_array(credits for _, credits in plan.reservations),
            h_budgets=bigint_array(budget_id for budget_id, _ in plan.budget_charges),
            h_starts=timestamp_array(start for _, start in plan.budget_charges),
        )
        return _hold_row(self._write(_HOLD_SQL_WRITE, params))

    def write_settle(self, plan: SettlePlan) -> HoldRow:
        _only(plan.writes, postings=True, lots=True, movements=True, budgets=True)
        params = _writes_params(plan.writes)
        params.update(
            hold=plan.hold_id,
            status=plan.status,
            capture=plan.capture_credits,
            capture_posting=None if plan.capture_posting is None else plan.capture_posting + 1,
        )
        return _hold_row(self._write(_SETTLE_SQL, params))
