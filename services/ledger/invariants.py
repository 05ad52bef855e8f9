"""The ledger's invariants, each checked by one query over the whole store; every violation is reported.

1. Every journal transaction sums to zero, and has at least two entries.
2. The sum over all accounts is zero.
3. A customer's ledger balance equals the sum of its lots' remaining credits minus its debt.
4. 0 <= reserved <= remaining on every lot; debt is never negative.
5. A lot's remaining credits equal the sum of its movements.
6. A lot's reserved credits equal what the active holds allocate on it; an active hold allocates its amount.
7. Nothing is drawn from an expired lot: no spend after expiry; no capture of a reservation made after expiry.
8. The breakage account holds exactly the lots' expired credits.
9. Each external payment mints at most once (one lot per rail and reference, one mint transaction per lot).
10. A lot with an unreserved remainder is in the expiry queue (at its own expiry time), so that it expires when its
    time comes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, literal, or_, select
from sqlmodel import Session

from services.core import progress
from services.ledger import repository as repo
from services.ledger.models import AccountKind, HoldStatus, MovementKind
from services.ledger.system_accounts import SystemAccount

PROGRESS_TASK = "checking the ledger's invariants (checks)"


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: str
    subject: str
    detail: str


def check_invariants(session: Session, *, limit: int = 100) -> list[Violation]:
    found: list[Violation] = []
    progress.report(PROGRESS_TASK, 0, len(_CHECKS))
    for done, check in enumerate(_CHECKS, start=1):
        found.extend(check(session, limit))
        progress.report(PROGRESS_TASK, done, len(_CHECKS))
    return found


def _unbalanced_transactions(session: Session, limit: int) -> list[Violation]:
    e = repo.entries
    t = repo.transactions
    sums = (
        select(e.c.transaction_id, func.sum(e.c.amount_credits).label("total"), func.count().label("legs"))
        .group_by(e.c.transaction_id)
        .having(or_(func.sum(e.c.amount_credits) != 0, func.count() < 2))
        .limit(limit)
    )
    out = [
        Violation("transaction_sums_to_zero", f"transaction {r.transaction_id}", f"sum {r.total}, {r.legs} entries")
        for r in session.execute(sums)
    ]
    orphans = select(t.c.id).where(~select(e.c.id).where(e.c.transaction_id == t.c.id).exists()).limit(limit)
    out += [
        Violation("transaction_sums_to_zero", f"transaction {r.id}", "no entries") for r in session.execute(orphans)
    ]
    return out


def _platform_sum(session: Session, limit: int) -> list[Violation]:
    total = session.execute(select(func.coalesce(func.sum(repo.entries.c.amount_credits), 0))).scalar()
    return [] if total == 0 else [Violation("accounts_sum_to_zero", "ledger", f"sum over all accounts is {total}")]


def _customer_balances(session: Session, limit: int) -> list[Violation]:
    a, e, lots = repo.accounts, repo.entries, repo.lots
    ledger = select(func.coalesce(func.sum(e.c.amount_credits), 0)).where(e.c.account_id == a.c.id).scalar_subquery()
    held = (
        select(func.coalesce(func.sum(lots.c.remaining_credits), 0))
        .where(lots.c.account_id == a.c.id)
        .scalar_subquery()
    )
    stmt = (
        select(a.c.id, ledger.label("ledger"), held.label("lots"), a.c.debt_credits)
        .where(a.c.kind == AccountKind.CUSTOMER, ledger != held - a.c.debt_credits)
        .limit(limit)
    )
    return [
        Violation(
            "balance_matches_lots",
            f"account {r.id}",
            f"ledger {r.ledger} != lots {r.lots} - debt {r.debt_credits}",
        )
        for r in session.execute(stmt)
    ]


def _lot_bounds(session: Session, limit: int) -> list[Violation]:
    lots, a = repo.lots, repo.accounts
    bad_lots = select(lots.c.id, lots.c.remaining_credits, lots.c.reserved_credits).where(
        or_(lots.c.reserved_credits < 0, lots.c.reserved_credits > lots.c.remaining_credits)
    )
    out = [
        Violation(
            "reserved_within_remaining",
            f"lot {r.id}",
            f"reserved {r.reserved_credits}, remaining {r.remaining_credits}",
        )
        for r in session.execute(bad_lots.limit(limit))
    ]
    out += [
        Violation("debt_nonnegative", f"account {r.id}", f"debt {r.debt_credits}")
        for r in session.execute(select(a.c.id, a.c.debt_credits).where(a.c.debt_credits < 0).limit(limit))
    ]
    return out


def _lot_history(session: Session, limit: int) -> list[Violation]:
    lots, m = repo.lots, repo.movements
    moved = select(func.coalesce(func.sum(m.c.amount_credits), 0)).where(m.c.lot_id == lots.c.id).scalar_subquery()
    stmt = select(lots.c.id, lots.c.remaining_credits, moved.label("moved")).where(lots.c.remaining_credits != moved)
    return [
        Violation(
            "remaining_matches_movements",
            f"lot {r.id}",
            f"remaining {r.remaining_credits}, movements {r.moved}",
        )
        for r in session.execute(stmt.limit(limit))
    ]


def _reservations(session: Session, limit: int) -> list[Violation]:
    lots, al, h = repo.lots, repo.allocations, repo.holds
    active_alloc = (
        select(func.coalesce(func.sum(al.c.amount_credits), 0))
        .select_from(al.join(h, h.c.id == al.c.hold_id))
        .where(al.c.lot_id == lots.c.id, h.c.status == HoldStatus.ACTIVE)
        .scalar_subquery()
    )
    stmt = select(lots.c.id, lots.c.reserved_credits, active_alloc.label("held")).where(
        lots.c.reserved_credits != active_alloc
    )
    out = [
        Violation("reserved_matches_holds", f"lot {r.id}", f"reserved {r.reserved_credits}, active holds {r.held}")
        for r in session.execute(stmt.limit(limit))
    ]
    hold_alloc = select(func.coalesce(func.sum(al.c.amount_credits), 0)).where(al.c.hold_id == h.c.id).scalar_subquery()
    holds_stmt = select(h.c.id, h.c.amount_credits, hold_alloc.label("allocated")).where(
        h.c.amount_credits != hold_alloc
    )
    out += [
        Violation("hold_fully_allocated", f"hold {r.id}", f"amount {r.amount_credits}, allocated {r.allocated}")
        for r in session.execute(holds_stmt.limit(limit))
    ]
    return out


def _expired_draws(session: Session, limit: int) -> list[Violation]:
    lots, m, h = repo.lots, repo.movements, repo.holds
    direct = (
        select(m.c.id, m.c.lot_id, m.c.kind)
        .join(lots, lots.c.id == m.c.lot_id)
        .where(
            m.c.kind.in_([MovementKind.SPEND, MovementKind.ADJUSTMENT]),
            m.c.amount_credits < 0,
            m.c.created_at >= lots.c.expires_at,
        )
    )
    via_hold = (
        select(m.c.id, m.c.lot_id, literal("capture").label("kind"))
        .join(lots, lots.c.id == m.c.lot_id)
        .join(h, h.c.id == m.c.hold_id)
        .where(and_(m.c.kind == MovementKind.CAPTURE, h.c.created_at >= lots.c.expires_at))
    )
    return [
        Violation("no_draw_from_expired_lot", f"lot {r.lot_id}", f"{r.kind} movement {r.id} after expiry")
        for stmt in (direct, via_hold)
        for r in session.execute(stmt.limit(limit))
    ]


def _breakage(session: Session, limit: int) -> list[Violation]:
    e, lots = repo.entries, repo.lots
    booked = session.execute(
        select(func.coalesce(func.sum(e.c.amount_credits), 0)).where(e.c.account_id == SystemAccount.BREAKAGE)
    ).scalar()
    expired = session.execute(select(func.coalesce(func.sum(lots.c.expired_credits), 0))).scalar()
    if booked == expired:
        return []
    return [Violation("breakage_matches_expired_lots", "breakage", f"booked {booked}, lots expired {expired}")]


def _single_mint(session: Session, limit: int) -> list[Violation]:
    lots = repo.lots
    dupes = (
        select(lots.c.rail, lots.c.external_ref, func.count().label("n"))
        .group_by(lots.c.rail, lots.c.external_ref)
        .having(func.count() > 1)
        .limit(limit)
    )
    out = [Violation("mint_at_most_once", f"{r.rail}:{r.external_ref}", f"{r.n} lots") for r in session.execute(dupes)]
    shared = (
        select(lots.c.mint_transaction_id, func.count().label("n"))
        .group_by(lots.c.mint_transaction_id)
        .having(func.count() > 1)
        .limit(limit)
    )
    out += [
        Violation("mint_at_most_once", f"transaction {r.mint_transaction_id}", f"{r.n} lots")
        for r in session.execute(shared)
    ]
    return out


def _queued_for_expiry(session: Session, limit: int) -> list[Violation]:
    lots, queue = repo.lots, repo.expiry_queue
    queued = select(queue.c.lot_id).where(queue.c.lot_id == lots.c.id, queue.c.expires_at == lots.c.expires_at)
    stmt = select(lots.c.id, lots.c.remaining_credits, lots.c.reserved_credits).where(
        lots.c.remaining_credits > lots.c.reserved_credits, ~queued.exists()
    )
    return [
        Violation(
            "unreserved_lot_queued_for_expiry",
            f"lot {r.id}",
            f"remaining {r.remaining_credits}, reserved {r.reserved_credits}, not in the expiry queue",
        )
        for r in session.execute(stmt.limit(limit))
    ]


_CHECKS: tuple[Any, ...] = (
    _unbalanced_transactions,
    _platform_sum,
    _customer_balances,
    _lot_bounds,
    _lot_history,
    _reservations,
    _expired_draws,
    _breakage,
    _single_mint,
    _queued_for_expiry,
)
