"""Working-day calendar against the published State Council notices, the operator holiday file, and coverage errors."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import chinese_calendar
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.domain import WorkCalendar, clear_calendar_cache, library_calendar_years, load_calendar, parse_holiday_file
from node.errors import CalendarError

EXAMPLE_FILE = Path(__file__).resolve().parents[2] / "config" / "holidays.example.toml"
LIBRARY_YEARS = library_calendar_years()
# The first year chinesecalendar has no data for (2027 with 1.11.0); computed so an upgrade does not break the tests.
NO_DATA_YEAR = LIBRARY_YEARS[-1] + 1


def _days(first: str, last: str | None = None) -> set[date]:
    start = date.fromisoformat(first)
    end = date.fromisoformat(last) if last else start
    return {start + timedelta(days=i) for i in range((end - start).days + 1)}


# 国办发明电〔2024〕12号: 2025 holidays and adjusted working days, written out from the notice.
PUBLISHED_2025_HOLIDAYS = (
    _days("2025-01-01")  # 元旦
    | _days("2025-01-28", "2025-02-04")  # 春节 (除夕 to 初七)
    | _days("2025-04-04", "2025-04-06")  # 清明
    | _days("2025-05-01", "2025-05-05")  # 劳动节
    | _days("2025-05-31", "2025-06-02")  # 端午
    | _days("2025-10-01", "2025-10-08")  # 国庆节 + 中秋节
)
PUBLISHED_2025_WORKDAYS = {
    date(2025, 1, 26),
    date(2025, 2, 8),
    date(2025, 4, 27),
    date(2025, 9, 28),
    date(2025, 10, 11),
}

# 国办发明电〔2025〕7号: 2026.
PUBLISHED_2026_HOLIDAYS = (
    _days("2026-01-01", "2026-01-03")  # 元旦
    | _days("2026-02-15", "2026-02-23")  # 春节, 9 days
    | _days("2026-04-04", "2026-04-06")  # 清明
    | _days("2026-05-01", "2026-05-05")  # 劳动节
    | _days("2026-06-19", "2026-06-21")  # 端午
    | _days("2026-09-25", "2026-09-27")  # 中秋
    | _days("2026-10-01", "2026-10-07")  # 国庆节
)
PUBLISHED_2026_WORKDAYS = {
    date(2026, 1, 4),
    date(2026, 2, 14),
    date(2026, 2, 28),
    date(2026, 5, 9),
    date(2026, 9, 20),
    date(2026, 10, 10),
}


@pytest.fixture(scope="module")
def calendar() -> WorkCalendar:
    return load_calendar()


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_calendar_cache()


def _write(tmp_path: Path, text: str, name: str = "holidays.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- published calendars -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("year", "holidays", "workdays", "working_day_total"),
    [
        (2025, PUBLISHED_2025_HOLIDAYS, PUBLISHED_2025_WORKDAYS, 248),
        (2026, PUBLISHED_2026_HOLIDAYS, PUBLISHED_2026_WORKDAYS, 248),
    ],
)
def test_every_day_matches_the_published_notice(
    calendar: WorkCalendar, year: int, holidays: set[date], workdays: set[date], working_day_total: int
) -> None:
    for day in _days(f"{year}-01-01", f"{year}-12-31"):
        expected = day in workdays or (day.weekday() < 5 and day not in holidays)
        assert calendar.is_workday(day) is expected, day
    # Only the year's own days are counted: after 31 Dec of the year before, through 31 Dec.
    assert calendar.workdays_between(date(year - 1, 12, 31), date(year, 12, 31)) == working_day_total


def test_adjusted_weekend_workdays_are_weekend_days(calendar: WorkCalendar) -> None:
    for day in PUBLISHED_2025_WORKDAYS | PUBLISHED_2026_WORKDAYS:
        assert day.weekday() >= 5
        assert calendar.is_workday(day)
        assert calendar.day_info(day).kind == "adjusted_workday"


def test_day_info_explains_the_day(calendar: WorkCalendar) -> None:
    holiday = calendar.day_info(date(2025, 1, 29))
    assert (holiday.is_workday, holiday.kind, holiday.holiday_name) == (False, "holiday", "Spring Festival (春节)")
    assert holiday.describe() == "Wednesday, public holiday: Spring Festival (春节)"
    adjusted = calendar.day_info(date(2025, 2, 8))
    assert (adjusted.is_workday, adjusted.kind) == (True, "adjusted_workday")
    assert adjusted.holiday_name == "Spring Festival (春节)"
    weekend = calendar.day_info(date(2026, 3, 7))
    assert (weekend.is_workday, weekend.kind, weekend.describe()) == (False, "weekend", "Saturday, weekend")
    assert calendar.day_info(datetime(2025, 2, 8, 9, 30)).kind == "adjusted_workday"
    plain = calendar.day_info(date(2026, 3, 9))
    assert (plain.is_workday, plain.kind, plain.describe()) == (True, "workday", "Monday, working day")
    assert plain.source == f"chinesecalendar {chinese_calendar.__version__}"


def test_library_coverage(calendar: WorkCalendar) -> None:
    assert LIBRARY_YEARS[0] == 2004
    assert 2025 in LIBRARY_YEARS
    assert 2026 in LIBRARY_YEARS
    assert calendar.covered_years() == LIBRARY_YEARS
    assert list(range(LIBRARY_YEARS[0], LIBRARY_YEARS[-1] + 1)) == LIBRARY_YEARS


# -- arithmetic --------------------------------------------------------------------------------------------------
def test_add_workdays_examples(calendar: WorkCalendar) -> None:
    friday = date(2026, 3, 6)
    assert calendar.add_workdays(friday, 0) == friday
    assert calendar.add_workdays(friday, 1) == date(2026, 3, 9)
    assert calendar.add_workdays(friday, 5) == date(2026, 3, 13)
    # Before the 2025 Spring Festival: Sunday 26 Jan is a working day, then 28 Jan–4 Feb are off.
    assert calendar.add_workdays(date(2025, 1, 24), 1) == date(2025, 1, 26)
    assert calendar.add_workdays(date(2025, 1, 24), 3) == date(2025, 2, 5)
    # Across the year boundary inside covered years.
    assert calendar.add_workdays(date(2025, 12, 31), 1) == date(2026, 1, 4)
    with pytest.raises(ValueError, match="must be >= 0"):
        calendar.add_workdays(friday, -1)


def test_workdays_between_examples(calendar: WorkCalendar) -> None:
    assert calendar.workdays_between(date(2026, 3, 6), date(2026, 3, 6)) == 0
    assert calendar.workdays_between(date(2026, 3, 9), date(2026, 3, 6)) == 0
    assert calendar.workdays_between(date(2026, 3, 6), date(2026, 3, 9)) == 1
    assert calendar.workdays_between(date(2026, 2, 13), date(2026, 2, 24)) == 2  # 14 Feb (Sat) and 24 Feb
    assert calendar.workdays_between(date(2025, 12, 31), date(2026, 1, 5)) == 2  # 4 Jan (Sun) and 5 Jan


def _oracle_add(start: date, n: int) -> date:
    """Day-by-day reference using the chinese_calendar library directly."""
    day = start
    while n > 0:
        day += timedelta(days=1)
        if chinese_calendar.is_workday(day):
            n -= 1
    return day


_covered_starts = st.dates(min_value=date(LIBRARY_YEARS[0], 1, 1), max_value=date(LIBRARY_YEARS[-1], 9, 30))


@settings(max_examples=300, deadline=None)
@given(_covered_starts, st.integers(min_value=0, max_value=60))
def test_arithmetic_agrees_with_a_day_by_day_count(start: date, n: int) -> None:
    calendar = load_calendar()
    due = calendar.add_workdays(start, n)
    assert due == _oracle_add(start, n)
    assert calendar.workdays_between(start, due) == n
    if n > 0:
        assert calendar.is_workday(due)
        assert calendar.workdays_between(start, due - timedelta(days=1)) == n - 1


@settings(max_examples=200, deadline=None)
@given(_covered_starts, _covered_starts)
def test_workdays_between_agrees_with_the_library(first: date, second: date) -> None:
    after, through = min(first, second), max(first, second)
    through = min(through, after + timedelta(days=400))
    expected = len(chinese_calendar.get_workdays(after + timedelta(days=1), through)) if through > after else 0
    assert load_calendar().workdays_between(after, through) == expected


# -- years with no data ------------------------------------------------------------------------------------------
def test_a_year_with_no_data_is_an_error_naming_the_year_and_the_fix(calendar: WorkCalendar) -> None:
    version = chinese_calendar.__version__
    expected = (
        f"no holiday data for {NO_DATA_YEAR}: chinesecalendar {version} covers {LIBRARY_YEARS[0]}–{LIBRARY_YEARS[-1]}; "
        f"add a [{NO_DATA_YEAR}] table to a holiday file (config key calendar.holidays_file; "
        "format in config/holidays.example.toml) or upgrade chinesecalendar"
    )
    with pytest.raises(CalendarError) as caught:
        calendar.is_workday(date(NO_DATA_YEAR, 1, 4))
    assert caught.value.message == expected
    assert caught.value.code == "CALENDAR_NO_DATA"


def test_arithmetic_into_a_year_with_no_data_fails_instead_of_guessing(calendar: WorkCalendar) -> None:
    last_covered = date(NO_DATA_YEAR - 1, 12, 31)
    with pytest.raises(CalendarError, match=f"no holiday data for {NO_DATA_YEAR}"):
        calendar.add_workdays(last_covered, 1)
    with pytest.raises(CalendarError, match=f"no holiday data for {NO_DATA_YEAR}"):
        calendar.add_workdays(date(NO_DATA_YEAR, 3, 1), 3)
    with pytest.raises(CalendarError, match=f"no holiday data for {NO_DATA_YEAR}"):
        calendar.workdays_between(last_covered - timedelta(days=10), date(NO_DATA_YEAR, 1, 5))
    # Counts that stay inside covered years do not need the missing year.
    assert calendar.workdays_between(last_covered - timedelta(days=10), last_covered) > 0
    assert calendar.add_workdays(date(NO_DATA_YEAR, 3, 1), 0) == date(NO_DATA_YEAR, 3, 1)


def test_a_year_before_the_library_is_also_an_error(calendar: WorkCalendar) -> None:
    with pytest.raises(CalendarError, match="no holiday data for 2003"):
        calendar.is_workday(date(2003, 12, 31))
    # Counting starts the day after, so a count from 31 Dec 2003 only needs 2004 (1 Jan 2004 was New Year's Day).
    assert calendar.add_workdays(date(2003, 12, 31), 1) == date(2004, 1, 2)


# -- operator holiday file ---------------------------------------------------------------------------------------
OPERATOR_2027 = """
# Operator data for the tests (not an official notice).
[2027]
holidays = ["2027-01-01", "2027-02-06..2027-02-13", 2027-10-01]
workdays = ["2027-02-14"]
"""


def test_holiday_file_adds_a_year(tmp_path: Path) -> None:
    path = _write(tmp_path, OPERATOR_2027)
    calendar = load_calendar(path)
    assert calendar.covered_years() == sorted({*LIBRARY_YEARS, 2027})
    assert 2027 in calendar.covered_years()
    assert not calendar.is_workday(date(2027, 1, 1))  # listed holiday (a Friday)
    assert not calendar.is_workday(date(2027, 2, 8))  # inside the range
    assert not calendar.is_workday(date(2027, 10, 1))  # TOML date literal
    assert calendar.is_workday(date(2027, 2, 14))  # adjusted working Sunday
    assert not calendar.is_workday(date(2027, 2, 20))  # ordinary Saturday
    assert calendar.is_workday(date(2027, 2, 15))  # ordinary Monday
    info = calendar.day_info(date(2027, 2, 14))
    assert (info.kind, info.holiday_name, info.source) == ("adjusted_workday", None, f"holiday file {path}")
    # From the last Thursday of 2026: 31 Dec, then 1 Jan (holiday), 2–3 Jan weekend, 4 Jan.
    assert calendar.add_workdays(date(2026, 12, 30), 2) == date(2027, 1, 4)
    assert calendar.workdays_between(date(2027, 2, 5), date(2027, 2, 15)) == 2  # 14 and 15 Feb


def test_a_year_in_the_file_fully_overrides_the_library(tmp_path: Path) -> None:
    path = _write(tmp_path, '[2026]\nholidays = ["2026-03-02"]\n')
    calendar = load_calendar(path)
    assert not calendar.is_workday(date(2026, 3, 2))
    assert calendar.is_workday(date(2026, 2, 16))  # a library holiday, but the file defines 2026 without it
    assert not calendar.is_workday(date(2026, 2, 14))  # the library's adjusted workday is gone too
    assert calendar.year_source(2026) == f"holiday file {path}"
    assert calendar.is_workday(date(2025, 2, 8))  # other years still come from the library


def test_the_example_file_loads_and_matches_the_published_2026_calendar(calendar: WorkCalendar) -> None:
    from_file = load_calendar(EXAMPLE_FILE)
    assert from_file.year_source(2026) == f"holiday file {EXAMPLE_FILE}"
    for day in _days("2026-01-01", "2026-12-31"):
        expected = day in PUBLISHED_2026_WORKDAYS or (day.weekday() < 5 and day not in PUBLISHED_2026_HOLIDAYS)
        assert from_file.is_workday(day) is expected, day
        assert calendar.is_workday(day) is expected, day


def test_a_gap_between_covered_years_is_named(tmp_path: Path) -> None:
    gap_year, defined = NO_DATA_YEAR, NO_DATA_YEAR + 1
    path = _write(tmp_path, f'[{defined}]\nholidays = ["{defined}-01-01"]\n')
    calendar = load_calendar(path)
    assert defined in calendar.covered_years()
    assert gap_year not in calendar.covered_years()
    assert not calendar.is_workday(date(defined, 1, 1))
    with pytest.raises(CalendarError) as caught:
        calendar.workdays_between(date(gap_year - 1, 12, 1), date(defined, 1, 10))
    message = caught.value.message
    assert f"no holiday data for {gap_year}:" in message
    assert f"holiday file {path} defines {defined}" in message
    assert f"add a [{gap_year}] table to the holiday file {path}" in message
    with pytest.raises(CalendarError, match=f"no holiday data for {gap_year}"):
        calendar.add_workdays(date(gap_year - 1, 12, 30), 300)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[2027]\nholidays = ["2027-02-30"]\n', "[2027] holidays: '2027-02-30' is not a date"),
        ('[2027]\nholidays = ["2028-01-01"]\n', "[2027] holidays: 2028-01-01 is not in 2027"),
        ('[2027]\nholidays = ["2027-12-30..2028-01-02"]\n', "[2027] holidays: 2028-01-01 is not in 2027"),
        (
            '[2027]\nholidays = ["2027-02-06..2027-02-14"]\nworkdays = ["2027-02-14"]\n',
            "[2027]: 2027-02-14 is in both holidays and workdays",
        ),
        ('[2027]\nholidays = ["2027-01-01"]\nworkdays = ["2027-02-15"]\n', "[2027] workdays: 2027-02-15 is a Monday"),
        ('[2027]\nworkdays = ["2027-02-14"]\n', "[2027]: 'holidays' is missing or empty"),
        ("[2027]\nholidays = []\n", "[2027]: 'holidays' is missing or empty"),
        ('[2027]\nholiday = ["2027-01-01"]\n', "[2027]: unknown key 'holiday'"),
        ('[2027]\nholidays = "2027-01-01"\n', "[2027] holidays: expected a list of dates, got str"),
        ("[2027]\nholidays = [20270101]\n", "[2027] holidays: 20270101 is not a date string"),
        ("[2027]\nholidays = [2027-01-01T00:00:00]\n", "[2027] holidays: 2027-01-01T00:00:00 is a date-time"),
        ('[2027]\nholidays = ["2027-02-13..2027-02-06"]\n', "range '2027-02-13..2027-02-06' ends before it starts"),
        ('[twenty27]\nholidays = ["2027-01-01"]\n', "key 'twenty27': expected a year table such as [2027]"),
        ("2027 = 5\n", "[2027]: expected a table with 'holidays' and 'workdays' lists"),
        ('[2027\nholidays = ["2027-01-01"]\n', "not valid TOML"),
    ],
)
def test_bad_holiday_files_name_the_file_year_and_value(tmp_path: Path, text: str, fragment: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(CalendarError) as caught:
        load_calendar(path)
    message = caught.value.message
    assert message.startswith(f"holiday file {path}")
    assert fragment in message


def test_a_missing_holiday_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(CalendarError, match=r"holiday file .*nowhere\.toml not found \(config key calendar"):
        load_calendar(missing)
    with pytest.raises(CalendarError, match="not found"):
        parse_holiday_file(missing)


def test_calendars_are_cached_per_file_and_reloaded_when_it_changes(tmp_path: Path) -> None:
    assert load_calendar() is load_calendar()
    path = _write(tmp_path, OPERATOR_2027)
    first = load_calendar(path)
    assert load_calendar(path) is first
    assert first is not load_calendar()
    _write(tmp_path, OPERATOR_2027.replace('workdays = ["2027-02-14"]', 'workdays = ["2027-02-14", "2027-02-20"]'))
    second = load_calendar(path)
    assert second is not first
    assert second.is_workday(date(2027, 2, 20))
    assert not first.is_workday(date(2027, 2, 20))
