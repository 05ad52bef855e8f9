from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.core.clock import add_calendar_months, period_start, utcnow


def test_twelve_calendar_months_is_the_same_date_next_year_at_the_same_time():
    credited_at = datetime(2025, 3, 10, 14, 15, 16, 123456, tzinfo=UTC)

    assert add_calendar_months(credited_at, 12) == datetime(2026, 3, 10, 14, 15, 16, 123456, tzinfo=UTC)


def test_29_february_plus_twelve_months_is_28_february():
    credited_at = datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)

    assert add_calendar_months(credited_at, 12) == datetime(2025, 2, 28, 23, 59, 59, 999999, tzinfo=UTC)


def test_29_february_plus_four_years_is_29_february_again():
    assert add_calendar_months(datetime(2024, 2, 29, 8, tzinfo=UTC), 48) == datetime(2028, 2, 29, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (datetime(2025, 1, 31, 9, 30, tzinfo=UTC), 1, datetime(2025, 2, 28, 9, 30, tzinfo=UTC)),
        (datetime(2024, 1, 31, 9, 30, tzinfo=UTC), 1, datetime(2024, 2, 29, 9, 30, tzinfo=UTC)),
        (datetime(2025, 3, 31, 0, 0, tzinfo=UTC), 1, datetime(2025, 4, 30, 0, 0, tzinfo=UTC)),
        (datetime(2025, 8, 31, 18, 0, tzinfo=UTC), 1, datetime(2025, 9, 30, 18, 0, tzinfo=UTC)),
        (datetime(2025, 11, 30, 7, 0, tzinfo=UTC), 3, datetime(2026, 2, 28, 7, 0, tzinfo=UTC)),
        (datetime(2025, 12, 31, 23, 0, tzinfo=UTC), 1, datetime(2026, 1, 31, 23, 0, tzinfo=UTC)),
        (datetime(2025, 1, 31, 12, 0, tzinfo=UTC), 12, datetime(2026, 1, 31, 12, 0, tzinfo=UTC)),
    ],
)
def test_a_day_the_target_month_lacks_becomes_its_last_day(start, months, expected):
    assert add_calendar_months(start, months) == expected


def test_adding_months_keeps_the_time_zone():
    start = datetime(2025, 5, 31, 10, tzinfo=UTC)

    assert add_calendar_months(start, 1).tzinfo is UTC


def test_utcnow_is_aware_utc():
    now = utcnow()

    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)


def test_day_period_starts_at_utc_midnight():
    assert period_start(datetime(2025, 6, 11, 23, 59, 59, tzinfo=UTC), "day") == datetime(2025, 6, 11, tzinfo=UTC)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2025, 6, 9, 0, 0, tzinfo=UTC),  # Monday, first instant
        datetime(2025, 6, 11, 12, 0, tzinfo=UTC),  # Wednesday
        datetime(2025, 6, 15, 23, 59, 59, 999999, tzinfo=UTC),  # Sunday, last instant
    ],
)
def test_week_period_starts_on_monday(moment):
    assert period_start(moment, "week") == datetime(2025, 6, 9, tzinfo=UTC)


def test_week_period_can_start_in_the_previous_month():
    assert period_start(datetime(2025, 6, 1, 10, tzinfo=UTC), "week") == datetime(2025, 5, 26, tzinfo=UTC)


def test_month_period_starts_on_the_first():
    assert period_start(datetime(2025, 2, 28, 23, 0, tzinfo=UTC), "month") == datetime(2025, 2, 1, tzinfo=UTC)


def test_total_period_starts_at_the_epoch():
    assert period_start(datetime(2031, 7, 4, tzinfo=UTC), "total") == datetime(1970, 1, 1, tzinfo=UTC)


def test_period_boundaries_are_taken_in_utc():
    # 01:00 on 1 June at UTC+2 is still 31 May in UTC.
    moment = datetime(2025, 6, 1, 1, 0, tzinfo=timezone(timedelta(hours=2)))

    assert period_start(moment, "day") == datetime(2025, 5, 31, tzinfo=UTC)
    assert period_start(moment, "month") == datetime(2025, 5, 1, tzinfo=UTC)


def test_unknown_period_is_refused():
    with pytest.raises(ValueError, match="fortnight"):
        period_start(datetime(2025, 6, 1, tzinfo=UTC), "fortnight")
