"""Pulls of external records (Stripe lists, chain re-scans) into finance's mirror, one per (source, window).

A pull moves ``running`` -> ``complete``, or ``failed`` with the error; its ``cursor`` says where to go on, so a pull
that failed half way resumes from the last page it stored (each page is stored, and the cursor advanced, in one
transaction). A complete pull is not fetched again unless the window had not ended when it was pulled.

Nothing here commits: the caller stores each page and advances the cursor in the same unit of work.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlmodel import Session

from services.core.db import insert_for, table_of
from services.core.errors import InvalidRequest
from services.finance.models import FinancePull, PullStatus
from services.finance.rows import PullRow

pulls_table = table_of(FinancePull)


@dataclass(frozen=True, slots=True)
class PullState:
    id: int
    source: str
    window_start: datetime
    window_end: datetime
    status: str
    cursor: str | None
    pages: int
    records: int
    details: dict[str, Any]
    last_error: str | None
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def complete(self) -> bool:
        """Complete, and pulled after the window had ended (so nothing can have been added to it since)."""
        return (
            self.status == PullStatus.COMPLETE and self.finished_at is not None and self.finished_at >= self.window_end
        )


def _state(row: PullRow) -> PullState:
    return PullState(**{name: getattr(row, name) for name in PullState.__dataclass_fields__})


def get_pull(session: Session, source: str, window_start: datetime, window_end: datetime) -> PullState | None:
    t = pulls_table
    row = session.execute(
        select(t).where(t.c.source == source, t.c.window_start == window_start, t.c.window_end == window_end)
    ).first()
    return _state(row) if row is not None else None


def begin_pull(
    session: Session,
    source: str,
    window_start: datetime,
    window_end: datetime,
    *,
    now: datetime,
    details: dict[str, Any] | None = None,
) -> PullState:
    """The pull of ``source`` over the window, created (``running``) when new; a failed or stale one is set
    running again from where it stopped; a complete one is returned as it is (check ``complete``)."""
    if window_end <= window_start:
        raise InvalidRequest("a pull's window must end after it starts", field="window_end")
    t = pulls_table
    session.execute(
        insert_for(session, t)
        .values(
            source=source,
            window_start=window_start,
            window_end=window_end,
            status=PullStatus.RUNNING,
            cursor=None,
            pages=0,
            records=0,
            details=details or {},
            started_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["source", "window_start", "window_end"])
    )
    current = get_pull(session, source, window_start, window_end)
    assert current is not None
    if current.status == PullStatus.COMPLETE and current.complete:
        return current
    if current.status == PullStatus.COMPLETE:
        # Pulled before the window ended: fetch it again from the start (the mirror upserts, so nothing doubles).
        session.execute(
            update(t)
            .where(t.c.id == current.id)
            .values(status=PullStatus.RUNNING, cursor=None, pages=0, records=0, updated_at=now, finished_at=None)
        )
    elif current.status == PullStatus.FAILED:
        session.execute(update(t).where(t.c.id == current.id).values(status=PullStatus.RUNNING, updated_at=now))
    refreshed = get_pull(session, source, window_start, window_end)
    assert refreshed is not None
    return refreshed


def advance_pull(
    session: Session,
    pull_id: int,
    *,
    cursor: str | None,
    records: int,
    now: datetime,
    details: dict[str, Any] | None = None,
) -> None:
    """One more page stored: move the cursor on and count it (in the transaction that stored the page)."""
    t = pulls_table
    values: dict[str, Any] = {
        "cursor": cursor,
        "pages": t.c.pages + 1,
        "records": t.c.records + records,
        "updated_at": now,
    }
    if details is not None:
        values["details"] = details
    session.execute(update(t).where(t.c.id == pull_id).values(**values))


def finish_pull(session: Session, pull_id: int, *, now: datetime, details: dict[str, Any] | None = None) -> None:
    values: dict[str, Any] = {"status": PullStatus.COMPLETE, "updated_at": now, "finished_at": now, "last_error": None}
    if details is not None:
        values["details"] = details
    session.execute(update(pulls_table).where(pulls_table.c.id == pull_id).values(**values))


def fail_pull(session: Session, pull_id: int, *, error: str, now: datetime) -> None:
    """Record why the pull stopped; its cursor stays where the last stored page left it."""
    session.execute(
        update(pulls_table)
        .where(pulls_table.c.id == pull_id)
        .values(status=PullStatus.FAILED, last_error=error[:2000], updated_at=now)
    )
