"""The rule engine: event-driven evaluation of newly stored records, the periodic scan, and escalation.

Event-driven (called by the RulesListener inside the import transaction):

* step: R05 step ended past its own limit, or still pending (环节办理状态 1, no end) and already past it when it
  arrives; R07 repeated supplement, R08 return without an opinion, R09 late entry (only when the source sent
  数据录入时间: the importer stamps a missing one with the import time);
* completion: R02/R03 when completed past the promised/legal limit (if no alert yet), R08 refusal without reason,
  R06 when its 是否收费 declares fees on an item that charges none or the case's payments total above the standard
  (once per case, and not when a payment already raised R06 on it); the open-overdue gauges of the completing
  cases are closed;
* payment: R06 fee on an item that charges none, or above its standard;
* acceptance, procedure_end: the case's (new) deadlines are handed to the next scan (see "Incremental scan").

Overdue-ness of open cases is left to the scan on purpose: a historical import delivers acceptances before their
completions, so judging a case "open and overdue" the moment its acceptance arrives would raise false cards.

Periodic scan (``run_scan``), one transaction, set-based SQL per rule and per distinct threshold setting:

* R01 open, running (not clock-stopped) cases due within ``reminder_workdays``; R02 past the promised limit; R03 past
  the legal limit — each a SELECT of candidates with NOT EXISTS on the alerts' unique (rule_id, subject) index,
  then one INSERT ... ON CONFLICT DO NOTHING RETURNING, so concurrent scans never duplicate and only inserted
  alerts are counted in the metrics;
* R05 pending steps of open cases past their step due (``steps.step_due_at``, computed at import), over the partial
  index of pending steps;
* R10/R11 overdue complaints (few rows: their deadlines are computed in Python);
* R04 yellow cards uncorrected at their ``correct_by`` (node.supervision.alerts.escalate_overdue_yellows).

Incremental scan: node counters remember the previous scan time (``scan.last_at``) and the earliest deadline of any
case accepted or re-timed since (``scan.dirty_from``, lowered by the listener). A scan at ``now`` only examines
deadlines in [min(last_at, dirty_from), now) — everything earlier was already judged at a time past its deadline —
so a periodic scan costs an index range read, not a pass over every open case. A changed supervision config
(``scan.config_fingerprint``), a first scan or ``full=True`` examines every open case. Pending steps work the same
way with their own marker (``scan.step_dirty_from``, lowered by step imports to the earliest new pending due).
"""

from __future__ import annotations

import json
import logging
import time as time_module
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    String,
    Table,
    bindparam,
    cast,
    exists,
    func,
    literal,
    literal_column,
    select,
    tuple_,
)

from node.config import SupervisionConfig
from node.domain import due_at
from node.errors import CalendarError
from node.store import (
    Alert,
    Case,
    Complaint,
    Item,
    Payment,
    Step,
    compare_and_set_counter,
    counter_values,
    from_micros,
    lock_revision,
    lower_counter,
    set_counter,
    to_micros,
)
from node.supervision.alerts import AlertDraft, RaisedAlert, correct_by_deadline, escalate_overdue_yellows, raise_alerts
from node.supervision.metrics import OVERDUE_GAUGE_RULES, BucketKey, Deltas, add_to_buckets, merge_deltas
from node.supervision.rulebook import (
    R01,
    R02,
    R03,
    R05,
    R06,
    R07,
    R08,
    R09,
    R10,
    R11,
    RuleGroup,
    Thresholds,
    case_subject,
    complaint_subject,
    completion_subject,
    payment_subject,
    step_subject,
)

if TYPE_CHECKING:
    from node.app import Node
    from node.domain import WorkCalendar

__all__ = [
    "SCAN_DIRTY_FROM",
    "SCAN_FINGERPRINT",
    "SCAN_LAST_AT",
    "SCAN_MAX_AT",
    "SCAN_STEP_DIRTY_FROM",
    "RuleEngine",
    "ScanResult",
    "run_scan",
]

log = logging.getLogger(__name__)

SCAN_LAST_AT = "scan.last_at"
SCAN_DIRTY_FROM = "scan.dirty_from"
SCAN_FINGERPRINT = "scan.config_fingerprint"
SCAN_MAX_AT = "scan.max_at"  # the latest "as of" time any scan ever ran at
SCAN_STEP_DIRTY_FROM = "scan.step_dirty_from"  # earliest due of a pending step imported since the last scan
NOTHING_DIRTY = to_micros(datetime(9999, 1, 1))
REFUSAL_RESULT_CODES = frozenset({"2", "3"})
_FEN = Decimal("0.01")
_IN_CHUNK = 2000  # keys per IN (...) list: far below SQLite's and PostgreSQL's bound-parameter limits

_cases: Table = Case.__table__  # type: ignore[assignment]
_alerts: Table = Alert.__table__  # type: ignore[assignment]
_complaints: Table = Complaint.__table__  # type: ignore[assignment]
_items: Table = Item.__table__  # type: ignore[assignment]
_steps: Table = Step.__table__  # type: ignore[assignment]
_payments: Table = Payment.__table__  # type: ignore[assignment]


@dataclass
class ScanResult:
    """What one scan did: the alerts it raised (escalations included) and how it ran."""

    now: datetime
    full: bool
    raised: list[RaisedAlert] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def by_rule(self) -> dict[str, int]:
        """Number of alerts raised per rule id."""
        counts: dict[str, int] = {}
        for alert in self.raised:
            counts[alert.draft.rule_id] = counts.get(alert.draft.rule_id, 0) + 1
        return dict(sorted(counts.items()))

    def to_dict(self, max_alerts: int | None = 1000) -> dict[str, Any]:
        """JSON-ready summary (at most ``max_alerts`` alerts listed; the counts are always complete)."""
        shown = self.raised if max_alerts is None else self.raised[:max_alerts]
        return {
            "now": self.now.isoformat(),
            "full": self.full,
            "seconds": round(self.seconds, 4),
            "raised_total": len(self.raised),
            "by_rule": self.by_rule,
            "warnings": list(self.warnings),
            "alerts": [
                {
                    "id": alert.id,
                    "rule_id": alert.draft.rule_id,
                    "severity": alert.draft.severity,
                    "subject": alert.draft.subject,
                    "department": alert.draft.department,
                    "message": alert.draft.message,
                }
                for alert in shown
            ],
        }


def _chunks(values: Sequence[Any], size: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _next_midnight(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time())


class RuleEngine:
    """Evaluates the rule catalogue for one node: on new records, and in the periodic scan."""

    def __init__(self, config: SupervisionConfig, calendar: WorkCalendar) -> None:
        self.thresholds = Thresholds(config)
        self.calendar = calendar
        self._fingerprint = self.thresholds.fingerprint()
        self._fees: dict[str, tuple[bool, Decimal | None]] = {}
        self._deadlines: dict[tuple[int, datetime], datetime | None] = {}
        # Problems met while evaluating (a year missing from the calendar): reported, never guessed around.
        self.warnings: list[str] = []

    # -- helpers ---------------------------------------------------------------------------------------------------
    def _correct_by(self, rule_id: str, item_type: str, now: datetime) -> datetime | None:
        return self._supervision_deadline(self.thresholds.settings(rule_id, item_type).supervision_workdays, now)

    def _supervision_deadline(self, workdays: int, now: datetime) -> datetime | None:
        """A yellow card's correct_by; None (logged loudly) when the calendar lacks the year, never a guess."""
        # A batch raises many cards at one ``now``: computed once per (workdays, day), not per card.
        key = (workdays, now)
        if key in self._deadlines:
            return self._deadlines[key]
        try:
            deadline: datetime | None = correct_by_deadline(self.calendar, now, workdays)
        except CalendarError as exc:
            self.warnings.append(f"yellow cards raised without a supervision deadline: {exc}")
            log.error("cannot compute a yellow card's supervision deadline: %s", exc)
            return None
        if len(self._deadlines) > 1000:
            self._deadlines.clear()
        self._deadlines[key] = deadline
        return deadline

    def _reminder_horizon(self, settings_workdays: int, at: datetime) -> datetime:
        """Cases due before this instant are within the reminder window at ``at``."""
        return _next_midnight(self.calendar.add_workdays(at.date(), settings_workdays))

    # -- periodic scan ---------------------------------------------------------------------------------------------
    def scan(self, conn: Connection, now: datetime, *, full: bool = False) -> ScanResult:
        """Run every scan rule as of ``now`` in the caller's transaction."""
        started = time_module.perf_counter()
        # Serialize with imports' metric writes first, so the open/closed state read below cannot go stale.
        lock_revision(conn)
        state = counter_values(
            conn, (SCAN_LAST_AT, SCAN_DIRTY_FROM, SCAN_STEP_DIRTY_FROM, SCAN_FINGERPRINT, SCAN_MAX_AT)
        )
        last_at, dirty_from = state.get(SCAN_LAST_AT), state.get(SCAN_DIRTY_FROM)
        step_dirty_from = state.get(SCAN_STEP_DIRTY_FROM)
        fingerprint = self._fingerprint
        config_changed = state.get(SCAN_FINGERPRINT) != fingerprint
        full = full or last_at is None or config_changed
        previous = None if full or last_at is None else from_micros(last_at)
        dirty = from_micros(dirty_from) if dirty_from is not None and not full else None

        self.warnings = []
        raised: list[RaisedAlert] = []
        for group in self.thresholds.groups(R01):
            try:
                horizon = self._reminder_horizon(group.settings.reminder_workdays, now)
                lower = None
                if previous is not None:
                    lower = self._reminder_horizon(group.settings.reminder_workdays, previous)
                    lower = min(lower, dirty) if dirty is not None else lower
            except CalendarError as exc:
                self.warnings.append(f"{R01} reminders skipped: {exc}")
                log.error("%s reminders skipped: %s", R01, exc)
                continue
            raised += self._scan_cases(
                conn,
                R01,
                group,
                "promised_due_at",
                now=now,
                due_not_before=now,
                due_before=horizon,
                lower=lower,
            )
        for rule_id, due_column in ((R02, "promised_due_at"), (R03, "legal_due_at")):
            lower = None
            if previous is not None:
                lower = min(previous, dirty) if dirty is not None else previous
            for group in self.thresholds.groups(rule_id):
                raised += self._scan_cases(
                    conn, rule_id, group, due_column, now=now, due_not_before=None, due_before=now, lower=lower
                )
        step_lower = None
        if previous is not None:
            step_dirty = from_micros(step_dirty_from) if step_dirty_from is not None else None
            step_lower = min(previous, step_dirty) if step_dirty is not None else previous
        for group in self.thresholds.groups(R05):
            raised += self._scan_pending_steps(conn, group, now=now, lower=step_lower)
        raised += self._scan_complaints(conn, now)
        raised += escalate_overdue_yellows(conn, self.thresholds, now)

        new_last = to_micros(now) if full or last_at is None else max(last_at, to_micros(now))
        set_counter(conn, SCAN_LAST_AT, new_last)
        # Compare-and-set: an import that lowered dirty_from meanwhile keeps its value for the next scan.
        compare_and_set_counter(conn, SCAN_DIRTY_FROM, dirty_from, NOTHING_DIRTY)
        compare_and_set_counter(conn, SCAN_STEP_DIRTY_FROM, step_dirty_from, NOTHING_DIRTY)
        if config_changed:
            set_counter(conn, SCAN_FINGERPRINT, fingerprint)
        if state.get(SCAN_MAX_AT, -1) < to_micros(now):
            set_counter(conn, SCAN_MAX_AT, to_micros(now))
        result = ScanResult(
            now=now,
            full=full,
            raised=raised,
            seconds=time_module.perf_counter() - started,
            warnings=list(self.warnings),
        )
        log.info(
            "scan as of %s (%s): %s alerts raised %s in %.3f s",
            now.isoformat(),
            "full" if full else "incremental",
            len(raised),
            result.by_rule,
            result.seconds,
        )
        return result

    def _scan_cases(
        self,
        conn: Connection,
        rule_id: str,
        group: RuleGroup,
        due_column: str,
        *,
        now: datetime,
        due_not_before: datetime | None,
        due_before: datetime,
        lower: datetime | None,
    ) -> list[RaisedAlert]:
        """One case rule for one threshold group: open, running cases with due_not_before <= due < due_before."""
        params: dict[str, Any] = {"due_before": due_before}
        if group.others:
            type_filter = "not_in" if group.excluded_types else "all"
            params["types"] = sorted(group.excluded_types)
        else:
            type_filter = "in"
            params["types"] = sorted(group.item_types)
        # One lower bound, so the planner ranges over the (status, due) index between two values.
        bounds = [bound for bound in (due_not_before, lower) if bound is not None]
        if bounds:
            params["lower"] = max(bounds)
        if type_filter == "all":
            del params["types"]
        statement = _case_candidates(rule_id, due_column, type_filter, bool(bounds))
        rows = conn.execute(statement, params).all()
        if not rows:
            return []
        correct_by = None
        if rule_id == R02:
            correct_by = self._supervision_deadline(group.settings.supervision_workdays, now)
        drafts = [
            AlertDraft(
                rule_id=rule_id,
                subject=case_subject(row.case_no),
                department=row.department,
                implementation_code=row.implementation_code,
                message=_case_message(rule_id, row.case_no, row.due),
                raised_at=now,
                case_no=row.case_no,
                correct_by=correct_by,
                basic_code=row.basic_code,
                item_type_code=row.item_type_code,
                open_case_day=row.accepted_at.date(),
            )
            for row in rows
        ]
        return raise_alerts(conn, drafts)

    def _scan_pending_steps(
        self, conn: Connection, group: RuleGroup, *, now: datetime, lower: datetime | None
    ) -> list[RaisedAlert]:
        """R05 for one threshold group: pending steps of open cases whose step due is before ``now``, no alert yet.

        Set-based over the partial index of pending steps; ``lower`` (incremental scans) skips dues already judged.
        A step's due never moves (step limits ignore clock stops, as for finished steps), so the window is exact.
        """
        params: dict[str, Any] = {"due_before": now}
        if group.others:
            type_filter = "not_in" if group.excluded_types else "all"
            if group.excluded_types:
                params["types"] = sorted(group.excluded_types)
        else:
            type_filter = "in"
            params["types"] = sorted(group.item_types)
        if lower is not None:
            params["lower"] = lower
        rows = conn.execute(_pending_step_candidates(type_filter, lower is not None), params).all()
        drafts = [
            AlertDraft(
                rule_id=R05,
                subject=step_subject(row.case_no, row.id),
                department=row.department,
                implementation_code=row.implementation_code,
                message=_pending_step_message(row.case_no, row.step_name, row.step_limit, row.step_due_at),
                raised_at=now,
                case_no=row.case_no,
                step_id=int(row.id),
                post=row.post or "",
                basic_code=row.basic_code,
                item_type_code=row.item_type_code,
            )
            for row in rows
        ]
        return raise_alerts(conn, drafts)

    def _scan_complaints(self, conn: Connection, now: datetime) -> list[RaisedAlert]:
        """R10 (decision overdue) and R11 (handling overdue) over complaints still waiting; few rows by nature."""
        drafts: list[AlertDraft] = []
        for rule_id in (R10, R11):
            rows = conn.execute(_complaint_candidates(rule_id)).all()
            for row in rows:
                if not self.thresholds.enabled(rule_id, row.item_type):
                    continue
                try:
                    due = self._complaint_due(rule_id, row)
                except CalendarError as exc:
                    self.warnings.append(f"complaint {row.complaint_no}: {rule_id} not evaluated: {exc}")
                    log.warning("complaint %s: %s not evaluated: %s", row.complaint_no, rule_id, exc)
                    continue
                what = "受理/不予受理决定 decision" if rule_id == R10 else "办理 handling"
                if due >= now:
                    continue
                drafts.append(
                    AlertDraft(
                        rule_id=rule_id,
                        subject=complaint_subject(row.complaint_no),
                        department=row.handling_unit or row.respondent_unit,
                        implementation_code=row.item_code,
                        message=f"投诉 {row.complaint_no} {what} overdue since {due:%Y-%m-%d %H:%M}",
                        raised_at=now,
                        complaint_no=row.complaint_no,
                        case_no=row.case_no,
                        correct_by=self._correct_by(rule_id, row.item_type, now),
                        basic_code=row.item_basic_code,
                        item_type_code=row.item_type,
                    )
                )
        return raise_alerts(conn, drafts)

    def _complaint_due(self, rule_id: str, row: Any) -> datetime:
        """Decision (R10) or handling (R11) deadline, as node.supervision.complaints defines them."""
        if rule_id == R10:
            if row.decision_due_at is not None:
                return row.decision_due_at  # type: ignore[no-any-return]
            return due_at(self.calendar, row.received_at, self.thresholds.complaint_decision_workdays)
        workdays = self.thresholds.complaint_handling_workdays + max(int(row.extension_workdays or 0), 0)
        return due_at(self.calendar, row.decided_at or row.received_at, workdays)

    # -- event-driven evaluation -----------------------------------------------------------------------------------
    def on_records(
        self, conn: Connection, kind: str, records: Sequence[Mapping[str, Any]], now: datetime
    ) -> list[RaisedAlert]:
        """Evaluate newly stored records of one kind (ingest listener contract); returns the alerts raised."""
        self.warnings = []
        if not records or kind not in ("acceptance", "procedure_end", "step", "completion", "payment"):
            return []
        # Same lock order as the scan and every metric writer (the revision row first), whatever order the
        # listeners run in: a scan and an import can then never deadlock on each other's rows.
        lock_revision(conn)
        if kind in ("acceptance", "procedure_end"):
            self._mark_for_scan(conn, records)
            return []
        if kind == "step":
            self._mark_pending_steps(conn, records)
            return raise_alerts(conn, self._step_drafts(conn, records, now))
        if kind == "completion":
            self._close_overdue_gauges(conn, records)
            drafts = self._completion_drafts(records, now)
            drafts += self._completion_fee_drafts(conn, records, now)
            return raise_alerts(conn, drafts)
        if kind == "payment":
            return raise_alerts(conn, self._payment_drafts(conn, records, now))
        return []

    def _mark_for_scan(self, conn: Connection, records: Sequence[Mapping[str, Any]]) -> None:
        """New or re-timed open cases: make the next scan look back to their earliest deadline."""
        earliest: datetime | None = None
        for record in records:
            case_row = record.get("case") or record
            if case_row.get("status", "open") != "open":
                continue
            # The earliest deadline a scan may judge; without computed deadlines, the acceptance (always earlier).
            promised, legal = case_row.get("promised_due_at"), case_row.get("legal_due_at")
            candidate = case_row["accepted_at"] if promised is None or legal is None else min(promised, legal)
            if earliest is None or candidate < earliest:
                earliest = candidate
        if earliest is not None:
            lower_counter(conn, SCAN_DIRTY_FROM, to_micros(earliest))

    def _close_overdue_gauges(self, conn: Connection, records: Sequence[Mapping[str, Any]]) -> None:
        """Completing cases leave the open-overdue gauges of their acceptance-day cohort."""
        # The caller took the metric lock: a concurrent scan either committed its alerts before this read or will
        # see these completions. Only a scan raises R02/R03 on an open case, and only a scan run after the case
        # was accepted: a case accepted after the latest scan time cannot hold one (a historical bulk import skips
        # the lookup entirely).
        latest_scan = counter_values(conn, (SCAN_MAX_AT,)).get(SCAN_MAX_AT)
        if latest_scan is None:
            return
        scanned_after = from_micros(latest_scan)
        cases = {
            record["case"]["case_no"]: record["case"]
            for record in records
            if record["case"]["accepted_at"] < scanned_after
        }
        deltas: Deltas = {}
        case_numbers = sorted(cases)
        rules = sorted(OVERDUE_GAUGE_RULES)
        for chunk in _chunks(case_numbers):
            rows = conn.execute(
                select(_alerts.c.case_no, _alerts.c.rule_id).where(
                    _alerts.c.case_no.in_(chunk), _alerts.c.rule_id.in_(rules)
                )
            )
            for case_no, rule_id in rows:
                case_row = cases[case_no]
                key = BucketKey(
                    case_row["accepted_at"].date(),
                    case_row["department"],
                    case_row["implementation_code"],
                    case_row.get("basic_code") or "",
                    case_row.get("item_type_code") or "",
                )
                merge_deltas(deltas, {key: {OVERDUE_GAUGE_RULES[rule_id]: -1}})
        if deltas:
            add_to_buckets(conn, deltas)

    def _case_draft(
        self, rule_id: str, case_row: Mapping[str, Any], message: str, now: datetime, **extra: Any
    ) -> AlertDraft:
        item_type = case_row.get("item_type_code") or ""
        correct_by = None
        if rule_id in (R02, R07, R08):
            correct_by = self._correct_by(rule_id, item_type, now)
        return AlertDraft(
            rule_id=rule_id,
            subject=extra.pop("subject", None) or case_subject(case_row["case_no"]),
            department=case_row["department"],
            implementation_code=case_row["implementation_code"],
            message=message,
            raised_at=now,
            case_no=case_row["case_no"],
            correct_by=correct_by,
            basic_code=case_row.get("basic_code") or "",
            item_type_code=item_type,
            **extra,
        )

    def _completion_drafts(self, records: Sequence[Mapping[str, Any]], now: datetime) -> list[AlertDraft]:
        drafts: list[AlertDraft] = []
        for record in records:
            case_row = record["case"]
            item_type = case_row.get("item_type_code") or ""
            completed_at: datetime = record["completed_at"]
            no = case_row["case_no"]
            if not case_row.get("clock_stopped"):
                promised, legal = case_row["promised_due_at"], case_row["legal_due_at"]
                if completed_at > promised and self.thresholds.enabled(R02, item_type):
                    message = f"办件 {no} 超承诺时限办结: completed {_fmt(completed_at)}, promised {_fmt(promised)}"
                    drafts.append(self._case_draft(R02, case_row, message, now))
                if completed_at > legal and self.thresholds.enabled(R03, item_type):
                    message = f"办件 {no} 超法定时限办结: completed {_fmt(completed_at)} after legal {_fmt(legal)}"
                    drafts.append(self._case_draft(R03, case_row, message, now))
            result_code = record.get("result_code") or ""
            if (
                result_code in REFUSAL_RESULT_CODES
                and not (record.get("reason") or "").strip()
                and self.thresholds.enabled(R08, item_type)
            ):
                label = "不予批准 refused" if result_code == "2" else "不予受理 not accepted"
                message = f"办件 {no} {label} without a stated reason (未说明理由)"
                drafts.append(self._case_draft(R08, case_row, message, now))
        return drafts

    def _step_findings(self, record: Mapping[str, Any], now: datetime) -> list[tuple[str, str]]:
        """(rule id, message) of the step-level rules one step record breaks (R05, R08 return, R09)."""
        case_row = record["case"]
        item_type = case_row.get("item_type_code") or ""
        where = f"办件 {case_row['case_no']} 环节「{record.get('step_name', '')}」"
        started_at: datetime = record["started_at"]
        ended_at: datetime | None = record.get("ended_at")
        findings: list[tuple[str, str]] = []
        step_limit = record.get("step_limit")
        if step_limit is not None and self.thresholds.enabled(R05, item_type):
            step_due = self._step_due(record)
            if step_due is None:
                pass  # cannot judge (calendar lacks the year): logged by _step_due, never guessed
            elif ended_at is not None:
                if ended_at > step_due:
                    findings.append(
                        (
                            R05,
                            f"{where}超时: ended {_fmt(ended_at)}, limit {step_limit} workdays (due {_fmt(step_due)})",
                        )
                    )
            elif _is_pending(record) and case_row.get("status") == "open" and step_due < now:
                # Still pending and already past its limit when it arrives; later ones are the scan's.
                findings.append(
                    (R05, _pending_step_message(case_row["case_no"], record["step_name"], step_limit, step_due))
                )
        no_opinion = not (record.get("opinion") or "").strip()
        if record.get("action") == "return" and no_opinion and self.thresholds.enabled(R08, item_type):
            findings.append((R08, f"{where}退回未说明理由: return without an opinion"))
        late = self.thresholds.settings(R09, item_type)
        entered_at: datetime | None = record.get("entered_at")
        # The importer stamps a missing 数据录入时间 with the import time (== now): that says nothing about when the
        # business system recorded the step, so only an entry time the source actually sent is judged.
        if late.enabled and entered_at is not None and entered_at != now:
            happened = ended_at or started_at
            if entered_at - happened > timedelta(hours=late.late_entry_hours):
                findings.append((R09, f"{where}延迟录入: happened {_fmt(happened)}, entered {_fmt(entered_at)}"))
        return findings

    def _step_due(self, record: Mapping[str, Any]) -> datetime | None:
        """A step's due: as the importer stored it, else computed; None (logged) when the calendar lacks the year."""
        if "step_due_at" in record:
            due: datetime | None = record["step_due_at"]
            return due
        try:
            return due_at(self.calendar, record["started_at"], int(record["step_limit"]))
        except CalendarError as exc:
            log.warning("step of case %s: %s not evaluated: %s", record["case"]["case_no"], R05, exc)
            return None

    def _mark_pending_steps(self, conn: Connection, records: Sequence[Mapping[str, Any]]) -> None:
        """Pending steps with a due: make the next scan look back to the earliest (it may precede the last scan)."""
        dues = [
            due
            for record in records
            if _is_pending(record)
            and record["case"].get("status") == "open"
            and (due := record.get("step_due_at")) is not None
        ]
        if dues:
            lower_counter(conn, SCAN_STEP_DIRTY_FROM, to_micros(min(dues)))

    def _step_drafts(self, conn: Connection, records: Sequence[Mapping[str, Any]], now: datetime) -> list[AlertDraft]:
        firing: list[tuple[str, Mapping[str, Any], str]] = []  # step-level findings: they need the step's id
        drafts: list[AlertDraft] = []
        for record in records:
            case_row = record["case"]
            settings = self.thresholds.settings(R07, case_row.get("item_type_code") or "")
            supplements = int(case_row.get("supplement_count") or 0)
            if record.get("action") == "supplement" and settings.enabled and supplements > settings.max_supplements:
                message = f"办件 {case_row['case_no']} 第 {supplements} 次补正，违反一次性告知: repeated supplement"
                drafts.append(self._case_draft(R07, case_row, message, now))
            firing.extend((rule_id, record, message) for rule_id, message in self._step_findings(record, now))
        if firing:
            ids = self._step_ids(conn, [record for _, record, _ in firing])
            for rule_id, record, message in firing:
                case_row = record["case"]
                step_id = ids[(case_row["case_no"], record["step_name"], record["started_at"])]
                draft = self._case_draft(
                    rule_id,
                    case_row,
                    message,
                    now,
                    subject=step_subject(case_row["case_no"], step_id),
                    step_id=step_id,
                    post=record.get("post") or "",
                )
                drafts.append(draft)
        return drafts

    @staticmethod
    def _step_ids(conn: Connection, records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, datetime], int]:
        """Ids of stored steps by natural key (the listener gets rows without their generated ids)."""
        ids: dict[tuple[str, str, datetime], int] = {}
        missing = []
        for record in records:
            key = (record["case"]["case_no"], record["step_name"], record["started_at"])
            if record.get("id") is not None:
                ids[key] = int(record["id"])
            else:
                missing.append(key)
        s = _steps.c
        for chunk in _chunks(sorted(set(missing))):
            rows = conn.execute(
                select(s.id, s.case_no, s.step_name, s.started_at).where(
                    tuple_(s.case_no, s.step_name, s.started_at).in_(chunk)
                )
            )
            for row in rows:
                ids[(row.case_no, row.step_name, row.started_at)] = int(row.id)
        return ids

    def _payment_drafts(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], now: datetime
    ) -> list[AlertDraft]:
        items = self._item_fees(conn, (record["case"]["implementation_code"] for record in records))
        firing: list[tuple[Mapping[str, Any], str]] = []
        for record in records:
            case_row = record["case"]
            if not self.thresholds.enabled(R06, case_row.get("item_type_code") or ""):
                continue
            amount = Decimal(str(record["amount"]))
            charges, standard = items.get(case_row["implementation_code"], (True, None))
            no = case_row["case_no"]
            if amount > 0 and not charges:
                firing.append((record, f"办件 {no} 违规收费 {amount} 元: the item charges no fee (不收费事项)"))
            elif standard is not None and amount > standard:
                firing.append((record, f"办件 {no} 超标准收费 {amount} 元 > standard {standard} 元"))
        if not firing:
            return []
        ids = self._payment_ids(conn, [record for record, _ in firing])
        drafts = []
        for record, message in firing:
            case_row = record["case"]
            payment_id = ids[(case_row["case_no"], record["paid_at"])]
            drafts.append(
                self._case_draft(R06, case_row, message, now, subject=payment_subject(case_row["case_no"], payment_id))
            )
        return drafts

    def _item_fees(self, conn: Connection, codes: Iterable[str]) -> dict[str, tuple[bool, Decimal | None]]:
        """(charges a fee, fee standard) per implementation code; remembered, since an item never changes."""
        known = self._fees
        missing = sorted({code for code in codes if code not in known})
        for chunk in _chunks(missing):
            rows = conn.execute(
                select(_items.c.implementation_code, _items.c.fee_flag, _items.c.fee_standard).where(
                    _items.c.implementation_code.in_(chunk)
                )
            )
            known.update({row.implementation_code: (bool(row.fee_flag), row.fee_standard) for row in rows})
        return known

    def _completion_fee_drafts(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], now: datetime
    ) -> list[AlertDraft]:
        """R06 from a completion's 是否收费: fees declared on an item that charges none, or paid above its standard.

        Above standard is judged on the case's payments in total (each payment alone was judged when it arrived).
        At most one R06 per case comes from its completion, and none when a payment already raised one for the
        case: the completion is further evidence of the same charge, not a second violation.
        """
        charged = [
            record
            for record in records
            if record.get("fee_flag") and self.thresholds.enabled(R06, record["case"].get("item_type_code") or "")
        ]
        if not charged:
            return []
        items = self._item_fees(conn, (record["case"]["implementation_code"] for record in charged))
        free: list[Mapping[str, Any]] = []
        standard_cases: list[Mapping[str, Any]] = []
        for record in charged:
            charges, standard = items.get(record["case"]["implementation_code"], (True, None))
            if not charges:
                free.append(record)
            elif standard is not None:
                standard_cases.append(record)
        totals = self._payment_totals(conn, [record["case"]["case_no"] for record in standard_cases])
        firing: list[tuple[Mapping[str, Any], str]] = []
        for record in free:
            no = record["case"]["case_no"]
            firing.append((record, f"办件 {no} 违规收费: completion declares fees (是否收费 = 1) on a no-fee item"))
        for record in standard_cases:
            no = record["case"]["case_no"]
            standard = items[record["case"]["implementation_code"]][1]
            total = totals.get(no)
            if standard is not None and total is not None and total > standard:
                firing.append((record, f"办件 {no} 超标准收费: fees paid {total} 元 in total > standard {standard} 元"))
        if not firing:
            return []
        already = self._cases_with_alert(conn, R06, [record["case"]["case_no"] for record, _ in firing])
        return [
            self._case_draft(R06, record["case"], message, now, subject=completion_subject(record["case"]["case_no"]))
            for record, message in firing
            if record["case"]["case_no"] not in already
        ]

    @staticmethod
    def _payment_totals(conn: Connection, case_numbers: Sequence[str]) -> dict[str, Decimal]:
        """Sum of the payments per case, in yuan to the fen (cases without payments are absent)."""
        if not case_numbers:
            return {}
        rows = _by_keys(
            conn, "SELECT case_no, sum(amount) FROM payments WHERE case_no {keys} GROUP BY case_no", case_numbers
        )
        # SQLite sums the amounts as floats: back to fen exactly (amounts have at most 2 decimals).
        return {case_no: Decimal(str(total)).quantize(_FEN) for case_no, total in rows}

    @staticmethod
    def _cases_with_alert(conn: Connection, rule_id: str, case_numbers: Sequence[str]) -> set[str]:
        """The cases among ``case_numbers`` already holding an alert of ``rule_id``."""
        found: set[str] = set()
        a = _alerts.c
        for chunk in _chunks(sorted(set(case_numbers))):
            rows = conn.execute(select(a.case_no).where(a.rule_id == rule_id, a.case_no.in_(chunk)))
            found.update(row.case_no for row in rows)
        return found

    @staticmethod
    def _payment_ids(conn: Connection, records: Sequence[Mapping[str, Any]]) -> dict[tuple[str, datetime], int]:
        ids: dict[tuple[str, datetime], int] = {}
        missing = []
        for record in records:
            key = (record["case"]["case_no"], record["paid_at"])
            if record.get("id") is not None:
                ids[key] = int(record["id"])
            else:
                missing.append(key)
        p = _payments.c
        for chunk in _chunks(sorted(set(missing))):
            rows = conn.execute(select(p.id, p.case_no, p.paid_at).where(tuple_(p.case_no, p.paid_at).in_(chunk)))
            ids.update({(row.case_no, row.paid_at): int(row.id) for row in rows})
        return ids


# Scan statements, built once and reused with bound values (building SQLAlchemy expressions on every scan would cost
# more than running them). Keyed by everything that changes their shape.
_STATEMENTS: dict[tuple[Any, ...], Any] = {}


def _case_candidates(rule_id: str, due_name: str, type_filter: str, with_lower: bool) -> Any:
    """Candidates of one case rule: open, running cases in a deadline window, of the group's item types, no alert yet.

    Window: ``due < :due_before`` [and ``>= :lower``]; "no alert yet" is a NOT EXISTS on the
    alerts' unique (rule_id, subject) index.
    """
    key = ("cases", rule_id, due_name, type_filter, with_lower)
    statement = _STATEMENTS.get(key)
    if statement is None:
        c = _cases.c
        due = c[due_name]
        conditions: list[ColumnElement[bool]] = [
            c.status == "open",
            ~c.clock_stopped,
            due < bindparam("due_before", type_=DateTime()),
        ]
        if type_filter == "in":
            conditions.append(c.item_type_code.in_(bindparam("types", expanding=True)))
        elif type_filter == "not_in":
            conditions.append(c.item_type_code.not_in(bindparam("types", expanding=True)))
        if with_lower:
            conditions.append(due >= bindparam("lower", type_=DateTime()))
        already = exists().where(_alerts.c.rule_id == rule_id, _alerts.c.subject == literal("case:") + c.case_no)
        statement = select(
            c.case_no,
            c.department,
            c.implementation_code,
            c.basic_code,
            c.item_type_code,
            c.accepted_at,
            due.label("due"),
        ).where(*conditions, ~already)
        _STATEMENTS[key] = statement
    return statement


def _pending_step_candidates(type_filter: str, with_lower: bool) -> Any:
    """R05 candidates: pending steps (环节办理状态 1, no end) of open cases due before ``:due_before``, no alert yet.

    The pending-state terms are literal SQL so SQLite can prove the partial index ix_steps_pending_due applies
    (it cannot with bound parameters); "no alert yet" probes the alerts' unique (rule_id, subject) index.
    """
    key = ("steps", type_filter, with_lower)
    statement = _STATEMENTS.get(key)
    if statement is None:
        s, c = _steps.c, _cases.c
        conditions: list[ColumnElement[bool]] = [
            s.status_code == literal_column("'1'"),
            s.ended_at.is_(None),
            s.step_due_at.is_not(None),
            s.step_due_at < bindparam("due_before", type_=DateTime()),
            # Wrapped so no planner starts from the open cases (status index) and probes each one's steps: with
            # 100,000 open cases that reads them all, while the pending steps due in the window are few.
            func.coalesce(c.status, "") == "open",
        ]
        if with_lower:
            conditions.append(s.step_due_at >= bindparam("lower", type_=DateTime()))
        if type_filter == "in":
            conditions.append(c.item_type_code.in_(bindparam("types", expanding=True)))
        elif type_filter == "not_in":
            conditions.append(c.item_type_code.not_in(bindparam("types", expanding=True)))
        subject = literal("case:") + s.case_no + literal(":step:") + cast(s.id, String)
        already = exists().where(_alerts.c.rule_id == R05, _alerts.c.subject == subject)
        statement = (
            select(
                s.id,
                s.case_no,
                s.step_name,
                s.post,
                s.step_limit,
                s.step_due_at,
                c.department,
                c.implementation_code,
                c.basic_code,
                c.item_type_code,
            )
            .select_from(_steps.join(_cases, c.case_no == s.case_no))
            .where(*conditions, ~already)
        )
        _STATEMENTS[key] = statement
    return statement


def _pending_step_message(case_no: str, step_name: str, step_limit: int | None, due: datetime) -> str:
    return (
        f"办件 {case_no} 环节「{step_name}」超时未办结: pending past its {step_limit}-workday limit (due {_fmt(due)})"
    )


def _complaint_candidates(rule_id: str) -> Any:
    """Complaints still waiting for the step ``rule_id`` watches (R10: a decision, R11: handling), no alert yet."""
    key = ("complaints", rule_id)
    statement = _STATEMENTS.get(key)
    if statement is None:
        cp, c = _complaints.c, _cases.c
        status = "received" if rule_id == R10 else "accepted"
        already = exists().where(
            _alerts.c.rule_id == rule_id, _alerts.c.subject == literal("complaint:") + cp.complaint_no
        )
        statement = (
            select(
                _complaints,
                func.coalesce(c.implementation_code, "").label("item_code"),
                func.coalesce(c.basic_code, "").label("item_basic_code"),
                func.coalesce(c.item_type_code, "").label("item_type"),
            )
            .select_from(_complaints.outerjoin(_cases, c.case_no == cp.case_no))
            .where(cp.status == status, ~already)
        )
        _STATEMENTS[key] = statement
    return statement


def _by_keys(conn: Connection, sql: str, keys: Sequence[str]) -> list[Any]:
    """Rows of ``sql`` whose ``{keys}`` placeholder filters a column by ``keys``, bound as ONE parameter.

    A JSON array on SQLite, an array on PostgreSQL: thousands of keys then cost neither thousands of bound
    parameters nor a statement compiled per call, on the import hot path.
    """
    if conn.dialect.name == "sqlite":
        statement = sql.format(keys="IN (SELECT value FROM json_each(?))")
        param: Any = json.dumps(list(keys), ensure_ascii=False)
    else:
        statement = sql.format(keys="= ANY(%s)")
        param = list(keys)
    return list(conn.exec_driver_sql(statement, (param,)))


def _is_pending(record: Mapping[str, Any]) -> bool:
    """A step still in progress: 环节办理状态代码 1 (pending) and no end time."""
    return record.get("status_code") == "1" and record.get("ended_at") is None


def _fmt(value: datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M}"


def _case_message(rule_id: str, case_no: str, due: datetime) -> str:
    when = f"{due:%Y-%m-%d %H:%M}"
    if rule_id == R01:
        return f"办件 {case_no} 即将到达承诺办结时限 {when}: promised limit reached soon"
    if rule_id == R02:
        return f"办件 {case_no} 已超过承诺办结时限 {when}: promised limit passed (黄牌)"
    return f"办件 {case_no} 已超过法定办结时限 {when}: legal limit passed (红牌)"


def run_scan(node: Node, now: datetime | None = None, *, full: bool = False) -> ScanResult:
    """Run one scan as of ``now`` (default: the node's clock) in its own transaction; for the CLI and scheduler."""
    engine = RuleEngine(node.config.supervision, node.calendar)
    with node.engine.begin() as conn:
        return engine.scan(conn, now or node.now(), full=full)
