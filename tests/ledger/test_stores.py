"""The two ledger stores (``services/ledger/store.py``) against each other, on PostgreSQL.

End to end: the same operations, run once on each store from an empty database, give the same results and the
same errors, and leave the same rows in every table, to the last id, timestamp and JSON detail. A refused
operation writes nothing, even when the caller commits regardless (on both backends). Store by store: each method
given the same request or plan reads the same state or writes the same rows. Then what the PostgreSQL store is
for: few round trips, and nothing sent through SQLAlchemy.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.pq import Trace, TransactionStatus
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from services.apikeys.service import ApiKeys
from services.core.db import unit_of_work
from services.core.errors import CreditrailError
from services.core.pg import driver_of
from services.ledger import repository as repo
from services.ledger import store
from services.ledger.budgets import create_budget
from services.ledger.clawback import clawback
from services.ledger.core_store import CoreStore
from services.ledger.expiry import expire_lots
from services.ledger.holds import capture_hold, create_hold, expire_holds, release_hold
from services.ledger.invariants import check_invariants
from services.ledger.minting import credit_adjustment, grant, mint
from services.ledger.models import HoldStatus, MovementKind, Rail, TransactionKind
from services.ledger.pg_store import PgStore
from services.ledger.plans import (
    DrawRequest,
    HoldRequest,
    MintRequest,
    plan_clawback,
    plan_draw,
    plan_expiry,
    plan_hold,
    plan_mint,
    plan_reinstatement,
    plan_settle,
)
from services.ledger.spending import debit_adjustment, spend
from services.ledger.system_accounts import SystemAccount
from tests.ledger.support import T0, ledger_balance, mint_card, new_account, new_api_key, snapshot

Op = tuple[Any, ...]


@contextmanager
def core_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every ledger operation takes the Core store, as on SQLite."""
    with monkeypatch.context() as patched:
        patched.setattr(store, "driver_of", lambda session: None)
        yield


@dataclass
class Ledger:
    """Runs operations on two funded customers with API keys and budgets; each outcome is what came back or the
    error raised, with its code and details."""

    engine: Engine
    now: datetime = T0
    accounts: list[int] = field(default_factory=list)
    api_keys: list[int] = field(default_factory=list)
    lots: list[int] = field(default_factory=list)
    # (hold id, its account id)
    holds: list[tuple[int, int]] = field(default_factory=list)
    mints: list[tuple[int, int, str]] = field(default_factory=list)
    refs: int = 0

    def setup(self) -> None:
        self.accounts = [new_account(self.engine, f"customer {n}") for n in range(2)]
        self.api_keys = [new_api_key(self.engine, account_id) for account_id in self.accounts]
        budgets = [
            (self.accounts[0], "api_key", str(self.api_keys[0]), "day", 400),
            (self.accounts[0], "project", "alpha", "total", 700),
            (self.accounts[1], "project", "alpha", "week", 300),
        ]
        for account_id, scope, scope_ref, period, limit in budgets:
            with unit_of_work(self.engine) as session:
                create_budget(
                    session,
                    ApiKeys(),
                    account_id=account_id,
                    name=f"{scope}:{scope_ref}:{period}",
                    scope=scope,
                    scope_ref=scope_ref,
                    period=period,
                    limit_credits=limit,
                    now=self.now,
                )

    def run(self, ops: list[Op]) -> list[Any]:
        self.setup()
        return [self.outcome(op) for op in ops]

    def outcome(self, op: Op) -> Any:
        try:
            with unit_of_work(self.engine) as session:
                result = getattr(self, f"do_{op[0]}")(session, *op[1:])
        except CreditrailError as refused:
            return (op[0], type(refused).__name__, refused.to_dict())
        if result is None:
            return (op[0], None)
        if isinstance(result, int):
            return (op[0], result)
        found = asdict(result)
        if op[0] == "hold" and not found["replayed"]:
            self.holds.append((found["id"], found["account_id"]))
        if op[0] in ("mint", "grant", "grant_again", "credit") and not found["replayed"]:
            self.lots.append(found["lot_id"])
        return (op[0], found)

    def scope(self, account: int, tag: int) -> dict[str, Any]:
        """No budget, the project, the account's API key, both, or another project."""
        scopes: list[dict[str, Any]] = [
            {},
            {"project": "alpha"},
            {"api_key_id": self.api_keys[account]},
            {"project": "alpha", "api_key_id": self.api_keys[account]},
            {"project": "beta"},
        ]
        return scopes[tag]

    def do_tick(self, _session: Any, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    def do_mint(self, session: Any, account: int, credits: int) -> Any:
        self.refs += 1
        ref = f"cs_test_{self.refs}"
        self.mints.append((account, credits, ref))
        return self.mint(session, account, credits, ref)

    def mint(self, session: Any, account: int, credits: int, ref: str) -> Any:
        return mint(
            session,
            account_id=self.accounts[account],
            amount_credits=credits,
            rail=Rail.CARD,
            external_ref=ref,
            funding_account_id=SystemAccount.FUNDING_CARD,
            cost_basis_cents=credits,
            credited_at=self.now,
            description="card purchase",
            details={"purchase": self.refs},
        )

    def do_mint_again(self, session: Any, pick: int, same: bool) -> Any:
        if not self.mints:
            return None
        account, credits, ref = self.mints[pick % len(self.mints)]
        return self.mint(session, account, credits if same else credits + 1, ref)

    def do_grant(self, session: Any, account: int, credits: int, lifetime_s: int) -> Any:
        self.refs += 1
        return grant(
            session,
            account_id=self.accounts[account],
            amount_credits=credits,
            idempotency_key=f"grant-{self.refs}",
            expires_at=self.now + timedelta(seconds=lifetime_s),
            reason="promotion",
            now=self.now,
        )

    def do_spend(self, session: Any, account: int, credits: int, key: int, tag: int) -> Any:
        return spend(
            session,
            account_id=self.accounts[account],
            amount_credits=credits,
            idempotency_key=f"spend-{key}",
            description=f"tool call {key}",
            now=self.now,
            **self.scope(account, tag),
        )

    def do_debit(self, session: Any, account: int, credits: int, key: int) -> Any:
        return debit_adjustment(
            session,
            account_id=self.accounts[account],
            amount_credits=credits,
            idempotency_key=f"adjust-{key}",
            reason="correction",
            actor="admin",
            now=self.now,
        )

    def do_credit(self, session: Any, account: int, credits: int, key: int) -> Any:
        """A positive adjustment, in the same key space as the negative ones (``do_debit``)."""
        return credit_adjustment(
            session,
            account_id=self.accounts[account],
            amount_credits=credits,
            idempotency_key=f"adjust-{key}",
            reason="correction",
            actor="admin",
            now=self.now,
        )

    def do_grant_again(self, session: Any, account: int, key: int, lifetime_s: int) -> Any:
        """A grant under a key of its own, asked again with the same or another expiry."""
        return grant(
            session,
            account_id=self.accounts[account],
            amount_credits=25,
            idempotency_key=f"regrant-{key}",
            expires_at=T0 + timedelta(seconds=lifetime_s),
            reason="promotion",
            now=self.now,
        )

    def do_hold(self, session: Any, account: int, credits: int, key: int, tag: int, ttl: int) -> Any:
        return create_hold(
            session,
            account_id=self.accounts[account],
            amount_credits=credits,
            idempotency_key=f"hold-{key}",
            ttl_seconds=ttl,
            description=f"hold {key}",
            now=self.now,
            **self.scope(account, tag),
        )

    def hold_owner(self, pick: int, owner: int) -> tuple[int | None, int]:
        """A hold made earlier, asked for through its account, the other account, or no account (an admin)."""
        hold_id, account_id = self.holds[pick % len(self.holds)]
        other = sum(self.accounts) - account_id
        return [account_id, other, None][owner], hold_id

    def do_capture(self, session: Any, pick: int, credits: int, owner: int) -> Any:
        if not self.holds:
            return None
        account_id, hold_id = self.hold_owner(pick, owner)
        return capture_hold(session, account_id=account_id, hold_id=hold_id, amount_credits=credits, now=self.now)

    def do_release(self, session: Any, pick: int, owner: int) -> Any:
        if not self.holds:
            return None
        account_id, hold_id = self.hold_owner(pick, owner)
        return release_hold(session, account_id=account_id, hold_id=hold_id, now=self.now)

    def do_clawback(self, session: Any, pick: int, credits: int) -> Any:
        if not self.lots:
            return None
        self.refs += 1
        return clawback(
            session,
            lot_id=self.lots[pick % len(self.lots)],
            amount_credits=credits,
            idempotency_key=f"clawback-{self.refs}",
            reason="refund",
            now=self.now,
        )

    def do_expire_lots(self, session: Any) -> Any:
        return expire_lots(session, now=self.now).lots_expired

    def do_expire_holds(self, session: Any) -> Any:
        return expire_holds(session, now=self.now)


def both_ways(
    engine: Engine, reset: Callable[[], None], monkeypatch: pytest.MonkeyPatch, ops: list[Op]
) -> tuple[list[Any], list[Any]]:
    """Run ``ops`` on the PostgreSQL store, then on the Core store, each from an empty database; compare every
    row."""
    reset()
    fast = Ledger(engine).run(ops)
    with unit_of_work(engine) as session:
        assert check_invariants(session) == []
    fast_rows = rows(engine)
    reset()
    with core_path(monkeypatch):
        core = Ledger(engine).run(ops)
    assert fast == core
    assert fast_rows == rows(engine)
    return fast, core


def rows(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, but for what differs from one database reset to the next whatever the ledger
    does: when the system accounts were created, and the API keys' random prefixes."""
    found = snapshot(engine)
    found["accounts"] = [row[:5] for row in found["accounts"]]  # id, kind, code, name, debt_credits
    del found["api_keys"]
    return found


accounts = st.integers(0, 1)
credits = st.integers(1, 300)
keys = st.integers(0, 6)
tags = st.integers(0, 4)
picks = st.integers(0, 1_000)
owners = st.integers(0, 2)
operations = st.one_of(
    st.tuples(st.just("mint"), accounts, st.integers(1, 1_000)),
    st.tuples(st.just("mint_again"), picks, st.booleans()),
    st.tuples(st.just("grant"), accounts, st.integers(1, 200), st.integers(60, 30 * 86_400)),
    st.tuples(st.just("spend"), accounts, credits, keys, tags),
    st.tuples(st.just("debit"), accounts, credits, keys),
    st.tuples(st.just("credit"), accounts, credits, keys),
    st.tuples(st.just("grant_again"), accounts, st.integers(0, 2), st.sampled_from([86_400, 2 * 86_400])),
    st.tuples(st.just("hold"), accounts, credits, keys, tags, st.integers(1, 3_600)),
    st.tuples(st.just("capture"), picks, credits, owners),
    st.tuples(st.just("release"), picks, owners),
    st.tuples(st.just("clawback"), picks, credits),
    st.tuples(st.just("expire_lots")),
    st.tuples(st.just("expire_holds")),
    st.tuples(st.just("tick"), st.integers(1, 7 * 86_400)),
)


@pytest.fixture
def reset(pg_engine: Engine, request: pytest.FixtureRequest) -> Callable[[], None]:
    return cast(Callable[[], None], request.getfixturevalue("postgres_database").reset)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(operations, min_size=5, max_size=30))
def test_random_operations_give_the_same_results_and_rows_on_both_paths(pg_engine, reset, monkeypatch, ops):
    both_ways(pg_engine, reset, monkeypatch, [("mint", 0, 800), ("grant", 1, 150, 3_600), *ops])


def test_a_mixed_day_gives_the_same_results_and_rows_on_both_paths(pg_engine, reset, monkeypatch):
    ops: list[Op] = [
        ("mint", 0, 500),
        ("grant", 0, 50, 600),  # expires while held below
        ("mint", 1, 500),
        ("hold", 0, 60, 1, 1, 1_200),  # the grant first, then the card lot; counted against the project's budget
        ("hold", 0, 60, 1, 1, 1_200),  # replayed
        ("hold", 0, 61, 1, 1, 1_200),  # the key reused for another request
        ("spend", 0, 30, 1, 0),
        ("spend", 0, 30, 1, 0),  # replayed
        ("spend", 0, 31, 1, 0),  # the key reused
        ("spend", 0, 10_000, 2, 0),  # more than the account holds
        ("spend", 0, 300, 3, 2),  # within the API key's day budget
        ("spend", 0, 150, 4, 3),  # over the API key's budget: refused, nothing written
        ("hold", 1, 250, 2, 1, 3_600),
        ("hold", 1, 100, 3, 1, 3_600),  # over the week budget
        ("tick", 900),  # the grant has expired, still reserved
        ("capture", 0, 20, 0),  # draws the grant, expires the rest of its reservation at once
        ("capture", 0, 20, 0),  # already captured
        ("capture", 1, 300, 0),  # more than the hold
        ("capture", 1, 10, 1),  # through another account: not found
        ("tick", 3_600),
        ("release", 1, 2),  # past its time to live
        ("expire_holds",),
        ("clawback", 0, 400),  # partly into debt
        ("mint", 0, 100),  # repays the debt first
        ("mint", 0, 500),
        ("debit", 0, 5, 1),
        ("debit", 0, 5, 1),  # replayed
        ("credit", 0, 5, 1),  # the same key for the other sign
        ("credit", 0, 7, 2),
        ("debit", 0, 7, 2),  # the same key for the other sign
        ("grant_again", 1, 0, 86_400),
        ("grant_again", 1, 0, 86_400),  # replayed
        ("grant_again", 1, 0, 2 * 86_400),  # the key reused with another expiry
        ("mint_again", 0, True),  # replayed
        ("mint_again", 0, False),  # the reference reused
        ("expire_lots",),
    ]
    fast, _core = both_ways(pg_engine, reset, monkeypatch, ops)
    refused = [(op[0], outcome[2]["code"]) for op, outcome in zip(ops, fast, strict=True) if len(outcome) == 3]
    assert refused == [
        ("hold", "idempotency_key_reused"),
        ("spend", "idempotency_key_reused"),
        ("spend", "insufficient_credits"),
        ("spend", "budget_exceeded"),
        ("hold", "budget_exceeded"),
        ("capture", "hold_not_active"),
        ("capture", "capture_exceeds_hold"),
        ("capture", "hold_not_found"),
        ("release", "hold_expired"),
        ("credit", "idempotency_key_reused"),
        ("debit", "idempotency_key_reused"),
        ("grant_again", "idempotency_key_reused"),
        ("mint_again", "idempotency_key_reused"),
    ]
    replayed = [
        op[0]
        for op, outcome in zip(ops, fast, strict=True)
        if isinstance(outcome[1], dict) and outcome[1].get("replayed")
    ]
    assert replayed == ["hold", "spend", "debit", "grant_again", "mint_again"]


def test_draws_beyond_the_first_pages_of_lots_give_the_same_results_and_rows_on_both_paths(
    pg_engine, reset, monkeypatch
):
    # 300 lots of 1 credit, expiring one after the other; a hold leaves some with nothing unreserved.
    ops: list[Op] = [("grant", 0, 1, 86_400 + n) for n in range(300)]
    ops += [
        ("hold", 0, 3, 1, 0, 3_600),  # the first three lots
        ("spend", 0, 295, 1, 0),  # the next 295: the fourth page of lots
        ("spend", 0, 3, 2, 0),  # 2 left: refused, every page read
        ("hold", 0, 2, 2, 0, 3_600),  # the last two
        ("capture", 1, 1, 0),
        ("release", 0, 0),
        ("spend", 0, 4, 3, 0),  # the released three and the one the capture left
        ("clawback", 299, 1),  # drawn already: into debt
        ("spend", 0, 1, 4, 0),  # nothing left over the debt
    ]
    fast, _core = both_ways(pg_engine, reset, monkeypatch, ops)
    spent = [outcome[1] for outcome in fast if outcome[0] == "spend" and isinstance(outcome[1], dict)]
    assert [len(result["draws"]) for result in spent] == [295, 4]
    refused = [outcome[2] for outcome in fast if outcome[0] == "spend" and len(outcome) == 3]
    assert [(error["code"], error["details"]["available_credits"]) for error in refused] == [
        ("insufficient_credits", 2),
        ("insufficient_credits", 0),
    ]


def test_a_refused_operation_writes_nothing_even_when_the_caller_commits(engine):
    ledger = Ledger(engine)
    ledger.setup()
    done = [("mint", 0, 500), ("spend", 0, 10, 1, 0), ("hold", 0, 50, 1, 1, 60), ("capture", 0, 10, 0)]
    done += [("hold", 0, 20, 2, 1, 60)]
    assert [len(ledger.outcome(op)) for op in done] == [2] * len(done)
    refused: list[tuple[Op, str]] = [
        (("spend", 0, 10_000, 3, 0), "insufficient_credits"),
        (("spend", 0, 11, 1, 0), "idempotency_key_reused"),
        (("spend", 0, 401, 4, 2), "budget_exceeded"),  # the API key's day budget is 400
        (("debit", 0, 10_000, 1), "insufficient_credits"),
        (("hold", 0, 51, 1, 1, 60), "idempotency_key_reused"),
        (("hold", 0, 10_000, 3, 0, 60), "insufficient_credits"),
        (("hold", 0, 401, 4, 2, 60), "budget_exceeded"),
        (("capture", 0, 5, 0), "hold_not_active"),
        (("capture", 1, 21, 0), "capture_exceeds_hold"),
        (("release", 1, 1), "hold_not_found"),
        (("mint_again", 0, False), "idempotency_key_reused"),
        (("tick", 60), ""),
        (("capture", 1, 5, 0), "hold_expired"),
    ]
    for op, code in refused:
        before = snapshot(engine)
        if not code:
            ledger.outcome(op)
            continue
        with unit_of_work(engine) as session, pytest.raises(CreditrailError) as refusal:
            getattr(ledger, f"do_{op[0]}")(session, *op[1:])
        assert (refusal.value.code, snapshot(engine)) == (code, before), op


# --- what the PostgreSQL store is for ------------------------------------------------------------------------------


def protocol_trace(engine: Engine, operation: Callable[[], Any]) -> list[str]:
    """The messages of ``operation`` each way (a libpq trace of the pooled connection: "F" lines from the client,
    "B" from the server; the engine's pool must hand out that one connection)."""
    pooled = engine.raw_connection()
    pgconn = cast(Any, pooled.driver_connection).pgconn
    pooled.close()
    fd, path = tempfile.mkstemp(suffix=".trace")
    try:
        pgconn.trace(fd)
        pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS)
        operation()
        pgconn.untrace()
        os.close(fd)
        with open(path) as trace:
            return [line for line in trace if line[:2] in ("F\t", "B\t")]
    finally:
        os.unlink(path)


def round_trips(engine: Engine, operation: Callable[[], Any]) -> int:
    """Times the client waited for the server during ``operation``."""
    directions = [line.split("\t", 1)[0] for line in protocol_trace(engine, operation)]
    return sum(1 for pair in itertools.pairwise(directions) if pair == ("F", "B"))


def statements_sent(engine: Engine, operation: Callable[[], Any]) -> int:
    """Statements ``operation`` had the server run (each an Execute, or a simple Query)."""
    return sum(1 for line in protocol_trace(engine, operation) if "\tExecute\t" in line or "\tQuery\t" in line)


def test_each_hot_operation_takes_three_round_trips_and_nothing_through_sqlalchemy(pg_engine):
    pg_engine.dispose()  # the operations below check out the one connection the pool then holds
    account_id = new_account(pg_engine)
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    def in_unit_of_work(operation: Callable[[Any], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with unit_of_work(pg_engine) as session:
                return operation(session)

        return run

    found: dict[str, Any] = {}
    operations: dict[str, Callable[[Any], Any]] = {
        "mint": lambda session: Ledger(pg_engine, accounts=[account_id]).mint(session, 0, 1_000, "cs_round_trips"),
        "spend": lambda session: spend(session, account_id=account_id, amount_credits=5, idempotency_key="s", now=T0),
        "hold": lambda session: found.setdefault(
            "hold", create_hold(session, account_id=account_id, amount_credits=5, idempotency_key="h", now=T0)
        ),
        "capture": lambda session: capture_hold(
            session, account_id=account_id, hold_id=found["hold"].id, amount_credits=2, now=T0
        ),
    }
    event.listen(pg_engine, "before_cursor_execute", count)
    try:
        trips = {name: round_trips(pg_engine, in_unit_of_work(operation)) for name, operation in operations.items()}
    finally:
        event.remove(pg_engine, "before_cursor_execute", count)
    # BEGIN with the lock and the reads, the writes, COMMIT (the pool checks its connection without a ping).
    assert trips == {"mint": 3, "spend": 3, "hold": 3, "capture": 3}
    assert statements == []


def test_a_capture_or_release_locks_and_reads_its_hold_in_one_statement(pg_engine):
    pg_engine.dispose()  # the operations below check out the one connection the pool then holds
    account_id = new_account(pg_engine)
    mint_card(pg_engine, account_id, 100)
    made: list[int] = []

    def hold() -> None:
        with unit_of_work(pg_engine) as session:
            key = f"h{len(made)}"
            made.append(create_hold(session, account_id=account_id, amount_credits=5, idempotency_key=key, now=T0).id)

    def capture() -> None:
        with unit_of_work(pg_engine) as session:
            capture_hold(session, account_id=account_id, hold_id=made[0], amount_credits=2, now=T0)

    def release() -> None:
        with unit_of_work(pg_engine) as session:
            release_hold(session, account_id=account_id, hold_id=made[1], now=T0)

    sent = {name: statements_sent(pg_engine, operation) for name, operation in (("hold", hold), ("hold again", hold))}
    sent |= {"capture": statements_sent(pg_engine, capture), "release": statements_sent(pg_engine, release)}
    # BEGIN, the lock, the reads, the writes, COMMIT; a settlement locks and reads in one statement.
    assert sent == {"hold": 5, "hold again": 5, "capture": 4, "release": 4}


def test_the_pipeline_that_begins_the_transaction_leaves_it_as_psycopg_would(pg_engine):
    account_id = new_account(pg_engine)
    mint_card(pg_engine, account_id, 1_000)
    with unit_of_work(pg_engine) as session:
        conn = driver_of(session)
        assert conn is not None
        assert conn.info.transaction_status == TransactionStatus.IDLE
        spend(session, account_id=account_id, amount_credits=5, idempotency_key="in-one", now=T0)
        # One transaction, psycopg's own: not in autocommit mode, the lock held until the end.
        assert (conn.autocommit, conn.info.transaction_status) == (False, TransactionStatus.INTRANS)
        with pg_engine.connect() as other, pytest.raises(OperationalError):
            other.exec_driver_sql(f"SELECT id FROM accounts WHERE id = {account_id} FOR UPDATE NOWAIT")
        session.rollback()
        assert conn.info.transaction_status == TransactionStatus.IDLE
    # Rolled back: the spend is gone, and the next unit of work begins and commits its own.
    assert ledger_balance(pg_engine, account_id) == 1_000
    with unit_of_work(pg_engine) as session:
        spend(session, account_id=account_id, amount_credits=5, idempotency_key="in-one", now=T0)
    assert ledger_balance(pg_engine, account_id) == 995


def test_a_pooled_connection_the_server_closed_is_replaced_when_checked_out(pg_engine):
    pg_engine.dispose()
    account_id = new_account(pg_engine)
    mint_card(pg_engine, account_id, 1_000)
    with pg_engine.connect() as conn, pg_engine.connect() as admin:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        conn.close()  # back to the pool, idle, then terminated by the server
        assert admin.exec_driver_sql(f"SELECT pg_terminate_backend({pid}, 5000)").scalar_one()
    # One of the pool's two idle connections now has the server's farewell and an end of file to read.
    pooled = [pg_engine.pool.connect(), pg_engine.pool.connect()]
    assert pid not in {cast(Any, each.driver_connection).info.backend_pid for each in pooled}
    for each in pooled:
        each.close()
    with unit_of_work(pg_engine) as session:
        spend(session, account_id=account_id, amount_credits=5, idempotency_key="after", now=T0)
    assert ledger_balance(pg_engine, account_id) == 995


# --- the store contract: the same request or plan in gives the same state or rows out, on both stores ---------


def seeded_ledger(engine: Engine) -> Ledger:
    """Two customers with API keys and budgets; the first with a card lot, a grant due at T0 + 10 min and a hold
    counted against its project's budget; the second in debt after a clawback of a lot it had spent."""
    ledger = Ledger(engine)
    ledger.setup()
    ops: list[Op] = [
        ("mint", 0, 500),
        ("grant", 0, 50, 600),
        ("hold", 0, 60, 1, 3, 1_200),
        ("mint", 1, 100),
        ("spend", 1, 90, 1, 0),
    ]
    for op in ops:
        assert len(ledger.outcome(op)) == 2, op
    assert len(ledger.outcome(("clawback", 2, 100))) == 2  # 10 from the lot, 90 into debt
    return ledger


def core_store(session: Any) -> store.LedgerStore:
    return CoreStore(session)


def pg_store(session: Any) -> store.LedgerStore:
    conn = driver_of(session)
    assert conn is not None
    return PgStore(session, conn)


StoreCase = Callable[[store.LedgerStore, Ledger], Any]


def on_each_store(engine: Engine, reset: Callable[[], None], case: StoreCase) -> list[tuple[Any, Any]]:
    """``case`` run on the Core store, then on the PostgreSQL store, each from the same seeded database in a unit
    of work of its own: (what it returned, every row after it) for each."""
    outcomes = []
    for make in (core_store, pg_store):
        reset()
        ledger = seeded_ledger(engine)
        with unit_of_work(engine) as session:
            found = case(make(session), ledger)
        outcomes.append((found, rows(engine)))
    return outcomes


def draw_request(ledger: Ledger, account: int = 0, credits: int = 120, key: str = "spend:new") -> DrawRequest:
    return DrawRequest(
        account_id=ledger.accounts[account],
        amount_credits=credits,
        idempotency_key=key,
        request_hash="hash",
        kind=TransactionKind.SPEND,
        movement_kind=MovementKind.SPEND,
        counter_account_id=SystemAccount.REVENUE_USAGE,
        now=ledger.now + timedelta(minutes=1),
        description="tool call",
        details={"project": "alpha"},
        api_key_id=ledger.api_keys[account],
        project="alpha",
    )


def awkward_draw_request(ledger: Ledger) -> DrawRequest:
    """A draw whose key, description and details hold what an array literal quotes or escapes."""
    return replace(
        draw_request(ledger, key='spend:{a,b} "NULL"'),
        description='say "hi", {x} \\ NULL, \\"é\\',
        details={"project": 'a"b\\c', "note": "{1,2}", "empty": ""},
    )


def hold_request(ledger: Ledger, key: str = "hold-new", account: int = 0) -> HoldRequest:
    now = ledger.now + timedelta(minutes=1)
    return HoldRequest(
        account_id=ledger.accounts[account],
        amount_credits=70,
        idempotency_key=key,
        request_hash="hash",
        now=now,
        expires_at=now + timedelta(minutes=5),
        api_key_id=ledger.api_keys[account],
        project="alpha",
        description="tool call",
    )


def mint_request(ledger: Ledger, account: int = 1, key: str = "mint:card:new") -> MintRequest:
    return MintRequest(
        account_id=ledger.accounts[account],
        amount_credits=300,
        idempotency_key=key,
        request_hash="hash",
        kind=TransactionKind.MINT,
        funding_account_id=SystemAccount.FUNDING_CARD,
        rail=Rail.CARD,
        external_ref="cs_new",
        cost_basis_cents=300,
        cost_basis_usdc_units=None,
        promotional=False,
        credited_at=ledger.now + timedelta(minutes=1),
        expires_at=ledger.now + timedelta(days=365),
        description="card purchase",
        details={"purchase": "new"},
    )


def locked_then_written(lock: StoreCase, write: Callable[[store.LedgerStore, Ledger, Any], Any]) -> StoreCase:
    """A case that plans from what the Core store reads (the same plan for both stores), then writes it."""

    def case(ledger_store: store.LedgerStore, ledger: Ledger) -> Any:
        with unit_of_work(ledger.engine) as session:
            state = lock(CoreStore(session), ledger)
        return write(ledger_store, ledger, state)

    return case


CASES: dict[str, StoreCase] = {
    # reads under the lock
    "lock_account": lambda s, ledger: s.lock_account(ledger.accounts[1], "spend:customer 1:spend-1"),
    "lock_account of no account": lambda s, ledger: s.lock_account(10**9),
    "lock_for_mint": lambda s, ledger: s.lock_for_mint(mint_request(ledger)),
    "lock_for_mint of a system account": lambda s, ledger: s.lock_for_mint(
        replace(mint_request(ledger), account_id=SystemAccount.BREAKAGE)
    ),
    "lock_for_draw with budgets": lambda s, ledger: s.lock_for_draw(draw_request(ledger)),
    "lock_for_draw of every lot": lambda s, ledger: s.lock_for_draw(draw_request(ledger, credits=10_000)),
    "lock_for_draw replayed": lambda s, ledger: s.lock_for_draw(
        draw_request(ledger, account=1, key=f"spend:{ledger.accounts[1]}:spend-1")
    ),
    "lock_for_draw of no account": lambda s, ledger: s.lock_for_draw(replace(draw_request(ledger), account_id=10**9)),
    "lock_for_hold": lambda s, ledger: s.lock_for_hold(hold_request(ledger)),
    "lock_for_hold replayed": lambda s, ledger: s.lock_for_hold(hold_request(ledger, key="hold-1")),
    "lock_hold": lambda s, ledger: s.lock_hold(ledger.accounts[0], ledger.holds[0][0]),
    "lock_hold of any account": lambda s, ledger: s.lock_hold(None, ledger.holds[0][0]),
    "lock_hold of another account": lambda s, ledger: s.lock_hold(ledger.accounts[1], ledger.holds[0][0]),
    "lock_due_lots": lambda s, ledger: s.lock_due_lots(ledger.now + timedelta(days=400), 10),
    # writes of a plan
    "write_draw": locked_then_written(
        lambda s, ledger: s.lock_for_draw(draw_request(ledger)),
        lambda s, ledger, state: s.write_draw(plan_draw(draw_request(ledger), state)),
    ),
    "write_draw of text that needs quoting in an array": locked_then_written(
        lambda s, ledger: s.lock_for_draw(draw_request(ledger)),
        lambda s, ledger, state: s.write_draw(plan_draw(awkward_draw_request(ledger), state)),
    ),
    "write_hold": locked_then_written(
        lambda s, ledger: s.lock_for_hold(hold_request(ledger)),
        lambda s, ledger, state: s.write_hold(plan_hold(hold_request(ledger), state)),
    ),
    "write_settle capturing and expiring": locked_then_written(
        lambda s, ledger: s.lock_hold(None, ledger.holds[0][0]),
        lambda s, ledger, hold: s.write_settle(
            plan_settle(hold, 55, ledger.now + timedelta(minutes=15), HoldStatus.CAPTURED)
        ),
    ),
    "write_settle releasing": locked_then_written(
        lambda s, ledger: s.lock_hold(None, ledger.holds[0][0]),
        lambda s, ledger, hold: s.write_settle(plan_settle(hold, 0, ledger.now, HoldStatus.RELEASED)),
    ),
    "write_mint repaying debt": locked_then_written(
        lambda s, ledger: s.lock_for_mint(mint_request(ledger)),
        lambda s, ledger, state: s.write_mint(plan_mint(mint_request(ledger), state.debt_credits)),
    ),
    "write_expiry": locked_then_written(
        lambda s, ledger: s.lock_due_lots(ledger.now + timedelta(days=400), 10),
        lambda s, ledger, due: s.write_expiry(plan_expiry(due, ledger.now + timedelta(days=400))),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_both_stores_give_the_same_state_and_rows_for_the_same_request_or_plan(pg_engine, reset, name):
    (core_found, core_rows), (pg_found, pg_rows) = on_each_store(pg_engine, reset, CASES[name])
    assert pg_found == core_found
    assert pg_rows == core_rows
    assert core_found is not None or "no account" in name or "another" in name


@pytest.mark.parametrize("reinstated_after_expiry", [False, True])
def test_both_stores_write_the_same_clawback_and_reinstatement(pg_engine, reset, reinstated_after_expiry):
    def case(ledger_store: store.LedgerStore, ledger: Ledger) -> Any:
        lot = repo.lots_by_id(cast(Any, ledger_store).session, [ledger.lots[0]])[ledger.lots[0]]  # the card lot
        later = ledger.now + timedelta(days=400 if reinstated_after_expiry else 0)
        clawed = plan_clawback(lot, 50, "clawback:c", "hash", "refund", 0, ledger.now)
        first = ledger_store.write_clawback(clawed)
        state = ledger_store.lock_account(lot.account_id)
        lot = repo.lots_by_id(cast(Any, ledger_store).session, [lot.id])[lot.id]
        back = plan_reinstatement(lot, 50, "reinstatement:r", "hash", "won", state.debt_credits, later)
        return first, ledger_store.write_clawback(back), back.writes.postings

    (core_found, core_rows), (pg_found, pg_rows) = on_each_store(pg_engine, reset, case)
    assert (pg_found, pg_rows) == (core_found, core_rows)
    assert len(core_found[2]) == (2 if reinstated_after_expiry else 1)
