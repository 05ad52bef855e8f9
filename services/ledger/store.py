"""Where the ledger's rows are read and written: one interface, two stores, chosen here and only here.

Every ledger operation is written once (minting, spending, holds, expiry, clawback): validate, lock and read the
state through a store, decide in pure code (``plans``), write the plan through the store. The stores differ only
in how they talk to the database:

- ``core_store.CoreStore``: SQLAlchemy Core, statement by statement; SQLite, and PostgreSQL without psycopg's
  pipeline mode.
- ``pg_store.PgStore``: the same reads and writes in two round trips per operation on PostgreSQL through psycopg.

Every PostgreSQL-only path of the house, and why it exists:

- ``pg_store.PgStore``: mints, spends, debit adjustments, holds, captures, releases and hold expiry in two round
  trips, BEGIN included (a pipelined BEGIN-lock-and-read, one statement for every write), where the Core store
  takes 6-12;
  the ledger's throughput is measured against pgbench (``scripts/bench_ledger.py``).
- ``pg_store.PgStore.lock_due_lots``: lot expiry picks and locks a batch in one statement with ``SKIP LOCKED``, so
  that the expiry job passes over an account a customer's operation holds instead of waiting behind it; SQLite's
  single writer has nothing to skip.
- ``services.usdc.repository.advance_cursor``: the chain listener's cursor and block hashes in one pipelined round
  trip per scanned range.
- ``services.usdc.repository.insert_observed``: the Transfer logs of a range stored through one binary COPY.
- ``services.worker.runner``: advisory locks, so that one replica runs each job (SQLite has one process).
- ``services.ledger.system_accounts``: the accounts' id sequence moved past the fixed system accounts' ids.
- ``services.finance.reports._month_of``: a timestamp's calendar month, spelled per dialect.

Beside these, an INSERT with ``ON CONFLICT`` is built per dialect by ``services.core.db.insert_for`` (the SQL is
the same on both).

The psycopg plumbing they share (the session's driver connection, timestamps, errors) is ``services.core.pg``.
The contract tests (tests/ledger/test_stores.py) hold the two stores to the same rows for the same plan.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sqlmodel import Session

from services.core.pg import driver_of
from services.ledger.core_store import CoreStore
from services.ledger.pg_store import PgStore
from services.ledger.plans import (
    AccountState,
    ClawbackPlan,
    DrawPlan,
    DrawRequest,
    DueLots,
    ExpiryPlan,
    HoldPlan,
    HoldRequest,
    HoldRow,
    LockedHold,
    MintPlan,
    MintRequest,
    SettlePlan,
)


class LedgerStore(Protocol):
    """Reads under a customer's lock, and writes of plans, on the caller's session (nothing here commits).

    ``lock_…`` methods lock the account (or accounts) first and read everything else once the lock is granted;
    an account that does not exist comes back with ``kind`` None. For a request that is new (no ``existing``)
    on a customer's account, the state carries the lots that cover it in draw-down order and the budgets that
    apply. ``write_…`` methods write exactly the plan: each table's new rows in the plan's order."""

    def lock_account(self, account_id: int, idempotency_key: str | None = None) -> AccountState:
        """The account locked, its kind and debt, and the transaction already posted under the key."""
        ...

    def lock_for_mint(self, req: MintRequest) -> AccountState: ...

    def lock_for_draw(self, req: DrawRequest) -> AccountState: ...

    def lock_for_hold(self, req: HoldRequest) -> AccountState:
        """As ``lock_for_draw``, ``existing`` being the hold made before under the request's key."""
        ...

    def lock_hold(self, account_id: int | None, hold_id: int) -> LockedHold | None:
        """The hold's account locked, then the hold with its allocations and budget charges; None when there is
        no such hold or it is not ``account_id``'s (None: any account's)."""
        ...

    def lock_due_lots(self, now: datetime, limit: int) -> DueLots:
        """Up to ``limit`` lots of the expiry queue whose time has come as of ``now`` (the soonest, then every such
        lot of each account in turn), their accounts locked in id order, read again under the locks."""
        ...

    def write_draw(self, plan: DrawPlan) -> int:
        """Returns the transaction's id."""
        ...

    def write_mint(self, plan: MintPlan) -> tuple[int, int]:
        """Returns (the new lot's id, the transaction's id)."""
        ...

    def write_hold(self, plan: HoldPlan) -> HoldRow: ...

    def write_settle(self, plan: SettlePlan) -> HoldRow: ...

    def write_expiry(self, plan: ExpiryPlan) -> int | None:
        """Returns the transaction's id (None when no lot taken was due)."""
        ...

    def write_clawback(self, plan: ClawbackPlan) -> int:
        """Returns the id of the plan's first transaction."""
        ...


def store_for(session: Session) -> LedgerStore:
    """The store for the session's database: the only place that asks which one it is."""
    conn = driver_of(session)
    return CoreStore(session) if conn is None else PgStore(session, conn)
