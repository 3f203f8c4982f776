"""What a bulletin (电子监察通报) holds, as typed records: gathered once (node.bulletin.gather), written many ways.

Counters are the additive metric counters (node.supervision.metric_definitions.COUNTERS); rates are derived from them
where they are shown (``derived_rates``), never stored. ``Bulletin.as_dict`` is the JSON form ``supnet report --json``
prints: every figure of every file format comes from these records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from node.bulletin.period import ReportPeriod
from node.supervision import derived_rates

__all__ = [
    "ActivityCount",
    "Bulletin",
    "CardRow",
    "DepartmentFigures",
    "DepartmentScore",
    "OverdueCase",
    "Ranking",
    "RankingEntry",
    "UnitFigures",
]

ActivityKey = tuple[str, str]


def _activity_list(activity: dict[ActivityKey, int] | None) -> list[dict[str, Any]] | None:
    if activity is None:
        return None
    return [{"metric": metric, "kind": kind, "count": count} for (metric, kind), count in sorted(activity.items())]


@dataclass(frozen=True, slots=True)
class UnitFigures:
    """One unit of the bulletin: the node's own data (本级) or a node's whole subtree (含下级), for the period."""

    node_id: str
    name: str
    scope: str
    """own (本级: the node's own records) or subtree (含下级: the node and everything below it)."""
    depth: int
    counters: dict[str, int]
    reported: int
    """Nodes of the unit whose data is current (reporting completeness), of ``nodes``."""
    nodes: int
    last_report_sequence: int
    activity: dict[ActivityKey, int] | None = None
    """Directives and accountability counts by (metric, kind); None when the answer does not carry them."""

    @property
    def rates(self) -> dict[str, float | None]:
        """Derived rates of the unit's counters (docs/domain.md §6)."""
        return derived_rates(self.counters)

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "node_id": self.node_id,
            "name": self.name,
            "scope": self.scope,
            "depth": self.depth,
            "counters": dict(self.counters),
            "rates": self.rates,
            "completeness": {"nodes_reported_in_window": self.reported, "nodes_in_subtree": self.nodes},
            "last_report_sequence": self.last_report_sequence,
            "activity": _activity_list(self.activity),
        }


@dataclass(frozen=True, slots=True)
class RankingEntry:
    """One unit's place in a ranking; ``value`` is None when it cannot be compared (a rate over nothing, no score)."""

    rank: int
    node_id: str
    name: str
    value: float | None
    numerator: int
    denominator: int

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "rank": self.rank,
            "node_id": self.node_id,
            "name": self.name,
            "value": self.value,
            "numerator": self.numerator,
            "denominator": self.denominator,
        }


@dataclass(frozen=True, slots=True)
class Ranking:
    """The units ranked by one metric: a rate, a count (fewer is better) or the efficiency score (效能考评)."""

    metric: str
    title: str
    kind: str
    """rate, count or score."""
    entries: tuple[RankingEntry, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "metric": self.metric,
            "title": self.title,
            "kind": self.kind,
            "entries": [entry.as_dict() for entry in self.entries],
        }


@dataclass(frozen=True, slots=True)
class DepartmentScore:
    """A department of the node ranked by efficiency score for the period, with its parts (node.supervision)."""

    rank: int
    department: str
    score: float
    cases_handled: int
    parts: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "rank": self.rank,
            "department": self.department,
            "score": self.score,
            "cases_handled": self.cases_handled,
            "parts": dict(self.parts),
        }


@dataclass(frozen=True, slots=True)
class DepartmentFigures:
    """A department's summed counters for the period (own data): cards, overdue cases, complaints."""

    department: str
    counters: dict[str, int]

    @property
    def rates(self) -> dict[str, float | None]:
        """Derived rates of the department's counters."""
        return derived_rates(self.counters)

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"department": self.department, "counters": dict(self.counters), "rates": self.rates}


@dataclass(frozen=True, slots=True)
class CardRow:
    """A red card breached in the period (own data)."""

    alert_id: int
    rule_id: str
    subject: str
    department: str
    breached_at: str
    status: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "alert_id": self.alert_id,
            "rule_id": self.rule_id,
            "subject": self.subject,
            "department": self.department,
            "breached_at": self.breached_at,
            "status": self.status,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class OverdueCase:
    """An open case accepted in the period and now past its promised limit (own data; applicant masked)."""

    case_no: str
    item: str
    department: str
    accepted_at: str
    promised_due_at: str
    past_legal: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "case_no": self.case_no,
            "item": self.item,
            "department": self.department,
            "accepted_at": self.accepted_at,
            "promised_due_at": self.promised_due_at,
            "past_legal": self.past_legal,
        }


@dataclass(frozen=True, slots=True)
class ActivityCount:
    """The node's own directives and accountability counts for the period: one (metric, kind) and its count."""

    metric: str
    kind: str
    count: int


@dataclass(frozen=True)
class Bulletin:
    """Everything one bulletin shows, for one node, period and level (children or subtree)."""

    node_id: str
    node_name: str
    level: str
    """children (the node's own data and each child's subtree) or subtree (every node of the subtree, own data)."""
    period: ReportPeriod
    generated_at: str
    units: tuple[UnitFigures, ...]
    total: dict[str, int]
    reported: int
    nodes: int
    rankings: tuple[Ranking, ...]
    department_scores: tuple[DepartmentScore, ...]
    departments: tuple[DepartmentFigures, ...]
    red_cards: tuple[CardRow, ...]
    red_cards_total: int
    overdue_cases: tuple[OverdueCase, ...]
    overdue_cases_total: int
    complaints_now: dict[str, Any]
    """The node's own complaint figures as of ``generated_at`` (node.supervision.complaint_figures)."""
    activity: tuple[ActivityCount, ...]
    sources: tuple[str, ...] = field(default=())
    """How the figures were obtained and checked (local database, or each drill-down answer's verification)."""

    @property
    def total_rates(self) -> dict[str, float | None]:
        """Derived rates of the whole subtree's counters."""
        return derived_rates(self.total)

    def as_dict(self) -> dict[str, Any]:
        """JSON form (``supnet report --json``)."""
        return {
            "node_id": self.node_id,
            "node_name": self.node_name,
            "level": self.level,
            "period": self.period.as_dict(),
            "generated_at": self.generated_at,
            "total": {"counters": dict(self.total), "rates": self.total_rates},
            "completeness": {"nodes_reported_in_window": self.reported, "nodes_in_subtree": self.nodes},
            "units": [unit.as_dict() for unit in self.units],
            "rankings": [ranking.as_dict() for ranking in self.rankings],
            "department_scores": [score.as_dict() for score in self.department_scores],
            "departments": [department.as_dict() for department in self.departments],
            "red_cards": [card.as_dict() for card in self.red_cards],
            "red_cards_total": self.red_cards_total,
            "overdue_cases": [case.as_dict() for case in self.overdue_cases],
            "overdue_cases_total": self.overdue_cases_total,
            "complaints_now": self.complaints_now,
            "activity": [{"metric": a.metric, "kind": a.kind, "count": a.count} for a in self.activity],
            "sources": list(self.sources),
        }
