"""Deadlines: due date-times around weekends and holidays, instant cases, clock stops, and years without data."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from node.domain import (
    END_OF_DAY,
    WorkCalendar,
    clear_calendar_cache,
    due_at,
    is_early,
    library_calendar_years,
    load_calendar,
    procedure_workdays,
    stop_workdays,
    workdays_used,
)
from node.errors import CalendarError

NO_DATA_YEAR = library_calendar_years()[-1] + 1


@pytest.fixture(scope="module")
def calendar() -> WorkCalendar:
    clear_calendar_cache()
    return load_calendar()


def _end(day: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), END_OF_DAY)


# -- due_at ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("accepted_at", "limit", "expected"),
    [
        # Accepted on a Friday evening: the count starts on Monday.
        (datetime(2026, 3, 6, 18, 45), 1, "2026-03-09"),
        (datetime(2026, 3, 6, 18, 45), 5, "2026-03-13"),
        (datetime(2026, 3, 6, 18, 45), 20, "2026-04-03"),  # 6 April (Mon) is 清明, 20th day is Fri 3 April
        # Friday evening before the 2025 Spring Festival: Sunday 26 Jan is an adjusted working day.
        (datetime(2025, 1, 24, 19, 0), 1, "2025-01-26"),
        (datetime(2025, 1, 24, 19, 0), 2, "2025-01-27"),
        (datetime(2025, 1, 24, 19, 0), 3, "2025-02-05"),
        # The day before a long holiday (国庆节 2026: 1–7 Oct; Sat 10 Oct is a working day).
        (datetime(2026, 9, 30, 17, 0), 1, "2026-10-08"),
        (datetime(2026, 9, 30, 17, 0), 3, "2026-10-10"),
        (datetime(2026, 9, 30, 17, 0), 4, "2026-10-12"),
        # The day before the 9-day 2026 Spring Festival: Sat 14 Feb works, 15–23 Feb off.
        (datetime(2026, 2, 13, 16, 0), 1, "2026-02-14"),
        (datetime(2026, 2, 13, 16, 0), 2, "2026-02-24"),
        # Accepted on a holiday: the first working day after it counts as day 1.
        (datetime(2026, 10, 3, 10, 0), 1, "2026-10-08"),
        # The time of day on the acceptance day does not matter.
        (datetime(2026, 3, 2, 0, 0, 0), 2, "2026-03-04"),
        (datetime(2026, 3, 2, 23, 59, 59), 2, "2026-03-04"),
        # Across the new year inside covered years (元旦 2026: 1–3 Jan; Sun 4 Jan works).
        (datetime(2025, 12, 31, 9, 0), 1, "2026-01-04"),
    ],
)
def test_due_at_end_of_the_nth_working_day(
    calendar: WorkCalendar, accepted_at: datetime, limit: int, expected: str
) -> None:
    assert due_at(calendar, accepted_at, limit) == _end(expected)


@pytest.mark.parametrize(
    "accepted_at",
    [
        datetime(2026, 3, 4, 9, 0),  # a Wednesday
        datetime(2026, 3, 7, 11, 0),  # a Saturday
        datetime(2026, 2, 17, 11, 0),  # a Spring Festival holiday
        datetime(NO_DATA_YEAR, 1, 5, 9, 0),  # an instant case needs no calendar data at all
    ],
)
def test_instant_case_is_due_the_same_day(calendar: WorkCalendar, accepted_at: datetime) -> None:
    assert due_at(calendar, accepted_at, 0) == datetime.combine(accepted_at.date(), END_OF_DAY)


def test_instant_case_with_a_clock_stop_moves_to_later_working_days(calendar: WorkCalendar) -> None:
    assert due_at(calendar, datetime(2026, 3, 6, 9, 0), 0, stop_workdays=1) == _end("2026-03-09")


def test_stop_days_extend_the_limit_by_working_days(calendar: WorkCalendar) -> None:
    accepted = datetime(2026, 9, 24, 10, 0)  # Thu; 25–27 Sep 中秋, 1–7 Oct 国庆
    # Without a stop: 28, 29, 30 Sep, 8, 9 Oct.
    assert due_at(calendar, accepted, 5) == _end("2026-10-09")
    # Four stop days: 10 Oct (adjusted Saturday), 12, 13, 14 Oct.
    assert due_at(calendar, accepted, 5, stop_workdays=4) == _end("2026-10-14")


def test_natural_day_limits_count_calendar_days(calendar: WorkCalendar) -> None:
    accepted = datetime(2026, 9, 30, 10, 0)
    assert due_at(calendar, accepted, 3, unit="2") == _end("2026-10-03")
    assert due_at(calendar, accepted, 0, unit="2") == _end("2026-09-30")
    # Stop days are still working days, counted after the natural-day due day.
    assert due_at(calendar, accepted, 3, unit="2", stop_workdays=1) == _end("2026-10-08")
    # The schema default (empty unit) is working days.
    assert due_at(calendar, accepted, 3, unit="") == due_at(calendar, accepted, 3, unit="1")


def test_due_at_rejects_bad_arguments(calendar: WorkCalendar) -> None:
    accepted = datetime(2026, 3, 2, 9, 0)
    with pytest.raises(ValueError, match="time limit must be >= 0, got -1"):
        due_at(calendar, accepted, -1)
    with pytest.raises(ValueError, match="clock-stop working days must be >= 0"):
        due_at(calendar, accepted, 1, stop_workdays=-2)
    with pytest.raises(ValueError, match=r"unit must be '1' .* or '2' .*, got '3'"):
        due_at(calendar, accepted, 1, unit="3")


# -- clock stops -------------------------------------------------------------------------------------------------
def test_procedure_workdays_count_start_through_end_inclusive(calendar: WorkCalendar) -> None:
    # Same working day: one day.
    assert procedure_workdays(calendar, datetime(2026, 3, 2, 9, 0), datetime(2026, 3, 2, 16, 0)) == 1
    # Mon–Fri.
    assert procedure_workdays(calendar, datetime(2026, 3, 2, 9, 0), datetime(2026, 3, 6, 16, 0)) == 5
    # Entirely inside a holiday: the clock was not running anyway.
    assert procedure_workdays(calendar, datetime(2026, 10, 2, 9, 0), datetime(2026, 10, 6, 9, 0)) == 0
    # Over a weekend only.
    assert procedure_workdays(calendar, datetime(2026, 3, 7, 9, 0), datetime(2026, 3, 8, 9, 0)) == 0
    with pytest.raises(ValueError, match=r"ends .* before it starts"):
        procedure_workdays(calendar, datetime(2026, 3, 3, 9, 0), datetime(2026, 3, 2, 9, 0))


def test_clock_stop_spanning_a_holiday_counts_only_its_working_days(calendar: WorkCalendar) -> None:
    started, ended = datetime(2026, 9, 29, 14, 0), datetime(2026, 10, 9, 11, 0)
    # 29, 30 Sep and 8, 9 Oct; 1–7 Oct is 国庆节.
    assert procedure_workdays(calendar, started, ended) == 4
    # Spring Festival 2025: 27 Jan (Mon) through 8 Feb (adjusted Saturday): 27 Jan, 5, 6, 7 Feb and 8 Feb.
    assert procedure_workdays(calendar, datetime(2025, 1, 27), datetime(2025, 2, 8)) == 5


def test_deadlines_are_recomputed_when_a_procedure_ends(calendar: WorkCalendar) -> None:
    accepted = datetime(2026, 9, 21, 9, 0)  # Mon
    promised, legal = due_at(calendar, accepted, 5), due_at(calendar, accepted, 20)
    assert promised == _end("2026-09-29")  # 22, 23, 24, 28, 29 Sep
    stop = procedure_workdays(calendar, datetime(2026, 9, 28, 10, 0), datetime(2026, 10, 9, 15, 0))
    assert stop == 5  # 28, 29, 30 Sep, 8, 9 Oct
    promised_after, legal_after = (due_at(calendar, accepted, limit, stop_workdays=stop) for limit in (5, 20))
    # Both limits move by exactly the stopped working days.
    assert calendar.workdays_between(promised.date(), promised_after.date()) == stop
    assert calendar.workdays_between(legal.date(), legal_after.date()) == stop
    assert promised_after == _end("2026-10-12")  # 5 more after 29 Sep: 30 Sep, 8, 9, 10 (Sat), 12 Oct


def test_stop_workdays_merges_overlaps_and_runs_open_procedures_to_now(calendar: WorkCalendar) -> None:
    now = datetime(2026, 3, 13, 12, 0)
    inspection = (datetime(2026, 3, 2, 9, 0), datetime(2026, 3, 4, 17, 0))  # Mon–Wed: 3
    testing = (datetime(2026, 3, 4, 9, 0), datetime(2026, 3, 5, 17, 0))  # Wed–Thu, overlaps Wed: +1
    assert stop_workdays(calendar, [inspection, testing], now) == 4
    assert stop_workdays(calendar, [testing, inspection], now) == 4
    nested = (datetime(2026, 3, 3, 9, 0), datetime(2026, 3, 3, 10, 0))
    assert stop_workdays(calendar, [inspection, nested], now) == 3
    still_running = (datetime(2026, 3, 11, 9, 0), None)  # Wed through "now" Fri: 3
    assert stop_workdays(calendar, [inspection, still_running], now) == 6
    assert stop_workdays(calendar, [], now) == 0
    with pytest.raises(ValueError, match="before it starts"):
        stop_workdays(calendar, [(datetime(2026, 3, 20), None)], now)


# -- years with no data ------------------------------------------------------------------------------------------
def test_a_deadline_in_a_year_with_no_data_is_an_explicit_error(calendar: WorkCalendar) -> None:
    accepted = datetime(NO_DATA_YEAR - 1, 12, 24, 10, 0)
    end_of_year = date(NO_DATA_YEAR - 1, 12, 31)
    inside = calendar.workdays_between(accepted.date(), end_of_year)
    # A limit that ends inside the covered year still works ...
    assert due_at(calendar, accepted, inside).date() <= end_of_year
    # ... one more working day needs the next year, which has no data: an error, never a weekends-only guess.
    with pytest.raises(CalendarError) as caught:
        due_at(calendar, accepted, inside + 1)
    message = caught.value.message
    assert f"no holiday data for {NO_DATA_YEAR}" in message
    assert "calendar.holidays_file" in message
    assert "config/holidays.example.toml" in message


def test_a_holiday_file_supplies_the_missing_year(tmp_path: Path) -> None:
    year = NO_DATA_YEAR
    first_monday = next(d for d in (date(year, 1, 1) + timedelta(days=i) for i in range(7)) if d.weekday() == 0)
    holiday_file = tmp_path / "holidays.toml"
    # Operator data for the test: New Year's Day and the first Monday are holidays.
    holiday_file.write_text(f'[{year}]\nholidays = ["{year}-01-01", "{first_monday.isoformat()}"]\n', encoding="utf-8")
    with_file = load_calendar(holiday_file)
    accepted = datetime(year - 1, 12, 31, 10, 0)
    expected = date(year, 1, 2)
    while expected.weekday() >= 5 or expected == first_monday:
        expected += timedelta(days=1)
    assert due_at(with_file, accepted, 1) == datetime.combine(expected, END_OF_DAY)
    assert workdays_used(with_file, accepted, datetime.combine(expected, END_OF_DAY)) == 1


# -- workdays used, early completion ------------------------------------------------------------------------------
def test_workdays_used(calendar: WorkCalendar) -> None:
    friday = datetime(2026, 3, 6, 17, 0)
    assert workdays_used(calendar, friday, datetime(2026, 3, 6, 17, 30)) == 0
    assert workdays_used(calendar, friday, datetime(2026, 3, 8, 10, 0)) == 0  # Sunday
    assert workdays_used(calendar, friday, datetime(2026, 3, 9, 10, 0)) == 1
    assert workdays_used(calendar, friday, datetime(2026, 3, 13, 10, 0)) == 5
    assert workdays_used(calendar, friday, datetime(2026, 3, 13, 10, 0), stop_workdays=2) == 3
    assert workdays_used(calendar, friday, datetime(2026, 3, 9, 10, 0), stop_workdays=3) == 0
    # Over the 2026 Spring Festival: 14 Feb (Sat, adjusted) and 24 Feb.
    assert workdays_used(calendar, datetime(2026, 2, 13), datetime(2026, 2, 24, 9, 0)) == 2


def test_is_early_compares_days() -> None:
    due = _end("2026-03-13")
    assert is_early(datetime(2026, 3, 12, 23, 59), due)
    assert not is_early(datetime(2026, 3, 13, 0, 1), due)
    assert not is_early(datetime(2026, 3, 16, 9, 0), due)
