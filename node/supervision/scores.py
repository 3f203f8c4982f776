"""Efficiency scores (效能考评) per department: monthly from the metric buckets, half-year and year as means of months.

The scheme is ``config.scores``. A department's score for a month in which it had activity (any case received or
completed, rating, complaint, fee or warning) is::

    score = base + Σ_area weight[area] × (points of that area's components)

with these components (each shown with its count and points, so a department head sees why):

=================  ============  ==================================================================================
component          area          points
=================  ============  ==================================================================================
yellow cards       per rule (*)  ``yellow_card`` (−5) each
red cards          per rule (*)  ``red_card`` (−10) each
early completion   time          ``early_completion_bonus_per_10pct`` (+1) for each full 10 percentage points the
                                 early-completion rate (completed early / completed) is above
                                 ``early_completion_threshold`` (10%): 78.8% → +6
dissatisfied       satisfaction  ``dissatisfied_rating`` (−1) per rating 4 or 5
complaints         complaints    ``complaint_substantiated`` (−3) per complaint concluded as substantiated
=================  ============  ==================================================================================

(*) The number of cards comes from the metric buckets (``yellow_cards``, ``red_cards``: additive and kept at write
time). Which area a card counts against follows its rule (``scores.rule_areas``: R06 fee violation → fees, R07–R09 →
process, R10–R11 → complaints, others → time), read from the alerts raised in that department and month; cards the
alerts cannot place (none should exist) count against time.

Half-year (``YYYY-H1``/``YYYY-H2``) and year scores are the mean of the department's monthly scores over the months of
the period in which it had activity; each component is likewise the mean of its monthly points. Ranking sorts by score
(rounded to 2 decimals) with ties sharing a rank (1, 1, 3).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from fractions import Fraction
from math import floor
from typing import TYPE_CHECKING, Any, Literal, cast

from sqlalchemy import Connection, Table, func, select

from node.config import ScoresConfig
from node.errors import InvalidArgumentError
from node.store import Alert, MetricBucket

if TYPE_CHECKING:
    from node.app import Node

__all__ = [
    "Component",
    "DepartmentScore",
    "MonthActivity",
    "Period",
    "RankedScore",
    "combine_months",
    "department_scores",
    "monthly_activity",
    "parse_period",
    "rank_departments",
    "score_month",
    "scores_ranking",
]

DEFAULT_CARD_AREA = "time"
TIE_DECIMALS = 2

# Flow counters whose non-zero sum marks a month as active for a department (cohort gauges are left out on purpose:
# a gauge can be zero after real activity and non-zero with none that month).
ACTIVITY_COUNTERS: tuple[str, ...] = (
    "received",
    "completed",
    "return_steps",
    "supplements",
    "refused",
    "fees_count",
    "ratings_1",
    "ratings_2",
    "ratings_3",
    "ratings_4",
    "ratings_5",
    "complaints_received",
    "complaints_concluded",
    "reminders",
    "yellow_cards",
    "red_cards",
)
SUMMED_COUNTERS: tuple[str, ...] = (*ACTIVITY_COUNTERS, "completed_early", "complaints_substantiated")

_buckets = cast(Table, MetricBucket.__table__)
_alerts = cast(Table, Alert.__table__)

PeriodKind = Literal["month", "half", "year"]
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_HALF = re.compile(r"^(\d{4})-H([12])$", re.IGNORECASE)
_YEAR = re.compile(r"^(\d{4})$")


@dataclass(frozen=True, slots=True)
class Period:
    """A scoring period: one month, a half-year or a year, as a list of months."""

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
    """'2024-05' (month), '2024-H1' / '2024-H2' (half-year) or '2024' (year); InvalidArgumentError otherwise."""
    value = text.strip()
    if match := _MONTH.match(value):
        year, month = int(match[1]), int(match[2])
        if not 1 <= month <= 12:
            raise InvalidArgumentError(f"period {text!r}: month {month} out of range (expected YYYY-MM)")
        return Period("month", f"{year:04d}-{month:02d}", ((year, month),))
    if match := _HALF.match(value):
        year, half = int(match[1]), int(match[2])
        first = 1 if half == 1 else 7
        return Period("half", f"{year:04d}-H{half}", tuple((year, m) for m in range(first, first + 6)))
    if match := _YEAR.match(value):
        year = int(match[1])
        return Period("year", f"{year:04d}", tuple((year, m) for m in range(1, 13)))
    raise InvalidArgumentError(
        f"period {text!r}: expected YYYY-MM (month), YYYY-H1 / YYYY-H2 (half-year) or YYYY (year)"
    )


def _month_label(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


@dataclass(frozen=True, slots=True)
class MonthActivity:
    """One department's summed counters for one month, plus its cards per area (from the alerts' rules)."""

    department: str
    month: str
    counts: Mapping[str, int]
    cards_by_area: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """(area, 'yellow'|'red') → number of cards the alerts place in that area."""

    def count(self, name: str) -> int:
        """A summed counter (0 if absent)."""
        return int(self.counts.get(name, 0))


@dataclass(frozen=True, slots=True)
class Component:
    """One deduction or bonus: its area, what it counts, how many, and the weighted points it adds."""

    area: str
    name: str
    count: float
    points: float
    detail: str

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return {"area": self.area, "name": self.name, "count": self.count, "points": self.points, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class DepartmentScore:
    """A department's score for a period, the components behind it and the months it covers."""

    department: str
    period: str
    score: float
    base: float
    months: tuple[str, ...]
    components: tuple[Component, ...]
    figures: Mapping[str, int]

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return {
            "department": self.department,
            "period": self.period,
            "score": round(self.score, 4),
            "base": self.base,
            "months": list(self.months),
            "components": [c.as_dict() for c in self.components],
            "figures": dict(self.figures),
        }


@dataclass(frozen=True, slots=True)
class RankedScore:
    """A department score with its rank among the departments scored for the same period."""

    rank: int
    score: DepartmentScore

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return {"rank": self.rank, **self.score.as_dict()}


# -- the scheme --------------------------------------------------------------------------------------------------------
def _weight(scheme: ScoresConfig, area: str) -> float:
    return float(scheme.weights.get(area, 1.0))


def early_completion_steps(completed: int, completed_early: int, threshold: float) -> int:
    """Full 10-point steps of the early-completion rate above the threshold (exact arithmetic, no float drift)."""
    if completed <= 0:
        return 0
    above = Fraction(completed_early, completed) - Fraction(str(threshold))
    if above < 0:
        return 0
    return floor(above / Fraction(1, 10))


def _card_counts(activity: MonthActivity, severity: str) -> dict[str, int]:
    """Cards of one severity per area: the alerts' placement, the bucket total's remainder to the default area."""
    per_area = {area: n for (area, sev), n in activity.cards_by_area.items() if sev == severity and n}
    placed = sum(per_area.values())
    total = activity.count(f"{severity}_cards")
    if total > placed:
        per_area[DEFAULT_CARD_AREA] = per_area.get(DEFAULT_CARD_AREA, 0) + total - placed
    return per_area


def score_month(activity: MonthActivity, scheme: ScoresConfig) -> DepartmentScore:
    """The score of one department for one month under ``scheme`` (pure: no database)."""
    components: list[Component] = []
    labels = {
        "yellow": ("yellow_cards", "黄牌 yellow cards", scheme.yellow_card),
        "red": ("red_cards", "红牌 red cards", scheme.red_card),
    }
    for severity in ("yellow", "red"):
        name, label, each = labels[severity]
        for area, n in sorted(_card_counts(activity, severity).items()):
            points = n * each * _weight(scheme, area)
            components.append(Component(area, name, n, points, f"{label} ×{n} at {each:+g}"))

    completed, early = activity.count("completed"), activity.count("completed_early")
    steps = early_completion_steps(completed, early, scheme.early_completion_threshold)
    if steps:
        rate = early / completed
        bonus = steps * scheme.early_completion_bonus_per_10pct * _weight(scheme, "time")
        components.append(
            Component(
                "time",
                "early_completion",
                steps,
                bonus,
                f"提前办结率 early completion {rate:.1%} ({early}/{completed}) ≥ "
                f"{scheme.early_completion_threshold:.0%}: {steps} × {scheme.early_completion_bonus_per_10pct:+g}",
            )
        )

    dissatisfied = activity.count("ratings_4") + activity.count("ratings_5")
    if dissatisfied:
        points = dissatisfied * scheme.dissatisfied_rating * _weight(scheme, "satisfaction")
        components.append(
            Component(
                "satisfaction",
                "dissatisfied_ratings",
                dissatisfied,
                points,
                f"不满意评价 ratings 4–5 ×{dissatisfied} at {scheme.dissatisfied_rating:+g}",
            )
        )

    substantiated = activity.count("complaints_substantiated")
    if substantiated:
        points = substantiated * scheme.complaint_substantiated * _weight(scheme, "complaints")
        components.append(
            Component(
                "complaints",
                "complaints_substantiated",
                substantiated,
                points,
                f"投诉属实 substantiated complaints ×{substantiated} at {scheme.complaint_substantiated:+g}",
            )
        )

    score = scheme.base + sum(c.points for c in components)
    return DepartmentScore(
        department=activity.department,
        period=activity.month,
        score=score,
        base=scheme.base,
        months=(activity.month,),
        components=tuple(components),
        figures={name: activity.count(name) for name in SUMMED_COUNTERS},
    )


def combine_months(department: str, period: str, monthly: Sequence[DepartmentScore]) -> DepartmentScore:
    """Half-year / year score: the mean of the monthly scores, each component the mean of its monthly points."""
    if not monthly:
        raise ValueError(f"no monthly scores for {department} in {period}")
    n = len(monthly)
    points: dict[tuple[str, str], float] = defaultdict(float)
    counts: dict[tuple[str, str], float] = defaultdict(float)
    for month in monthly:
        for c in month.components:
            points[(c.area, c.name)] += c.points
            counts[(c.area, c.name)] += c.count
    components = tuple(
        Component(
            area,
            name,
            counts[(area, name)],
            points[(area, name)] / n,
            f"{name} total {counts[(area, name)]:g} over {n} month(s): mean {points[(area, name)] / n:+.2f}",
        )
        for area, name in sorted(points)
    )
    figures: dict[str, int] = defaultdict(int)
    for month in monthly:
        for key, value in month.figures.items():
            figures[key] += value
    return DepartmentScore(
        department=department,
        period=period,
        score=sum(m.score for m in monthly) / n,
        base=monthly[0].base,
        months=tuple(m.period for m in monthly),
        components=components,
        figures=dict(figures),
    )


def rank_departments(scores: Iterable[DepartmentScore]) -> list[RankedScore]:
    """Highest score first; equal scores (to 2 decimals) share a rank and the next rank skips (1, 1, 3)."""
    ordered = sorted(scores, key=lambda s: (-round(s.score, TIE_DECIMALS), s.department))
    ranked: list[RankedScore] = []
    for position, score in enumerate(ordered, start=1):
        if ranked and round(ranked[-1].score.score, TIE_DECIMALS) == round(score.score, TIE_DECIMALS):
            ranked.append(RankedScore(ranked[-1].rank, score))
        else:
            ranked.append(RankedScore(position, score))
    return ranked


# -- reading the store -------------------------------------------------------------------------------------------------
def monthly_activity(
    conn: Connection, first_day: date, end_day: date, rule_areas: Mapping[str, str]
) -> dict[tuple[str, str], MonthActivity]:
    """(department, 'YYYY-MM') → summed counters and card areas for days in [first_day, end_day), active months only."""
    b = _buckets.c
    # Summed per (department, day) in SQL; months are folded in Python so the query is the same on SQLite and PG.
    rows = conn.execute(
        select(b.department, b.day, *(func.sum(b[name]).label(name) for name in SUMMED_COUNTERS))
        .where(b.day >= first_day, b.day < end_day)
        .group_by(b.department, b.day)
    ).mappings()
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(SUMMED_COUNTERS, 0))
    for row in rows:
        day = row["day"] if isinstance(row["day"], date) else date.fromisoformat(str(row["day"]))
        target = counts[(row["department"], _month_label(day))]
        for name in SUMMED_COUNTERS:
            target[name] += int(row[name] or 0)

    a = _alerts.c
    cards: dict[tuple[str, str], dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    alert_rows = conn.execute(
        select(a.department, a.rule_id, a.severity, a.raised_at).where(
            a.severity.in_(("yellow", "red")),
            a.raised_at >= datetime.combine(first_day, datetime.min.time()),
            a.raised_at < datetime.combine(end_day, datetime.min.time()),
        )
    )
    for department, rule_id, severity, raised_at in alert_rows:
        area = rule_areas.get(rule_id, DEFAULT_CARD_AREA)
        cards[(department, _month_label(raised_at.date()))][(area, severity)] += 1

    result: dict[tuple[str, str], MonthActivity] = {}
    for key in set(counts) | set(cards):
        summed = counts.get(key, dict.fromkeys(SUMMED_COUNTERS, 0))
        card_areas = cards.get(key, {})
        if not any(summed[name] for name in ACTIVITY_COUNTERS) and not card_areas:
            continue
        result[key] = MonthActivity(key[0], key[1], summed, dict(card_areas))
    return result


def department_scores(node: Node, period: Period | str, *, scheme: ScoresConfig | None = None) -> list[DepartmentScore]:
    """Every department with activity in the period, scored (monthly, or the mean of its active months)."""
    period = parse_period(period) if isinstance(period, str) else period
    scheme = scheme or node.config.scores
    with node.engine.connect() as conn:
        activity = monthly_activity(conn, period.first_day, period.end_day, scheme.rule_areas)
    by_department: dict[str, list[DepartmentScore]] = defaultdict(list)
    for key in sorted(activity):
        by_department[key[0]].append(score_month(activity[key], scheme))
    if period.kind == "month":
        return [months[0] for months in by_department.values()]
    return [combine_months(department, period.label, months) for department, months in by_department.items()]


def scores_ranking(node: Node, period: Period | str, *, scheme: ScoresConfig | None = None) -> list[RankedScore]:
    """The ranking of departments for a period (what ``supnet scores`` prints)."""
    return rank_departments(department_scores(node, period, scheme=scheme))
