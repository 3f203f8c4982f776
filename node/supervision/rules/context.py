"""What the event rules and the periodic scan share: thresholds, yellow-card deadlines, the scan frontiers, messages.

The scan frontiers are node counters: the event rules lower them when new deadlines arrive (an acceptance, a
re-timed case, a pending step), the scan reads them to know how far back it must look and then resets them
(node.supervision.rules.scan, "Incremental scan").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from node.config import SupervisionConfig
from node.errors import CalendarError
from node.store import to_micros
from node.supervision.alerts import correct_by_deadline
from node.supervision.rulebook import Thresholds

if TYPE_CHECKING:
    from node.domain import WorkCalendar

__all__ = [
    "IN_CHUNK",
    "NOTHING_DIRTY",
    "SCAN_DAILY_DAY",
    "SCAN_DIRTY_FROM",
    "SCAN_FINGERPRINT",
    "SCAN_LAST_AT",
    "SCAN_MAX_AT",
    "SCAN_STEP_DIRTY_FROM",
    "RuleContext",
    "chunks",
    "fmt",
    "pending_step_message",
]

log = logging.getLogger(__name__)

SCAN_LAST_AT = "scan.last_at"
SCAN_DAILY_DAY = "scan.daily_day"  # ordinal of the day the whole-table rules last ran
SCAN_DIRTY_FROM = "scan.dirty_from"
SCAN_FINGERPRINT = "scan.config_fingerprint"
SCAN_MAX_AT = "scan.max_at"  # the latest "as of" time any scan ever ran at
SCAN_STEP_DIRTY_FROM = "scan.step_dirty_from"  # earliest due of a pending step imported since the last scan
NOTHING_DIRTY = to_micros(datetime(9999, 1, 1))
IN_CHUNK = 2000  # keys per IN (...) list: far below SQLite's and PostgreSQL's bound-parameter limits


class RuleContext:
    """What evaluating the rule catalogue needs, on new records or in the scan: thresholds, calendar, warnings."""

    def __init__(self, config: SupervisionConfig, calendar: WorkCalendar) -> None:
        self.thresholds = Thresholds(config)
        self.calendar = calendar
        self._deadlines: dict[tuple[int, datetime], datetime | None] = {}
        self._windows: dict[tuple[date, int], date | None] = {}
        # Problems met while evaluating (a year missing from the calendar): reported, never guessed around.
        self.warnings: list[str] = []

    def _correct_by(self, rule_id: str, item_type: str, now: datetime) -> datetime | None:
        return self._supervision_deadline(self.thresholds.settings(rule_id, item_type).supervision_workdays, now)

    def _supervision_deadline(self, workdays: int, now: datetime) -> datetime | None:
        """A yellow card's correct_by; None (logged loudly) when the calendar lacks the year, never a guess."""
        # A batch raises many cards at one ``now``: computed once per (workdays, day), not per card.
        key = (workdays, now)
        if key in self._deadlines:
            return self._deadlines[key]
        try:
            deadline: datetime | None = correct_by_deadline(self.calendar, now, workdays)
        except CalendarError as exc:
            self.warnings.append(f"yellow cards raised without a supervision deadline: {exc}")
            log.error("cannot compute a yellow card's supervision deadline: %s", exc)
            return None
        if len(self._deadlines) > 1000:
            self._deadlines.clear()
        self._deadlines[key] = deadline
        return deadline

    def reminder_window_start(self, due: datetime, workdays: int, accepted_at: datetime) -> datetime | None:
        """When a case due at ``due`` came within ``workdays`` working days of it: R01's breach moment.

        The scan reminds at ``t`` when ``due.date() <= add_workdays(t.date(), workdays)``, so the window opens at
        the start of the first such day — or at acceptance, if the case was already inside it then. None (logged)
        when the calendar lacks the year: the alert is then dated when it was raised, never by a guess.
        """
        key = (due.date(), workdays)
        if key not in self._windows:
            if len(self._windows) > 10000:
                self._windows.clear()
            try:
                first = due.date()
                while self.calendar.add_workdays(first - timedelta(days=1), workdays) >= due.date():
                    first -= timedelta(days=1)
                self._windows[key] = first
            except CalendarError as exc:
                log.warning("reminder window before %s not dated: %s", due, exc)
                self._windows[key] = None
        first_day = self._windows[key]
        if first_day is None:
            return None
        return max(datetime.combine(first_day, time()), accepted_at)


def chunks(values: Sequence[Any], size: int = IN_CHUNK) -> Iterable[Sequence[Any]]:
    """``values`` in slices of at most ``size``, one per IN (...) list."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def fmt(value: datetime) -> str:
    """A time as alert messages show it: to the minute."""
    return f"{value:%Y-%m-%d %H:%M}"


def pending_step_message(case_no: str, step_name: str, step_limit: int | None, due: datetime) -> str:
    """R05's message for a step still pending past its due (raised on arrival or by the scan)."""
    return f"办件 {case_no} 环节「{step_name}」超时未办结: pending past its {step_limit}-workday limit (due {fmt(due)})"
