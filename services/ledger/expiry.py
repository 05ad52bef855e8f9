"""Lot expiry: when a lot's time comes, its unreserved remainder moves to breakage.

Works in bounded batches. One call takes up to ``limit`` lots due: the soonest lot due, then, account by account in
the order their first lot falls due, every lot due of each account, so that a customer's lots expire together. It
posts one expiry transaction for the whole batch: one entry per account (what its lots lost; all a customer sees of
the batch in its history) and one breakage entry (the batch's total); each lot gets one expiry movement, and its
``expired_credits`` grow by the same amount (what a clawback of the lot later takes back from breakage). A reserved
part stays until its hold resolves (see holds._settle).

Locks. A customer's operations serialise on the account row, so the batch locks the accounts of its lots, but on
PostgreSQL it does not wait for them: ``SKIP LOCKED`` passes over an account that a spend or a hold holds right
now, and its lots wait for a later batch (only a batch whose accounts are all busy waits for them). The pick and
the locks are one statement; every write is another, which starts once the locks are granted (so it reads what
their previous holders committed) and changes only the lots whose unreserved remainder is still what the batch
picked, so the locks last that statement and the commit. The commit does not wait for the disk (a batch lost in a
crash is simply due again, and any later commit that depends on it flushes it first): call it in a transaction of
its own, as the job does. On SQLite the transaction's write lock excludes every other writer already.

Idempotency. The state is the cursor: a lot is due while ``remaining > reserved`` and its time has come, so a batch
killed before its commit leaves nothing behind, and a rerun picks up exactly what is left. The job takes a lot's
unreserved remainder once: after that, whatever frees credits on the lot expires them at once in its own
transaction (a hold resolving, a reinstatement), so the lot is never due again. The transaction's key is derived
from what it expires (each lot's id, the credits it expires and its reserved credits), so the same expiry can
never be posted twice.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, text
from sqlmodel import Session

from services.core.clock import utcnow
from services.core.db import UTCDateTime
from services.core.metrics import ledger_operation
from services.ledger import repository as repo
from services.ledger.common import movement_row
from services.ledger.models import MovementKind, TransactionKind
from services.ledger.system_accounts import SystemAccount

lots = repo.lots

KEY_PREFIX = "expiry:lots:"


@dataclass(frozen=True, slots=True)
class ExpiryBatch:
    lots_expired: int
    credits_expired: int
    # Customer accounts whose lots expired (each has one entry in the batch's transaction).
    accounts: int
    # Lots the batch looked at, including any whose account was busy or that changed before the lock; a full batch
    # means there may be more.
    lots_examined: int = 0
    # The batch's journal transaction (None when nothing expired).
    transaction_id: int | None = None


def expiry_key(expiring: Iterable[tuple[int, int, int]]) -> str:
    """The idempotency key of the expiry of (lot id, credits expiring, reserved credits)."""
    state = ",".join(f"{lot_id}:{amount}:{reserved}" for lot_id, amount, reserved in sorted(expiring))
    return KEY_PREFIX + hashlib.sha256(state.encode()).hexdigest()[:32]


@ledger_operation("expiry")
def expire_lots(session: Session, *, now: datetime | None = None, limit: int = 5_000) -> ExpiryBatch:
    """Expire the unreserved remainder of (up to) the next ``limit`` lots whose time has come, as of ``now``."""
    now = now or utcnow()
    if session.get_bind().dialect.name == "postgresql":
        return _expire_set_based(session, now, limit)
    return _expire_row_by_row(session, now, limit)


_due = (lots.c.remaining_credits > lots.c.reserved_credits, lots.c.expires_at <= bindparam("now", type_=UTCDateTime))

_soonest_stmt = (
    select(lots.c.id, lots.c.account_id).where(*_due).order_by(lots.c.expires_at, lots.c.id).limit(bindparam("limit"))
)


# --- PostgreSQL: pick and lock in one statement, then one statement for every write ---------------------------

# The soonest lots due, and for each that is its account's first lot due, all of that account's lots due (soonest
# first), until the batch is full. A nested loop read lazily: it stops as soon as the batch is full, so a backlog of
# many lots per account reads only the accounts it takes.
_PICK = """
SELECT l.id, l.account_id, l.amount
FROM (
    SELECT id, account_id, expires_at FROM lots
    WHERE remaining_credits > reserved_credits AND expires_at <= :now
    ORDER BY expires_at, id LIMIT :limit
) AS first_due
CROSS JOIN LATERAL (
    SELECT id, account_id, remaining_credits - reserved_credits AS amount FROM lots
    WHERE account_id = first_due.account_id AND remaining_credits > 0 AND remaining_credits > reserved_credits
      AND expires_at <= :now
    ORDER BY expires_at, id LIMIT :limit
) AS l
WHERE NOT EXISTS (
    SELECT FROM lots AS sooner
    WHERE sooner.account_id = first_due.account_id AND sooner.remaining_credits > 0
      AND sooner.remaining_credits > sooner.reserved_credits AND sooner.expires_at <= first_due.expires_at
      AND (sooner.expires_at, sooner.id) < (first_due.expires_at, first_due.id)
)
LIMIT :limit
"""

# The pick, and the accounts of its lots locked, without waiting for any: NO KEY UPDATE excludes the customers'
# operations (they lock FOR UPDATE) but not other tables' foreign-key checks, and SKIP LOCKED passes over an account
# a customer's operation holds. The lots of the accounts locked come back as arrays (what the write takes), with
# the accounts picked, for when none could be locked. The transaction's commit need not wait for the disk (see the
# module's docstring), and its statements keep one plan each rather than being planned again at every batch.
_pick_and_lock_sql = text(
    f"""
WITH settings AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true), set_config('plan_cache_mode', 'force_generic_plan', true)
), picked AS MATERIALIZED ({_PICK}
), locked AS MATERIALIZED (
    SELECT id FROM accounts WHERE id IN (SELECT account_id FROM picked) AND EXISTS (SELECT FROM settings)
    ORDER BY id FOR NO KEY UPDATE SKIP LOCKED
)
SELECT (SELECT count(*) FROM picked) AS examined,
       (SELECT array_agg(DISTINCT account_id ORDER BY account_id) FROM picked) AS accounts,
       array_agg(picked.id ORDER BY picked.id) AS lots, array_agg(picked.amount ORDER BY picked.id) AS amounts
FROM picked JOIN locked ON locked.id = picked.account_id
"""
).bindparams(bindparam("now", type_=UTCDateTime))

# When every account the batch picked is busy, it waits for them (in the fixed lock order) rather than pick the same
# lots again and again; then it writes the lots it picked.
_lock_accounts_sql = text(
    "SELECT id FROM accounts WHERE id = ANY(CAST(:accounts AS bigint[])) ORDER BY id FOR NO KEY UPDATE"
)
_lots_of_accounts_sql = text(
    "SELECT array_agg(picked.id ORDER BY picked.id) AS lots, array_agg(picked.amount ORDER BY picked.id) AS amounts "
    f"FROM ({_PICK}) AS picked WHERE picked.account_id = ANY(CAST(:accounts AS bigint[]))"
).bindparams(bindparam("now", type_=UTCDateTime))

# Everything the batch writes, in one statement, once the accounts are locked. ``drained`` changes only lots whose
# unreserved remainder is still what was picked, and the transaction, entries and movements are built from what it
# changed, so they agree with the lots whatever happened since the pick. The key hashes the text ``expiry_key`` does.
_write_sql = text(
    """
WITH drained AS (
    UPDATE lots AS l
    SET remaining_credits = l.remaining_credits - picked.amount, expired_credits = l.expired_credits + picked.amount
    FROM unnest(CAST(:lots AS bigint[]), CAST(:amounts AS bigint[])) AS picked (id, amount)
    WHERE l.id = picked.id AND l.remaining_credits - l.reserved_credits = picked.amount AND picked.amount > 0
      AND l.expires_at <= :now
    RETURNING l.id, l.account_id, picked.amount, l.reserved_credits
), txn AS (
    INSERT INTO ledger_transactions
        (kind, idempotency_key, request_hash, account_id, created_at, description, details)
    SELECT CAST(:kind AS text),
           :key_prefix || left(encode(sha256(convert_to(string_agg(
               id || ':' || amount || ':' || reserved_credits, ',' ORDER BY id), 'UTF8')), 'hex'), 32),
           NULL, NULL, :now, NULL, CAST('{}' AS json)
    FROM drained
    HAVING count(*) > 0
    RETURNING id
), per_account AS (
    SELECT account_id, sum(amount) AS total FROM drained GROUP BY account_id
), legs AS (
    INSERT INTO ledger_entries (transaction_id, account_id, amount_credits, created_at)
    SELECT txn.id, per_account.account_id, -per_account.total, :now FROM txn, per_account
    UNION ALL
    SELECT txn.id, CAST(:breakage AS bigint), (SELECT sum(total) FROM per_account), :now FROM txn
), moved AS (
    INSERT INTO lot_movements (lot_id, transaction_id, kind, amount_credits, hold_id, created_at)
    SELECT drained.id, txn.id, CAST(:movement_kind AS text), -drained.amount, NULL, :now
    FROM txn, drained ORDER BY drained.id
)
SELECT (SELECT id FROM txn) AS transaction_id, count(*) AS lots, coalesce(sum(amount), 0) AS credits,
       count(DISTINCT account_id) AS accounts
FROM drained
"""
).bindparams(bindparam("now", type_=UTCDateTime))


def _expire_set_based(session: Session, now: datetime, limit: int) -> ExpiryBatch:
    picked = session.execute(_pick_and_lock_sql, {"now": now, "limit": limit}).one()
    if not picked.examined:
        return ExpiryBatch(0, 0, 0)
    mine = (picked.lots, picked.amounts)
    if picked.lots is None:
        session.execute(_lock_accounts_sql, {"accounts": picked.accounts})
        mine = session.execute(_lots_of_accounts_sql, {"now": now, "limit": limit, "accounts": picked.accounts}).one()
    written = session.execute(
        _write_sql,
        {
            "lots": mine[0] or [],
            "amounts": mine[1] or [],
            "now": now,
            "kind": TransactionKind.EXPIRY.value,
            "movement_kind": MovementKind.EXPIRY.value,
            "key_prefix": KEY_PREFIX,
            "breakage": SystemAccount.BREAKAGE,
        },
    ).one()
    return ExpiryBatch(
        int(written.lots), int(written.credits), int(written.accounts), int(picked.examined), written.transaction_id
    )


# --- SQLite (and any other store): the same batch, statement by statement -----------------------------------------


_account_due_stmt = (
    select(lots.c.id, lots.c.account_id)
    .where(lots.c.account_id == bindparam("account_id"), *_due)
    .order_by(lots.c.expires_at, lots.c.id)
    .limit(bindparam("limit"))
)


def _pick(session: Session, now: datetime, limit: int) -> list[Any]:
    """What ``_PICK`` picks, one account at a time."""
    accounts = dict.fromkeys(row.account_id for row in session.execute(_soonest_stmt, {"now": now, "limit": limit}))
    picked: list[Any] = []
    for account_id in accounts:
        if len(picked) == limit:
            break
        params = {"account_id": account_id, "now": now, "limit": limit - len(picked)}
        picked += session.execute(_account_due_stmt, params).all()
    return picked


def _expire_row_by_row(session: Session, now: datetime, limit: int) -> ExpiryBatch:
    candidates = _pick(session, now, limit)
    if not candidates:
        return ExpiryBatch(0, 0, 0)
    repo.lock_accounts(session, (row.account_id for row in candidates))
    # Read again under the locks: a hold or a spend may have changed them since.
    current = session.execute(
        select(
            lots.c.id,
            lots.c.account_id,
            (lots.c.remaining_credits - lots.c.reserved_credits).label("amount"),
            lots.c.reserved_credits,
        )
        .where(lots.c.id.in_([row.id for row in candidates]), *_due)
        .order_by(lots.c.id),
        {"now": now},
    ).all()
    if not current:
        return ExpiryBatch(0, 0, 0, len(candidates))

    per_account: dict[int, int] = defaultdict(int)
    for row in current:
        per_account[row.account_id] += row.amount
    total = sum(per_account.values())
    txn_id = repo.insert_transaction(
        session,
        kind=TransactionKind.EXPIRY,
        idempotency_key=expiry_key((r.id, r.amount, r.reserved_credits) for r in current),
        account_id=None,
        created_at=now,
        legs=[(account_id, -credits) for account_id, credits in sorted(per_account.items())]
        + [(SystemAccount.BREAKAGE, total)],
    )
    repo.expire_from_lots(session, [(row.id, row.amount) for row in current])
    movements: list[dict[str, Any]] = [
        movement_row(row.id, txn_id, MovementKind.EXPIRY, -row.amount, now) for row in current
    ]
    repo.insert_movements(session, movements)
    return ExpiryBatch(len(current), total, len(per_account), len(candidates), txn_id)
