"""R12 in the periodic scan: a department whose 退件率 over the last N days exceeds the threshold (退件率较高).

退件率 is the one definition (metric_definitions RATE_DEFINITIONS ``return_rate``: cases returned at least once ÷
cases received), over the cases the department accepted in the ``return_rate_window_days`` calendar days ending on a
day D, counting the returns recorded by the end of D. A department is judged only once it received at least
``return_rate_min_received`` cases in the window.

One card per department and calendar month (subject ``dept:NAME:YYYY-MM``). Its breach (docs/domain.md §5) is the
end of the first day D of that month whose window rate exceeds the threshold — computed from the raw cases and
return steps, so returns imported late still date the card on the day they made the rate cross — and, when D is the
scan's own day, the scan's time. A scan judges the months from its previous scan's month through its own (a first
or full scan: its own month only); crossings in earlier months found by a later import are not raised.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection, DateTime, Table, and_, bindparam, func, select

from node.store import Alert, Case, Step
from node.supervision.alerts import AlertDraft, RaisedAlert, raise_alerts
from node.supervision.metric_definitions import derived_rates
from node.supervision.rulebook import R12, department_period_subject
from node.supervision.rules.context import RuleContext

__all__ = ["scan_return_rates"]

_alerts: Table = Alert.__table__  # type: ignore[assignment]
_cases: Table = Case.__table__  # type: ignore[assignment]
_steps: Table = Step.__table__  # type: ignore[assignment]


def _window_cases() -> Any:
    """Cases accepted in [:start, :end) with their department and first return step's time (NULL: never returned)."""
    c, s = _cases.c, _steps.c
    return (
        select(c.department, c.accepted_at, func.min(s.started_at).label("first_return"))
        .select_from(_cases.outerjoin(_steps, and_(s.case_no == c.case_no, s.action == "return")))
        .where(
            c.accepted_at >= bindparam("start", type_=DateTime()),
            c.accepted_at < bindparam("end", type_=DateTime()),
        )
        .group_by(c.case_no, c.department, c.accepted_at)
    )


_WINDOW_CASES = _window_cases()


def _months(first: date, last: date) -> list[date]:
    """First days of the months from ``first``'s through ``last``'s."""
    months: list[date] = []
    month = first.replace(day=1)
    while month <= last:
        months.append(month)
        month = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
    return months


class _Department:
    """One department's cases in the span: acceptance days (sorted) and (acceptance day, first return day) pairs."""

    def __init__(self) -> None:
        self.accepted: list[date] = []
        self.returned: list[tuple[date, date]] = []

    def window(self, day: date, days: int) -> tuple[int, int]:
        """(received, returned by the end of ``day``) over the ``days`` calendar days ending on ``day``."""
        first = day - timedelta(days=days - 1)
        received = bisect_right(self.accepted, day) - bisect_left(self.accepted, first)
        returned = sum(1 for accepted, returned_on in self.returned if first <= accepted <= day and returned_on <= day)
        return received, returned


def scan_return_rates(
    ctx: RuleContext, conn: Connection, now: datetime, previous: datetime | None
) -> list[RaisedAlert]:
    """R12 for the months from ``previous``'s (the last scan; None: ``now``'s) through ``now``'s."""
    if not ctx.thresholds.enabled(R12):
        return []
    config = ctx.thresholds.config
    threshold, minimum, window = (
        config.return_rate_threshold,
        config.return_rate_min_received,
        config.return_rate_window_days,
    )
    today = now.date()
    months = _months(min(previous, now).date() if previous is not None else today, today)
    span_start = months[0] - timedelta(days=window - 1)
    departments: dict[str, _Department] = defaultdict(_Department)
    params = {"start": datetime.combine(span_start, time()), "end": now}
    for row in conn.execute(_WINDOW_CASES, params):
        unit = departments[row.department]
        day = row.accepted_at.date()
        unit.accepted.append(day)
        if row.first_return is not None and row.first_return <= now:
            unit.returned.append((day, row.first_return.date()))
    subjects = [department_period_subject(name, month) for name in departments for month in months]
    existing = set(
        conn.execute(select(_alerts.c.subject).where(_alerts.c.rule_id == R12, _alerts.c.subject.in_(subjects)))
        .scalars()
        .all()
    )
    drafts: list[AlertDraft] = []
    for name, unit in sorted(departments.items()):
        unit.accepted.sort()
        for month in months:
            subject = department_period_subject(name, month)
            if subject in existing:
                continue
            day = month
            while day.month == month.month and day <= today:
                received, returned = unit.window(day, window)
                rate = derived_rates({"received": received, "cases_returned": returned})["return_rate"]
                if received >= minimum and rate is not None and rate > threshold:
                    breached = now if day == today else datetime.combine(day, time.max)
                    drafts.append(
                        AlertDraft(
                            rule_id=R12,
                            subject=subject,
                            department=name,
                            implementation_code="",
                            message=(
                                f"{name} 近{window}天退件率 {rate:.1%} ({returned}/{received}) 超过 {threshold:.0%}"
                                f" (截至 {day:%Y-%m-%d}): 退件率较高 → 诫勉谈话 return rate above threshold"
                            ),
                            raised_at=now,
                            breached_at=breached,
                            correct_by=ctx._correct_by(R12, "", now),
                        )
                    )
                    break
                day += timedelta(days=1)
    return raise_alerts(conn, drafts)
