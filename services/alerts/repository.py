"""The alerts' queries: settings, state transitions (each one conditional, so that of two evaluations racing, one
changes the row and the other changes nothing), and the evaluation's candidates. Reads return rows typed by their
shapes in ``services.alerts.rows``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, case, exists, func, literal, or_, select, update
from sqlmodel import Session

from services.alerts.models import AlertKind, AlertSettings, AlertState
from services.alerts.rows import BudgetCandidate, ExpiringLot, LowBalanceCandidate, SettingsRow, StateRow
from services.core.db import UTCDateTime, insert_for, table_of
from services.ledger.models import AccountKind
from services.ledger.repository import accounts, budget_usage, budgets, lots

settings_table: Table = table_of(AlertSettings)
states: Table = table_of(AlertState)


# --- settings ----------------------------------------------------------------------------------------------


def get_settings_row(session: Session, account_id: int) -> SettingsRow | None:
    return session.execute(select(settings_table).where(settings_table.c.account_id == account_id)).first()


def upsert_settings(session: Session, account_id: int, values: dict[str, Any], now: datetime) -> None:
    """Write the account's settings (``values``: the columns to set), creating its row with the defaults."""
    row = {"account_id": account_id, "email_enabled": True, "created_at": now, "updated_at": now} | values
    stmt = insert_for(session, settings_table).values(**row)
    stmt = stmt.on_conflict_do_update(index_elements=["account_id"], set_={**values, "updated_at": now})
    session.execute(stmt)


# --- states ------------------------------------------------------------------------------------------------


def states_of(session: Session, account_id: int, kinds: Sequence[str]) -> list[StateRow]:
    stmt = select(states).where(states.c.account_id == account_id, states.c.kind.in_(list(kinds)))
    return list(session.execute(stmt.order_by(states.c.id)).all())


def get_state(session: Session, account_id: int, kind: str, subject_key: str) -> StateRow | None:
    stmt = select(states).where(
        states.c.account_id == account_id, states.c.kind == kind, states.c.subject_key == subject_key
    )
    return session.execute(stmt).first()


def insert_fired(
    session: Session,
    *,
    account_id: int,
    kind: str,
    subject_key: str,
    now: datetime,
    ref_id: int | None = None,
    period_start: datetime | None = None,
    level_percent: int = 0,
    armed: bool = False,
) -> int | None:
    """A subject's first crossing: its state row, fired once. Its crossings (1) when this call wrote it; None when
    the row exists already (another evaluation got there first, or this subject fired before)."""
    stmt = (
        insert_for(session, states)
        .values(
            account_id=account_id,
            kind=kind,
            subject_key=subject_key,
            ref_id=ref_id,
            period_start=period_start,
            armed=armed,
            level_percent=level_percent,
            crossings=1,
            fired_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["account_id", "kind", "subject_key"])
        .returning(states.c.crossings)
    )
    found = session.execute(stmt).scalar_one_or_none()
    return None if found is None else int(found)


def fire(
    session: Session, state_id: int, *, now: datetime, armed_at: int, level_percent: int, armed: bool = False
) -> int | None:
    """Fire an existing state, only if it is still as the caller read it (armed, at ``armed_at`` percent for a
    budget): its new crossings count, or None when another evaluation changed it first."""
    stmt = (
        update(states)
        .where(states.c.id == state_id, states.c.armed.is_(True), states.c.level_percent == armed_at)
        .values(
            armed=armed,
            level_percent=level_percent,
            crossings=states.c.crossings + 1,
            fired_at=now,
            updated_at=now,
        )
        .returning(states.c.crossings)
    )
    found = session.execute(stmt).scalar_one_or_none()
    return None if found is None else int(found)


def rearm(session: Session, state_id: int, *, now: datetime, from_level: int, to_level: int = 0) -> bool:
    """Arm a state again (for a budget, down to ``to_level`` percent), only if it is still as the caller read it."""
    stmt = (
        update(states)
        .where(states.c.id == state_id, states.c.level_percent == from_level)
        .values(armed=True, level_percent=to_level, rearmed_at=now, updated_at=now)
    )
    if from_level == 0:
        stmt = stmt.where(states.c.armed.is_(False))
    return bool(session.execute(stmt).rowcount)  # type: ignore[attr-defined]


def rearm_subject(session: Session, account_id: int, kind: str, subject_key: str, now: datetime) -> None:
    """Arm a subject's state again whatever it was (its alert's settings changed)."""
    session.execute(
        update(states)
        .where(
            states.c.account_id == account_id,
            states.c.kind == kind,
            states.c.subject_key == subject_key,
            states.c.armed.is_(False),
        )
        .values(armed=True, rearmed_at=now, updated_at=now)
    )


# --- the evaluation's candidates ---------------------------------------------------------------------------


def low_balance_candidates(
    session: Session, *, now: datetime, after_account_id: int, limit: int
) -> list[LowBalanceCandidate]:
    """Accounts with a threshold whose low-balance state may have to change: armed (or never fired) with fewer
    available credits than the threshold, or fired with at least the threshold available again. A prefilter by the
    same figures the ledger's balance gives (live unreserved credits less debt); the rules decide on that balance."""
    live = case((lots.c.expires_at > now, lots.c.remaining_credits - lots.c.reserved_credits), else_=0)
    with_threshold = select(settings_table.c.account_id).where(
        settings_table.c.low_balance_threshold_credits.is_not(None)
    )
    unreserved = (
        select(lots.c.account_id, func.sum(live).label("credits"))
        .where(lots.c.remaining_credits > 0, lots.c.account_id.in_(with_threshold))
        .group_by(lots.c.account_id)
        .subquery()
    )
    available = func.coalesce(unreserved.c.credits, 0) - accounts.c.debt_credits
    state = states.alias("state")
    threshold = settings_table.c.low_balance_threshold_credits
    stmt = (
        select(settings_table.c.account_id, threshold.label("threshold_credits"), state.c.id.label("state_id"))
        .select_from(settings_table)
        .join(accounts, accounts.c.id == settings_table.c.account_id)
        .outerjoin(unreserved, unreserved.c.account_id == settings_table.c.account_id)
        .outerjoin(
            state,
            and_(
                state.c.account_id == settings_table.c.account_id,
                state.c.kind == AlertKind.LOW_BALANCE,
                state.c.subject_key == "",
            ),
        )
        .where(
            threshold.is_not(None),
            settings_table.c.account_id > after_account_id,
            or_(
                and_(available < threshold, or_(state.c.id.is_(None), state.c.armed.is_(True))),
                and_(state.c.armed.is_(False), available >= threshold),
            ),
        )
        .order_by(settings_table.c.account_id)
        .limit(limit)
    )
    return list(session.execute(stmt).all())


def budget_candidates(
    session: Session, *, period_starts: dict[str, datetime], first_level: int, after_budget_id: int, limit: int
) -> list[BudgetCandidate]:
    """Live budgets (a limit above zero) whose current period has used at least ``first_level`` percent of the limit,
    or has fired a threshold (which may have to be armed again): with the period's usage and its state, if any.
    ``period_starts``: the start of the current period of each kind of period."""
    current = case(
        *((budgets.c.period == period, literal(start, UTCDateTime)) for period, start in period_starts.items()),
        else_=None,
    )
    usage = budget_usage.alias("usage")
    state = states.alias("state")
    used = func.coalesce(usage.c.used_credits, 0)
    stmt = (
        select(
            budgets.c.id,
            budgets.c.account_id,
            budgets.c.name,
            budgets.c.period,
            budgets.c.limit_credits,
            used.label("used_credits"),
            state.c.id.label("state_id"),
            func.coalesce(state.c.level_percent, 0).label("level_percent"),
        )
        .select_from(budgets)
        .outerjoin(usage, and_(usage.c.budget_id == budgets.c.id, usage.c.period_start == current))
        .outerjoin(
            state,
            and_(
                state.c.kind == AlertKind.BUDGET_THRESHOLD,
                state.c.ref_id == budgets.c.id,
                state.c.period_start == current,
            ),
        )
        .where(
            budgets.c.deleted_at.is_(None),
            budgets.c.limit_credits > 0,
            budgets.c.id > after_budget_id,
            or_(used * 100 >= budgets.c.limit_credits * first_level, state.c.level_percent > 0),
        )
        .order_by(budgets.c.id)
        .limit(limit)
    )
    return list(session.execute(stmt).all())


def _expiring_lot(now: datetime, until: datetime) -> ColumnElement[bool]:
    """A lot with credits left to expire (unreserved: what is reserved is captured or released first) within the
    window, not reported yet."""
    reported = exists().where(states.c.kind == AlertKind.CREDITS_EXPIRING, states.c.ref_id == lots.c.id)
    return and_(
        lots.c.remaining_credits > lots.c.reserved_credits,
        lots.c.expires_at > now,
        lots.c.expires_at <= until,
        ~reported,
    )


def accounts_with_expiring_lots(
    session: Session, *, now: datetime, until: datetime, after_account_id: int, limit: int
) -> list[int]:
    stmt = (
        select(lots.c.account_id)
        .join(accounts, accounts.c.id == lots.c.account_id)
        .where(_expiring_lot(now, until), accounts.c.kind == AccountKind.CUSTOMER, lots.c.account_id > after_account_id)
        .group_by(lots.c.account_id)
        .order_by(lots.c.account_id)
        .limit(limit)
    )
    return [int(found) for found in session.execute(stmt).scalars()]


def expiring_lots(session: Session, *, account_id: int, now: datetime, until: datetime) -> list[ExpiringLot]:
    stmt = (
        select(lots.c.id, lots.c.remaining_credits, lots.c.reserved_credits, lots.c.expires_at)
        .where(lots.c.account_id == account_id, _expiring_lot(now, until))
        .order_by(lots.c.expires_at, lots.c.id)
    )
    return list(session.execute(stmt).all())
