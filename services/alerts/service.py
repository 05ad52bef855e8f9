"""Alerts: the account's settings, the state of its alerts, and sending one alert (an event always, an email when the
account has an address and wants alert emails), inside the caller's transaction. Nothing here commits or sends.

Each alert is sent under one dedupe key, :func:`dedupe_key`, for its event and its email alike: the subject it is
about and the crossing's number, so a crossing retried or evaluated twice is one message, and the next crossing
(after a recovery) another. A failed auto-recharge is reported here too, by the card rail, in the transaction that
records the failure: keyed by the failed purchase, it is sent exactly once per failed attempt.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlmodel import Session

from services.alerts import messages
from services.alerts import repository as repo
from services.alerts.errors import InvalidThreshold
from services.alerts.models import AlertKind
from services.alerts.rules import BUDGET_LEVELS
from services.alerts.schemas import AlertSettingsOut
from services.core.settings import Settings, get_settings
from services.events.models import EventType
from services.events.service import record_event
from services.ledger.accounts import require_customer_account
from services.ledger.balance import get_balance
from services.ledger.budgets import list_budgets
from services.outbox.models import MessageKind
from services.outbox.receipts import Notice
from services.outbox.service import recipient_of, record_email

# What each kind of alert is sent as: its event's type and its email's kind.
EVENT_TYPES: Mapping[AlertKind, EventType] = {
    AlertKind.LOW_BALANCE: EventType.CREDITS_LOW,
    AlertKind.CREDITS_EXPIRING: EventType.CREDITS_EXPIRING,
    AlertKind.BUDGET_THRESHOLD: EventType.BUDGET_THRESHOLD,
    AlertKind.AUTO_RECHARGE_FAILED: EventType.AUTO_RECHARGE_FAILED,
}
MESSAGE_KINDS: Mapping[AlertKind, MessageKind] = {
    AlertKind.LOW_BALANCE: MessageKind.ALERT_LOW_BALANCE,
    AlertKind.CREDITS_EXPIRING: MessageKind.ALERT_CREDITS_EXPIRING,
    AlertKind.BUDGET_THRESHOLD: MessageKind.ALERT_BUDGET_THRESHOLD,
    AlertKind.AUTO_RECHARGE_FAILED: MessageKind.ALERT_AUTO_RECHARGE_FAILED,
}
ACCOUNT_SUBJECT = ""


def budget_subject(budget_id: int, period_start: datetime) -> str:
    return f"budget:{budget_id}:{period_start.strftime('%Y-%m-%d')}"


def lot_subject(lot_id: int) -> str:
    return f"lot:{lot_id}"


def purchase_subject(purchase_id: int) -> str:
    return f"purchase:{purchase_id}"


def dedupe_key(kind: AlertKind, account_id: int, subject_key: str, crossing: int, level_percent: int = 0) -> str:
    """The one key of an alert's event and email: ``alert:<kind>:<account>:<subject>:<crossing>`` (and the budget
    threshold reached, which a crossing of several thresholds at once names once, by the highest)."""
    key = f"alert:{kind}:{account_id}:{subject_key or 'account'}:{crossing}"
    return f"{key}:{level_percent}" if level_percent else key


# --- settings ----------------------------------------------------------------------------------------------


def _armed(session: Session, account_id: int, now: datetime) -> dict[str, bool]:
    """Low balance: not fired, or armed again since. Budget thresholds: some live budget can still fire one this
    period (it has not fired its 100 %). Expiring credits and failed auto-recharges: always (each lot, each failed
    attempt, is reported once)."""
    low = repo.get_state(session, account_id, AlertKind.LOW_BALANCE, ACCOUNT_SUBJECT)
    budget_states = {
        (row.ref_id, row.period_start): row.level_percent
        for row in repo.states_of(session, account_id, [AlertKind.BUDGET_THRESHOLD])
    }
    budgets = [view for view in list_budgets(session, account_id, now) if view.limit_credits > 0]
    return {
        AlertKind.LOW_BALANCE: low is None or bool(low.armed),
        AlertKind.CREDITS_EXPIRING: True,
        AlertKind.BUDGET_THRESHOLD: not budgets
        or any(budget_states.get((view.id, view.period_start), 0) < BUDGET_LEVELS[-1] for view in budgets),
        AlertKind.AUTO_RECHARGE_FAILED: True,
    }


def get_alert_settings(session: Session, account_id: int, now: datetime) -> AlertSettingsOut:
    require_customer_account(session, account_id)
    row = repo.get_settings_row(session, account_id)
    return AlertSettingsOut(
        low_balance_threshold_credits=None if row is None else row.low_balance_threshold_credits,
        email_enabled=True if row is None else bool(row.email_enabled),
        armed=_armed(session, account_id, now),
    )


_UNSET: Any = object()


def update_alert_settings(
    session: Session,
    account_id: int,
    *,
    low_balance_threshold_credits: int | None = _UNSET,
    email_enabled: bool | None = None,
    now: datetime,
    settings: Settings | None = None,
) -> AlertSettingsOut:
    """Change the threshold (None: off) and/or whether alert emails are sent; fields not given are kept. A new
    threshold arms the low-balance alert again, so that a balance already below it is told once."""
    require_customer_account(session, account_id)
    maximum = (settings or get_settings()).max_amount_credits
    values: dict[str, Any] = {}
    if low_balance_threshold_credits is not _UNSET:
        threshold = low_balance_threshold_credits
        if threshold is not None and not 0 < threshold <= maximum:
            raise InvalidThreshold(
                f"low_balance_threshold_credits must be between 1 and {maximum}", field="low_balance_threshold_credits"
            )
        current = repo.get_settings_row(session, account_id)
        if threshold != (None if current is None else current.low_balance_threshold_credits):
            repo.rearm_subject(session, account_id, AlertKind.LOW_BALANCE, ACCOUNT_SUBJECT, now)
        values["low_balance_threshold_credits"] = threshold
    if email_enabled is not None:
        values["email_enabled"] = email_enabled
    if values:
        repo.upsert_settings(session, account_id, values, now)
    return get_alert_settings(session, account_id, now)


# --- sending -----------------------------------------------------------------------------------------------


def send(
    session: Session,
    *,
    kind: AlertKind,
    account_id: int,
    key: str,
    data: Mapping[str, Any],
    notice: Notice,
    now: datetime,
    settings: Settings | None = None,
    lot_id: int | None = None,
) -> None:
    """Record the alert's event, and its email unless the account has no address or turned alert emails off."""
    record_event(
        session,
        event_type=EVENT_TYPES[kind],
        account_id=account_id,
        data={"account_id": account_id, "kind": str(kind), **data},
        dedupe_key=key,
        now=now,
    )
    row = repo.get_settings_row(session, account_id)
    if row is not None and not row.email_enabled:
        return
    recipient = recipient_of(session, account_id)
    if recipient is None:
        return
    record_email(
        session,
        settings=settings,
        dedupe_key=key,
        kind=MESSAGE_KINDS[kind],
        account_id=account_id,
        lot_id=lot_id,
        recipient=recipient,
        subject=notice.subject,
        body_text=notice.text,
        body_html=notice.html,
        now=now,
    )


def record_auto_recharge_failed(
    session: Session,
    *,
    account_id: int,
    purchase_id: int,
    amount_credits: int,
    amount_cents: int,
    failure_code: str,
    failure_message: str,
    now: datetime,
    settings: Settings | None = None,
) -> bool:
    """A failed auto-recharge attempt (the purchase ``purchase_id``), in the transaction that records the failure:
    alerted once; whether it was now."""
    subject = purchase_subject(purchase_id)
    crossing = repo.insert_fired(
        session,
        account_id=account_id,
        kind=AlertKind.AUTO_RECHARGE_FAILED,
        subject_key=subject,
        ref_id=purchase_id,
        now=now,
    )
    if crossing is None:
        return False
    available = get_balance(session, account_id, now).available_credits
    send(
        session,
        kind=AlertKind.AUTO_RECHARGE_FAILED,
        account_id=account_id,
        key=dedupe_key(AlertKind.AUTO_RECHARGE_FAILED, account_id, subject, crossing),
        data={
            "purchase_id": purchase_id,
            "amount_credits": amount_credits,
            "amount_cents": amount_cents,
            "failure_code": failure_code,
            "failure_message": failure_message,
            "available_credits": available,
        },
        notice=messages.auto_recharge_failed(
            settings or get_settings(),
            amount_credits=amount_credits,
            amount_cents=amount_cents,
            reason=failure_message,
            available_credits=available,
        ),
        now=now,
        settings=settings,
    )
    return True
