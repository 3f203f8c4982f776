"""Special procedures (特别程序): a start stops a case's clock, an end restarts it and recomputes its deadlines.

They are rare, so each is checked and written on its own, in input order: an end closes whichever procedure is open
at that moment, so a start and an end of one case in the same batch must be taken in the order they came.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import and_, select, update

from node.domain import procedure_workdays
from node.errors import CalendarError
from node.ingest.deadlines import Deadlines
from node.ingest.outcomes import BatchContext, shown
from node.ingest.records import (
    AnyRow,
    CaseState,
    PreviousDeadlines,
    ProcedureEndRow,
    ProcedureStartRow,
    SpecialProcedureRow,
    Tagged,
)
from node.ingest.storage import CASE_READ_COLUMNS, RecordStore, differences
from node.ingest.validate import CALENDAR, INCONSISTENT


class ProcedureHandler:
    """Stores procedure_start and procedure_end records, with their effect on the case's clock and deadlines."""

    def __init__(self, store: RecordStore, deadlines: Deadlines) -> None:
        self.store = store
        self.deadlines = deadlines

    def handle(self, context: BatchContext, pending: list[Tagged[ProcedureStartRow | ProcedureEndRow]]) -> None:
        """Starts and ends of one batch, one by one in input order; listeners get the stored ones of each kind."""
        started: list[ProcedureStartRow] = []
        ended: list[ProcedureEndRow] = []
        for line, kind, row in pending:
            if kind == "procedure_start":
                start = cast("ProcedureStartRow", row)
                if self._start(context, line, start):
                    started.append(start)
            else:
                end = cast("ProcedureEndRow", row)
                if self._end(context, line, end):
                    ended.append(end)
        self.store.notify(context, "procedure_start", started)
        self.store.notify(context, "procedure_end", ended)

    def _case_for(
        self, context: BatchContext, kind: str, line: int, row: ProcedureStartRow | ProcedureEndRow
    ) -> CaseState | None:
        case = self.store.fetch_cases(context, [row["case_no"]], CASE_READ_COLUMNS, lock=True).get(row["case_no"])
        if case is None:
            context.reject_unknown_case(kind, line, row)
        return case

    def _already_stored(
        self,
        context: BatchContext,
        kind: str,
        line: int,
        row: AnyRow,
        *,
        at: str,
        compare: tuple[str, ...],
    ) -> bool:
        """True when the procedure event of this case at ``row[at]`` is stored: a duplicate, or a conflict."""
        table = self.store.tables["special_procedures"]
        stored = (
            context.conn.execute(
                select(*(table.c[name] for name in compare)).where(
                    and_(table.c.case_no == row["case_no"], table.c[at] == row[at])
                )
            )
            .mappings()
            .first()
        )
        if stored is None:
            return False
        differing = differences(row, stored, compare)
        if differing:
            context.reject_conflict(kind, line, row, old=stored, differing=differing)
        else:
            context.duplicate(kind, line, row)
        return True

    def _start(self, context: BatchContext, line: int, row: ProcedureStartRow) -> bool:
        if self._already_stored(
            context, "procedure_start", line, row, at="started_at", compare=("kind_code", "reason")
        ):
            return False
        case = self._case_for(context, "procedure_start", line, row)
        if case is None:
            return False
        if case["status"] != "open":
            context.reject_case_state(
                "procedure_start",
                line,
                row,
                f"case {row['case_no']!r} is {case['status']}; a special procedure needs an open case",
            )
            return False
        if case["clock_stopped"]:
            context.reject_case_state(
                "procedure_start", line, row, f"case {row['case_no']!r} already has a special procedure running"
            )
            return False
        if row["started_at"] < case["accepted_at"]:
            context.reject_before_acceptance(
                "procedure_start", line, row, field_name="started_at", event="starts", accepted_at=case["accepted_at"]
            )
            return False
        table = self.store.tables["special_procedures"]
        conn = context.conn
        conn.execute(
            table.insert().values(
                case_no=row["case_no"],
                kind_code=row["kind_code"],
                started_at=row["started_at"],
                reason=row["reason"],
                result="",
                workdays=0,
            )
        )
        cases = self.store.tables["cases"]
        conn.execute(update(cases).where(cases.c.case_no == row["case_no"]).values(clock_stopped=True))
        case = case.copy()
        case["clock_stopped"] = True
        row["case"] = case
        context.accept("procedure_start", [(line, row)])
        return True

    def _end(self, context: BatchContext, line: int, row: ProcedureEndRow) -> bool:
        if self._already_stored(context, "procedure_end", line, row, at="ended_at", compare=("result",)):
            return False
        case = self._case_for(context, "procedure_end", line, row)
        if case is None:
            return False
        table = self.store.tables["special_procedures"]
        conn = context.conn
        open_procedure = (
            conn.execute(
                select(table)
                .where(and_(table.c.case_no == row["case_no"], table.c.ended_at.is_(None)))
                .order_by(table.c.started_at.desc())
            )
            .mappings()
            .first()
        )
        if open_procedure is None:
            context.reject_case_state(
                "procedure_end", line, row, f"case {row['case_no']!r} has no special procedure running"
            )
            return False
        if row["ended_at"] < open_procedure["started_at"]:
            context.reject(
                "procedure_end",
                line,
                row,
                field_name="ended_at",
                reason=INCONSISTENT,
                detail=f"ends {shown(row['ended_at'])} before the procedure started "
                f"({shown(open_procedure['started_at'])})",
            )
            return False
        items = self.store.items_for(context, [case["implementation_code"]])
        # The version in force when the case was accepted (docs/domain.md §9): its units count the new dues.
        timeline = items[case["implementation_code"]]
        item = timeline.in_force(case["accepted_at"]) or timeline.versions[0][1]
        cases = self.store.tables["cases"]
        limits = conn.execute(
            select(cases.c.promised_limit, cases.c.legal_limit).where(cases.c.case_no == row["case_no"])
        ).one()
        try:
            workdays = procedure_workdays(self.deadlines.calendar, open_procedure["started_at"], row["ended_at"])
            stop = case["clock_stop_workdays"] + workdays
            promised_due, legal_due = self.deadlines.due_dates(
                item, case["accepted_at"], limits.promised_limit, limits.legal_limit, stop
            )
        except CalendarError as exc:
            context.reject(
                "procedure_end",
                line,
                row,
                field_name="ended_at",
                reason=CALENDAR,
                detail=f"cannot count the procedure's working days: {exc}",
            )
            return False
        conn.execute(
            update(table)
            .where(table.c.id == open_procedure["id"])
            .values(ended_at=row["ended_at"], result=row["result"], workdays=workdays)
        )
        conn.execute(
            update(cases)
            .where(cases.c.case_no == row["case_no"])
            .values(
                clock_stop_workdays=cases.c.clock_stop_workdays + workdays,
                promised_due_at=promised_due,
                legal_due_at=legal_due,
                clock_stopped=False,
            )
        )
        previous: PreviousDeadlines = {
            "promised_due_at": case["promised_due_at"],
            "legal_due_at": case["legal_due_at"],
            "clock_stop_workdays": case["clock_stop_workdays"],
        }
        case = case.copy()
        case.update(
            {
                "clock_stop_workdays": stop,
                "promised_due_at": promised_due,
                "legal_due_at": legal_due,
                "clock_stopped": False,
            }
        )
        procedure = cast("SpecialProcedureRow", dict(open_procedure))
        procedure.update({"ended_at": row["ended_at"], "result": row["result"], "workdays": workdays})
        row["case"] = case
        row["procedure"] = procedure
        row["previous_case"] = previous
        context.accept("procedure_end", [(line, row)])
        return True
