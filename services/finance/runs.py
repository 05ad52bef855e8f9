"""Reconciliation runs' bookkeeping: one run per (rail, period), started (or started again) before its items are
built by services.finance.matching, completed with its counts, or recorded as failed; and the reads of runs and
their items.

Nothing here commits.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, func, insert, select, update
from sqlmodel import Session

from services.core.db import table_of
from services.finance.models import ItemCategory, ReconciliationItem, ReconciliationRun, RunStatus
from services.finance.rows import ItemRow, RunRow
from services.finance.schemas import RunOut

runs = table_of(ReconciliationRun)
items = table_of(ReconciliationItem)

CARD_RAIL = "card"
EXCEPTION_KIND_PREFIX = "reconciliation_"


def usdc_rail(chain_id: int) -> str:
    return f"usdc:{chain_id}"


def _summary(row: RunRow) -> RunOut:
    return RunOut.model_validate(row, from_attributes=True)


def get_run(session: Session, run_id: int) -> RunOut | None:
    row = session.execute(select(runs).where(runs.c.id == run_id)).first()
    return _summary(row) if row is not None else None


def find_run(session: Session, rail: str, period_start: datetime, period_end: datetime) -> RunOut | None:
    row = session.execute(
        select(runs).where(runs.c.rail == rail, runs.c.period_start == period_start, runs.c.period_end == period_end)
    ).first()
    return _summary(row) if row is not None else None


def list_runs(
    session: Session, *, rail: str | None = None, limit: int = 50, before_id: int | None = None
) -> list[RunOut]:
    stmt = select(runs)
    if rail is not None:
        stmt = stmt.where(runs.c.rail == rail)
    if before_id is not None:
        stmt = stmt.where(runs.c.id < before_id)
    return [_summary(row) for row in session.execute(stmt.order_by(runs.c.id.desc()).limit(limit)).all()]


def _attempt(
    session: Session, rail: str, period_start: datetime, period_end: datetime, now: datetime, **values: Any
) -> tuple[int, bool]:
    """One more attempt at the run of (rail, period), with ``values``: the run's id, and whether it is new."""
    existing = find_run(session, rail, period_start, period_end)
    if existing is None:
        run_id = session.execute(
            insert(runs)
            .values(rail=rail, period_start=period_start, period_end=period_end, attempts=1, started_at=now, **values)
            .returning(runs.c.id)
        ).scalar_one()
        return int(run_id), True
    session.execute(
        update(runs).where(runs.c.id == existing.id).values(attempts=runs.c.attempts + 1, started_at=now, **values)
    )
    return existing.id, False


def start_run(session: Session, rail: str, period_start: datetime, period_end: datetime, now: datetime) -> int:
    """The run of (rail, period), created or set running again, with its previous items removed."""
    run_id, new = _attempt(session, rail, period_start, period_end, now, status=RunStatus.RUNNING, finished_at=None)
    if not new:
        session.execute(delete(items).where(items.c.run_id == run_id))
    return run_id


def record_failure(
    session: Session, rail: str, period_start: datetime, period_end: datetime, *, error: str, now: datetime
) -> int:
    """A run that could not gather its external records: recorded ``failed`` with why (its last items kept)."""
    run_id, _ = _attempt(session, rail, period_start, period_end, now, status=RunStatus.FAILED, last_error=error[:2000])
    return run_id


def complete_run(session: Session, run_id: int, *, external_records: int, ledger_records: int, now: datetime) -> None:
    """Mark the run complete with its counts per category (from its items) and how many were late."""
    counts: dict[str, int] = defaultdict(int)
    late = 0
    for category, count, late_count in session.execute(
        select(
            items.c.category,
            func.count(),
            func.coalesce(func.sum(case((items.c.late, 1), else_=0)), 0),
        )
        .where(items.c.run_id == run_id)
        .group_by(items.c.category)
    ).all():
        counts[str(category)] = int(count)
        late += int(late_count)
    session.execute(
        update(runs)
        .where(runs.c.id == run_id)
        .values(
            status=RunStatus.COMPLETE,
            external_records=external_records,
            ledger_records=ledger_records,
            matched=counts[ItemCategory.MATCHED],
            missing_in_ledger=counts[ItemCategory.MISSING_IN_LEDGER],
            missing_externally=counts[ItemCategory.MISSING_EXTERNALLY],
            amount_mismatch=counts[ItemCategory.AMOUNT_MISMATCH],
            late=late,
            last_error=None,
            finished_at=now,
        )
    )


def list_items(
    session: Session,
    run_id: int,
    *,
    category: str | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[ItemRow]:
    stmt = select(items).where(items.c.run_id == run_id, items.c.id > after_id)
    if category is not None:
        stmt = stmt.where(items.c.category == category)
    return list(session.execute(stmt.order_by(items.c.id).limit(limit)).all())
