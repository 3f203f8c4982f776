"""Efficiency scores (效能考评): a fair, rate-based 0–100 score from summed counters (docs/domain.md §7).

The scheme is ``config.scores`` (node.config.ScoresConfig, its defaults documented there and in domain.md §7). A
score is a pure function of *summed* counters, so the same function scores a department from its own buckets and a
whole subtree from its rolled-up buckets (node.drilldown ranks children with it): never an average of averages.

For one month, with ``cases handled`` = max(received, completed) (at least 1 when the month had any activity):

- **电子监察 supervision** = 100 − yellow cards per 100 cases × ``yellow_card_per_100_cases``
  − red cards per 100 cases × ``red_card_per_100_cases`` − ``late_completion_points`` × overdue_rate
  − ``return_rate_points`` × return_rate + ``early_completion_bonus_per_10pct`` × (early_rate − threshold) / 10 %
  (bonus only above the threshold), clamped to 0–100;
- **群众满意度 satisfaction** = 100 × satisfaction_rate (only when there are ratings);
- **效能投诉 complaints** = 100 − substantiated complaints per 100 cases × ``complaint_substantiated_per_100_cases``
  − ``unclosed_complaint_points`` × (1 − complaint_closure_rate), clamped to 0–100;
- **评议/自评 assessment**: supnet records no panel or self assessments yet, so this part has no data (weight 0).

The month score is the weighted mean of the parts that have data (``weights``), clamped to 0–100. A quarter,
half-year or year score is the mean of its active months weighted by their cases handled. Rates come from
node.supervision.metric_definitions.derived_rates by name.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Literal, cast

from sqlalchemy import Connection, Table, func, select

from node.config import ScoresConfig
from node.errors import InvalidArgumentError
from node.store import MetricBucket, month_start_sql
from node.supervision.metric_definitions import COUNTERS, GAUGES, derived_rates

if TYPE_CHECKING:
    from node.app import Node

__all__ = [
    "PART_LABELS",
    "Component",
    "MonthScore",
    "PartScore",
    "Period",
    "RankedScore",
    "UnitScore",
    "cases_handled",
    "department_scores",
    "is_active",
    "monthly_counters",
    "parse_period",
    "rank_scores",
    "score_month",
    "score_period",
    "scores_ranking",
]

TIE_DECIMALS = 2
PART_LABELS: dict[str, str] = {
    "supervision": "电子监察 supervision",
    "satisfaction": "群众满意度 satisfaction",
    "complaints": "效能投诉 complaints",
    "assessment": "评议/自评 assessment",
}
# Flow counters (every counter but the cohort gauges): a month with any of them non-zero is active.
FLOW_COUNTERS: tuple[str, ...] = tuple(name for name in COUNTERS if name not in GAUGES)

_buckets = cast(Table, MetricBucket.__table__)

PeriodKind = Literal["month", "quarter", "half", "year"]
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$", re.IGNORECASE)
_HALF = re.compile(r"^(\d{4})-H([12])$", re.IGNORECASE)
_YEAR = re.compile(r"^(\d{4})$")


@dataclass(frozen=True, slots=True)
class Period:
    """A scoring period: one month, a quarter, a half-year or a year, as a list of months."""

    kind: PeriodKind
    label: str
    months: tuple[tuple[int, int], ...]

    @property
    def first_day(self) -> date:
        """First day of the first month."""
        year, month = self.months[0]
        return date(year, month, 1)

    @property
    def end_day(self) -> date:
        """The day after the last month (exclusive bound)."""
        year, month = self.months[-1]
        return date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)


def parse_period(text: str) -> Period:
    """'2024-05' (month), '2024-Q2' (quarter), '2024-H1' / '2024-H2' (half-year) or '2024' (year)."""
    value = text.strip()
    if match := _MONTH.match(value):
        year, month = int(match[1]), int(match[2])
        if not 1 <= month <= 12:
            raise InvalidArgumentError(f"period {text!r}: month {month} out of range (expected YYYY-MM)")
        return Period("month", f"{year:04d}-{month:02d}", ((year, month),))
    if match := _QUARTER.match(value):
        year, quarter = int(match[1]), int(match[2])
        first = 3 * quarter - 2
        return Period("quarter", f"{year:04d}-Q{quarter}", tuple((year, m) for m in range(first, first + 3)))
    if match := _HALF.match(value):
        year, half = int(match[1]), int(match[2])
        first = 1 if half == 1 else 7
        return Period("half", f"{year:04d}-H{half}", tuple((year, m) for m in range(first, first + 6)))
    if match := _YEAR.match(value):
        year = int(match[1])
        return Period("year", f"{year:04d}", tuple((year, m) for m in range(1, 13)))
    raise InvalidArgumentError(
        f"period {text!r}: expected YYYY-MM (month), YYYY-Q1…Q4 (quarter), YYYY-H1 / YYYY-H2 (half-year) or YYYY (year)"
    )


# -- records -----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Component:
    """One line of a part: what was measured (a rate or a figure per 100 cases) and the points it moved the part."""

    name: str
    value: float
    points: float
    detail: str

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return {
            "name": self.name,
            "value": round(self.value, 6),
            "points": round(self.points, 4),
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class PartScore:
    """One part of the score (0–100 after clamping), its configured weight and the components behind it."""

    part: str
    weight: float
    score: float
    unclamped: float
    components: tuple[Component, ...]

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return {
            "part": self.part,
            "label": PART_LABELS[self.part],
            "weight": self.weight,
            "score": round(self.score, 4),
            "unclamped": round(self.unclamped, 4),
            "components": [c.as_dict() for c in self.components],
        }


@dataclass(frozen=True, slots=True)
class MonthScore:
    """A unit's score for one month: the parts with data, their weighted mean, and the month's weight in a period."""

    month: str
    cases_handled: int
    score: float
    parts: tuple[PartScore, ...]

    @property
    def weight(self) -> int:
        """Weight of the month in a longer period: its cases handled (an active month weighs at least 1)."""
        return max(self.cases_handled, 1)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return {
            "month": self.month,
            "cases_handled": self.cases_handled,
            "weight": self.weight,
            "score": round(self.score, 4),
            "parts": [p.as_dict() for p in self.parts],
        }


@dataclass(frozen=True, slots=True)
class UnitScore:
    """A unit's (department's or node's) score for a period, with its months, part means and summed figures."""

    unit: str
    period: str
    score: float
    cases_handled: int
    months: tuple[MonthScore, ...]
    parts: Mapping[str, float]
    """Each part's mean over the months where it had data, weighted like the months (for explanation)."""
    figures: Mapping[str, int]

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return {
            "unit": self.unit,
            "period": self.period,
            "score": round(self.score, 4),
            "cases_handled": self.cases_handled,
            "parts": {part: round(value, 4) for part, value in self.parts.items()},
            "months": [m.as_dict() for m in self.months],
            "figures": dict(self.figures),
        }


@dataclass(frozen=True, slots=True)
class RankedScore:
    """A unit score with its rank among the units scored for the same period."""

    rank: int
    score: UnitScore

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return {"rank": self.rank, **self.score.as_dict()}


# -- the scheme --------------------------------------------------------------------------------------------------------
def cases_handled(counts: Mapping[str, int]) -> int:
    """Cases handled (办件量) in a period: the larger of cases received and cases completed."""
    return max(int(counts.get("received", 0)), int(counts.get("completed", 0)))


def is_active(counts: Mapping[str, int]) -> bool:
    """Whether any flow counter is non-zero (a month without activity gets no score)."""
    return any(int(counts.get(name, 0)) for name in FLOW_COUNTERS)


def _clamp(value: float) -> float:
    return min(100.0, max(0.0, value))


def _part(part: str, weight: float, components: Sequence[Component], start: float = 100.0) -> PartScore:
    unclamped = start + sum(c.points for c in components)
    return PartScore(part, weight, _clamp(unclamped), unclamped, tuple(components))


def _supervision(counts: Mapping[str, int], rates: Mapping[str, float | None], scheme: ScoresConfig) -> PartScore:
    per_100 = 100 / max(cases_handled(counts), 1)
    components: list[Component] = []
    for counter, label, coefficient in (
        ("yellow_cards", "黄牌 yellow cards", scheme.yellow_card_per_100_cases),
        ("red_cards", "红牌 red cards", scheme.red_card_per_100_cases),
    ):
        n = int(counts.get(counter, 0))
        if n:
            value = n * per_100
            components.append(
                Component(
                    f"{counter}_per_100_cases",
                    value,
                    -coefficient * value,
                    f"{label} {n} = {value:.2f} per 100 cases × −{coefficient:g}",
                )
            )
    overdue = rates.get("overdue_rate")
    if overdue:
        components.append(
            Component(
                "overdue_rate",
                overdue,
                -scheme.late_completion_points * overdue,
                f"超期办结率 completed late {overdue:.1%} × −{scheme.late_completion_points:g}",
            )
        )
    returned = rates.get("return_rate")
    if returned:
        components.append(
            Component(
                "return_rate",
                returned,
                -scheme.return_rate_points * returned,
                f"退件率 return rate {returned:.1%} × −{scheme.return_rate_points:g}",
            )
        )
    early = rates.get("early_rate")
    if early is not None and early > scheme.early_completion_threshold:
        tenths = (early - scheme.early_completion_threshold) * 10
        components.append(
            Component(
                "early_rate",
                early,
                scheme.early_completion_bonus_per_10pct * tenths,
                f"提前办结率 early completion {early:.1%} above {scheme.early_completion_threshold:.0%}: "
                f"{tenths:.2f} × 10 points × +{scheme.early_completion_bonus_per_10pct:g}",
            )
        )
    return _part("supervision", scheme.weights.supervision, components)


def _complaints(counts: Mapping[str, int], rates: Mapping[str, float | None], scheme: ScoresConfig) -> PartScore:
    per_100 = 100 / max(cases_handled(counts), 1)
    components: list[Component] = []
    substantiated = int(counts.get("complaints_substantiated", 0))
    if substantiated:
        value = substantiated * per_100
        coefficient = scheme.complaint_substantiated_per_100_cases
        components.append(
            Component(
                "complaints_substantiated_per_100_cases",
                value,
                -coefficient * value,
                f"投诉属实 substantiated complaints {substantiated} = {value:.2f} per 100 cases × −{coefficient:g}",
            )
        )
    closure = rates.get("complaint_closure_rate")
    if closure is not None and closure < 1:
        components.append(
            Component(
                "complaint_closure_rate",
                closure,
                -scheme.unclosed_complaint_points * (1 - closure),
                f"办结率 complaint closure {closure:.1%}: shortfall × −{scheme.unclosed_complaint_points:g}",
            )
        )
    return _part("complaints", scheme.weights.complaints, components)


def score_month(month: str, counts: Mapping[str, int], scheme: ScoresConfig) -> MonthScore:
    """The score of one unit for one month from its summed counters (pure: no database)."""
    rates = derived_rates(counts)
    parts = [_supervision(counts, rates, scheme)]
    satisfaction = rates.get("satisfaction_rate")
    if satisfaction is not None:
        ratings = sum(int(counts.get(f"ratings_{n}", 0)) for n in range(1, 6))
        parts.append(
            _part(
                "satisfaction",
                scheme.weights.satisfaction,
                [
                    Component(
                        "satisfaction_rate",
                        satisfaction,
                        100 * satisfaction,
                        f"满意率 ratings 1–3 {satisfaction:.1%} of {ratings} × 100",
                    )
                ],
                start=0.0,
            )
        )
    parts.append(_complaints(counts, rates, scheme))
    weighted = [p for p in parts if p.weight > 0]
    total_weight = sum(p.weight for p in weighted)
    score = _clamp(sum(p.weight * p.score for p in weighted) / total_weight) if total_weight else 100.0
    return MonthScore(month, cases_handled(counts), score, tuple(parts))


def score_period(
    unit: str, period: str, monthly: Mapping[str, Mapping[str, int]], scheme: ScoresConfig
) -> UnitScore | None:
    """A unit's score over months ('YYYY-MM' → summed counters): active months weighted by cases handled."""
    months = [score_month(month, monthly[month], scheme) for month in sorted(monthly) if is_active(monthly[month])]
    if not months:
        return None
    total_weight = sum(m.weight for m in months)
    part_sums: dict[str, float] = defaultdict(float)
    part_weights: dict[str, float] = defaultdict(float)
    for m in months:
        for p in m.parts:
            part_sums[p.part] += m.weight * p.score
            part_weights[p.part] += m.weight
    figures: dict[str, int] = dict.fromkeys(FLOW_COUNTERS, 0)
    for counts in monthly.values():
        for name in FLOW_COUNTERS:
            figures[name] += int(counts.get(name, 0))
    return UnitScore(
        unit=unit,
        period=period,
        score=_clamp(sum(m.weight * m.score for m in months) / total_weight),
        cases_handled=sum(m.cases_handled for m in months),
        months=tuple(months),
        parts={part: part_sums[part] / part_weights[part] for part in PART_LABELS if part_weights.get(part)},
        figures=figures,
    )


def rank_scores(scores: Iterable[UnitScore]) -> list[RankedScore]:
    """Highest score first; equal scores (to 2 decimals) share a rank and the next rank skips (1, 1, 3)."""
    ordered = sorted(scores, key=lambda s: (-round(s.score, TIE_DECIMALS), s.unit))
    ranked: list[RankedScore] = []
    for position, score in enumerate(ordered, start=1):
        if ranked and round(ranked[-1].score.score, TIE_DECIMALS) == round(score.score, TIE_DECIMALS):
            ranked.append(RankedScore(ranked[-1].rank, score))
        else:
            ranked.append(RankedScore(position, score))
    return ranked


# -- reading the store -------------------------------------------------------------------------------------------------
def monthly_counters(conn: Connection, first_day: date, end_day: date) -> dict[str, dict[str, dict[str, int]]]:
    """Department → 'YYYY-MM' → summed flow counters of the node's own buckets for days in [first_day, end_day)."""
    b = _buckets.c
    # Summed per (department, month) in SQL: the month's first day (a date on PostgreSQL, ISO text on SQLite).
    month_start = month_start_sql(conn, b.day).label("month")
    rows = conn.execute(
        select(b.department, month_start, *(func.sum(b[name]).label(name) for name in FLOW_COUNTERS))
        .where(b.day >= first_day, b.day < end_day)
        .group_by(b.department, month_start)
    ).mappings()
    result: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
    for row in rows:
        month = result[row["department"]].setdefault(str(row["month"])[:7], dict.fromkeys(FLOW_COUNTERS, 0))
        for name in FLOW_COUNTERS:
            month[name] += int(row[name] or 0)
    return dict(result)


def department_scores(node: Node, period: Period | str, *, scheme: ScoresConfig | None = None) -> list[UnitScore]:
    """Every department of the node with activity in the period, scored."""
    period = parse_period(period) if isinstance(period, str) else period
    scheme = scheme or node.config.scores
    with node.engine.connect() as conn:
        counters = monthly_counters(conn, period.first_day, period.end_day)
    scores = (score_period(department, period.label, months, scheme) for department, months in sorted(counters.items()))
    return [score for score in scores if score is not None]


def scores_ranking(node: Node, period: Period | str, *, scheme: ScoresConfig | None = None) -> list[RankedScore]:
    """The ranking of departments for a period (what ``supnet scores`` prints)."""
    return rank_scores(department_scores(node, period, scheme=scheme))
