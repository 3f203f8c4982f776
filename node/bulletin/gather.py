"""Gathering a bulletin: the figures of the node and of each child (or every node below) for one period.

Units come from the drill-down by-child summary — answered from the node's own database (``LocalSource``: its own
buckets and its children's signed reports, as ``supnet query`` gets it from the node's server) or through signed
queries (``AskingSource``, a DrilldownClient: every answer verified) when the bulletin goes below the children
(``level="subtree"``). The efficiency-score ranking is the drill-down score ranking (children scored from their
rolled-up counters under this node's scheme). Departments, scores, red cards, overdue cases, complaints and
directives are the node's own data, read here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from federation import counters_to_dict
from federation.proto.v1 import drilldown_pb2 as dd
from node.app import Node
from node.bulletin.model import (
    ActivityCount,
    ActivityKey,
    Bulletin,
    CardRow,
    DepartmentFigures,
    DepartmentScore,
    OverdueCase,
    Ranking,
    RankingEntry,
    UnitFigures,
)
from node.bulletin.period import ReportPeriod
from node.drilldown import DrilldownClient, answer_alerts, answer_cases, answer_ranking, answer_summary
from node.errors import InvalidArgumentError
from node.supervision import (
    RATE_DEFINITIONS,
    activity_totals,
    complaint_figures,
    grouped_stats,
    monthly_counters,
    rank_scores,
    score_period,
)

__all__ = ["LEVELS", "RATE_RANKINGS", "AskingSource", "FigureSource", "LocalSource", "gather_bulletin"]

LEVELS = ("children", "subtree")
# The rankings besides the score: (metric: a rate of RATE_DEFINITIONS or a counter, title, higher is better).
RATE_RANKINGS: tuple[tuple[str, str, bool], ...] = (
    ("early_rate", "提前办结率", True),
    ("on_time_rate", "按时办结率", True),
    ("return_rate", "退件率（低者优先）", False),
    ("satisfaction_rate", "满意率", True),
    ("complaint_closure_rate", "投诉办结率", True),
)
COUNT_RANKINGS: tuple[tuple[str, str], ...] = (
    ("open_overdue_promised", "超期未办结件数（少者优先）"),
    ("red_cards", "红牌数（少者优先）"),
)
MAX_LISTED = 500
_PAGE = 1000


class FigureSource(Protocol):
    """Answers the by-child summary and the score ranking of a node of the subtree."""

    def summary(self, target: str, request: dd.SummaryRequest) -> dd.SummaryAnswer:
        """Every page of a summary, merged."""
        ...

    def ranking(self, target: str, request: dd.RankingRequest) -> dd.RankingAnswer:
        """A ranking of the target's children and own data."""
        ...

    def checked(self) -> list[str]:
        """How the answers were obtained and checked, one line per answering node."""
        ...


class LocalSource:
    """The node's own answers, from its database (its buckets and its children's signed reports)."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def _own(self, target: str) -> None:
        if target != self._node.config.id:
            raise InvalidArgumentError(
                f"{target} is below this node: a bulletin of the whole subtree asks it through the node's server"
            )

    def summary(self, target: str, request: dd.SummaryRequest) -> dd.SummaryAnswer:
        self._own(target)
        merged, token = answer_summary(self._node, request, 0, "")
        while token:
            page, token = answer_summary(self._node, request, 0, token)
            merged.rows.extend(page.rows)
        return merged

    def ranking(self, target: str, request: dd.RankingRequest) -> dd.RankingAnswer:
        self._own(target)
        return answer_ranking(self._node, request)[0]

    def checked(self) -> list[str]:
        return [f"{self._node.config.id}: 本节点数据库（本级数据与下级已验签的报告）"]


class AskingSource:
    """Signed drill-down queries through the node's server; every answer verified (node.drilldown.DrilldownClient)."""

    def __init__(self, client: DrilldownClient) -> None:
        self._client = client
        self._checked: dict[str, str] = {}

    def summary(self, target: str, request: dd.SummaryRequest) -> dd.SummaryAnswer:
        merged = dd.SummaryAnswer()
        for index, answer in enumerate(self._client.ask_pages(target, summary=request)):
            self._checked[target] = answer.verified_by
            if index == 0:
                merged.CopyFrom(answer.body.summary)
            else:
                merged.rows.extend(answer.body.summary.rows)
        return merged

    def ranking(self, target: str, request: dd.RankingRequest) -> dd.RankingAnswer:
        answer = self._client.ask(target, ranking=request)
        self._checked[target] = answer.verified_by
        return answer.body.ranking

    def checked(self) -> list[str]:
        return [f"{target}: {how}" for target, how in sorted(self._checked.items())]


# --- units --------------------------------------------------------------------------------------


def row_activity(row: dd.SummaryRow) -> dict[ActivityKey, int] | None:
    """Directives and accountability counts a by-child summary row carries, by (metric, kind); None if it carries none.

    The summary rows do not carry them yet (issue 13 adds them): this reads a repeated ``activity`` field of entries
    with ``metric``, ``kind`` and ``count`` once the proto has one, and is the one place to adapt to its final shape.
    """
    if "activity" not in row.DESCRIPTOR.fields_by_name:
        return None
    totals: dict[ActivityKey, int] = {}
    entries: Any = getattr(row, "activity")  # noqa: B009 - a field this proto version may lack
    for entry in entries:
        key = (str(entry.metric), str(entry.kind))
        totals[key] = totals.get(key, 0) + int(entry.count)
    return totals


def _unit(row: dd.SummaryRow, scope: str, depth: int, activity: dict[ActivityKey, int] | None) -> UnitFigures:
    return UnitFigures(
        node_id=row.key,
        name=row.label,
        scope=scope,
        depth=depth,
        counters=counters_to_dict(row.counters),
        reported=row.completeness.nodes_reported_in_window,
        nodes=row.completeness.nodes_in_subtree,
        last_report_sequence=row.last_report_sequence,
        activity=activity,
    )


def _children_units(node_id: str, answer: dd.SummaryAnswer, own_activity: dict[ActivityKey, int]) -> list[UnitFigures]:
    units = []
    for row in answer.rows:
        own = row.key == node_id
        units.append(
            _unit(row, "own" if own else "subtree", 0 if own else 1, own_activity if own else row_activity(row))
        )
    units.sort(key=lambda unit: (unit.depth, unit.node_id))
    return units


def _subtree_units(
    source: FigureSource, request: dd.SummaryRequest, node_id: str, root: dd.SummaryAnswer
) -> Iterator[tuple[UnitFigures, dd.SummaryAnswer]]:
    """Each node of the subtree, depth first: its own data (the row of its own id in its by-child summary)."""
    stack: list[tuple[str, int, dd.SummaryAnswer | None]] = [(node_id, 0, root)]
    while stack:
        target, depth, answer = stack.pop()
        answer = answer if answer is not None else source.summary(target, request)
        own = next((row for row in answer.rows if row.key == target), dd.SummaryRow(key=target))
        yield _unit(own, "own", depth, row_activity(own) if depth else None), answer
        children = sorted((row.key for row in answer.rows if row.key != target), reverse=True)
        stack.extend((child, depth + 1, None) for child in children)


# --- rankings -----------------------------------------------------------------------------------


def _ranked(entries: list[tuple[bool, float, RankingEntry]], higher_is_better: bool) -> tuple[RankingEntry, ...]:
    """Best first, entries without a value last; equal values share a rank (1, 1, 3), as the drill-down ranks."""
    entries.sort(key=lambda e: (e[0], -e[1] if higher_is_better else e[1], e[2].node_id))
    ranked: list[RankingEntry] = []
    previous: tuple[bool, float] | None = None
    rank = 0
    for position, (unrated, value, entry) in enumerate(entries, start=1):
        if (unrated, value) != previous:
            rank, previous = position, (unrated, value)
        ranked.append(RankingEntry(rank, entry.node_id, entry.name, entry.value, entry.numerator, entry.denominator))
    return tuple(ranked)


def _rate_rankings(units: list[UnitFigures]) -> list[Ranking]:
    rankings = []
    for metric, title, higher in RATE_RANKINGS:
        numerator_of, denominator_of = RATE_DEFINITIONS[metric]
        entries = []
        for unit in units:
            numerator, denominator = numerator_of(unit.counters), denominator_of(unit.counters)
            value = numerator / denominator if denominator else None
            entry = RankingEntry(0, unit.node_id, unit.name, value, numerator, denominator)
            entries.append((value is None, round(value or 0.0, 12), entry))
        rankings.append(Ranking(metric, title, "rate", _ranked(entries, higher)))
    for metric, title in COUNT_RANKINGS:
        counted = [
            (False, float(unit.counters[metric]), RankingEntry(0, unit.node_id, unit.name, unit.counters[metric], 0, 0))
            for unit in units
        ]
        rankings.append(Ranking(metric, title, "count", _ranked(counted, False)))
    return rankings


def _score_entry(row: dd.RankingRow, name: str) -> tuple[bool, float, RankingEntry]:
    scored = row.denominator > 0
    value = round(row.value, 2) if scored else None
    entry = RankingEntry(0, row.node_id, name or row.label, value, row.numerator, row.denominator)
    return (not scored, value or 0.0, entry)


def _score_ranking(
    source: FigureSource, request: dd.RankingRequest, node_id: str, units: list[UnitFigures], level: str
) -> Ranking:
    names = {unit.node_id: unit.name for unit in units}
    if level == "children":
        rows = list(source.ranking(node_id, request).rows)
    else:
        # Each node's own data, as that node scores it for its own entry of its ranking.
        rows = []
        for unit in units:
            answer = source.ranking(unit.node_id, request)
            rows.extend(row for row in answer.rows if row.node_id == unit.node_id)
    entries = [_score_entry(row, names.get(row.node_id, "")) for row in rows]
    return Ranking("score", "效能考评得分", "score", _ranked(entries, True))


# --- the node's own data ------------------------------------------------------------------------


def _department_scores(node: Node, conn: Connection, period: ReportPeriod) -> list[DepartmentScore]:
    counters = monthly_counters(conn, period.first_day, period.last_day + timedelta(days=1))
    scores = [score_period(name, period.label, months, node.config.scores) for name, months in sorted(counters.items())]
    ranked = rank_scores(score for score in scores if score is not None)
    return [
        DepartmentScore(r.rank, r.score.unit, round(r.score.score, 2), r.score.cases_handled, dict(r.score.parts))
        for r in ranked
    ]


def _local(ms: int, tz: ZoneInfo, *, with_time: bool = True) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d")


def _red_cards(node: Node, period: ReportPeriod, limit: int) -> tuple[list[CardRow], int]:
    request = dd.AlertsRequest(
        severity="red", day_from=period.first_day.isoformat(), day_to=period.last_day.isoformat()
    )
    rows: list[CardRow] = []
    total, token = 0, ""
    while True:
        answer, token = answer_alerts(node, request, _PAGE, token)
        total += len(answer.alerts)
        for alert in answer.alerts[: max(limit - len(rows), 0)]:
            subject = alert.case_no or alert.subject
            breached = _local(alert.breached_at_ms, node.tz)
            rows.append(
                CardRow(alert.id, alert.rule_id, subject, alert.department, breached, alert.status, alert.message)
            )
        if not token:
            return rows, total


def _overdue_cases(node: Node, period: ReportPeriod, limit: int) -> tuple[list[OverdueCase], int]:
    request = dd.CasesRequest(
        status=dd.CASE_STATUS_FILTER_OPEN,
        overdue_only=True,
        day_from=period.first_day.isoformat(),
        day_to=period.last_day.isoformat(),
    )
    rows: list[OverdueCase] = []
    total, token = 0, ""
    while True:
        answer, token = answer_cases(node, request, _PAGE, token)
        total += len(answer.cases)
        for case in answer.cases[: max(limit - len(rows), 0)]:
            rows.append(
                OverdueCase(
                    case.case_no,
                    case.item_name or case.basic_code,
                    case.department,
                    _local(case.accepted_at_ms, node.tz, with_time=False),
                    _local(case.promised_due_at_ms, node.tz, with_time=False),
                    case.overdue_legal,
                )
            )
        if not token:
            return rows, total


# --- the bulletin -------------------------------------------------------------------------------


def gather_bulletin(
    node: Node,
    period: ReportPeriod,
    *,
    level: str = "children",
    source: FigureSource | None = None,
    max_listed: int = MAX_LISTED,
) -> Bulletin:
    """The bulletin of ``node`` for ``period``.

    ``level`` children: its own data and each child's subtree; subtree: every node's own data (needs an
    AskingSource: the nodes below answer signed queries).
    """
    if level not in LEVELS:
        raise InvalidArgumentError(f"--level must be one of {', '.join(LEVELS)}, not {level!r}")
    source = source or LocalSource(node)
    node_id = node.config.id
    day_from, day_to = period.first_day.isoformat(), period.last_day.isoformat()
    summary_request = dd.SummaryRequest(group_by=dd.SUMMARY_GROUP_BY_CHILD, day_from=day_from, day_to=day_to)
    root = source.summary(node_id, summary_request)
    with node.engine.connect() as conn:
        own_activity = activity_totals(conn, period.first_day, period.last_day)
        departments = [
            DepartmentFigures(row.key, row.counters)
            for row in grouped_stats(conn, "dept", period.first_day, period.last_day)
        ]
        department_scores = _department_scores(node, conn, period)
    if level == "children":
        units = _children_units(node_id, root, own_activity)
    else:
        units = [unit for unit, _ in _subtree_units(source, summary_request, node_id, root)]
        units[0] = replace(units[0], activity=own_activity)
    score_request = dd.RankingRequest(metric=dd.RANKING_METRIC_SCORE, day_from=day_from, day_to=day_to)
    rankings = [_score_ranking(source, score_request, node_id, units, level), *_rate_rankings(units)]
    red_cards, red_total = _red_cards(node, period, max_listed)
    overdue, overdue_total = _overdue_cases(node, period, max_listed)
    departments.sort(key=lambda d: (-d.counters["red_cards"], -d.counters["open_overdue_promised"], d.department))
    return Bulletin(
        node_id=node_id,
        node_name=node.config.name,
        level=level,
        period=period,
        generated_at=node.now().strftime("%Y-%m-%d %H:%M"),
        units=tuple(units),
        total=counters_to_dict(root.total),
        reported=root.completeness.nodes_reported_in_window,
        nodes=root.completeness.nodes_in_subtree,
        rankings=tuple(rankings),
        department_scores=tuple(department_scores),
        departments=tuple(departments),
        red_cards=tuple(red_cards),
        red_cards_total=red_total,
        overdue_cases=tuple(overdue),
        overdue_cases_total=overdue_total,
        complaints_now=complaint_figures(node).as_dict(),
        activity=tuple(ActivityCount(metric, kind, count) for (metric, kind), count in sorted(own_activity.items())),
        sources=tuple(source.checked()),
    )
