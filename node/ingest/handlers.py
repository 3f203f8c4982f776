"""What each record kind checks against stored state and writes (special procedures: node.ingest.procedures).

Items, acceptances (new cases), steps, payments, completions, evaluations and complaints. Every handler takes one
batch's validated records of its kind: repeats of a key within the batch wait for a later round, stored keys become
duplicates or conflicts, records whose item or case is missing (or whose deadline the calendar cannot answer), dated
implausibly (an acceptance or completion ahead of the node clock plus its allowed skew, an event before its case's
acceptance) or not allowed in their case's state (an evaluation of an open case) are rejected with their line and
field (docs/domain.md §11), and the rest are written with their effects on their cases, then handed to the listeners.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from node.errors import CalendarError
from node.ingest.deadlines import Deadlines, calendar_detail
from node.ingest.item_versions import ItemRegister
from node.ingest.outcomes import BatchContext, shown
from node.ingest.procedures import ProcedureHandler
from node.ingest.records import (
    AcceptanceRow,
    CaseDeadlines,
    CaseState,
    ComplaintRow,
    CompletionRow,
    EvaluationRow,
    ItemLimits,
    ItemRow,
    PaymentRow,
    Pending,
    StepRow,
    Tagged,
)
from node.ingest.storage import RecordStore, split_repeats
from node.ingest.validate import CALENDAR, KIND_TABLES, UNKNOWN_ITEM

log = logging.getLogger(__name__)

# A handler takes one batch's records of its kind (the importer groups them by kind, so Any stands for that kind's row).
Handler = Callable[[BatchContext, list[Tagged[Any]]], None]
# Payments and evaluations share one handler.
CaseEventT = TypeVar("CaseEventT", PaymentRow, EvaluationRow)


class KindHandlers:
    """The handler of each record kind, by kind; one instance serves an importer for its lifetime."""

    def __init__(self, store: RecordStore, deadlines: Deadlines) -> None:
        self.store = store
        self.deadlines = deadlines
        procedures = ProcedureHandler(store, deadlines)
        self.items = ItemRegister(store)
        self.by_kind: dict[str, Handler] = {
            "item": self._store_items,
            "acceptance": self._store_acceptances,
            # Starts and ends are one phase, taken in input order by one handler.
            "procedure_start": procedures.handle,
            "procedure_end": procedures.handle,
            "step": self._store_steps,
            "payment": self._store_payments,
            "completion": self._store_completions,
            "evaluation": self._store_evaluations,
            "complaint": self._store_complaints,
        }

    def _again(self, context: BatchContext, kind: str, repeats: list[Tagged[Any]]) -> None:
        """Store a batch's repeats of a key in another round, now that the first of each has landed."""
        if repeats:
            self.by_kind[kind](context, repeats)

    def _store_items(self, context: BatchContext, pending: list[Tagged[ItemRow]]) -> None:
        # New items and new versions of stored ones (node.ingest.item_versions); a repeat waits for the next round.
        firsts, repeats = split_repeats(pending, "item")
        fresh = self.items.handle(context, firsts)
        rows = [row for _, row in fresh]
        self.store.notify(context, "item", rows)
        context.accept("item", fresh)
        self._again(context, "item", repeats)

    def _store_acceptances(self, context: BatchContext, pending: list[Tagged[AcceptanceRow]]) -> None:
        firsts, repeats = split_repeats(pending, "acceptance")
        fresh = self.store.drop_known(context, "acceptance", firsts)
        items = self.store.items_for(context, (row["implementation_code"] for _, row in fresh))
        accepted: list[Pending[AcceptanceRow]] = []
        # Derived columns every new case starts with (the row dict becomes the full cases row).
        initial: dict[str, Any] = {
            "clock_stop_workdays": 0,
            "clock_stopped": False,
            "status": "open",
            "completed_at": None,
            "supplement_count": 0,
            "return_count": 0,
            "recorded_at": context.now,
        }
        deadlines = self.deadlines.deadline_fields
        # The columns a new case takes from its item, its deadlines and the initial state, merged once per
        # (item, deadline fields): one dict update per row instead of three.
        merged: dict[tuple[int, int], tuple[ItemLimits, CaseDeadlines, dict[str, Any]]] = {}  # the pair pins the ids
        latest = context.latest
        for line, row in fresh:
            if row["accepted_at"] > latest:
                context.reject_in_future("acceptance", line, row, field_name="accepted_at")
                continue
            timeline = items.get(row["implementation_code"])
            if timeline is None:
                context.reject(
                    "acceptance",
                    line,
                    row,
                    field_name="implementation_code",
                    reason=UNKNOWN_ITEM,
                    detail=f"unknown item code {row['implementation_code']!r}",
                )
                continue
            # The version in force at acceptance gives the case its limits (docs/domain.md §9).
            item = timeline.in_force(row["accepted_at"])
            if item is None:
                context.reject(
                    "acceptance",
                    line,
                    row,
                    field_name="accepted_at",
                    reason=UNKNOWN_ITEM,
                    detail=f"item {row['implementation_code']!r} has no version in force then (its first takes "
                    f"effect {shown(timeline.first_effective())})",
                )
                continue
            try:
                derived = deadlines(item, row["accepted_at"], row["case_type_code"] == "1")
            except CalendarError as exc:
                context.reject(
                    "acceptance",
                    line,
                    row,
                    field_name="accepted_at",
                    reason=CALENDAR,
                    detail=f"cannot compute the deadline: {exc}",
                )
                continue
            entry = merged.get((id(item), id(derived)))
            if entry is None:
                entry = merged[(id(item), id(derived))] = (item, derived, {**item.case_fields, **derived, **initial})
            # Exactly the NotRequired keys of AcceptanceRow, which mypy cannot see in a merged dict.
            row.update(entry[2])  # type: ignore[typeddict-item]
            accepted.append((line, row))
        rows = [row for _, row in accepted]
        self.store.insert(context, "cases", rows)
        self.store.notify(context, "acceptance", rows)
        context.accept("acceptance", accepted)
        self._again(context, "acceptance", repeats)

    def _store_steps(self, context: BatchContext, pending: list[Tagged[StepRow]]) -> None:
        firsts, repeats = split_repeats(pending, "step")
        # entered_at defaults to the import time; a re-send without it is still the same step.
        fresh = self.store.drop_known(
            context, "step", firsts, lambda row: frozenset({"entered_at"}) if row["entered_at"] is None else frozenset()
        )
        fresh, cases = self.store.with_known_cases(context, "step", fresh)
        increments: dict[str, list[int]] = {}
        uncovered: list[str] = []
        due = self.deadlines.due
        accepted: list[Pending[StepRow]] = []
        for line, row in fresh:
            case = cases[row["case_no"]]
            if row["started_at"] < case["accepted_at"]:
                context.reject_before_acceptance(
                    "step", line, row, field_name="started_at", event="starts", accepted_at=case["accepted_at"]
                )
                continue
            accepted.append((line, row))
            if row["entered_at"] is None:
                row["entered_at"] = context.now
            step_limit = row["step_limit"]
            row["step_due_at"] = None
            if step_limit is not None:
                # The step's own due (R05 judges finished and pending steps by it); steps count working days.
                try:
                    row["step_due_at"] = due(row["started_at"], step_limit, "1", 0)
                except CalendarError as exc:
                    # The step itself is fine; only its limit cannot be judged. Said loudly, never guessed.
                    uncovered.append(f"{row['case_no']}/{row['step_name']}: {exc}")
            action = row["action"]
            if action in ("supplement", "return"):
                case = case.copy()
                counter: Literal["supplement_count", "return_count"] = (
                    "supplement_count" if action == "supplement" else "return_count"
                )
                case[counter] += 1
                cases[row["case_no"]] = case
                pair = increments.setdefault(row["case_no"], [0, 0])
                pair[0 if action == "supplement" else 1] += 1
            row["case"] = case
        if uncovered:
            log.warning(
                "%s: %s steps stored without a step due (R05 cannot judge them), first: %s",
                context.source,
                len(uncovered),
                uncovered[0],
            )
        rows = [row for _, row in accepted]
        self.store.insert(context, "steps", rows)
        self.store.backend.update_cases(
            context.conn,
            "supplement_count = supplement_count + {supplements}, return_count = return_count + {returns}",
            [("supplements", "integer"), ("returns", "integer")],
            [(supplements, returns, case_no) for case_no, (supplements, returns) in increments.items()],
        )
        self.store.notify(context, "step", rows)
        context.accept("step", accepted)
        self._again(context, "step", repeats)

    def _store_case_events(
        self,
        context: BatchContext,
        kind: str,
        pending: list[Tagged[CaseEventT]],
        admit: Callable[[int, CaseEventT, CaseState], bool],
    ) -> None:
        """Payments and evaluations: keyed by (case, time), need an existing case, change nothing on it.

        ``admit`` checks a record against its case (rejecting it, False) and completes the row to store.
        """
        firsts, repeats = split_repeats(pending, kind)
        fresh = self.store.drop_known(context, kind, firsts)
        fresh, cases = self.store.with_known_cases(context, kind, fresh)
        accepted: list[Pending[CaseEventT]] = []
        for line, row in fresh:
            case = cases[row["case_no"]]
            if admit(line, row, case):
                row["case"] = case
                accepted.append((line, row))
        rows = [row for _, row in accepted]
        self.store.insert(context, KIND_TABLES[kind], rows)
        self.store.notify(context, kind, rows)
        context.accept(kind, accepted)
        self._again(context, kind, repeats)

    def _store_payments(self, context: BatchContext, pending: list[Tagged[PaymentRow]]) -> None:
        def admit(line: int, row: PaymentRow, case: CaseState) -> bool:
            if row["paid_at"] < case["accepted_at"]:
                context.reject_before_acceptance(
                    "payment", line, row, field_name="paid_at", event="paid", accepted_at=case["accepted_at"]
                )
                return False
            return True

        self._store_case_events(context, "payment", pending, admit)

    def _store_evaluations(self, context: BatchContext, pending: list[Tagged[EvaluationRow]]) -> None:
        def admit(line: int, row: EvaluationRow, case: CaseState) -> bool:
            if row["evaluated_at"] < case["accepted_at"]:
                context.reject_before_acceptance(
                    "evaluation",
                    line,
                    row,
                    field_name="evaluated_at",
                    event="evaluated",
                    accepted_at=case["accepted_at"],
                )
                return False
            if case["status"] == "open":
                # An evaluation (好差评) rates a completed case; the completion comes first (KIND_ORDER).
                context.reject_case_state(
                    "evaluation", line, row, f"case {row['case_no']!r} is still open: only a completed case is rated"
                )
                return False
            # A 4 or 5 ("dissatisfied") needs a follow-up (docs/domain.md §7); it starts open.
            row["followup_status"] = "open" if row["satisfaction_code"] >= 4 else "none"
            return True

        self._store_case_events(context, "evaluation", pending, admit)

    def _store_completions(self, context: BatchContext, pending: list[Tagged[CompletionRow]]) -> None:
        firsts, repeats = split_repeats(pending, "completion")
        fresh = self.store.drop_known(context, "completion", firsts)
        fresh, cases = self.store.with_known_cases(context, "completion", fresh)
        accepted: list[Pending[CompletionRow]] = []
        updates: list[tuple[Any, ...]] = []
        dt_param = self.store.backend.dt_param
        workdays_used = self.deadlines.workdays_used
        latest = context.latest
        for line, row in fresh:
            case = cases[row["case_no"]]
            completed_at = row["completed_at"]
            if completed_at > latest:
                context.reject_in_future("completion", line, row, field_name="completed_at")
                continue
            if completed_at < case["accepted_at"]:
                context.reject_before_acceptance(
                    "completion",
                    line,
                    row,
                    field_name="completed_at",
                    event="completed",
                    accepted_at=case["accepted_at"],
                )
                continue
            if case["status"] != "open":
                context.reject_case_state(
                    "completion", line, row, f"case {row['case_no']!r} is already {case['status']}"
                )
                continue
            try:
                # The working days used (a metric) need every year from acceptance to completion in the calendar:
                # without one, the record is rejected here rather than failing the whole batch later.
                row["workdays_used"] = workdays_used(case, completed_at)
            except CalendarError as exc:
                context.reject(
                    "completion",
                    line,
                    row,
                    field_name="completed_at",
                    reason=CALENDAR,
                    detail=calendar_detail(self.deadlines.calendar, case["accepted_at"], completed_at, exc),
                )
                continue
            # Each case appears once per round (split_repeats) and was fetched for this round: update it in place.
            case["status"] = "completed"
            case["completed_at"] = completed_at
            row["case"] = case
            updates.append((dt_param(completed_at), row["case_no"]))
            accepted.append((line, row))
        rows = [row for _, row in accepted]
        self.store.insert(context, "completions", rows)
        self.store.backend.update_cases(
            context.conn,
            "status = 'completed', completed_at = {completed_at}",
            [("completed_at", "timestamp")],
            updates,
        )
        self.store.notify(context, "completion", rows)
        context.accept("completion", accepted)
        self._again(context, "completion", repeats)

    def _store_complaints(self, context: BatchContext, pending: list[Tagged[ComplaintRow]]) -> None:
        firsts, repeats = split_repeats(pending, "complaint")
        fresh = self.store.drop_known(context, "complaint", firsts)
        rows = [row for _, row in fresh]
        self.store.insert(context, "complaints", rows)
        self.store.notify(context, "complaint", rows)
        context.accept("complaint", fresh)
        self._again(context, "complaint", repeats)
