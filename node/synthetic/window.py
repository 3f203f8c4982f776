"""The working days of the generation window, and time stamps as ints.

A time stamp is an int: the day's proleptic ordinal * 86400 + seconds after midnight. Cheap to compare, shift and
format, which matters at ~20 stamps per case and 100,000 cases in a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache

from node.domain import WorkCalendar
from node.errors import CalendarError, ValidationError

_OFFICE_OPEN, _OFFICE_CLOSE = 9 * 60, 17 * 60 + 30  # minutes after midnight
DAY = 86_400
OPEN_SECOND, CLOSE_SECOND = _OFFICE_OPEN * 60, _OFFICE_CLOSE * 60


@cache
def time_texts() -> tuple[str, ...]:
    """'hhmmss' for every second of a day (built once, on first use)."""
    return tuple(f"{second // 3600:02d}{second // 60 % 60:02d}{second % 60:02d}" for second in range(DAY))


def to_datetime(stamp: int) -> datetime:
    """The stamp as a naive datetime."""
    day, second = divmod(stamp, DAY)
    return datetime.combine(date.fromordinal(day), datetime.min.time()) + timedelta(seconds=second)


@dataclass(frozen=True, slots=True)
class Window:
    """Working days (as date ordinals) from --from to well past --to, and the closed days inside [--from, --to]."""

    workdays: tuple[int, ...]
    last_index: int  # index of the last working day <= --to
    closed_days: tuple[int, ...]
    date_to: date
    cutoff: int  # end of --to as a stamp (see DAY)


def _uncovered(year: int, why: str) -> CalendarError:
    return CalendarError(
        f"{why}, in {year}, which the working-day calendar does not cover: pass --holidays FILE with a [{year}] "
        f"table (format in config/holidays.example.toml) or choose other dates"
    )


def build_window(cal: WorkCalendar, date_from: date, date_to: date, margin: int) -> Window:
    """The window's working days; ``margin`` working days past --to must be on the calendar (the last due dates)."""
    workdays: list[int] = []
    closed: list[int] = []
    day = date_from
    try:
        while day <= date_to:
            (workdays if cal.is_workday(day) else closed).append(day.toordinal())
            day += timedelta(days=1)
    except CalendarError as exc:
        raise _uncovered(day.year, f"--from {date_from} --to {date_to} includes {day}") from exc
    if not workdays:
        raise ValidationError(
            f"no working day between --from {date_from} and --to {date_to}: cases are accepted on working days",
            field="from",
            reason="empty_range",
        )
    last_index = len(workdays) - 1
    try:
        while len(workdays) - last_index <= margin:
            if cal.is_workday(day):
                workdays.append(day.toordinal())
            day += timedelta(days=1)
    except CalendarError as exc:
        why = f"cases accepted up to --to {date_to} fall due up to {margin} working days later"
        raise _uncovered(day.year, why) from exc
    cutoff = (date_to.toordinal() + 1) * DAY - 1
    return Window(tuple(workdays), last_index, tuple(closed), date_to, cutoff)
