"""Time: always timezone-aware UTC, and calendar-month arithmetic for lot expiry."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta


def utcnow() -> datetime:
    return datetime.now(UTC)


def add_calendar_months(moment: datetime, months: int) -> datetime:
    """The same day and time ``months`` later; a day the target month lacks becomes its last day.

    29 February + 12 months = 28 February; 31 January + 1 month = 28 (or 29) February.
    """
    month_index = moment.month - 1 + months
    year = moment.year + month_index // 12
    month = month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def period_start(moment: datetime, period: str) -> datetime:
    """Start (UTC) of the budget period holding ``moment``: day, ISO week (Monday), calendar month, or total."""
    moment = moment.astimezone(UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    if period == "total":
        return datetime(1970, 1, 1, tzinfo=UTC)
    raise ValueError(f"unknown budget period {period!r}")
