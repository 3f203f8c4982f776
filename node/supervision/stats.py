"""Basic node statistics computed in SQL from the raw approval tables: counts and the rates derived from them.

Rates are always derived from counts here, never averaged, with the one definition every view uses
(node.supervision.metric_definitions.RATE_DEFINITIONS, docs/domain.md §6): the counts are named as the metric
counters and handed to ``derived_rates``. A rate whose denominator is zero is None. ``node_stats`` returns plain dicts
so other views (bucket-based --by) can extend it.

``staff_stats`` groups the steps by post (岗位) or handler (环节处理人) — ``supnet stats --by post|handler``, from the
raw steps. Person-level rows are personal data: they stay at the node and go into no report (docs/domain.md §6).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Connection, Engine, and_, case, func, or_, select

from node.store import Case, Complaint, Evaluation, Item, Payment, SpecialProcedure, Step
from node.supervision.metric_definitions import ACCEPTED_COMPLAINT_STATUSES, derived_rates
from node.supervision.metric_queries import returned_case

if TYPE_CHECKING:
    from node.app import Node

# (key, human label) of every rate, in display order.
RATE_LABELS: tuple[tuple[str, str], ...] = (
    ("early_completion_rate", "early-completion rate (提前办结率)"),
    ("on_time_rate", "on-time rate (按时办结率)"),
    ("return_rate", "return rate (退件率)"),
    ("satisfaction_rate", "satisfaction rate (满意率)"),
    ("complaint_acceptance_rate", "complaint acceptance rate (投诉受理率)"),
    ("complaint_closure_rate", "complaint closure rate (投诉办结率)"),
)
# Each rate's key here -> its definition in RATE_DEFINITIONS (the same rate, one definition).
_RATE_DEFINITION_NAMES: dict[str, str] = {
    "early_completion_rate": "early_rate",
    "on_time_rate": "on_time_rate",
    "return_rate": "return_rate",
    "satisfaction_rate": "satisfaction_rate",
    "complaint_acceptance_rate": "complaint_acceptance_rate",
    "complaint_closure_rate": "complaint_closure_rate",
}

COUNT_LABELS: tuple[tuple[str, str], ...] = (
    ("items", "items (事项)"),
    ("cases_received", "cases received (受理)"),
    ("cases_open", "cases open"),
    ("cases_completed", "cases completed (办结)"),
    ("completed_early", "completed early"),
    ("completed_on_time", "completed on time"),
    ("cases_returned", "cases returned at least once (退件)"),
    ("return_steps", "return steps (退回环节)"),
    ("open_overdue_promised", "open past promised limit"),
    ("open_overdue_legal", "open past legal limit"),
    ("clock_stopped", "clock stopped now (特别程序)"),
    ("steps", "steps (环节)"),
    ("special_procedures", "special procedures"),
    ("payments", "payments (收费)"),
    ("evaluations", "evaluations (评价)"),
    ("complaints", "complaints received (投诉)"),
    ("complaints_accepted", "complaints accepted (受理)"),
    ("complaints_concluded", "complaints concluded (办结)"),
)


def _count(conn: Connection, column: Any) -> int:
    return int(conn.execute(select(func.count(column))).scalar_one())


def case_counts(conn: Connection, now: datetime) -> dict[str, int]:
    """Case counts in one scan: received, open, completed, early, on time, returned, overdue, clock stopped."""
    completed = Case.status == "completed"
    is_open = Case.status == "open"

    def count_where(condition: Any) -> Any:
        # SUM(CASE ...) rather than FILTER: identical on SQLite and PostgreSQL and cheap in one pass.
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    row = conn.execute(
        select(
            func.count(),
            count_where(is_open),
            count_where(completed),
            # Early = completed on a day before the promised due day (node.domain.deadlines.is_early).
            count_where(and_(completed, func.date(Case.completed_at) < func.date(Case.promised_due_at))),
            count_where(and_(completed, Case.completed_at <= Case.promised_due_at)),
            count_where(returned_case()),
            count_where(and_(is_open, Case.promised_due_at < now)),
            count_where(and_(is_open, Case.legal_due_at < now)),
            count_where(and_(is_open, Case.clock_stopped.is_(True))),
        )
    ).one()
    keys = (
        "cases_received",
        "cases_open",
        "cases_completed",
        "completed_early",
        "completed_on_time",
        "cases_returned",
        "open_overdue_promised",
        "open_overdue_legal",
        "clock_stopped",
    )
    return {key: int(value) for key, value in zip(keys, row, strict=True)}


def compute_stats(engine: Engine, now: datetime) -> dict[str, Any]:
    """Counts and rates of the whole node as of ``now`` (naive local time)."""
    with engine.connect() as conn:
        counts: dict[str, int] = {"items": _count(conn, Item.implementation_code)}
        counts.update(case_counts(conn, now))
        counts["steps"] = _count(conn, Step.id)
        counts["return_steps"] = int(conn.execute(select(func.count()).where(Step.action == "return")).scalar_one())
        counts["special_procedures"] = _count(conn, SpecialProcedure.id)
        counts["payments"] = _count(conn, Payment.id)
        fees = conn.execute(select(func.coalesce(func.sum(Payment.amount), 0))).scalar_one()
        ratings = {
            int(code): int(n)
            for code, n in conn.execute(
                select(Evaluation.satisfaction_code, func.count()).group_by(Evaluation.satisfaction_code)
            )
        }
        counts["evaluations"] = sum(ratings.values())
        complaints = conn.execute(
            select(
                func.count(),
                func.coalesce(
                    func.sum(
                        case(
                            (
                                and_(
                                    Complaint.status.in_(ACCEPTED_COMPLAINT_STATUSES),
                                    Complaint.decided_at.is_not(None),
                                ),
                                1,
                            ),
                            else_=0,
                        )
                    ),
                    0,
                ),
                func.coalesce(func.sum(case((Complaint.status == "concluded", 1), else_=0)), 0),
            )
        ).one()
        counts["complaints"] = int(complaints[0])
        counts["complaints_accepted"] = int(complaints[1])
        counts["complaints_concluded"] = int(complaints[2])
    # The counts under the metric counters' names, so the rates come from the one definition.
    as_counters = {
        "received": counts["cases_received"],
        "completed": counts["cases_completed"],
        "completed_early": counts["completed_early"],
        "completed_on_time": counts["completed_on_time"],
        "cases_returned": counts["cases_returned"],
        "return_steps": counts["return_steps"],
        **{f"ratings_{code}": ratings.get(code, 0) for code in range(1, 6)},
        "complaints_received": counts["complaints"],
        "complaints_accepted": counts["complaints_accepted"],
        "complaints_concluded": counts["complaints_concluded"],
    }
    derived = derived_rates(as_counters)
    rates = {key: derived[name] for key, name in _RATE_DEFINITION_NAMES.items()}
    return {"as_of": now.isoformat(" ", "seconds"), "counts": counts, "fees_yuan": str(fees), "rates": rates}


def node_stats(node: Node) -> dict[str, Any]:
    """The node's basic statistics: {"as_of", "counts": {...}, "fees_yuan", "rates": {...}}."""
    return compute_stats(node.engine, node.now())


StaffGrouping = Literal["post", "handler"]
STAFF_GROUPINGS: tuple[StaffGrouping, ...] = ("post", "handler")

# (key, label) of a staff row's counts, in display order.
STAFF_COUNT_LABELS: tuple[tuple[str, str], ...] = (
    ("cases", "cases handled 经办件数"),
    ("steps", "steps 环节"),
    ("steps_pending", "pending 在办"),
    ("overdue_steps", "overdue steps 环节超时"),
    ("return_steps", "return steps 退回环节"),
    ("cases_returned", "cases returned 退件"),
)


@dataclass(frozen=True, slots=True)
class StaffRow:
    """One post's or handler's steps (from the raw ``steps`` table, in the period asked).

    ``cases``: distinct cases with a step of this post/handler; ``overdue_steps``: steps with a limit that ended after
    their due, or are still pending past it as of ``now`` (R05's test); ``cases_returned``: distinct cases this
    post/handler returned at least once. ``return_rate`` = cases_returned ÷ cases (None without cases): of the cases
    whose steps this post/handler handled, the share it returned at least once.
    """

    key: str
    cases: int
    steps: int
    steps_pending: int
    overdue_steps: int
    return_steps: int
    cases_returned: int

    @property
    def return_rate(self) -> float | None:
        """Cases this post/handler returned at least once ÷ cases whose steps it handled."""
        return None if self.cases == 0 else self.cases_returned / self.cases

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the counts and the derived return rate."""
        return {
            "key": self.key,
            **{name: getattr(self, name) for name, _ in STAFF_COUNT_LABELS},
            "return_rate": self.return_rate,
        }


def staff_stats(
    conn: Connection,
    by: StaffGrouping,
    now: datetime,
    first: date | None = None,
    last: date | None = None,
) -> list[StaffRow]:
    """Steps grouped by post or handler, of steps started from ``first`` through ``last`` (node days), as of ``now``."""
    column = Step.post if by == "post" else Step.handler
    pending = and_(Step.ended_at.is_(None), Step.status_code == "1")
    overdue = and_(
        Step.step_due_at.is_not(None),
        or_(
            and_(Step.ended_at.is_not(None), Step.ended_at > Step.step_due_at),
            and_(pending, Step.step_due_at < now),
        ),
    )
    is_return = Step.action == "return"

    def count_where(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    query = select(
        column.label("key"),
        func.count(func.distinct(Step.case_no)),
        func.count(),
        count_where(pending),
        count_where(overdue),
        count_where(is_return),
        func.count(func.distinct(case((is_return, Step.case_no)))),
    ).group_by(column)
    if first is not None:
        query = query.where(Step.started_at >= datetime.combine(first, time()))
    if last is not None:
        query = query.where(Step.started_at < datetime.combine(last + timedelta(days=1), time()))
    rows = [StaffRow(row[0] or "", *(int(value) for value in row[1:])) for row in conn.execute(query.order_by(column))]
    return rows
