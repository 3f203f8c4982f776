"""Deadlines of the import, memoised: due dates of new cases and steps, and the working days a case used.

All of them depend on days only (the acceptance day, the completion day), so one calendar computation serves every
record of the same day; a CalendarError (a year without holiday data) is memoised too and raised again per record.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING

from node.domain import due_at, workdays_used
from node.errors import CalendarError
from node.ingest.records import CaseDeadlines, CaseState, ItemLimits

if TYPE_CHECKING:
    from node.app import Node
    from node.domain import WorkCalendar

# Items x acceptance days x instant flag: bounded so a long-lived importer (gRPC ingest) does not grow forever.
_DEADLINE_CACHE_SIZE = 200_000


class Deadlines:
    """Due dates and working days used, by the node's calendar, memoised per day for one importer's lifetime."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._due_cache: dict[tuple[date, int, str, int], datetime | CalendarError] = {}
        self._deadline_cache: dict[tuple[tuple[int, str, int, str], date, bool], CaseDeadlines | CalendarError] = {}
        self._used_cache: dict[tuple[date, date, int], int | CalendarError] = {}

    @property
    def calendar(self) -> WorkCalendar:
        """The node's working-day calendar."""
        return self.node.calendar

    def deadline_fields(self, item: ItemLimits, accepted_at: datetime, instant: bool) -> CaseDeadlines:
        """The item- and deadline-derived columns of a new case, memoised per (item limits, day, instant)."""
        cache_key = (item.limits_key, accepted_at.date(), instant)
        cached = self._deadline_cache.get(cache_key)
        if cached is None:
            # An instant case (即办件, type 1) is due the day it is accepted, whatever the item's limits.
            promised_limit = 0 if instant else item.promised_limit
            legal_limit = 0 if instant else item.legal_limit
            try:
                promised_due, legal_due = self.due_dates(item, accepted_at, promised_limit, legal_limit, 0)
                cached = {
                    "promised_limit": promised_limit,
                    "legal_limit": legal_limit,
                    "promised_due_at": promised_due,
                    "legal_due_at": legal_due,
                }
            except CalendarError as exc:
                cached = exc
            if len(self._deadline_cache) > _DEADLINE_CACHE_SIZE:
                self._deadline_cache.clear()
            self._deadline_cache[cache_key] = cached
        if isinstance(cached, CalendarError):
            raise cached
        return cached

    def due(self, accepted_at: datetime, limit: int, unit: str, stop: int) -> datetime:
        """due_at memoised per (day, limit, unit, stop): it depends only on the acceptance day."""
        cache_key = (accepted_at.date(), limit, unit, stop)
        cached = self._due_cache.get(cache_key)
        if cached is None:
            try:
                cached = due_at(self.calendar, accepted_at, limit, unit, stop)
            except CalendarError as exc:
                cached = exc
            self._due_cache[cache_key] = cached
        if isinstance(cached, CalendarError):
            raise cached
        return cached

    def workdays_used(self, case: CaseState, completed_at: datetime) -> int:
        """workdays_used memoised per (accepted day, completed day, clock-stop days); CalendarError when uncovered."""
        accepted_at = case["accepted_at"]
        stops = int(case.get("clock_stop_workdays") or 0)
        cache_key = (accepted_at.date(), completed_at.date(), stops)
        cached = self._used_cache.get(cache_key)
        if cached is None:
            try:
                cached = workdays_used(self.calendar, accepted_at, completed_at, stops)
            except CalendarError as exc:
                cached = exc
            if len(self._used_cache) > _DEADLINE_CACHE_SIZE:
                self._used_cache.clear()
            self._used_cache[cache_key] = cached
        if isinstance(cached, CalendarError):
            raise cached
        return cached

    def due_dates(
        self, item: ItemLimits, accepted_at: datetime, promised_limit: int, legal_limit: int, stop: int
    ) -> tuple[datetime, datetime]:
        """The promised and legal due dates for these limits, in the item's units, after ``stop`` clock-stop days."""
        promised = self.due(accepted_at, promised_limit, item.promised_limit_unit, stop)
        legal = self.due(accepted_at, legal_limit, item.legal_limit_unit, stop)
        return promised, legal


def calendar_detail(cal: WorkCalendar, accepted_at: datetime, completed_at: datetime, exc: CalendarError) -> str:
    """Why a completion cannot be counted: the first year from acceptance to completion the calendar lacks."""
    covered = set(cal.covered_years())
    missing = [year for year in range(accepted_at.year, completed_at.year + 1) if year not in covered]
    year = missing[0] if missing else completed_at.year
    return (
        f"no working-day calendar for year {year}; add it to the holiday file (calendar.holidays_file in "
        f"supnet.toml) and import this record again ({exc})"
    )
