"""The evaluation of the alerts that watch a level: low balance, budget thresholds, expiring credits.

Run by the worker (``alerts.evaluate``: services.alerts.tasks opens one unit of work per page), never from the
ledger's paths: each sweep pages through its candidates only (the repository's queries name those whose state may
have to change, so a run where nothing changed reads a few index ranges and writes nothing), and within a page
decides on the ledger's own figures (:func:`services.ledger.balance.get_balance`, the budget's usage) with the rules
in :mod:`services.alerts.rules`. Every function here takes the caller's session.

A state changes by one conditional write (see the repository), and only the evaluation whose write changed it sends
the alert, in the same transaction: two evaluations running at once (two workers) send each crossing once, and a
page rolled back sends nothing and leaves the state as it was, for the next run.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlmodel import Session

from services.alerts import messages, rules
from services.alerts import repository as repo
from services.alerts.models import AlertKind
from services.alerts.service import ACCOUNT_SUBJECT, budget_subject, dedupe_key, lot_subject, send
from services.core.clock import period_start
from services.core.settings import Settings
from services.ledger.balance import get_balance
from services.ledger.models import BudgetPeriod

# (session, settings, after id, page size, now) -> (candidates seen, alerts fired or re-armed, last id seen)
Sweep = Callable[[Session, Settings, int, int, datetime], tuple[int, int, int]]


def low_balance_page(
    session: Session, settings: Settings, after: int, limit: int, now: datetime
) -> tuple[int, int, int]:
    rows = repo.low_balance_candidates(session, now=now, after_account_id=after, limit=limit)
    changed = 0
    for row in rows:
        balance = get_balance(session, row.account_id, now)
        available, threshold = balance.available_credits, int(row.threshold_credits)
        if rules.low_balance_crossed(available, threshold):
            crossing = (
                repo.insert_fired(
                    session, account_id=row.account_id, kind=AlertKind.LOW_BALANCE, subject_key=ACCOUNT_SUBJECT, now=now
                )
                if row.state_id is None
                else repo.fire(session, row.state_id, now=now, armed_at=0, level_percent=0)
            )
            if crossing is None:
                continue
            send(
                session,
                kind=AlertKind.LOW_BALANCE,
                account_id=row.account_id,
                key=dedupe_key(AlertKind.LOW_BALANCE, row.account_id, ACCOUNT_SUBJECT, crossing),
                data={
                    "threshold_credits": threshold,
                    "available_credits": available,
                    "balance_credits": balance.total_credits,
                    "reserved_credits": balance.reserved_credits,
                    "crossing": crossing,
                },
                notice=messages.low_balance(settings, available_credits=available, threshold_credits=threshold),
                now=now,
                settings=settings,
            )
            changed += 1
        elif row.state_id is not None and rules.low_balance_recovered(
            available, threshold, settings.alerts_rearm_margin_percent
        ):
            changed += repo.rearm(session, row.state_id, now=now, from_level=0)
    return len(rows), changed, rows[-1].account_id if rows else after


def budget_page(session: Session, settings: Settings, after: int, limit: int, now: datetime) -> tuple[int, int, int]:
    starts = {str(period): period_start(now, period) for period in BudgetPeriod}
    rows = repo.budget_candidates(
        session, period_starts=starts, first_level=rules.BUDGET_LEVELS[0], after_budget_id=after, limit=limit
    )
    changed = 0
    for row in rows:
        used, limit_credits, fired = int(row.used_credits), int(row.limit_credits), int(row.level_percent)
        start = starts[row.period]
        subject = budget_subject(row.id, start)
        reached = rules.budget_level_reached(used, limit_credits)
        if reached > fired:
            # Several thresholds crossed at once are told once, by the highest; the lower ones count as fired.
            crossing = (
                repo.insert_fired(
                    session,
                    account_id=row.account_id,
                    kind=AlertKind.BUDGET_THRESHOLD,
                    subject_key=subject,
                    ref_id=row.id,
                    period_start=start,
                    level_percent=reached,
                    armed=reached < rules.BUDGET_LEVELS[-1],
                    now=now,
                )
                if row.state_id is None
                else repo.fire(
                    session,
                    row.state_id,
                    now=now,
                    armed_at=fired,
                    level_percent=reached,
                    armed=reached < rules.BUDGET_LEVELS[-1],
                )
            )
            if crossing is None:
                continue
            send(
                session,
                kind=AlertKind.BUDGET_THRESHOLD,
                account_id=row.account_id,
                key=dedupe_key(AlertKind.BUDGET_THRESHOLD, row.account_id, subject, crossing, reached),
                data={
                    "budget": {
                        "id": row.id,
                        "name": row.name,
                        "period": row.period,
                        "period_start": start.isoformat(),
                        "limit_credits": limit_credits,
                        "used_credits": used,
                    },
                    "percent": reached,
                    "crossing": crossing,
                },
                notice=messages.budget_threshold(
                    settings,
                    budget_name=row.name,
                    period=row.period,
                    percent=reached,
                    used_credits=used,
                    limit_credits=limit_credits,
                    period_start=start,
                ),
                now=now,
                settings=settings,
            )
            changed += 1
        elif fired > 0 and row.state_id is not None:
            held = rules.budget_level_held(used, limit_credits, settings.alerts_rearm_margin_percent)
            if held < fired:
                changed += repo.rearm(session, row.state_id, now=now, from_level=fired, to_level=held)
    return len(rows), changed, rows[-1].id if rows else after


def expiring_page(session: Session, settings: Settings, after: int, limit: int, now: datetime) -> tuple[int, int, int]:
    """One message per account per run listing its lots newly within the window (each lot reported once), and one
    event likewise, keyed by the first lot it reports (a lot is reported once, so the key never repeats)."""
    until = now + rules.EXPIRING_WITHIN
    account_ids = repo.accounts_with_expiring_lots(session, now=now, until=until, after_account_id=after, limit=limit)
    changed = 0
    for account_id in account_ids:
        reported = [
            lot
            for lot in repo.expiring_lots(session, account_id=account_id, now=now, until=until)
            if repo.insert_fired(
                session,
                account_id=account_id,
                kind=AlertKind.CREDITS_EXPIRING,
                subject_key=lot_subject(lot.id),
                ref_id=lot.id,
                now=now,
            )
            is not None
        ]
        if not reported:
            continue
        first = lot_subject(min(lot.id for lot in reported))
        send(
            session,
            kind=AlertKind.CREDITS_EXPIRING,
            account_id=account_id,
            key=dedupe_key(AlertKind.CREDITS_EXPIRING, account_id, first, 1),
            data={
                "lots": [
                    {
                        "lot_id": lot.id,
                        "remaining_credits": int(lot.remaining_credits),
                        "expires_at": lot.expires_at.isoformat(),
                    }
                    for lot in reported
                ],
                "expiring_credits": sum(int(lot.remaining_credits) for lot in reported),
            },
            notice=messages.credits_expiring(
                settings, lots=[(lot.id, int(lot.remaining_credits), lot.expires_at) for lot in reported]
            ),
            now=now,
            settings=settings,
            lot_id=reported[0].id,
        )
        changed += 1
    return len(account_ids), changed, account_ids[-1] if account_ids else after


SWEEPS: tuple[Sweep, ...] = (low_balance_page, budget_page, expiring_page)
