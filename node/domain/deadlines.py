"""Case deadlines in working days: promised and legal due date-times, clock stops, working days used.

Rules (Administrative Licensing Law art. 42, 45, 82; docs/domain.md §2):

* the count starts the working day after acceptance; the case is due at the END (23:59:59) of the N-th working day,
  in the node's local time (all datetimes here are naive local);
* an instant case (limit 0) is due at the end of the acceptance day;
* working days of special procedures (特别程序: hearing, testing, expert review, approved extension) stop the clock:
  they are added to both limits, so a deadline is recomputed whenever a procedure ends;
* a limit in natural days (unit '2', 自然日) counts calendar days; clock-stop days are still working days.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta

from node.domain.calendar import WorkCalendar

__all__ = [
    "END_OF_DAY",
    "UNIT_NATURAL_DAYS",
    "UNIT_WORKING_DAYS",
    "due_at",
    "is_early",
    "procedure_workdays",
    "stop_workdays",
    "workdays_used",
]

END_OF_DAY = time(23, 59, 59)
UNIT_WORKING_DAYS = "1"  # 工作日
UNIT_NATURAL_DAYS = "2"  # 自然日
_ONE_DAY = timedelta(days=1)


def due_at(cal: WorkCalendar, accepted_at: datetime, limit: int, unit: str = "1", stop_workdays: int = 0) -> datetime:
    """End (23:59:59) of the (limit + stop_workdays)-th working day after the acceptance day; limit 0 = same day.

    unit '1' = working days (工作日), '2' = natural days (自然日: calendar days; stop days still added as working days).
    Raises CalendarError when a needed year has no holiday data, ValueError for a negative count or unknown unit.
    """
    if limit < 0:
        raise ValueError(f"time limit must be >= 0, got {limit}")
    if stop_workdays < 0:
        raise ValueError(f"clock-stop working days must be >= 0, got {stop_workdays}")
    accepted_day = accepted_at.date()
    if unit in (UNIT_WORKING_DAYS, ""):  # empty: the schema default, working days
        due_day = cal.add_workdays(accepted_day, limit + stop_workdays)
    elif unit == UNIT_NATURAL_DAYS:
        due_day = cal.add_workdays(accepted_day + timedelta(days=limit), stop_workdays)
    else:
        raise ValueError(f"time limit unit must be '1' (working days) or '2' (natural days), got {unit!r}")
    return datetime.combine(due_day, END_OF_DAY)


def procedure_workdays(cal: WorkCalendar, started_at: datetime, ended_at: datetime) -> int:
    """Working days a special procedure stopped the clock: working days from its start day through its end day."""
    start_day, end_day = started_at.date(), ended_at.date()
    if end_day < start_day:
        raise ValueError(f"special procedure ends ({ended_at.isoformat()}) before it starts ({started_at.isoformat()})")
    return cal.workdays_between(start_day - _ONE_DAY, end_day)


def stop_workdays(cal: WorkCalendar, procedures: Iterable[tuple[datetime, datetime | None]], now: datetime) -> int:
    """Total clock-stop working days of a case's procedures; overlapping ones count once, an open one runs to ``now``.

    Each procedure is (started_at, ended_at or None while it is still running).
    """
    spans: list[tuple[date, date]] = []
    for started_at, ended_at in procedures:
        end = ended_at if ended_at is not None else now
        if end < started_at:
            raise ValueError(f"special procedure ends ({end.isoformat()}) before it starts ({started_at.isoformat()})")
        spans.append((started_at.date(), end.date()))
    total = 0
    counted_through: date | None = None
    for start_day, end_day in sorted(spans):
        # Merge overlaps: only the part after what is already counted adds working days.
        first = start_day if counted_through is None or start_day > counted_through else counted_through + _ONE_DAY
        if first <= end_day:
            total += cal.workdays_between(first - _ONE_DAY, end_day)
            counted_through = end_day
    return total


def workdays_used(cal: WorkCalendar, accepted_at: datetime, completed_at: datetime, stop_workdays: int = 0) -> int:
    """Working days a case used: workdays_between(accepted day, completed day) minus clock-stop days, never below 0."""
    used = cal.workdays_between(accepted_at.date(), completed_at.date()) - stop_workdays
    return max(used, 0)


def is_early(completed_at: datetime, promised_due_at: datetime) -> bool:
    """Completed on a day before the promised due day (提前办结)."""
    return completed_at.date() < promised_due_at.date()
