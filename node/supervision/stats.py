"""Basic node statistics computed in SQL from the raw approval tables: counts and the rates derived from them.

Rates are always derived from counts here, never averaged (docs/domain.md §6); a rate whose
denominator is zero is None. ``node_stats`` returns plain dicts so other views (bucket-based --by) can extend it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, and_, case, func, select

from node.store import Case, Complaint, Evaluation, Item, Payment, SpecialProcedure, Step

if TYPE_CHECKING:
    from node.app import Node

# (key, human label) of every rate, in display order.
RATE_LABELS: tuple[tuple[str, str], ...] = (
    ("early_completion_rate", "early-completion rate (提前办结率)"),
    ("on_time_rate", "on-time rate (按时办结率)"),
    ("return_rate", "return rate (退件率)"),
    ("satisfaction_rate", "satisfaction rate (满意率)"),
    ("complaint_closure_rate", "complaint closure rate (投诉办结率)"),
)

COUNT_LABELS: tuple[tuple[str, str], ...] = (
    ("items", "items (事项)"),
    ("cases_received", "cases received (受理)"),
    ("cases_open", "cases open"),
    ("cases_completed", "cases completed (办结)"),
    ("completed_early", "completed early"),
    ("completed_on_time", "completed on time"),
    ("cases_returned", "cases with a return (退件)"),
    ("open_overdue_promised", "open past promised limit"),
    ("open_overdue_legal", "open past legal limit"),
    ("clock_stopped", "clock stopped now (特别程序)"),
    ("steps", "steps (环节)"),
    ("special_procedures", "special procedures"),
    ("payments", "payments (收费)"),
    ("evaluations", "evaluations (评价)"),
    ("complaints", "complaints (投诉)"),
    ("complaints_concluded", "complaints concluded"),
)


def _rate(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else numerator / denominator


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
            count_where(Case.return_count > 0),
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
        counts["special_procedures"] = _count(conn, SpecialProcedure.id)
        counts["payments"] = _count(conn, Payment.id)
        fees = conn.execute(select(func.coalesce(func.sum(Payment.amount), 0))).scalar_one()
        ratings = conn.execute(
            select(func.count(), func.coalesce(func.sum(case((Evaluation.satisfaction_code <= 3, 1), else_=0)), 0))
        ).one()
        counts["evaluations"] = int(ratings[0])
        complaints = conn.execute(
            select(func.count(), func.coalesce(func.sum(case((Complaint.status == "concluded", 1), else_=0)), 0))
        ).one()
        counts["complaints"] = int(complaints[0])
        counts["complaints_concluded"] = int(complaints[1])
    completed = counts["cases_completed"]
    rates = {
        "early_completion_rate": _rate(counts["completed_early"], completed),
        "on_time_rate": _rate(counts["completed_on_time"], completed),
        "return_rate": _rate(counts["cases_returned"], counts["cases_received"]),
        "satisfaction_rate": _rate(int(ratings[1]), counts["evaluations"]),
        "complaint_closure_rate": _rate(counts["complaints_concluded"], counts["complaints"]),
    }
    return {"as_of": now.isoformat(" ", "seconds"), "counts": counts, "fees_yuan": str(fees), "rates": rates}


def node_stats(node: Node) -> dict[str, Any]:
    """The node's basic statistics: {"as_of", "counts": {...}, "fees_yuan", "rates": {...}}."""
    return compute_stats(node.engine, node.now())
