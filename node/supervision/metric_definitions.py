"""The metric counters and what is derived from them: counter names, gauges, fees in fen, and the rates.

What each counter counts, on which day and for whom, is the table in node.supervision.metrics, next to the code that
increments them. Derived rates (``derived_rates``) are never stored; they are computed from summed counters where
they are shown.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import ROUND_HALF_UP, Decimal

__all__ = [
    "ACCEPTED_COMPLAINT_STATUSES",
    "COUNTERS",
    "GAUGES",
    "OVERDUE_GAUGE_RULES",
    "RATE_DEFINITIONS",
    "REFUSED_RESULT_CODES",
    "SEVERITY_COUNTERS",
    "derived_rates",
    "fen",
]

COUNTERS: tuple[str, ...] = (
    "received",
    "completed",
    "completed_early",
    "completed_on_time",
    "completed_within_legal",
    "processing_workdays",
    "return_steps",
    "supplements",
    "refused",
    "clock_stops",
    "clock_stop_workdays",
    "fees_count",
    "fees_fen",
    "ratings_1",
    "ratings_2",
    "ratings_3",
    "ratings_4",
    "ratings_5",
    "complaints_received",
    "complaints_concluded",
    "complaints_substantiated",
    "reminders",
    "yellow_cards",
    "red_cards",
    "open_cases",
    "open_overdue_promised",
    "open_overdue_legal",
    "cases_returned",
    "complaints_accepted",
    "records_reported",
)
GAUGES: frozenset[str] = frozenset({"open_cases", "open_overdue_promised", "open_overdue_legal"})
SEVERITY_COUNTERS: dict[str, str] = {"reminder": "reminders", "yellow": "yellow_cards", "red": "red_cards"}
REFUSED_RESULT_CODES = frozenset({"2", "3"})
# A complaint in one of these statuses was accepted (受理) on its decided_at day; a declined one never was.
ACCEPTED_COMPLAINT_STATUSES: tuple[str, ...] = ("accepted", "handled", "concluded")
# Rule ids whose alerts feed the open-overdue gauges (see rulebook.py; kept literal to avoid a cycle).
OVERDUE_GAUGE_RULES: dict[str, str] = {"R02": "open_overdue_promised", "R03": "open_overdue_legal"}


def fen(amount: Decimal | float | int | str) -> int:
    """Yuan to fen (分), half-up: the integer unit fees are summed in."""
    return int((Decimal(str(amount)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _sum(*names: str) -> Callable[[Mapping[str, int]], int]:
    return lambda counters: sum(int(counters.get(name, 0)) for name in names)


def _difference(minuend: str, subtrahend: str) -> Callable[[Mapping[str, int]], int]:
    return lambda counters: int(counters.get(minuend, 0)) - int(counters.get(subtrahend, 0))


# Each derived rate: (numerator, denominator), both functions of SUMMED counters; never an average of averages.
RATE_DEFINITIONS: dict[str, tuple[Callable[[Mapping[str, int]], int], Callable[[Mapping[str, int]], int]]] = {
    "early_rate": (_sum("completed_early"), _sum("completed")),
    "on_time_rate": (_sum("completed_on_time"), _sum("completed")),
    "overdue_rate": (_difference("completed", "completed_on_time"), _sum("completed")),
    "legal_overdue_rate": (_difference("completed", "completed_within_legal"), _sum("completed")),
    # Cases returned at least once (a cohort count on the acceptance day) over cases received: never above 100%.
    "return_rate": (_sum("cases_returned"), _sum("received")),
    "satisfaction_rate": (
        _sum("ratings_1", "ratings_2", "ratings_3"),
        _sum("ratings_1", "ratings_2", "ratings_3", "ratings_4", "ratings_5"),
    ),
    "complaint_acceptance_rate": (_sum("complaints_accepted"), _sum("complaints_received")),
    # Declined complaints are not in the denominator: only accepted ones can be concluded.
    "complaint_closure_rate": (_sum("complaints_concluded"), _sum("complaints_accepted")),
    "avg_processing_workdays": (_sum("processing_workdays"), _sum("completed")),
}


def derived_rates(counters: Mapping[str, int]) -> dict[str, float | None]:
    """Rates from summed counters (None when the denominator is 0); the one definition every view uses.

    early_rate = completed_early / completed; on_time_rate = completed_on_time / completed;
    overdue_rate = (completed − completed_on_time) / completed; legal_overdue_rate = (completed −
    completed_within_legal) / completed; return_rate = cases_returned / received (cases returned at least once;
    return steps are a count of their own); satisfaction_rate = ratings 1–3 / all ratings;
    complaint_acceptance_rate = complaints_accepted / complaints_received; complaint_closure_rate =
    complaints_concluded / complaints_accepted; avg_processing_workdays = processing_workdays / completed.
    docs/domain.md §6 states the same definitions.
    """
    rates: dict[str, float | None] = {}
    for name, (numerator, denominator) in RATE_DEFINITIONS.items():
        below = denominator(counters)
        rates[name] = None if below == 0 else numerator(counters) / below
    return rates
