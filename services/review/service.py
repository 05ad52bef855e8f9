"""The review queue (finance exceptions): raise an item (once per rail, kind and reference), list, resolve or
ignore it.

Nothing here commits: an exception is raised inside the unit of work that found the problem, so it is recorded
exactly when that work is (and a retried event or batch finds it already there).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlmodel import Session

from services.core.clock import utcnow
from services.core.db import insert_for, table_of
from services.core.errors import InvalidRequest
from services.review.errors import FinanceExceptionClosed, FinanceExceptionNotFound
from services.review.models import ExceptionStatus, FinanceException
from services.review.schemas import ExceptionOut

exceptions_table = table_of(FinanceException)


def usdc_reference(chain_id: int, tx_hash: str, log_index: int, *, occurrence: int = 1) -> str:
    """The reference of a finance exception about a USDC Transfer: ``usdc:<chain id>:<tx hash>:<log index>``,
    whoever raises it (the listener, crediting, reconciliation). ``occurrence`` > 1 (``#<n>`` appended) tells apart
    repeated events of one kind about the same transfer (a chain flipping between forks)."""
    return _occurrence(f"usdc:{chain_id}:{tx_hash.lower()}:{log_index}", occurrence)


def card_reference(stripe_id: str, *, occurrence: int | str = 1) -> str:
    """The reference of a finance exception about a Stripe object (event, charge, dispute, Checkout Session, balance
    transaction ...): ``card:<stripe object id>``; ``occurrence`` (``#<n>`` appended, for any value but 1) tells
    apart repeated events of one kind about the same object (each refund amount of a charge, say)."""
    return _occurrence(f"card:{stripe_id}", occurrence)


def _occurrence(reference: str, occurrence: int | str) -> str:
    return reference if occurrence in (1, "", "1") else f"{reference}#{occurrence}"


def _view(row: Any) -> ExceptionOut:
    return ExceptionOut.model_validate(row, from_attributes=True)


def raise_exception(
    session: Session,
    *,
    rail: str,
    kind: str,
    reference: str,
    details: dict[str, Any] | None = None,
    account_id: int | None = None,
    amount_cents: int | None = None,
    amount_usdc_units: int | None = None,
    amount_credits: int | None = None,
    now: datetime | None = None,
) -> int:
    """Record an exception and return its id; raising the same (rail, kind, reference) again returns the first
    one's id and changes nothing."""
    if not rail or not kind or not reference:
        raise InvalidRequest("a finance exception needs a rail, a kind and a reference")
    values = {
        "rail": rail,
        "kind": kind,
        "reference": reference[:255],
        "account_id": account_id,
        "amount_cents": amount_cents,
        "amount_usdc_units": amount_usdc_units,
        "amount_credits": amount_credits,
        "details": details or {},
        "status": ExceptionStatus.OPEN,
        "created_at": now or utcnow(),
    }
    stmt = (
        insert_for(session, exceptions_table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["rail", "kind", "reference"])
        .returning(exceptions_table.c.id)
    )
    inserted = session.execute(stmt).scalar()
    if inserted is not None:
        return int(inserted)
    t = exceptions_table
    existing = session.execute(
        select(t.c.id).where(t.c.rail == rail, t.c.kind == kind, t.c.reference == values["reference"])
    ).scalar_one()
    return int(existing)


def list_exceptions(
    session: Session,
    status: str | None = None,
    *,
    rail: str | None = None,
    kind: str | None = None,
    reference: str | None = None,
    limit: int = 100,
    after_id: int = 0,
) -> list[ExceptionOut]:
    """Exceptions in the order they were raised, optionally only those with ``status`` (and rail, kind, and
    ``reference``: that reference, with any ``#`` qualifier, e.g. every exception about one USDC transfer)."""
    t = exceptions_table
    stmt = select(t).where(t.c.id > after_id)
    if reference is not None:
        stmt = stmt.where(or_(t.c.reference == reference, t.c.reference.startswith(f"{reference}#", autoescape=True)))
    if status is not None:
        stmt = stmt.where(t.c.status == status)
    if rail is not None:
        stmt = stmt.where(t.c.rail == rail)
    if kind is not None:
        stmt = stmt.where(t.c.kind == kind)
    return [_view(row) for row in session.execute(stmt.order_by(t.c.id).limit(limit)).all()]


def get_exception(session: Session, exception_id: int) -> ExceptionOut:
    row = session.execute(select(exceptions_table).where(exceptions_table.c.id == exception_id)).first()
    if row is None:
        raise FinanceExceptionNotFound(f"finance exception {exception_id} not found", exception_id=exception_id)
    return _view(row)


def close_exception(
    session: Session,
    exception_id: int,
    *,
    status: str,
    resolved_by: str,
    resolution: str,
    now: datetime | None = None,
) -> ExceptionOut:
    """Move an open exception to ``resolved`` or ``ignored``, saying who and what was done."""
    if status not in (ExceptionStatus.RESOLVED, ExceptionStatus.IGNORED):
        raise InvalidRequest("an exception is closed as resolved or ignored", field="status")
    if not resolution.strip():
        raise InvalidRequest("closing an exception needs the action taken", field="resolution")
    current = get_exception(session, exception_id)
    if current.status != ExceptionStatus.OPEN:
        raise FinanceExceptionClosed(f"finance exception {exception_id} is already {current.status}")
    session.execute(
        update(exceptions_table)
        .where(exceptions_table.c.id == exception_id)
        .values(status=status, resolved_by=resolved_by, resolution=resolution, resolved_at=now or utcnow())
    )
    return get_exception(session, exception_id)
