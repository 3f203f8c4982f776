"""The period a bulletin (电子监察通报) covers: a month, quarter, half-year, year, or any range of days.

Named periods are node.supervision's (``parse_period``: 2026-11, 2026-Q4, 2026-H2, 2026); a range is ``--from`` and
``--to`` (both days included). Every section of a bulletin reads the same days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from node.errors import InvalidArgumentError
from node.supervision import parse_period

__all__ = ["ReportPeriod", "report_period"]

_QUARTERS = {1: "一", 2: "二", 3: "三", 4: "四"}


@dataclass(frozen=True, slots=True)
class ReportPeriod:
    """Days ``first_day`` … ``last_day`` (both included), with the label the command took and a Chinese title."""

    kind: str
    """month, quarter, half, year or range."""
    label: str
    first_day: date
    last_day: date

    @property
    def title(self) -> str:
        """2026年11月, 2026年第四季度, 2026年下半年, 2026年度, or 2026-11-03 至 2026-11-20."""
        year = self.first_day.year
        if self.kind == "month":
            return f"{year}年{self.first_day.month}月"
        if self.kind == "quarter":
            return f"{year}年第{_QUARTERS[(self.first_day.month + 2) // 3]}季度"
        if self.kind == "half":
            return f"{year}年{'上' if self.first_day.month == 1 else '下'}半年"
        if self.kind == "year":
            return f"{year}年度"
        return f"{self.first_day.isoformat()} 至 {self.last_day.isoformat()}"

    def as_dict(self) -> dict[str, str]:
        """JSON form."""
        return {
            "kind": self.kind,
            "label": self.label,
            "title": self.title,
            "from": self.first_day.isoformat(),
            "to": self.last_day.isoformat(),
        }


def _day(option: str, text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidArgumentError(f"{option} {text!r} is not a day (YYYY-MM-DD)") from None


def report_period(period: str | None = None, day_from: str | None = None, day_to: str | None = None) -> ReportPeriod:
    """``--period`` (2026-11, 2026-Q4, 2026-H2, 2026) or ``--from D --to D``; InvalidArgumentError naming the option."""
    if period and (day_from or day_to):
        raise InvalidArgumentError("give --period or --from/--to, not both")
    if period:
        named = parse_period(period)
        return ReportPeriod(named.kind, named.label, named.first_day, named.end_day - timedelta(days=1))
    if not (day_from and day_to):
        raise InvalidArgumentError(
            "give --period 2026-11 (month), 2026-Q4 (quarter), 2026-H2 (half-year) or 2026 (year), "
            "or a range with --from YYYY-MM-DD --to YYYY-MM-DD"
        )
    first, last = _day("--from", day_from), _day("--to", day_to)
    if last < first:
        raise InvalidArgumentError(f"--to {last.isoformat()} is before --from {first.isoformat()}")
    return ReportPeriod("range", f"{first.isoformat()}..{last.isoformat()}", first, last)
