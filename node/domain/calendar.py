"""Working-day calendar: official holidays and adjusted weekend workdays (调休), chinesecalendar + operator file.

Sources, per year:

* ``chinesecalendar`` (the State Council notices it transcribes) for the years it covers;
* an operator holiday file, which adds years or overrides them. A year in the file FULLY defines that year.

A day is a working day when it is Monday–Friday and not a listed holiday, or a listed adjusted workday. A year with
no data is never guessed (weekends only would silently move deadlines): asking about it raises ``CalendarError``
naming the year and how to fix it.

Operator holiday file format (TOML; the annotated example is ``config/holidays.example.toml``)::

    [2027]
    # official rest days (weekend days inside a holiday block may be listed too); single days or inclusive ranges
    holidays = ["2027-01-01", "2027-02-06..2027-02-13", "2027-10-01..2027-10-07"]
    # adjusted working days: weekend days declared working days (调休); only Saturdays and Sundays
    workdays = ["2027-02-14", "2027-09-26"]

Dates may be strings ``YYYY-MM-DD`` or ``YYYY-MM-DD..YYYY-MM-DD``, or TOML date literals. ``holidays`` is required and
non-empty; ``workdays`` is optional. Each date must lie in its table's year and may not be in both lists; any error
names the file, the year and the value.

Speed: per covered year the working days are precomputed into one sorted array of ordinals, so ``add_workdays`` and
``workdays_between`` are two bisections plus an O(1) check that every year they touch is covered.
"""

from __future__ import annotations

import logging
import threading
import tomllib
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import chinese_calendar

from node.errors import CalendarError

__all__ = [
    "EXAMPLE_FILE",
    "DayInfo",
    "WorkCalendar",
    "YearData",
    "clear_calendar_cache",
    "library_calendar_years",
    "load_calendar",
    "parse_holiday_file",
]

log = logging.getLogger(__name__)

EXAMPLE_FILE = "config/holidays.example.toml"
CONFIG_KEY = "calendar.holidays_file"
LIBRARY = f"chinesecalendar {chinese_calendar.__version__}"
_RANGE_SEPARATOR = ".."
_WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_ALLOWED_YEAR_KEYS = ("holidays", "workdays")
_MIN_YEAR, _MAX_YEAR = 1949, 2200

DayKind = Literal["workday", "weekend", "holiday", "adjusted_workday"]


@dataclass(frozen=True, slots=True)
class YearData:
    """One year's exceptions to the Monday–Friday week: holidays and adjusted weekend workdays, with names if known."""

    year: int
    holidays: Mapping[date, str | None]
    workdays: Mapping[date, str | None]
    source: str


@dataclass(frozen=True, slots=True)
class DayInfo:
    """Why a day is or is not a working day (for operators checking a disputed deadline)."""

    day: date
    is_workday: bool
    kind: DayKind
    holiday_name: str | None
    source: str

    @property
    def weekday_name(self) -> str:
        """English weekday name, e.g. 'Saturday'."""
        return _WEEKDAY_NAMES[self.day.weekday()]

    def reason(self) -> str:
        """Why, without the weekday, e.g. 'public holiday: Spring Festival (春节)'."""
        if self.kind == "holiday":
            return f"public holiday: {self.holiday_name}" if self.holiday_name else "public holiday"
        if self.kind == "adjusted_workday":
            named = f" for {self.holiday_name}" if self.holiday_name else ""
            return f"adjusted working day{named} (weekend day made a working day)"
        return "weekend" if self.kind == "weekend" else "working day"

    def describe(self) -> str:
        """One human line with the weekday, e.g. 'Monday, public holiday: Spring Festival (春节)'."""
        return f"{self.weekday_name}, {self.reason()}"


@dataclass(slots=True)
class _Index:
    """Precomputed lookup structures of a calendar."""

    ordinals: list[int] = field(default_factory=list)
    workday_set: frozenset[int] = frozenset()
    run_end: dict[int, int] = field(default_factory=dict)


class WorkCalendar:
    """Working days of the covered years; every query on an uncovered year raises CalendarError."""

    def __init__(self, years: Iterable[YearData], *, holidays_file: Path | None = None) -> None:
        self._years: dict[int, YearData] = {data.year: data for data in years}
        self.holidays_file = holidays_file
        self._index = self._build_index()

    def _build_index(self) -> _Index:
        ordinals: list[int] = []
        for year in sorted(self._years):
            data = self._years[year]
            holidays = {d.toordinal() for d in data.holidays}
            workdays = {d.toordinal() for d in data.workdays}
            first, last = date(year, 1, 1).toordinal(), date(year, 12, 31).toordinal()
            # date.fromordinal(1) is a Monday, so (ordinal - 1) % 7 is the weekday (0 = Monday).
            ordinals.extend(
                o for o in range(first, last + 1) if o in workdays or ((o - 1) % 7 < 5 and o not in holidays)
            )
        run_end: dict[int, int] = {}
        for year in sorted(self._years, reverse=True):
            run_end[year] = run_end.get(year + 1, year)
        return _Index(ordinals=ordinals, workday_set=frozenset(ordinals), run_end=run_end)

    # -- coverage ------------------------------------------------------------------------------------------------
    def covered_years(self) -> list[int]:
        """The years this calendar can answer for, ascending."""
        return sorted(self._years)

    def year_source(self, year: int) -> str:
        """Where a covered year's data comes from (the library or the holiday file)."""
        return self._require_year(year).source

    def _missing_year_error(self, year: int) -> CalendarError:
        library_years = library_calendar_years()
        coverage = f"{LIBRARY} covers {library_years[0]}–{library_years[-1]}" if library_years else f"{LIBRARY}: none"
        if self.holidays_file is not None:
            file_years = sorted(y for y, data in self._years.items() if data.source != LIBRARY)
            listed = ", ".join(str(y) for y in file_years) or "no years"
            coverage += f"; holiday file {self.holidays_file} defines {listed}"
            where = f"the holiday file {self.holidays_file}"
        else:
            where = "a holiday file"
        return CalendarError(
            f"no holiday data for {year}: {coverage}; add a [{year}] table to {where} "
            f"(config key {CONFIG_KEY}; format in {EXAMPLE_FILE}) or upgrade chinesecalendar"
        )

    def _require_year(self, year: int) -> YearData:
        data = self._years.get(year)
        if data is None:
            raise self._missing_year_error(year)
        return data

    def _require_years(self, first: int, last: int) -> None:
        """Raise CalendarError naming the first uncovered year in first..last (O(1) via contiguous runs)."""
        end = self._index.run_end.get(first)
        if end is None:
            raise self._missing_year_error(first)
        if end < last:
            raise self._missing_year_error(end + 1)

    # -- queries -------------------------------------------------------------------------------------------------
    def is_workday(self, day: date) -> bool:
        """True for a working day; CalendarError if the day's year has no data."""
        if day.year not in self._years:
            raise self._missing_year_error(day.year)
        return day.toordinal() in self._index.workday_set

    def add_workdays(self, start: date, n: int) -> date:
        """The n-th working day strictly after ``start``; ``n == 0`` returns ``start`` itself."""
        if n < 0:
            raise ValueError(f"working-day count must be >= 0, got {n}")
        if n == 0:
            return start
        start_ordinal = start.toordinal()
        ordinals = self._index.ordinals
        position = bisect_right(ordinals, start_ordinal) + n - 1
        first_year = date.fromordinal(start_ordinal + 1).year
        if position >= len(ordinals):
            # Runs past the last covered year: name the first year (from the day after start) with no data.
            end = self._index.run_end.get(first_year)
            raise self._missing_year_error(first_year if end is None else end + 1)
        result = date.fromordinal(ordinals[position])
        self._require_years(first_year, result.year)
        return result

    def workdays_between(self, after: date, through: date) -> int:
        """Count of working days d with ``after < d <= through`` (0 when through <= after)."""
        after_ordinal, through_ordinal = after.toordinal(), through.toordinal()
        if through_ordinal <= after_ordinal:
            return 0
        self._require_years(date.fromordinal(after_ordinal + 1).year, through.year)
        ordinals = self._index.ordinals
        return bisect_right(ordinals, through_ordinal) - bisect_right(ordinals, after_ordinal)

    def day_info(self, day: date) -> DayInfo:
        """Whether ``day`` is a working day and why (weekend, named holiday, adjusted workday)."""
        if isinstance(day, datetime):
            # A datetime never equals a date key of the holiday maps, so compare by calendar date.
            day = day.date()
        data = self._require_year(day.year)
        if day in data.workdays:
            return DayInfo(day, True, "adjusted_workday", data.workdays[day], data.source)
        if day in data.holidays:
            return DayInfo(day, False, "holiday", data.holidays[day], data.source)
        if day.weekday() >= 5:
            return DayInfo(day, False, "weekend", None, data.source)
        return DayInfo(day, True, "workday", None, data.source)


# -- chinesecalendar ---------------------------------------------------------------------------------------------
def _library_name(english: str) -> str:
    """'Spring Festival' -> 'Spring Festival (春节)' using the library's enum."""
    try:
        return f"{english} ({chinese_calendar.Holiday(english).chinese})"
    except ValueError:
        return english


_library_years_cache: dict[int, YearData] = {}
_library_lock = threading.Lock()


def _library_years() -> dict[int, YearData]:
    """Per-year data transcribed by chinesecalendar, built once."""
    with _library_lock:
        if not _library_years_cache:
            holidays: dict[int, dict[date, str | None]] = {}
            workdays: dict[int, dict[date, str | None]] = {}
            for day, name in chinese_calendar.holidays.items():
                holidays.setdefault(day.year, {})[day] = _library_name(name)
            for day, name in chinese_calendar.workdays.items():
                workdays.setdefault(day.year, {})[day] = _library_name(name)
            for year in range(min(holidays), max(holidays) + 1):
                _library_years_cache[year] = YearData(year, holidays.get(year, {}), workdays.get(year, {}), LIBRARY)
        return dict(_library_years_cache)


def library_calendar_years() -> list[int]:
    """The years chinesecalendar covers, ascending (2004–2026 for 1.11.0)."""
    return sorted(_library_years())


# -- operator holiday file ---------------------------------------------------------------------------------------
def _parse_day(value: Any, where: str) -> date:
    if isinstance(value, datetime):
        raise CalendarError(f"{where}: {value.isoformat()} is a date-time; write a date (YYYY-MM-DD)")
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise CalendarError(f"{where}: {value!r} is not a date string (YYYY-MM-DD)")
    try:
        return date.fromisoformat(value.strip())
    except ValueError as exc:
        raise CalendarError(f"{where}: '{value}' is not a date (YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD): {exc}") from None


def _expand_entry(value: Any, where: str) -> list[date]:
    """One list entry: a date, or an inclusive range 'YYYY-MM-DD..YYYY-MM-DD'."""
    if isinstance(value, str) and _RANGE_SEPARATOR in value:
        first_text, _, last_text = value.partition(_RANGE_SEPARATOR)
        first, last = _parse_day(first_text, where), _parse_day(last_text, where)
        if last < first:
            raise CalendarError(f"{where}: range '{value}' ends before it starts")
        return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]
    return [_parse_day(value, where)]


def _parse_year_list(table: Mapping[str, Any], key: str, year: int, where: str) -> dict[date, str | None]:
    entries = table.get(key, [])
    if not isinstance(entries, list):
        raise CalendarError(f"{where} {key}: expected a list of dates, got {type(entries).__name__}")
    days: dict[date, str | None] = {}
    for entry in entries:
        for day in _expand_entry(entry, f"{where} {key}"):
            if day.year != year:
                raise CalendarError(f"{where} {key}: {day.isoformat()} is not in {year}")
            if key == "workdays" and day.weekday() < 5:
                raise CalendarError(
                    f"{where} {key}: {day.isoformat()} is a {_WEEKDAY_NAMES[day.weekday()]}; "
                    "workdays lists only weekend days made working days (调休)"
                )
            days[day] = None
    return days


def parse_holiday_file(path: Path) -> list[YearData]:
    """Read and validate an operator holiday file; CalendarError names the file, year and bad value."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CalendarError(f"holiday file {path} not found (config key {CONFIG_KEY})") from None
    except OSError as exc:
        raise CalendarError(f"holiday file {path} cannot be read: {exc.strerror}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CalendarError(f"holiday file {path}: not valid TOML: {exc}") from None
    years: list[YearData] = []
    for key, table in document.items():
        if not (key.isdigit() and len(key) == 4 and _MIN_YEAR <= int(key) <= _MAX_YEAR):
            raise CalendarError(f"holiday file {path}: key '{key}': expected a year table such as [2027]")
        year = int(key)
        where = f"holiday file {path}: [{year}]"
        if not isinstance(table, dict):
            raise CalendarError(f"{where}: expected a table with 'holidays' and 'workdays' lists")
        unknown = sorted(set(table) - set(_ALLOWED_YEAR_KEYS))
        if unknown:
            raise CalendarError(f"{where}: unknown key '{unknown[0]}' (expected holidays, workdays)")
        holidays = _parse_year_list(table, "holidays", year, where)
        if not holidays:
            # An empty year would silently mean "weekends only", exactly the guess this calendar refuses to make.
            raise CalendarError(f"{where}: 'holidays' is missing or empty; list the year's official holidays")
        workdays = _parse_year_list(table, "workdays", year, where)
        both = sorted(set(holidays) & set(workdays))
        if both:
            raise CalendarError(f"{where}: {both[0].isoformat()} is in both holidays and workdays")
        years.append(YearData(year, holidays, workdays, f"holiday file {path}"))
    return years


# -- loading with a cache ----------------------------------------------------------------------------------------
_calendar_cache: dict[tuple[str, int, int] | None, WorkCalendar] = {}
_cache_lock = threading.Lock()


def load_calendar(holidays_file: Path | None = None) -> WorkCalendar:
    """The calendar from chinesecalendar plus an optional operator holiday file (cached per path and file version)."""
    if holidays_file is None:
        cache_key: tuple[str, int, int] | None = None
    else:
        resolved = holidays_file.resolve()
        try:
            stat = resolved.stat()
        except FileNotFoundError:
            raise CalendarError(f"holiday file {holidays_file} not found (config key {CONFIG_KEY})") from None
        # Keyed by modification time and size too, so an edited file is re-read by the next load.
        cache_key = (str(resolved), stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        cached = _calendar_cache.get(cache_key)
    if cached is not None:
        return cached
    years = _library_years()
    if holidays_file is not None:
        file_years = parse_holiday_file(holidays_file)
        overridden = sorted(data.year for data in file_years if data.year in years)
        if overridden:
            log.info("holiday file %s overrides %s for years %s", holidays_file, LIBRARY, overridden)
        years.update({data.year: data for data in file_years})
    calendar = WorkCalendar(years.values(), holidays_file=holidays_file)
    with _cache_lock:
        _calendar_cache[cache_key] = calendar
    log.debug("calendar loaded: years %s..%s, holiday file %s", min(years), max(years), holidays_file)
    return calendar


def clear_calendar_cache() -> None:
    """Forget loaded calendars (tests; an operator reload)."""
    with _cache_lock:
        _calendar_cache.clear()
